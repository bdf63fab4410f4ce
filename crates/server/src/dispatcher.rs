//! The dispatcher: one message, many attempts, under the breaker and the retry model.
//!
//! For every attempt it first asks the key's breaker for a permit (a rejection ends the
//! loop at once: no broker traffic while open), cuts the attempt at the attempt timeout (or
//! at the deadline, whichever is first), records exactly one outcome on the permit, and asks
//! the [`RetryPlan`] whether and when to retry. It never sleeps after the last attempt and
//! never starts an attempt past the deadline. Retries are also bounded per provider by the
//! retry budget.
//!
//! The message id is the same on every attempt, so a timed-out attempt that the broker
//! stored after all is de-duplicated when the retry lands.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use beamline_broker::{OutgoingMessage, PublishAck, Publisher};
use beamline_core::breaker::{BreakerRegistry, BreakerSettings};
use beamline_core::retry::{AttemptResult, Cause, Next, RetryBudget, RetryPlan, RetrySettings};
use beamline_core::rng::SplitMix64;
use beamline_core::{BreakerKey, Clock, ErrorKind, FailureKind, Outcome, ProviderId};
use beamline_metrics::RouterMetrics;

use crate::clock::TokioClock;
use crate::events::BreakerEvents;

/// A message the broker acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// The broker's ack.
    pub ack: PublishAck,
    /// Attempts made.
    pub attempts: u32,
    /// Start of each attempt, in ms from the first.
    pub attempt_offsets_ms: Vec<u64>,
}

/// A message the broker did not acknowledge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Undelivered {
    /// Why the attempts ended.
    pub cause: Cause,
    /// The last error, if an attempt was made.
    pub last_error: Option<ErrorKind>,
    /// Attempts made.
    pub attempts: u32,
    /// Start of each attempt, in ms from the first.
    pub attempt_offsets_ms: Vec<u64>,
    /// For `circuit_open`: when the breaker may admit calls again.
    pub retry_after: Option<Duration>,
}

/// Publishes messages with retries under the per-key breakers.
#[derive(Debug)]
pub struct Dispatcher {
    clock: TokioClock,
    registry: Arc<BreakerRegistry<BreakerEvents>>,
    publisher: Arc<dyn Publisher>,
    metrics: Arc<RouterMetrics>,
    retry: RetrySettings,
    budgets: Mutex<HashMap<ProviderId, RetryBudget>>,
    rng: Mutex<SplitMix64>,
}

impl Dispatcher {
    /// A dispatcher publishing through `publisher`.
    pub fn new(
        clock: TokioClock,
        registry: Arc<BreakerRegistry<BreakerEvents>>,
        publisher: Arc<dyn Publisher>,
        metrics: Arc<RouterMetrics>,
        retry: RetrySettings,
        seed: u64,
    ) -> Self {
        Dispatcher {
            clock,
            registry,
            publisher,
            metrics,
            retry,
            budgets: Mutex::new(HashMap::new()),
            rng: Mutex::new(SplitMix64::new(seed)),
        }
    }

    /// The retry settings in force.
    pub fn retry_settings(&self) -> &RetrySettings {
        &self.retry
    }

    fn with_budget<T>(&self, provider: &ProviderId, f: impl FnOnce(&mut RetryBudget) -> T) -> T {
        let mut budgets = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
        let config = self.retry.config();
        let budget = budgets
            .entry(provider.clone())
            .or_insert_with(|| RetryBudget::new(config.budget_percent, config.budget_min_per_sec));
        f(budget)
    }

    /// Publishes `message`, retrying as the retry model allows. `settings` overrides the
    /// breaker settings used if the key's breaker does not exist yet; `retry` overrides the
    /// retry settings (a tenant policy's).
    pub async fn dispatch(
        &self,
        message: &OutgoingMessage,
        settings: Option<&Arc<BreakerSettings>>,
        retry: Option<&RetrySettings>,
    ) -> Result<Delivered, Undelivered> {
        let retry = retry.unwrap_or(&self.retry);
        let key = BreakerKey::new(message.tenant.clone(), message.provider.clone());
        let handle = match settings {
            Some(s) => self.registry.handle_with(&key, s),
            None => self.registry.handle(&key),
        };
        let start = self.clock.now();
        let mut plan = RetryPlan::start(retry, start);
        self.with_budget(&message.provider, |b| b.deposit(start));
        let mut offsets = Vec::with_capacity(retry.config().max_attempts as usize);
        let mut last_error = None;
        loop {
            let now = self.clock.now();
            let permit = match handle.acquire(now) {
                Ok(permit) => permit,
                Err(rejection) => {
                    return Err(Undelivered {
                        cause: Cause::CircuitOpen,
                        last_error,
                        attempts: plan.attempts(),
                        attempt_offsets_ms: offsets,
                        retry_after: Some(rejection.retry_after),
                    });
                }
            };
            let Some(timeout) = plan.begin_attempt(now) else {
                drop(permit); // not used: counts as ignored
                return Err(Undelivered {
                    cause: Cause::DeadlineExceeded,
                    last_error,
                    attempts: plan.attempts(),
                    attempt_offsets_ms: offsets,
                    retry_after: None,
                });
            };
            offsets.push(now.since(start).as_millis() as u64);
            let result = tokio::time::timeout(timeout, self.publisher.publish(message)).await;
            let ended = self.clock.now();
            let took = ended.since(now);
            let attempt = match result {
                Ok(Ok(ack)) => {
                    permit.record(Outcome::Success, ended);
                    self.metrics.publish_attempt(&key, Ok(()), took);
                    return Ok(Delivered {
                        ack,
                        attempts: plan.attempts(),
                        attempt_offsets_ms: offsets,
                    });
                }
                Ok(Err(error)) => {
                    permit.record(error.kind.breaker_outcome(), ended);
                    self.metrics.publish_attempt(&key, Err(error.kind), took);
                    tracing::debug!(tenant_id = %key.tenant, provider_id = %key.provider, error = %error, "publish attempt failed");
                    error.kind
                }
                Err(_elapsed) => {
                    permit.record(Outcome::Failure(FailureKind::Timeout), ended);
                    self.metrics
                        .publish_attempt(&key, Err(ErrorKind::Timeout), took);
                    ErrorKind::Timeout
                }
            };
            last_error = Some(attempt);
            let next = {
                let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
                plan.after_attempt(AttemptResult::Failed(attempt), ended, &mut *rng, || {
                    self.with_budget(&message.provider, |b| b.try_withdraw(ended))
                })
            };
            match next {
                Next::RetryAfter(delay) => {
                    self.metrics.publish_retry(&key);
                    tokio::time::sleep(delay).await;
                }
                Next::Stop(cause) => {
                    return Err(Undelivered {
                        cause,
                        last_error,
                        attempts: plan.attempts(),
                        attempt_offsets_ms: offsets,
                        retry_after: None,
                    });
                }
            }
        }
    }
}
