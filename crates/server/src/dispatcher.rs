//! The dispatcher: one message, many attempts, under the breaker and the retry model.
//!
//! For every attempt it first asks the key's breaker for a permit (a rejection ends the
//! loop at once: no broker traffic while open), cuts the attempt at the attempt timeout (or
//! at the deadline, whichever is first), records exactly one outcome on the permit, and asks
//! the [`RetryPlan`] whether and when to retry. It never sleeps after the last attempt and
//! never starts an attempt past the deadline. Retries are also bounded by the retry
//! budget: one per provider, shared by the tenants that use the router's retry settings;
//! a tenant whose policy sets its own budget (`budget_percent`, `budget_min_per_sec`)
//! gets a budget of its own for that provider, so the override means what it says and
//! that tenant's retries neither draw on nor starve the shared one.
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
use beamline_core::{BreakerKey, Clock, ErrorKind, FailureKind, Outcome, ProviderId, TenantId};
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
    /// By provider, and tenant when the tenant's policy sets its own budget.
    budgets: Mutex<HashMap<(ProviderId, Option<TenantId>), RetryBudget>>,
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

    fn with_budget<T>(
        &self,
        message: &OutgoingMessage,
        retry: &RetrySettings,
        f: impl FnOnce(&mut RetryBudget) -> T,
    ) -> T {
        let (own, shared) = (retry.config(), self.retry.config());
        let tenant = (own.budget_percent != shared.budget_percent
            || own.budget_min_per_sec != shared.budget_min_per_sec)
            .then(|| message.tenant.clone());
        let mut budgets = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
        let budget = budgets
            .entry((message.provider.clone(), tenant))
            .or_insert_with(|| RetryBudget::new(own.budget_percent, own.budget_min_per_sec));
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
        self.with_budget(message, retry, |b| b.deposit(start));
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
                    tracing::debug!(tenant_id = %key.tenant(), provider_id = %key.provider(), error = %error, "publish attempt failed");
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
                    self.with_budget(message, retry, |b| b.try_withdraw(ended))
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

#[cfg(test)]
mod tests {
    use super::*;
    use beamline_broker::embedded::EmbeddedBroker;
    use beamline_broker::faults::{Fault, FaultInjector, FaultRule};
    use beamline_core::breaker::{BreakerConfig, BreakerMode};
    use beamline_core::retry::RetryConfig;

    fn retry(budget_percent: f64, budget_min_per_sec: u32) -> RetrySettings {
        RetryConfig {
            max_attempts: 3,
            base_ms: 1,
            max_ms: 1,
            attempt_timeout_ms: 100,
            total_deadline_ms: 1_000,
            budget_percent,
            budget_min_per_sec,
            ..RetryConfig::default()
        }
        .validate()
        .unwrap()
    }

    fn message(tenant: &str, id: &str) -> OutgoingMessage {
        OutgoingMessage {
            tenant: TenantId::try_new(tenant).unwrap(),
            provider: ProviderId::try_new("p").unwrap(),
            message_id: id.to_owned(),
            payload: bytes::Bytes::from_static(b"{}"),
        }
    }

    #[tokio::test]
    async fn a_tenant_with_its_own_retry_budget_does_not_share_the_providers() {
        let clock = TokioClock::new();
        let faults = Arc::new(FaultInjector::new(
            Arc::new(EmbeddedBroker::new(1000)),
            Arc::new(clock),
            1,
        ));
        faults
            .set(FaultRule {
                provider_id: ProviderId::try_new("p").unwrap(),
                tenant_id: None,
                fault: Fault::Error {
                    kind: ErrorKind::ConnectionRefused,
                },
            })
            .unwrap();
        let breaker = BreakerConfig {
            mode: BreakerMode::Disabled,
            latency_threshold_ms: 50,
            ..BreakerConfig::default()
        }
        .validate(Duration::from_millis(100))
        .unwrap();
        let metrics = Arc::new(RouterMetrics::new(10));
        let registry = Arc::new(BreakerRegistry::new(
            breaker,
            1,
            1,
            BreakerEvents::new(Arc::clone(&metrics)),
        ));
        // The router's budget: no share of the traffic, one retry a second (10 in the window).
        let dispatcher = Dispatcher::new(clock, registry, faults, metrics, retry(0.0, 1), 1);
        let attempts = |r: Result<Delivered, Undelivered>| r.err().map(|u| (u.attempts, u.cause));
        // Tenants on the router's settings exhaust the shared budget...
        let mut last = None;
        for i in 0..20 {
            last = attempts(
                dispatcher
                    .dispatch(&message("shared", &i.to_string()), None, None)
                    .await,
            );
        }
        assert_eq!(last, Some((1, Cause::BudgetExhausted)));
        // ...which neither a tenant with its own budget draws on, nor it on theirs.
        let own = retry(1000.0, 100);
        for i in 0..20 {
            let r = dispatcher
                .dispatch(&message("own", &i.to_string()), None, Some(&own))
                .await;
            assert_eq!(attempts(r), Some((3, Cause::AttemptsExhausted)));
        }
    }
}
