//! The retry decision for one request, on injected time.
//!
//! The caller runs the loop: [`RetryPlan::begin_attempt`] before each attempt (it gives the
//! attempt's timeout, never past the deadline), then [`RetryPlan::after_attempt`] with the
//! result, which says to retry after a delay or to stop, and why. Rules:
//! - a breaker rejection stops at once (`circuit_open`): no broker traffic while open;
//! - a non-retryable error stops at once (`non_retryable`);
//! - at `max_attempts` attempts, stop (`attempts_exhausted`): no sleep after the last one;
//! - a retry whose delay would reach the deadline is not made (`deadline_exceeded`);
//! - a retry the budget refuses is not made (`budget_exhausted`).

use std::time::Duration;

use serde::Serialize;

use super::backoff::delay_before_retry;
use super::config::RetrySettings;
use crate::outcome::ErrorKind;
use crate::rng::JitterRng;
use crate::time::Timestamp;

/// What one attempt came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    /// Acknowledged.
    Success,
    /// Failed with this error.
    Failed(ErrorKind),
    /// The breaker refused the attempt.
    Rejected,
}

/// Why a request's attempts ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// An attempt succeeded.
    Succeeded,
    /// `max_attempts` attempts failed.
    AttemptsExhausted,
    /// The deadline left no room for another attempt.
    DeadlineExceeded,
    /// The last error cannot be cured by retrying.
    NonRetryable,
    /// The breaker refused an attempt.
    CircuitOpen,
    /// The provider's retry budget refused a retry.
    BudgetExhausted,
}

impl Cause {
    /// The spelling used in APIs and traces.
    pub const fn as_str(self) -> &'static str {
        match self {
            Cause::Succeeded => "succeeded",
            Cause::AttemptsExhausted => "attempts_exhausted",
            Cause::DeadlineExceeded => "deadline_exceeded",
            Cause::NonRetryable => "non_retryable",
            Cause::CircuitOpen => "circuit_open",
            Cause::BudgetExhausted => "budget_exhausted",
        }
    }
}

/// What to do after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Wait this long, then make the next attempt.
    RetryAfter(Duration),
    /// Stop.
    Stop(Cause),
}

/// The retry state of one request.
#[derive(Clone, Debug)]
pub struct RetryPlan<'s> {
    settings: &'s RetrySettings,
    deadline: Timestamp,
    attempts: u32,
}

impl<'s> RetryPlan<'s> {
    /// A plan for a request whose first attempt starts at `now`.
    pub fn start(settings: &'s RetrySettings, now: Timestamp) -> Self {
        RetryPlan {
            settings,
            deadline: now.add(settings.total_deadline()),
            attempts: 0,
        }
    }

    /// When the request's deadline falls.
    pub fn deadline(&self) -> Timestamp {
        self.deadline
    }

    /// Attempts begun so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Counts an attempt starting at `now` and returns its timeout (the attempt timeout,
    /// shortened to the time left before the deadline), or `None` when the deadline has
    /// passed and no attempt may start.
    pub fn begin_attempt(&mut self, now: Timestamp) -> Option<Duration> {
        let left = now.until(self.deadline);
        if left.is_zero() {
            return None;
        }
        self.attempts += 1;
        Some(self.settings.attempt_timeout().min(left))
    }

    /// Decides what follows an attempt that ended at `now` with `result`. `budget` is asked
    /// (once) only when a retry would otherwise be made.
    pub fn after_attempt(
        &mut self,
        result: AttemptResult,
        now: Timestamp,
        rng: &mut impl JitterRng,
        budget: impl FnOnce() -> bool,
    ) -> Next {
        let kind = match result {
            AttemptResult::Success => return Next::Stop(Cause::Succeeded),
            AttemptResult::Rejected => return Next::Stop(Cause::CircuitOpen),
            AttemptResult::Failed(kind) => kind,
        };
        if !kind.is_retryable() {
            return Next::Stop(Cause::NonRetryable);
        }
        if self.attempts >= self.settings.config().max_attempts {
            return Next::Stop(Cause::AttemptsExhausted);
        }
        let delay = delay_before_retry(self.settings.config(), self.attempts, rng);
        if now.add(delay) >= self.deadline {
            return Next::Stop(Cause::DeadlineExceeded);
        }
        if !budget() {
            return Next::Stop(Cause::BudgetExhausted);
        }
        Next::RetryAfter(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::RetryConfig;
    use crate::rng::SplitMix64;

    fn settings(f: impl FnOnce(&mut RetryConfig)) -> RetrySettings {
        let mut c = RetryConfig {
            jitter: 0.0,
            ..Default::default()
        };
        f(&mut c);
        c.validate().unwrap()
    }

    /// Runs a script of attempt results with zero latency; returns start times and cause.
    fn run(s: &RetrySettings, script: &[AttemptResult]) -> (Vec<u64>, Cause) {
        let mut rng = SplitMix64::new(1);
        let mut now = Timestamp::ZERO;
        let mut plan = RetryPlan::start(s, now);
        let mut starts = vec![];
        for result in script {
            assert!(plan.begin_attempt(now).is_some());
            starts.push(now.as_millis());
            match plan.after_attempt(*result, now, &mut rng, || true) {
                Next::RetryAfter(d) => now = now.add(d),
                Next::Stop(cause) => return (starts, cause),
            }
        }
        panic!("script ran out at {starts:?}");
    }

    #[test]
    fn max_attempts_is_a_hard_cap() {
        let s = settings(|c| {
            c.max_attempts = 4;
            c.base_ms = 10;
            c.max_ms = 10;
        });
        let f = AttemptResult::Failed(ErrorKind::Timeout);
        let (starts, cause) = run(&s, &[f, f, f, f, AttemptResult::Success]);
        assert_eq!(starts, [0, 10, 20, 30]);
        assert_eq!(cause, Cause::AttemptsExhausted);
    }

    #[test]
    fn non_retryable_errors_and_rejections_stop_at_once() {
        let s = settings(|_| {});
        for kind in ErrorKind::ALL.into_iter().filter(|k| !k.is_retryable()) {
            let (starts, cause) = run(&s, &[AttemptResult::Failed(kind), AttemptResult::Success]);
            assert_eq!((starts.len(), cause), (1, Cause::NonRetryable), "{kind:?}");
        }
        let (_, cause) = run(&s, &[AttemptResult::Rejected]);
        assert_eq!(cause, Cause::CircuitOpen);
    }

    #[test]
    fn a_retry_that_does_not_fit_before_the_deadline_is_not_made() {
        let s = settings(|c| {
            c.max_attempts = 10;
            c.base_ms = 100;
            c.total_deadline_ms = 250;
        });
        let f = AttemptResult::Failed(ErrorKind::ConnectionClosed);
        // Starts at 0 and 100; the next delay (200) would end at 300 >= 250.
        let (starts, cause) = run(&s, &[f; 10]);
        assert_eq!(starts, [0, 100]);
        assert_eq!(cause, Cause::DeadlineExceeded);
    }

    #[test]
    fn attempt_timeouts_never_pass_the_deadline() {
        let s = settings(|c| {
            c.attempt_timeout_ms = 2000;
            c.total_deadline_ms = 3000;
        });
        let mut plan = RetryPlan::start(&s, Timestamp::ZERO);
        assert_eq!(
            plan.begin_attempt(Timestamp::ZERO),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            plan.begin_attempt(Timestamp::from_millis(2500)),
            Some(Duration::from_millis(500))
        );
        assert_eq!(plan.begin_attempt(Timestamp::from_millis(3000)), None);
    }

    #[test]
    fn a_refused_budget_stops_the_retries() {
        let s = settings(|_| {});
        let mut plan = RetryPlan::start(&s, Timestamp::ZERO);
        plan.begin_attempt(Timestamp::ZERO);
        let next = plan.after_attempt(
            AttemptResult::Failed(ErrorKind::Timeout),
            Timestamp::ZERO,
            &mut SplitMix64::new(0),
            || false,
        );
        assert_eq!(next, Next::Stop(Cause::BudgetExhausted));
    }
}
