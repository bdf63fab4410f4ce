//! What happens to breakers, fanned out to metrics, logs and a bounded journal.
//!
//! Every transition becomes: a metrics update, one structured log event (WARN when a breaker
//! opens, INFO otherwise) with the key, `from`, `to`, `reason` and `rules`, and a record in
//! the transition journal that the admin API serves (`GET /admin/transitions`) so that
//! operators and the scenario runner can see exactly when each breaker moved.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use beamline_core::breaker::{BreakerObserver, RecordEffect, Rejection, State, Transition};
use beamline_core::{BreakerKey, Outcome};
use beamline_metrics::RouterMetrics;
use serde::Serialize;

/// Transitions kept in the journal; the oldest are dropped first.
pub const JOURNAL_CAPACITY: usize = 50_000;

/// One transition, as served by the admin API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TransitionRecord {
    /// Microseconds on the router's clock when it logically happened.
    pub at_us: u64,
    /// Tenant.
    pub tenant_id: String,
    /// Provider.
    pub provider_id: String,
    /// State before.
    pub from: &'static str,
    /// State after.
    pub to: &'static str,
    /// Reason.
    pub reason: &'static str,
    /// Every opening rule that held.
    pub rules: Vec<&'static str>,
}

/// The registry's observer.
#[derive(Debug)]
pub struct BreakerEvents {
    metrics: Arc<RouterMetrics>,
    journal: Mutex<VecDeque<TransitionRecord>>,
}

impl BreakerEvents {
    /// Events feeding `metrics`.
    pub fn new(metrics: Arc<RouterMetrics>) -> Self {
        BreakerEvents {
            metrics,
            journal: Mutex::new(VecDeque::new()),
        }
    }

    /// Journaled transitions at or after `since_us`.
    pub fn transitions(&self, since_us: u64) -> Vec<TransitionRecord> {
        let journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        journal
            .iter()
            .filter(|r| r.at_us >= since_us)
            .cloned()
            .collect()
    }

    /// Empties the journal in place.
    pub fn reset_all(&self) {
        self.journal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

impl BreakerObserver for BreakerEvents {
    fn on_transition(&self, key: &BreakerKey, t: &Transition) {
        self.metrics.breaker_transition(key, t);
        let rules: Vec<&'static str> = t.rules.reasons().collect();
        let rule_list = rules.join(",");
        if t.to == State::Open {
            tracing::warn!(
                tenant_id = %key.tenant(), provider_id = %key.provider(),
                from = t.from.as_str(), to = t.to.as_str(), reason = t.reason.as_str(), rules = %rule_list,
                "circuit breaker opened"
            );
        } else {
            tracing::info!(
                tenant_id = %key.tenant(), provider_id = %key.provider(),
                from = t.from.as_str(), to = t.to.as_str(), reason = t.reason.as_str(), rules = %rule_list,
                "circuit breaker transition"
            );
        }
        let mut journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        if journal.len() >= JOURNAL_CAPACITY {
            journal.pop_front();
        }
        journal.push_back(TransitionRecord {
            at_us: t.at.as_nanos() / 1000,
            tenant_id: key.tenant().to_string(),
            provider_id: key.provider().to_string(),
            from: t.from.as_str(),
            to: t.to.as_str(),
            reason: t.reason.as_str(),
            rules,
        });
    }

    fn on_rejection(&self, key: &BreakerKey, _rejection: &Rejection) {
        self.metrics.breaker_rejection(key);
    }

    fn on_outcome(&self, key: &BreakerKey, outcome: Outcome, _effect: RecordEffect) {
        self.metrics.breaker_outcome(key, outcome);
    }
}
