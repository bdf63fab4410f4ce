//! The circuit breaker: one per `(tenant_id, provider_id)`.
//!
//! Split as the rest of the router is:
//! - [`config`]: policy, plain validated data ([`BreakerConfig`] → [`BreakerSettings`]);
//! - [`window`]: the time-bucketed sliding window the rate rules read;
//! - [`machine`]: the decision, a pure state machine taking `now` ([`Breaker`]);
//! - [`registry`]: the sharded, thread-safe map of breakers, with RAII permits.
//!
//! DESIGN.md §3 is the specification; each module documents how it implements its part.

pub mod config;
pub mod machine;
pub mod registry;
mod slab;
mod table;
pub mod window;

pub use config::{BreakerConfig, BreakerMode, BreakerSettings, ConfigError};
pub use machine::{
    Admission, Breaker, BreakerSnapshot, BreakerStats, Forced, Opening, RecordEffect, Rejection,
    Rule, RuleSet, State, Transition, TransitionReason,
};
pub use registry::{BreakerHandle, BreakerObserver, BreakerRegistry, NoopObserver, Permit};
pub use window::{SlidingWindow, WindowCounts};
