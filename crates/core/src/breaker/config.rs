//! Breaker configuration: the keys of DESIGN.md §3, their defaults and their validation.
//!
//! [`BreakerConfig`] is what files, policies and traces carry (serde, every key optional,
//! unknown keys refused). [`BreakerConfig::validate`] turns it into [`BreakerSettings`], the
//! precomputed form the state machine reads on its hot path, or into a [`ConfigError`]
//! that names the key and the rule it broke.
//!
//! What 0 and the maximum mean:
//! - `failure_threshold` 0, `error_rate_threshold` 0 and `slow_call_rate_threshold` 0 turn
//!   their rule off; a rate of 1 opens only when every call in the window failed (was slow).
//! - `window_buckets` is 1..=[`MAX_WINDOW_BUCKETS`]; one bucket must span at least 1 ms.
//! - `half_open_max_calls` is 1..=[`MAX_HALF_OPEN_CALLS`]; `success_threshold` is
//!   1..=`half_open_max_calls`.
//! - `open_timeout_jitter` 0 makes open periods exact (replays); it must stay below 1.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::duration_nanos;

/// Most buckets a window may have (bounds per-breaker memory).
pub const MAX_WINDOW_BUCKETS: u32 = 120;
/// Most probes one half-open episode may admit.
pub const MAX_HALF_OPEN_CALLS: u32 = 64;
/// Longest window.
pub const MAX_WINDOW_SECONDS: f64 = 86_400.0;

/// What the breaker does with its verdicts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerMode {
    /// Reject calls while open (the default).
    #[default]
    Enforce,
    /// Evaluate and report transitions, never reject: for trying thresholds in production.
    MetricsOnly,
    /// No evaluation at all: every call is admitted and nothing is recorded.
    Disabled,
}

impl BreakerMode {
    /// The value as written in config files.
    pub const fn as_str(self) -> &'static str {
        match self {
            BreakerMode::Enforce => "enforce",
            BreakerMode::MetricsOnly => "metrics_only",
            BreakerMode::Disabled => "disabled",
        }
    }
}

/// Breaker configuration as written in config files and tenant policies (DESIGN.md §3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker; 0 disables the rule.
    pub failure_threshold: u32,
    /// Failures / calls in the window at or above which the breaker opens; 0 disables.
    pub error_rate_threshold: f64,
    /// Length of the sliding window read by the rate rules.
    pub window_seconds: f64,
    /// Buckets in the window; the window slides one bucket at a time.
    pub window_buckets: u32,
    /// Rate rules give no verdict below this many calls in the window.
    pub min_calls: u32,
    /// A completed call is slow when its latency is strictly greater than this.
    pub latency_threshold_ms: u64,
    /// Slow calls / calls in the window at or above which the breaker opens; 0 disables.
    pub slow_call_rate_threshold: f64,
    /// Time in open before half-open.
    pub open_timeout_ms: u64,
    /// Cap for the open timeout as it doubles on each re-open without a close.
    pub open_timeout_max_ms: u64,
    /// ± fraction applied to every open timeout.
    pub open_timeout_jitter: f64,
    /// Probes admitted per half-open episode.
    pub half_open_max_calls: u32,
    /// Consecutive probe successes that close the breaker.
    pub success_threshold: u32,
    /// A probe that reports nothing within this time counts as failed; default: the
    /// retry model's attempt timeout.
    pub probe_lease_ms: Option<u64>,
    /// `enforce`, `metrics_only` or `disabled`.
    pub mode: BreakerMode,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            error_rate_threshold: 0.5,
            window_seconds: 30.0,
            window_buckets: 10,
            min_calls: 10,
            latency_threshold_ms: 1000,
            slow_call_rate_threshold: 0.5,
            open_timeout_ms: 30_000,
            open_timeout_max_ms: 300_000,
            open_timeout_jitter: 0.1,
            half_open_max_calls: 3,
            success_threshold: 2,
            probe_lease_ms: None,
            mode: BreakerMode::Enforce,
        }
    }
}

/// A configuration value that breaks a rule. Displays as `key (value) rule`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key} ({value}) {rule}")]
pub struct ConfigError {
    /// The offending key, qualified by its section (`breaker.window_buckets`).
    pub key: String,
    /// The offending value as written.
    pub value: String,
    /// The rule it breaks, in words.
    pub rule: String,
}

impl ConfigError {
    /// A new error for `key` holding `value`, which breaks `rule`.
    pub fn new(key: impl Into<String>, value: impl ToString, rule: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            value: value.to_string(),
            rule: rule.into(),
        }
    }

    /// The same error with its key prefixed by `section.` (for nested configs).
    pub fn within(mut self, section: &str) -> Self {
        self.key = format!("{section}.{}", self.key);
        self
    }
}

fn check_rate(key: &str, v: f64) -> Result<(), ConfigError> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(ConfigError::new(
            key,
            v,
            "must be within [0, 1] (0 turns the rule off)",
        ))
    }
}

impl BreakerConfig {
    /// Validates the configuration for a router whose attempts time out after
    /// `attempt_timeout`, producing the settings the state machine uses.
    pub fn validate(&self, attempt_timeout: Duration) -> Result<BreakerSettings, ConfigError> {
        let key = |k: &str| format!("breaker.{k}");
        check_rate(&key("error_rate_threshold"), self.error_rate_threshold)?;
        check_rate(
            &key("slow_call_rate_threshold"),
            self.slow_call_rate_threshold,
        )?;
        if !(self.window_seconds.is_finite()
            && self.window_seconds > 0.0
            && self.window_seconds <= MAX_WINDOW_SECONDS)
        {
            return Err(ConfigError::new(
                key("window_seconds"),
                self.window_seconds,
                format!("must be above 0 and at most {MAX_WINDOW_SECONDS}"),
            ));
        }
        if !(1..=MAX_WINDOW_BUCKETS).contains(&self.window_buckets) {
            return Err(ConfigError::new(
                key("window_buckets"),
                self.window_buckets,
                format!("must be within 1..={MAX_WINDOW_BUCKETS}"),
            ));
        }
        let window_nanos = (self.window_seconds * 1e9).round() as u64;
        let bucket_nanos = window_nanos / u64::from(self.window_buckets);
        if bucket_nanos < 1_000_000 {
            return Err(ConfigError::new(
                key("window_seconds"),
                self.window_seconds,
                format!(
                    "is shorter than one bucket of 1 ms times window_buckets ({})",
                    self.window_buckets
                ),
            ));
        }
        if self.min_calls == 0 {
            return Err(ConfigError::new(key("min_calls"), 0, "must be at least 1"));
        }
        let attempt_timeout_ms = attempt_timeout.as_millis();
        if self.latency_threshold_ms == 0 {
            return Err(ConfigError::new(
                key("latency_threshold_ms"),
                0,
                "must be at least 1",
            ));
        }
        if u128::from(self.latency_threshold_ms) >= attempt_timeout_ms {
            return Err(ConfigError::new(
                key("latency_threshold_ms"),
                self.latency_threshold_ms,
                format!(
                    "must be below retry.attempt_timeout_ms ({attempt_timeout_ms}): \
                     a slower call is cut as a timeout, so the latency rule could never fire"
                ),
            ));
        }
        if self.open_timeout_ms == 0 {
            return Err(ConfigError::new(
                key("open_timeout_ms"),
                0,
                "must be at least 1",
            ));
        }
        if self.open_timeout_max_ms < self.open_timeout_ms {
            return Err(ConfigError::new(
                key("open_timeout_max_ms"),
                self.open_timeout_max_ms,
                format!(
                    "must be at least open_timeout_ms ({})",
                    self.open_timeout_ms
                ),
            ));
        }
        if !(self.open_timeout_jitter.is_finite() && (0.0..1.0).contains(&self.open_timeout_jitter))
        {
            return Err(ConfigError::new(
                key("open_timeout_jitter"),
                self.open_timeout_jitter,
                "must be within [0, 1)",
            ));
        }
        if !(1..=MAX_HALF_OPEN_CALLS).contains(&self.half_open_max_calls) {
            return Err(ConfigError::new(
                key("half_open_max_calls"),
                self.half_open_max_calls,
                format!("must be within 1..={MAX_HALF_OPEN_CALLS}"),
            ));
        }
        if self.success_threshold == 0 || self.success_threshold > self.half_open_max_calls {
            return Err(ConfigError::new(
                key("success_threshold"),
                self.success_threshold,
                format!(
                    "must be within 1..=half_open_max_calls ({}): more successes than probes \
                     could never close the breaker",
                    self.half_open_max_calls
                ),
            ));
        }
        let probe_lease = match self.probe_lease_ms {
            Some(0) => {
                return Err(ConfigError::new(
                    key("probe_lease_ms"),
                    0,
                    "must be at least 1",
                ));
            }
            Some(ms) => Duration::from_millis(ms),
            None => attempt_timeout,
        };
        Ok(BreakerSettings {
            config: self.clone(),
            bucket_nanos,
            buckets: self.window_buckets,
            latency_threshold_nanos: self.latency_threshold_ms.saturating_mul(1_000_000),
            open_timeout_nanos: self.open_timeout_ms.saturating_mul(1_000_000),
            open_timeout_max_nanos: self.open_timeout_max_ms.saturating_mul(1_000_000),
            probe_lease_nanos: duration_nanos(probe_lease).max(1),
        })
    }
}

/// Validated breaker settings, precomputed for the hot path. Shared by every breaker with
/// the same configuration (behind an `Arc`), so a breaker carries only a pointer.
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerSettings {
    config: BreakerConfig,
    pub(crate) bucket_nanos: u64,
    pub(crate) buckets: u32,
    pub(crate) latency_threshold_nanos: u64,
    pub(crate) open_timeout_nanos: u64,
    pub(crate) open_timeout_max_nanos: u64,
    pub(crate) probe_lease_nanos: u64,
}

impl BreakerSettings {
    /// The configuration these settings were validated from.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The effective window: `window_buckets` × the bucket width.
    pub fn window(&self) -> Duration {
        Duration::from_nanos(self.bucket_nanos * u64::from(self.buckets))
    }

    /// The width of one bucket: the window's granularity.
    pub fn bucket(&self) -> Duration {
        Duration::from_nanos(self.bucket_nanos)
    }

    /// The probe lease in effect.
    pub fn probe_lease(&self) -> Duration {
        Duration::from_nanos(self.probe_lease_nanos)
    }

    /// Default settings for a router whose attempts time out after two seconds.
    pub fn defaults() -> Self {
        // The defaults are valid by construction; this is checked by a unit test.
        match BreakerConfig::default().validate(Duration::from_secs(2)) {
            Ok(s) => s,
            Err(e) => unreachable!("default breaker config is invalid: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(2);

    fn err(f: impl FnOnce(&mut BreakerConfig)) -> ConfigError {
        let mut c = BreakerConfig::default();
        f(&mut c);
        c.validate(T).unwrap_err()
    }

    #[test]
    fn defaults_are_valid() {
        let s = BreakerConfig::default().validate(T).unwrap();
        assert_eq!(s.window(), Duration::from_secs(30));
        assert_eq!(s.bucket(), Duration::from_secs(3));
        assert_eq!(s.probe_lease(), T);
        assert_eq!(BreakerSettings::defaults(), s);
    }

    #[test]
    fn latency_threshold_at_or_above_the_attempt_timeout_is_refused() {
        let e = err(|c| c.latency_threshold_ms = 2000);
        assert_eq!(e.key, "breaker.latency_threshold_ms");
        assert!(
            e.to_string()
                .contains("must be below retry.attempt_timeout_ms (2000)"),
            "{e}"
        );
        assert!(
            err(|c| c.latency_threshold_ms = 2500)
                .rule
                .contains("never fire")
        );
    }

    #[test]
    fn more_successes_than_probes_is_refused() {
        let e = err(|c| {
            c.half_open_max_calls = 2;
            c.success_threshold = 3;
        });
        assert_eq!(e.key, "breaker.success_threshold");
        assert_eq!(
            err(|c| c.success_threshold = 0).key,
            "breaker.success_threshold"
        );
    }

    #[test]
    fn rates_outside_zero_one_are_refused_and_zero_is_accepted() {
        assert_eq!(
            err(|c| c.error_rate_threshold = 1.5).key,
            "breaker.error_rate_threshold"
        );
        assert_eq!(
            err(|c| c.slow_call_rate_threshold = -0.1).key,
            "breaker.slow_call_rate_threshold"
        );
        assert_eq!(
            err(|c| c.error_rate_threshold = f64::NAN).key,
            "breaker.error_rate_threshold"
        );
        let c = BreakerConfig {
            error_rate_threshold: 0.0,
            slow_call_rate_threshold: 0.0,
            ..Default::default()
        };
        assert!(c.validate(T).is_ok());
    }

    #[test]
    fn window_shape_is_checked() {
        assert_eq!(err(|c| c.window_buckets = 0).key, "breaker.window_buckets");
        assert_eq!(
            err(|c| c.window_buckets = MAX_WINDOW_BUCKETS + 1).key,
            "breaker.window_buckets"
        );
        assert_eq!(
            err(|c| c.window_seconds = 0.0).key,
            "breaker.window_seconds"
        );
        let e = err(|c| {
            c.window_seconds = 0.005;
            c.window_buckets = 10;
        });
        assert!(e.rule.contains("shorter than one bucket"), "{e}");
    }

    #[test]
    fn open_timeouts_and_probes_are_checked() {
        assert_eq!(
            err(|c| c.open_timeout_ms = 0).key,
            "breaker.open_timeout_ms"
        );
        assert_eq!(
            err(|c| c.open_timeout_max_ms = 10).key,
            "breaker.open_timeout_max_ms"
        );
        assert_eq!(
            err(|c| c.open_timeout_jitter = 1.0).key,
            "breaker.open_timeout_jitter"
        );
        assert_eq!(
            err(|c| c.half_open_max_calls = 0).key,
            "breaker.half_open_max_calls"
        );
        assert_eq!(
            err(|c| c.probe_lease_ms = Some(0)).key,
            "breaker.probe_lease_ms"
        );
        assert_eq!(err(|c| c.min_calls = 0).key, "breaker.min_calls");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = serde_json::from_str::<BreakerConfig>(r#"{"failure_treshold": 3}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }
}
