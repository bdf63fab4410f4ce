//! The registry and the typed recording methods the rest of the router calls.
//!
//! Labels are closed enums or bounded ids: tenant ids go through [`TenantLabels`] (capped),
//! provider ids are validated [`ProviderId`]s from configuration or requests, reasons,
//! states, outcomes and error kinds are enums from the core.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use beamline_core::breaker::{BreakerSnapshot, State, Transition, TransitionReason};
use beamline_core::{BreakerKey, ErrorKind, Outcome, ProviderId, TenantId};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::names::{self, MetricInfo};
use crate::tenants::TenantLabels;

/// The provider label value for requests refused before a provider was chosen.
pub const NO_PROVIDER: &str = "none";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    tenant_id: String,
    provider_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    tenant_id: String,
    provider_id: String,
    from: &'static str,
    to: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    tenant_id: String,
    provider_id: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    tenant_id: String,
    provider_id: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    tenant_id: String,
    provider_id: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorKindLabels {
    tenant_id: String,
    provider_id: String,
    error_kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestOutcomeLabels {
    outcome: &'static str,
}

/// How a publish request ended, as counted in `router_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestOutcome {
    /// 200: acknowledged by the broker.
    Published,
    /// 202: stored durably in the outbox.
    Queued,
    /// 503: refused (breaker open, outbox full).
    Rejected,
    /// 5xx/504: attempts failed and nothing was stored.
    Failed,
    /// 4xx: the request was invalid.
    Invalid,
}

impl RequestOutcome {
    /// The `outcome` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Published => "published",
            RequestOutcome::Queued => "queued",
            RequestOutcome::Rejected => "rejected",
            RequestOutcome::Failed => "failed",
            RequestOutcome::Invalid => "invalid",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Buckets(&'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric of the router, with typed recording methods.
#[derive(Debug)]
pub struct RouterMetrics {
    registry: Registry,
    tenants: TenantLabels,
    breaker_state: Family<KeyLabels, Gauge>,
    transitions: Family<TransitionLabels, Counter>,
    trigger_reason: Family<ReasonLabels, Counter>,
    last_trigger: Family<ReasonLabels, Gauge>,
    rejections: Family<KeyLabels, Counter>,
    calls: Family<OutcomeLabels, Counter>,
    error_rate: Family<KeyLabels, FloatGauge>,
    slow_call_rate: Family<KeyLabels, FloatGauge>,
    open_remaining: Family<KeyLabels, FloatGauge>,
    publish_attempts: Family<ResultLabels, Counter>,
    publish_errors: Family<ErrorKindLabels, Counter>,
    publish_retries: Family<KeyLabels, Counter>,
    publish_duration: Family<ProviderLabels, Histogram, Buckets>,
    requests: Family<OutcomeLabels, Counter>,
    request_duration: Family<RequestOutcomeLabels, Histogram, Buckets>,
    outbox_depth: Family<KeyLabels, Gauge>,
    outbox_oldest_age: Family<KeyLabels, FloatGauge>,
    outbox_enqueued: Family<KeyLabels, Counter>,
    outbox_delivered: Family<KeyLabels, Counter>,
}

fn info(name: &str) -> &'static MetricInfo {
    // Every name used below is in `names::ALL`; a unit test renders them all.
    names::ALL
        .iter()
        .find(|m| m.name == name)
        .unwrap_or(&names::ALL[0])
}

fn register<M>(registry: &mut Registry, name: &str, metric: &M)
where
    M: prometheus_client::registry::Metric + Clone,
{
    let info = info(name);
    registry.register(names::registration_name(info), info.help, metric.clone());
}

impl RouterMetrics {
    /// A fresh registry; at most `max_tenant_labels` tenants get their own label value.
    pub fn new(max_tenant_labels: usize) -> Self {
        let m = RouterMetrics {
            registry: Registry::default(),
            tenants: TenantLabels::new(max_tenant_labels),
            breaker_state: Family::default(),
            transitions: Family::default(),
            trigger_reason: Family::default(),
            last_trigger: Family::default(),
            rejections: Family::default(),
            calls: Family::default(),
            error_rate: Family::default(),
            slow_call_rate: Family::default(),
            open_remaining: Family::default(),
            publish_attempts: Family::default(),
            publish_errors: Family::default(),
            publish_retries: Family::default(),
            publish_duration: Family::new_with_constructor(Buckets(LATENCY_BUCKETS)),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(Buckets(LATENCY_BUCKETS)),
            outbox_depth: Family::default(),
            outbox_oldest_age: Family::default(),
            outbox_enqueued: Family::default(),
            outbox_delivered: Family::default(),
        };
        let mut r = Registry::default();
        register(&mut r, names::BREAKER_STATE, &m.breaker_state);
        register(&mut r, names::BREAKER_TRANSITIONS, &m.transitions);
        register(&mut r, names::BREAKER_TRIGGER_REASON, &m.trigger_reason);
        register(&mut r, names::BREAKER_LAST_TRIGGER, &m.last_trigger);
        register(&mut r, names::BREAKER_REJECTIONS, &m.rejections);
        register(&mut r, names::BREAKER_CALLS, &m.calls);
        register(&mut r, names::BREAKER_ERROR_RATE, &m.error_rate);
        register(&mut r, names::BREAKER_SLOW_CALL_RATE, &m.slow_call_rate);
        register(&mut r, names::BREAKER_OPEN_REMAINING, &m.open_remaining);
        register(&mut r, names::PUBLISH_ATTEMPTS, &m.publish_attempts);
        register(&mut r, names::PUBLISH_ERRORS, &m.publish_errors);
        register(&mut r, names::PUBLISH_RETRIES, &m.publish_retries);
        register(&mut r, names::PUBLISH_DURATION, &m.publish_duration);
        register(&mut r, names::REQUESTS, &m.requests);
        register(&mut r, names::REQUEST_DURATION, &m.request_duration);
        register(&mut r, names::OUTBOX_DEPTH, &m.outbox_depth);
        register(&mut r, names::OUTBOX_OLDEST_AGE, &m.outbox_oldest_age);
        register(&mut r, names::OUTBOX_ENQUEUED, &m.outbox_enqueued);
        register(&mut r, names::OUTBOX_DELIVERED, &m.outbox_delivered);
        RouterMetrics { registry: r, ..m }
    }

    fn key(&self, key: &BreakerKey) -> KeyLabels {
        self.key_of(key.tenant(), key.provider().as_str())
    }

    fn key_of(&self, tenant: &TenantId, provider: &str) -> KeyLabels {
        KeyLabels {
            tenant_id: self.tenants.label(tenant),
            provider_id: provider.to_owned(),
        }
    }

    /// Counts a breaker transition and moves the state gauge.
    pub fn breaker_transition(&self, key: &BreakerKey, t: &Transition) {
        let k = self.key(key);
        self.transitions
            .get_or_create(&TransitionLabels {
                tenant_id: k.tenant_id.clone(),
                provider_id: k.provider_id.clone(),
                from: t.from.as_str(),
                to: t.to.as_str(),
                reason: t.reason.as_str(),
            })
            .inc();
        self.breaker_state.get_or_create(&k).set(t.to.gauge_value());
        if t.to == State::Open && t.reason.is_trigger() {
            let reason = |reason| ReasonLabels {
                tenant_id: k.tenant_id.clone(),
                provider_id: k.provider_id.clone(),
                reason,
            };
            self.trigger_reason
                .get_or_create(&reason(t.reason.as_str()))
                .inc();
            for r in TransitionReason::ALL.into_iter().filter(|r| r.is_trigger()) {
                self.last_trigger
                    .get_or_create(&reason(r.as_str()))
                    .set(i64::from(r == t.reason));
            }
        }
    }

    /// Counts a call the breaker refused.
    pub fn breaker_rejection(&self, key: &BreakerKey) {
        self.rejections.get_or_create(&self.key(key)).inc();
    }

    /// Counts an outcome reported to a breaker.
    pub fn breaker_outcome(&self, key: &BreakerKey, outcome: Outcome) {
        let k = self.key(key);
        self.calls
            .get_or_create(&OutcomeLabels {
                tenant_id: k.tenant_id,
                provider_id: k.provider_id,
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Publishes a breaker's current view (state, window rates, open time left).
    pub fn breaker_view(&self, key: &BreakerKey, snapshot: &BreakerSnapshot) {
        let k = self.key(key);
        self.breaker_state
            .get_or_create(&k)
            .set(snapshot.state.gauge_value());
        self.error_rate.get_or_create(&k).set(snapshot.error_rate);
        self.slow_call_rate
            .get_or_create(&k)
            .set(snapshot.slow_call_rate);
        let remaining = snapshot
            .open_remaining
            .unwrap_or(Duration::ZERO)
            .as_secs_f64();
        self.open_remaining.get_or_create(&k).set(remaining);
    }

    /// Counts one publish attempt and its duration.
    pub fn publish_attempt(
        &self,
        key: &BreakerKey,
        result: Result<(), ErrorKind>,
        duration: Duration,
    ) {
        let k = self.key(key);
        let outcome = if result.is_ok() { "success" } else { "failure" };
        if let Err(kind) = result {
            self.publish_errors
                .get_or_create(&ErrorKindLabels {
                    tenant_id: k.tenant_id.clone(),
                    provider_id: k.provider_id.clone(),
                    error_kind: kind.as_str(),
                })
                .inc();
        }
        self.publish_duration
            .get_or_create(&ProviderLabels {
                provider_id: k.provider_id.clone(),
            })
            .observe(duration.as_secs_f64());
        self.publish_attempts
            .get_or_create(&ResultLabels {
                tenant_id: k.tenant_id,
                provider_id: k.provider_id,
                result: outcome,
            })
            .inc();
    }

    /// Counts one retry.
    pub fn publish_retry(&self, key: &BreakerKey) {
        self.publish_retries.get_or_create(&self.key(key)).inc();
    }

    /// Counts one request. `tenant`/`provider` are absent when the request was refused
    /// before they were known.
    pub fn request(
        &self,
        tenant: Option<&TenantId>,
        provider: Option<&ProviderId>,
        outcome: RequestOutcome,
        duration: Duration,
    ) {
        let tenant_id = tenant.map_or_else(|| NO_PROVIDER.to_owned(), |t| self.tenants.label(t));
        let provider_id = provider.map_or(NO_PROVIDER, |p| p.as_str()).to_owned();
        self.requests
            .get_or_create(&OutcomeLabels {
                tenant_id,
                provider_id,
                outcome: outcome.as_str(),
            })
            .inc();
        self.request_duration
            .get_or_create(&RequestOutcomeLabels {
                outcome: outcome.as_str(),
            })
            .observe(duration.as_secs_f64());
    }

    /// Sets a key's outbox depth and oldest age.
    pub fn outbox_level(&self, key: &BreakerKey, depth: u64, oldest_age: Duration) {
        let k = self.key(key);
        self.outbox_depth
            .get_or_create(&k)
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
        self.outbox_oldest_age
            .get_or_create(&k)
            .set(oldest_age.as_secs_f64());
    }

    /// Counts a message accepted into the outbox.
    pub fn outbox_enqueued(&self, key: &BreakerKey) {
        self.outbox_enqueued.get_or_create(&self.key(key)).inc();
    }

    /// Counts a message delivered from the outbox.
    pub fn outbox_delivered(&self, key: &BreakerKey) {
        self.outbox_delivered.get_or_create(&self.key(key)).inc();
    }

    /// The text exposition (OpenMetrics text format).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// The classic Prometheus text format (0.0.4), for scrapers that do not ask for
    /// OpenMetrics: counter families are named with their `_total` suffix in `HELP`/`TYPE`
    /// (as `promtool check metrics` expects) and there is no `# EOF`.
    pub fn render_prometheus_text(&self) -> String {
        let open = self.render();
        let counters: Vec<&str> = names::ALL
            .iter()
            .filter(|m| m.kind == names::Kind::Counter)
            .map(names::registration_name)
            .collect();
        let mut out = String::with_capacity(open.len());
        for line in open.lines() {
            if line == "# EOF" {
                continue;
            }
            let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
                let rest = line.strip_prefix(prefix)?;
                let (family, tail) = rest.split_once(' ')?;
                counters
                    .contains(&family)
                    .then(|| format!("{prefix}{family}_total {tail}"))
            });
            match renamed {
                Some(l) => out.push_str(&l),
                None => out.push_str(line),
            }
            out.push('\n');
        }
        out
    }

    /// Clears every series and the tenant label table, in place.
    pub fn reset_all(&self) {
        self.breaker_state.clear();
        self.transitions.clear();
        self.trigger_reason.clear();
        self.last_trigger.clear();
        self.rejections.clear();
        self.calls.clear();
        self.error_rate.clear();
        self.slow_call_rate.clear();
        self.open_remaining.clear();
        self.publish_attempts.clear();
        self.publish_errors.clear();
        self.publish_retries.clear();
        self.publish_duration.clear();
        self.requests.clear();
        self.request_duration.clear();
        self.outbox_depth.clear();
        self.outbox_oldest_age.clear();
        self.outbox_enqueued.clear();
        self.outbox_delivered.clear();
        self.tenants.reset_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::Snapshot;
    use crate::{r10, r11};
    use beamline_core::Timestamp;
    use beamline_core::breaker::{RuleSet, TransitionReason};

    fn key() -> BreakerKey {
        BreakerKey::new(
            TenantId::try_new("t1").unwrap(),
            ProviderId::try_new("p1").unwrap(),
        )
    }

    #[test]
    fn every_listed_metric_appears_in_the_exposition_once_used() {
        let m = RouterMetrics::new(10);
        let k = key();
        let opening = Transition {
            at: Timestamp::ZERO,
            from: State::Closed,
            to: State::Open,
            reason: TransitionReason::ErrorRateThresholdExceeded,
            rules: RuleSet::EMPTY,
        };
        m.breaker_transition(&k, &opening);
        m.breaker_rejection(&k);
        m.breaker_outcome(&k, Outcome::Success);
        let snapshot = beamline_core::breaker::Breaker::new(
            std::sync::Arc::new(beamline_core::breaker::BreakerSettings::defaults()),
            Timestamp::ZERO,
            0,
        )
        .snapshot(Timestamp::ZERO, &mut |_| {});
        m.breaker_view(&k, &snapshot);
        m.publish_attempt(&k, Err(ErrorKind::Timeout), Duration::from_millis(3));
        m.publish_retry(&k);
        m.request(
            Some(k.tenant()),
            Some(k.provider()),
            RequestOutcome::Published,
            Duration::from_millis(4),
        );
        m.outbox_level(&k, 2, Duration::from_secs(1));
        m.outbox_enqueued(&k);
        m.outbox_delivered(&k);
        let text = m.render();
        let s = Snapshot::parse(&text).unwrap();
        for info in names::ALL {
            let series = match info.kind {
                names::Kind::Histogram => format!("{}_count", info.name),
                _ => info.name.to_owned(),
            };
            assert!(s.has(&series, &[]), "{} missing from:\n{text}", info.name);
        }
        assert_eq!(
            r10::latest_trigger_reason(&s, "t1", "p1"),
            Some(r10::ERROR_RATE_THRESHOLD_EXCEEDED)
        );
        assert_eq!(
            r10::openings(&s, "t1", "p1", r10::ERROR_RATE_THRESHOLD_EXCEEDED),
            1.0
        );
        assert_eq!(r11::depth(&s, &[]), 2.0);
        m.reset_all();
        assert!(
            !Snapshot::parse(&m.render())
                .unwrap()
                .has(r10::BREAKER_STATE, &[])
        );
    }
}
