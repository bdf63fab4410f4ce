//! Beamline Router's pure core: every rule the router follows, with no I/O.
//!
//! Nothing here reads a clock, sleeps, spawns or touches the network: functions that
//! depend on time take `now: Timestamp`, and functions that need randomness take an
//! injected [`rng::JitterRng`]. The service shell drives these state machines from real
//! time; the replay tool and the tests drive them on virtual time.

pub mod breaker;
pub mod keys;
pub mod message;
pub mod outcome;
pub mod policy;
pub mod replay;
pub mod retry;
pub mod rng;
pub mod time;

pub use keys::{BreakerKey, IdError, ProviderId, TenantId};
pub use outcome::{ErrorKind, FailureKind, Outcome};
pub use time::{Clock, ManualClock, Timestamp};
