//! The fault injector: a [`Publisher`] wrapper that makes the broker misbehave on demand.
//!
//! Rules are set and cleared at runtime (through the admin API, only when the server runs
//! with faults enabled). A rule is scoped to a provider and optionally a tenant; the most
//! specific matching rule wins (tenant-scoped over provider-wide; among equals, the latest).
//! Faults:
//! - `error(kind)`: fail at once with that error kind;
//! - `timeout`: hang until the caller's attempt timeout cuts the attempt;
//! - `close_connection`: drop the broker connection for real (NATS: forced reconnect),
//!   then fail with `connection_closed`;
//! - `delay(ms)`: wait, then publish for real;
//! - `intermittent(probability, fault)`: apply `fault` with that probability, else publish.
//!
//! The injector also stands for "the broker side" in assertions: it logs every attempt
//! that reaches it (faulted or not), with the time and key, in a bounded journal, so a
//! scenario can prove that no attempt reached the broker while a breaker was open.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use beamline_core::rng::{JitterRng, SplitMix64};
use beamline_core::{Clock, ErrorKind, ProviderId, TenantId};
use serde::{Deserialize, Serialize};

use crate::{OutgoingMessage, PublishAck, PublishError, Publisher};

/// Most attempts kept in the journal; older ones are dropped first.
pub const JOURNAL_CAPACITY: usize = 200_000;
/// Most rules at once.
pub const MAX_RULES: usize = 1000;
/// Longest injectable delay.
pub const MAX_DELAY_MS: u64 = 600_000;

/// What to do to a matching publish.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Fail at once with `kind`.
    Error {
        /// The error to return.
        kind: ErrorKind,
    },
    /// Hang until the attempt times out. (Empty struct variants, not unit ones, so that
    /// `deny_unknown_fields` refuses `{"type": "timeout", "extra": 1}` too.)
    Timeout {},
    /// Drop the connection, then fail with `connection_closed`.
    CloseConnection {},
    /// Wait `ms`, then publish.
    Delay {
        /// Milliseconds to wait.
        ms: u64,
    },
    /// Apply `fault` with `probability`, otherwise publish normally.
    Intermittent {
        /// In [0, 1].
        probability: f64,
        /// The fault to apply (not itself intermittent).
        fault: Box<Fault>,
    },
}

impl Fault {
    /// Checks the fault's parameters.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Fault::Delay { ms } if *ms > MAX_DELAY_MS => {
                Err(format!("delay ms ({ms}) must be at most {MAX_DELAY_MS}"))
            }
            Fault::Intermittent { probability, fault } => {
                if !(probability.is_finite() && (0.0..=1.0).contains(probability)) {
                    return Err(format!("probability ({probability}) must be within [0, 1]"));
                }
                if matches!(**fault, Fault::Intermittent { .. }) {
                    return Err(
                        "an intermittent fault cannot wrap another intermittent fault".into(),
                    );
                }
                fault.validate()
            }
            _ => Ok(()),
        }
    }
}

/// A fault and where it applies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// The provider whose publishes are faulted.
    pub provider_id: ProviderId,
    /// Only this tenant's publishes, if set.
    #[serde(default)]
    pub tenant_id: Option<TenantId>,
    /// The fault.
    pub fault: Fault,
}

/// One attempt that reached the broker side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AttemptRecord {
    /// Microseconds on the router's clock.
    pub at_us: u64,
    /// Tenant.
    pub tenant_id: String,
    /// Provider.
    pub provider_id: String,
    /// Whether a fault was applied to it.
    pub faulted: bool,
}

#[derive(Debug, Default)]
struct Journal {
    records: VecDeque<AttemptRecord>,
    total: u64,
}

/// A publisher wrapper that injects faults and journals attempts.
pub struct FaultInjector {
    inner: Arc<dyn Publisher>,
    clock: Arc<dyn Clock>,
    rules: RwLock<Vec<FaultRule>>,
    journal: Mutex<Journal>,
    rng: Mutex<SplitMix64>,
}

impl std::fmt::Debug for FaultInjector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultInjector")
            .field("inner", &self.inner)
            .field("rules", &self.rules())
            .finish()
    }
}

/// Refused rule changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    /// The fault's parameters are invalid.
    #[error("invalid fault: {0}")]
    Invalid(String),
    /// Too many rules.
    #[error("at most {MAX_RULES} fault rules may be set")]
    TooMany,
}

impl FaultInjector {
    /// Wraps `inner`; `seed` drives intermittent faults.
    pub fn new(inner: Arc<dyn Publisher>, clock: Arc<dyn Clock>, seed: u64) -> Self {
        FaultInjector {
            inner,
            clock,
            rules: RwLock::new(Vec::new()),
            journal: Mutex::new(Journal::default()),
            rng: Mutex::new(SplitMix64::new(seed)),
        }
    }

    /// Adds a rule, replacing any rule with the same scope.
    pub fn set(&self, rule: FaultRule) -> Result<(), FaultError> {
        rule.fault.validate().map_err(FaultError::Invalid)?;
        let mut rules = self.rules.write().unwrap_or_else(|p| p.into_inner());
        rules.retain(|r| !(r.provider_id == rule.provider_id && r.tenant_id == rule.tenant_id));
        if rules.len() >= MAX_RULES {
            return Err(FaultError::TooMany);
        }
        tracing::warn!(
            provider_id = %rule.provider_id,
            tenant_id = rule.tenant_id.as_ref().map_or("*", |t| t.as_str()),
            fault = %serde_json::to_string(&rule.fault).unwrap_or_default(),
            "fault injected"
        );
        rules.push(rule);
        Ok(())
    }

    /// Removes the rules for `provider` (and `tenant`, if given; all tenants' otherwise).
    /// Returns how many were removed.
    pub fn clear(&self, provider: &ProviderId, tenant: Option<&TenantId>) -> usize {
        let mut rules = self.rules.write().unwrap_or_else(|p| p.into_inner());
        let before = rules.len();
        rules.retain(|r| {
            !(r.provider_id == *provider && (tenant.is_none() || r.tenant_id.as_ref() == tenant))
        });
        before - rules.len()
    }

    /// Removes every rule.
    pub fn clear_all(&self) -> usize {
        let mut rules = self.rules.write().unwrap_or_else(|p| p.into_inner());
        let n = rules.len();
        rules.clear();
        if n > 0 {
            tracing::info!(cleared = n, "faults cleared");
        }
        n
    }

    /// The rules in force.
    pub fn rules(&self) -> Vec<FaultRule> {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Attempts journaled at or after `since_us` (the journal keeps the latest
    /// [`JOURNAL_CAPACITY`]), and the total ever seen.
    pub fn attempts(&self, since_us: u64) -> (Vec<AttemptRecord>, u64) {
        let journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        (
            journal
                .records
                .iter()
                .filter(|r| r.at_us >= since_us)
                .cloned()
                .collect(),
            journal.total,
        )
    }

    /// Clears rules and journal in place.
    pub fn reset_all(&self) {
        self.clear_all();
        *self.journal.lock().unwrap_or_else(|p| p.into_inner()) = Journal::default();
    }

    fn matching(&self, message: &OutgoingMessage) -> Option<Fault> {
        let rules = self.rules.read().unwrap_or_else(|p| p.into_inner());
        let for_provider = rules
            .iter()
            .rev()
            .filter(|r| r.provider_id == message.provider);
        let mut provider_wide = None;
        for rule in for_provider {
            match &rule.tenant_id {
                Some(t) if *t == message.tenant => return Some(rule.fault.clone()),
                Some(_) => {}
                None => provider_wide = provider_wide.or(Some(rule.fault.clone())),
            }
        }
        provider_wide
    }

    fn journal(&self, message: &OutgoingMessage, faulted: bool) {
        let mut journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        if journal.records.len() >= JOURNAL_CAPACITY {
            journal.records.pop_front();
        }
        journal.total += 1;
        journal.records.push_back(AttemptRecord {
            at_us: self.clock.now().as_nanos() / 1000,
            tenant_id: message.tenant.to_string(),
            provider_id: message.provider.to_string(),
            faulted,
        });
    }

    /// Resolves intermittent faults to the fault to apply now, if any.
    fn draw(&self, fault: Fault) -> Option<Fault> {
        match fault {
            Fault::Intermittent { probability, fault } => {
                let u = self
                    .rng
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .next_unit();
                (u < probability).then_some(*fault)
            }
            other => Some(other),
        }
    }
}

#[async_trait]
impl Publisher for FaultInjector {
    async fn publish(&self, message: &OutgoingMessage) -> Result<PublishAck, PublishError> {
        let fault = self.matching(message).and_then(|f| self.draw(f));
        self.journal(
            message,
            fault
                .as_ref()
                .is_some_and(|f| !matches!(f, Fault::Delay { .. })),
        );
        match fault {
            None => self.inner.publish(message).await,
            Some(Fault::Error { kind }) => Err(PublishError::new(kind, "injected fault")),
            Some(Fault::Timeout {}) => std::future::pending().await,
            Some(Fault::CloseConnection {}) => {
                self.inner.drop_connection().await;
                Err(PublishError::new(
                    ErrorKind::ConnectionClosed,
                    "injected fault: connection dropped",
                ))
            }
            Some(Fault::Delay { ms }) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                self.inner.publish(message).await
            }
            // `draw` never returns an intermittent fault; treat a nested one as no fault.
            Some(Fault::Intermittent { .. }) => self.inner.publish(message).await,
        }
    }

    async fn drop_connection(&self) {
        self.inner.drop_connection().await;
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::EmbeddedBroker;
    use beamline_core::{ManualClock, Timestamp};
    use bytes::Bytes;

    fn injector() -> (FaultInjector, Arc<EmbeddedBroker>) {
        let broker = Arc::new(EmbeddedBroker::new(10_000));
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(5)));
        (FaultInjector::new(broker.clone(), clock, 1), broker)
    }

    fn msg(tenant: &str, provider: &str, id: &str) -> OutgoingMessage {
        OutgoingMessage {
            tenant: TenantId::try_new(tenant).unwrap(),
            provider: ProviderId::try_new(provider).unwrap(),
            message_id: id.into(),
            payload: Bytes::from_static(b"1"),
        }
    }

    fn rule(provider: &str, tenant: Option<&str>, fault: Fault) -> FaultRule {
        FaultRule {
            provider_id: ProviderId::try_new(provider).unwrap(),
            tenant_id: tenant.map(|t| TenantId::try_new(t).unwrap()),
            fault,
        }
    }

    #[tokio::test]
    async fn errors_apply_to_their_scope_only_and_are_journaled() {
        let (f, broker) = injector();
        f.set(rule(
            "p1",
            Some("t1"),
            Fault::Error {
                kind: ErrorKind::BrokerUnavailable,
            },
        ))
        .unwrap();
        let err = f.publish(&msg("t1", "p1", "a")).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::BrokerUnavailable);
        f.publish(&msg("t2", "p1", "b")).await.unwrap();
        f.publish(&msg("t1", "p2", "c")).await.unwrap();
        assert_eq!(broker.len(), 2);
        let (records, total) = f.attempts(0);
        assert_eq!(total, 3);
        assert_eq!(records.iter().filter(|r| r.faulted).count(), 1);
        assert_eq!(records[0].at_us, 5000);
        assert_eq!(f.clear(&ProviderId::try_new("p1").unwrap(), None), 1);
        f.publish(&msg("t1", "p1", "d")).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_hangs_until_the_caller_gives_up() {
        let (f, _) = injector();
        f.set(rule("p1", None, Fault::Timeout {})).unwrap();
        let r = tokio::time::timeout(Duration::from_secs(2), f.publish(&msg("t", "p1", "a"))).await;
        assert!(r.is_err());
    }

    #[tokio::test]
    async fn intermittent_faults_hit_about_their_probability() {
        let (f, _) = injector();
        let inner = Box::new(Fault::Error {
            kind: ErrorKind::ConnectionRefused,
        });
        f.set(rule(
            "p",
            None,
            Fault::Intermittent {
                probability: 0.6,
                fault: inner,
            },
        ))
        .unwrap();
        let mut failed = 0;
        for i in 0..1000 {
            failed += usize::from(f.publish(&msg("t", "p", &i.to_string())).await.is_err());
        }
        assert!((520..680).contains(&failed), "{failed}");
    }

    #[test]
    fn invalid_faults_are_refused() {
        let (f, _) = injector();
        let bad = Fault::Intermittent {
            probability: 1.5,
            fault: Box::new(Fault::Timeout {}),
        };
        assert!(matches!(
            f.set(rule("p", None, bad)),
            Err(FaultError::Invalid(_))
        ));
        assert!(
            f.set(rule(
                "p",
                None,
                Fault::Delay {
                    ms: MAX_DELAY_MS + 1
                }
            ))
            .is_err()
        );
        let json = r#"{"provider_id":"p","fault":{"type":"error","kind":"timeout"}}"#;
        assert!(serde_json::from_str::<FaultRule>(json).is_ok());
        let bad_json = r#"{"provider_id":"p","fault":{"type":"explode"}}"#;
        assert!(serde_json::from_str::<FaultRule>(bad_json).is_err());
    }
}
