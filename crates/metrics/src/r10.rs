//! R10 access module: circuit breaker and retry metrics, as tests and the scenario runner
//! read them.
//!
//! Everything here works on a parsed scrape ([`Snapshot`]), so the same checks run against
//! an in-process router, a child process or a remote one. Tests never name a metric or a
//! reason by string: they use the constants re-exported here.

use std::future::Future;
use std::time::Duration;

use beamline_core::breaker::State;
pub use beamline_core::breaker::machine::reason::*;

use crate::exposition::Snapshot;
pub use crate::names::{
    BREAKER_CALLS, BREAKER_ERROR_RATE, BREAKER_LAST_TRIGGER, BREAKER_OPEN_REMAINING,
    BREAKER_REJECTIONS, BREAKER_SLOW_CALL_RATE, BREAKER_STATE, BREAKER_TRANSITIONS,
    BREAKER_TRIGGER_REASON, PUBLISH_ATTEMPTS, PUBLISH_DURATION, PUBLISH_ERRORS, PUBLISH_RETRIES,
    REQUEST_DURATION, REQUESTS,
};

/// The opening reasons, in precedence order.
pub const TRIGGER_REASONS: [&str; 3] = [
    FAILURE_THRESHOLD_EXCEEDED,
    ERROR_RATE_THRESHOLD_EXCEEDED,
    LATENCY_THRESHOLD_EXCEEDED,
];

/// Metric name prefixes this module covers (for [`dump`]).
pub const PREFIXES: [&str; 3] = [
    "router_circuit_breaker_",
    "router_publish_",
    "router_requests_",
];

/// The sum of `name` over samples carrying `labels`.
pub fn value(snapshot: &Snapshot, name: &str, labels: &[(&str, &str)]) -> f64 {
    snapshot.value(name, labels)
}

/// The breaker state of a key, if the key has a state series.
pub fn state(snapshot: &Snapshot, tenant: &str, provider: &str) -> Option<State> {
    let labels = [("tenant_id", tenant), ("provider_id", provider)];
    let sample = snapshot.select(BREAKER_STATE, &labels).next()?;
    match sample.value as i64 {
        0 => Some(State::Closed),
        1 => Some(State::Open),
        2 => Some(State::HalfOpen),
        _ => None,
    }
}

/// Openings of a key with `reason`.
pub fn openings(snapshot: &Snapshot, tenant: &str, provider: &str, reason: &str) -> f64 {
    snapshot.value(
        BREAKER_TRIGGER_REASON,
        &[
            ("tenant_id", tenant),
            ("provider_id", provider),
            ("reason", reason),
        ],
    )
}

/// Transitions of a key from `from` to `to` (any reason).
pub fn transitions(
    snapshot: &Snapshot,
    tenant: &str,
    provider: &str,
    from: State,
    to: State,
) -> f64 {
    snapshot.value(
        BREAKER_TRANSITIONS,
        &[
            ("tenant_id", tenant),
            ("provider_id", provider),
            ("from", from.as_str()),
            ("to", to.as_str()),
        ],
    )
}

/// The reason of the key's latest opening by a rule, if it ever opened.
pub fn latest_trigger_reason(
    snapshot: &Snapshot,
    tenant: &str,
    provider: &str,
) -> Option<&'static str> {
    TRIGGER_REASONS.into_iter().find(|reason| {
        snapshot.value(
            BREAKER_LAST_TRIGGER,
            &[
                ("tenant_id", tenant),
                ("provider_id", provider),
                ("reason", reason),
            ],
        ) == 1.0
    })
}

/// Fail-fast rejections of a key.
pub fn rejections(snapshot: &Snapshot, tenant: &str, provider: &str) -> f64 {
    snapshot.value(
        BREAKER_REJECTIONS,
        &[("tenant_id", tenant), ("provider_id", provider)],
    )
}

/// Publish attempts of a key (all results).
pub fn publish_attempts(snapshot: &Snapshot, tenant: &str, provider: &str) -> f64 {
    snapshot.value(
        PUBLISH_ATTEMPTS,
        &[("tenant_id", tenant), ("provider_id", provider)],
    )
}

/// The change of `name` over `labels` between two scrapes around an action.
pub fn delta(before: &Snapshot, after: &Snapshot, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.value(name, labels) - before.value(name, labels)
}

/// Every breaker, publish and request sample, one per line.
pub fn dump(snapshot: &Snapshot) -> String {
    snapshot.dump(&PREFIXES)
}

/// Waiting for a condition on the metrics gave up.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The condition did not hold in time; the last scrape is dumped.
    #[error("{what} did not happen within {timeout:?}; last metrics:\n{dump}")]
    TimedOut {
        /// The awaited condition.
        what: String,
        /// How long we waited.
        timeout: Duration,
        /// The last scrape's R10 samples.
        dump: String,
    },
    /// Scraping failed.
    #[error("scrape failed: {0}")]
    Scrape(String),
}

/// Scrapes with `scrape` every 20 ms until `condition` holds or `timeout` passes.
pub async fn wait_for<F, Fut>(
    mut scrape: F,
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut(&Snapshot) -> bool,
) -> Result<Snapshot, WaitError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<String, String>>,
{
    let mut last = Snapshot::default();
    let polled = tokio::time::timeout(timeout, async {
        loop {
            let text = scrape().await.map_err(WaitError::Scrape)?;
            let snapshot = Snapshot::parse(&text).map_err(|e| WaitError::Scrape(e.to_string()))?;
            if condition(&snapshot) {
                return Ok(snapshot);
            }
            last = snapshot;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    match polled {
        Ok(result) => result,
        Err(_elapsed) => Err(WaitError::TimedOut {
            what: what.to_owned(),
            timeout,
            dump: dump(&last),
        }),
    }
}

/// Waits until the key's latest opening has `reason`.
pub async fn wait_for_trigger_reason<F, Fut>(
    scrape: F,
    tenant: &str,
    provider: &str,
    reason: &str,
    timeout: Duration,
) -> Result<Snapshot, WaitError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<String, String>>,
{
    let what = format!("{tenant}/{provider} opening with {reason}");
    wait_for(scrape, &what, timeout, |s| {
        latest_trigger_reason(s, tenant, provider) == Some(reason)
    })
    .await
}

/// Waits until the key is in `state`.
pub async fn wait_for_state<F, Fut>(
    scrape: F,
    tenant: &str,
    provider: &str,
    state_wanted: State,
    timeout: Duration,
) -> Result<Snapshot, WaitError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<String, String>>,
{
    let what = format!("{tenant}/{provider} reaching {}", state_wanted.as_str());
    wait_for(scrape, &what, timeout, |s| {
        state(s, tenant, provider) == Some(state_wanted)
    })
    .await
}
