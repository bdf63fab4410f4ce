//! Retry configuration: the keys of DESIGN.md §4.
//!
//! `max_attempts` counts every attempt (1 means no retry). `base_ms` 0 retries at once;
//! `max_ms` caps every delay, jitter included. `jitter` is a ± fraction within [0, 1].
//! `total_deadline_ms` bounds the whole request from its first attempt; each attempt is cut
//! at `attempt_timeout_ms` or at the deadline, whichever comes first. `budget_percent` 0
//! allows only the `budget_min_per_sec` floor of retries.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::breaker::ConfigError;

/// Most attempts a request may make.
pub const MAX_ATTEMPTS: u32 = 100;

/// Retry configuration as written in config files and tenant policies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Total attempts, at least 1.
    pub max_attempts: u32,
    /// Delay before the first retry; doubles for each further retry.
    pub base_ms: u64,
    /// Cap on any delay.
    pub max_ms: u64,
    /// ± fraction applied to each delay.
    pub jitter: f64,
    /// One attempt (publish + ack) is cut here and counts as a timeout.
    pub attempt_timeout_ms: u64,
    /// Deadline for the whole request, from its first attempt.
    pub total_deadline_ms: u64,
    /// Retries may add at most this share (percent) to a provider's request rate.
    pub budget_percent: f64,
    /// Retries always allowed per second, whatever the share.
    pub budget_min_per_sec: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            base_ms: 100,
            max_ms: 5000,
            jitter: 0.2,
            attempt_timeout_ms: 2000,
            total_deadline_ms: 10_000,
            budget_percent: 20.0,
            budget_min_per_sec: 10,
        }
    }
}

impl RetryConfig {
    /// Validates the configuration.
    pub fn validate(&self) -> Result<RetrySettings, ConfigError> {
        let key = |k: &str| format!("retry.{k}");
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(ConfigError::new(
                key("max_attempts"),
                self.max_attempts,
                format!("must be within 1..={MAX_ATTEMPTS}"),
            ));
        }
        if self.max_ms < self.base_ms {
            return Err(ConfigError::new(
                key("max_ms"),
                self.max_ms,
                format!("must be at least base_ms ({})", self.base_ms),
            ));
        }
        if !(self.jitter.is_finite() && (0.0..=1.0).contains(&self.jitter)) {
            return Err(ConfigError::new(
                key("jitter"),
                self.jitter,
                "must be within [0, 1]",
            ));
        }
        if self.attempt_timeout_ms == 0 {
            return Err(ConfigError::new(
                key("attempt_timeout_ms"),
                0,
                "must be at least 1",
            ));
        }
        if self.total_deadline_ms == 0 {
            return Err(ConfigError::new(
                key("total_deadline_ms"),
                0,
                "must be at least 1",
            ));
        }
        if !(self.budget_percent.is_finite() && (0.0..=1000.0).contains(&self.budget_percent)) {
            return Err(ConfigError::new(
                key("budget_percent"),
                self.budget_percent,
                "must be within [0, 1000]",
            ));
        }
        Ok(RetrySettings {
            config: self.clone(),
        })
    }
}

/// Validated retry settings.
#[derive(Clone, Debug, PartialEq)]
pub struct RetrySettings {
    config: RetryConfig,
}

impl RetrySettings {
    /// The configuration these settings were validated from.
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    /// The per-attempt timeout.
    pub fn attempt_timeout(&self) -> Duration {
        Duration::from_millis(self.config.attempt_timeout_ms)
    }

    /// The total deadline.
    pub fn total_deadline(&self) -> Duration {
        Duration::from_millis(self.config.total_deadline_ms)
    }

    /// Default settings.
    pub fn defaults() -> Self {
        RetrySettings {
            config: RetryConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(f: impl FnOnce(&mut RetryConfig)) -> ConfigError {
        let mut c = RetryConfig::default();
        f(&mut c);
        c.validate().unwrap_err()
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(
            RetryConfig::default().validate().unwrap(),
            RetrySettings::defaults()
        );
    }

    #[test]
    fn each_rule_names_its_key() {
        assert_eq!(err(|c| c.max_attempts = 0).key, "retry.max_attempts");
        assert_eq!(err(|c| c.max_ms = 10).key, "retry.max_ms");
        assert_eq!(err(|c| c.jitter = 1.5).key, "retry.jitter");
        assert_eq!(err(|c| c.jitter = f64::INFINITY).key, "retry.jitter");
        assert_eq!(
            err(|c| c.attempt_timeout_ms = 0).key,
            "retry.attempt_timeout_ms"
        );
        assert_eq!(
            err(|c| c.total_deadline_ms = 0).key,
            "retry.total_deadline_ms"
        );
        assert_eq!(err(|c| c.budget_percent = -1.0).key, "retry.budget_percent");
    }
}
