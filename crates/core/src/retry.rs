//! The retry model (DESIGN.md §4): how many attempts, how long to wait between them, and
//! when to stop.
//!
//! - [`config`]: the keys, defaults and validation ([`RetryConfig`] → [`RetrySettings`]);
//! - [`backoff`]: the delay before retry `n`, capped, jittered, never negative;
//! - [`plan`]: [`RetryPlan`], the pure decision after each attempt (retry after a delay,
//!   or stop and why); the dispatcher runs the loop, the replay tool runs it on virtual time;
//! - [`budget`]: [`RetryBudget`], the per-provider cap on the share of retries.

pub mod backoff;
pub mod budget;
pub mod config;
pub mod plan;

pub use backoff::delay_before_retry;
pub use budget::RetryBudget;
pub use config::{RetryConfig, RetrySettings};
pub use plan::{AttemptResult, Cause, Next, RetryPlan};
