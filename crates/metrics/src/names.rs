//! Every metric name the router exports, as it appears in the exposition.
//!
//! Counters end in `_total`; `prometheus-client` appends the suffix itself, so the registry
//! registers them without it. [`ALL`] lists every name with its type and help text; a test
//! checks the exposition against it and the docs check every name is documented.

/// Breaker state per key: 0 closed, 1 open, 2 half-open.
pub const BREAKER_STATE: &str = "router_circuit_breaker_state";
/// Transitions per key, `from`, `to` and `reason`.
pub const BREAKER_TRANSITIONS: &str = "router_circuit_breaker_state_transitions_total";
/// Openings per key by trigger `reason`.
pub const BREAKER_TRIGGER_REASON: &str = "router_circuit_breaker_trigger_reason_total";
/// 1 for the reason of the key's latest opening, 0 for its earlier reasons.
pub const BREAKER_LAST_TRIGGER: &str = "router_circuit_breaker_last_trigger";
/// Calls refused by the breaker (fail-fast).
pub const BREAKER_REJECTIONS: &str = "router_circuit_breaker_rejections_total";
/// Outcomes reported to the breaker, by `outcome`.
pub const BREAKER_CALLS: &str = "router_circuit_breaker_calls_total";
/// Window error rate.
pub const BREAKER_ERROR_RATE: &str = "router_circuit_breaker_error_rate";
/// Window slow-call rate.
pub const BREAKER_SLOW_CALL_RATE: &str = "router_circuit_breaker_slow_call_rate";
/// Seconds left before an open breaker half-opens (0 when not open).
pub const BREAKER_OPEN_REMAINING: &str = "router_circuit_breaker_open_remaining_seconds";
/// Publish attempts by `result` (`success`, `failure`).
pub const PUBLISH_ATTEMPTS: &str = "router_publish_attempts_total";
/// Failed publish attempts by `error_kind`.
pub const PUBLISH_ERRORS: &str = "router_publish_errors_total";
/// Retries made (attempts after the first).
pub const PUBLISH_RETRIES: &str = "router_publish_retries_total";
/// Publish attempt duration, by `provider_id` only.
pub const PUBLISH_DURATION: &str = "router_publish_duration_seconds";
/// Requests by `outcome` (`published`, `queued`, `rejected`, `failed`, `invalid`).
pub const REQUESTS: &str = "router_requests_total";
/// Request duration, by `outcome` only.
pub const REQUEST_DURATION: &str = "router_request_duration_seconds";
/// Messages waiting in the outbox.
pub const OUTBOX_DEPTH: &str = "router_outbox_depth";
/// Age of the oldest message waiting in the outbox.
pub const OUTBOX_OLDEST_AGE: &str = "router_outbox_oldest_age_seconds";
/// Messages accepted into the outbox.
pub const OUTBOX_ENQUEUED: &str = "router_outbox_enqueued_total";
/// Messages delivered from the outbox to the broker.
pub const OUTBOX_DELIVERED: &str = "router_outbox_delivered_total";

/// The Prometheus type of a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic counter.
    Counter,
    /// Gauge.
    Gauge,
    /// Histogram.
    Histogram,
}

/// One exported metric: name, type, labels and help.
#[derive(Clone, Copy, Debug)]
pub struct MetricInfo {
    /// Exposition name.
    pub name: &'static str,
    /// Type.
    pub kind: Kind,
    /// Label names.
    pub labels: &'static [&'static str],
    /// Help text.
    pub help: &'static str,
}

const KEY: &[&str] = &["tenant_id", "provider_id"];

/// Every metric, in one list.
pub const ALL: &[MetricInfo] = &[
    MetricInfo {
        name: BREAKER_STATE,
        kind: Kind::Gauge,
        labels: KEY,
        help: "Circuit breaker state: 0 closed, 1 open, 2 half_open",
    },
    MetricInfo {
        name: BREAKER_TRANSITIONS,
        kind: Kind::Counter,
        labels: &["tenant_id", "provider_id", "from", "to", "reason"],
        help: "Circuit breaker state transitions",
    },
    MetricInfo {
        name: BREAKER_TRIGGER_REASON,
        kind: Kind::Counter,
        labels: &["tenant_id", "provider_id", "reason"],
        help: "Circuit breaker openings by trigger reason",
    },
    MetricInfo {
        name: BREAKER_LAST_TRIGGER,
        kind: Kind::Gauge,
        labels: &["tenant_id", "provider_id", "reason"],
        help: "1 for the reason of the latest opening of the breaker, 0 for earlier reasons",
    },
    MetricInfo {
        name: BREAKER_REJECTIONS,
        kind: Kind::Counter,
        labels: KEY,
        help: "Calls rejected by an open or saturated half-open breaker",
    },
    MetricInfo {
        name: BREAKER_CALLS,
        kind: Kind::Counter,
        labels: &["tenant_id", "provider_id", "outcome"],
        help: "Call outcomes reported to the breaker",
    },
    MetricInfo {
        name: BREAKER_ERROR_RATE,
        kind: Kind::Gauge,
        labels: KEY,
        help: "Failures / calls in the breaker window",
    },
    MetricInfo {
        name: BREAKER_SLOW_CALL_RATE,
        kind: Kind::Gauge,
        labels: KEY,
        help: "Slow calls / calls in the breaker window",
    },
    MetricInfo {
        name: BREAKER_OPEN_REMAINING,
        kind: Kind::Gauge,
        labels: KEY,
        help: "Seconds before an open breaker half-opens",
    },
    MetricInfo {
        name: PUBLISH_ATTEMPTS,
        kind: Kind::Counter,
        labels: &["tenant_id", "provider_id", "result"],
        help: "Publish attempts made to the broker",
    },
    MetricInfo {
        name: PUBLISH_ERRORS,
        kind: Kind::Counter,
        labels: &["tenant_id", "provider_id", "error_kind"],
        help: "Failed publish attempts by error kind",
    },
    MetricInfo {
        name: PUBLISH_RETRIES,
        kind: Kind::Counter,
        labels: KEY,
        help: "Publish retries (attempts after the first)",
    },
    MetricInfo {
        name: PUBLISH_DURATION,
        kind: Kind::Histogram,
        labels: &["provider_id"],
        help: "Publish attempt duration (publish + ack)",
    },
    MetricInfo {
        name: REQUESTS,
        kind: Kind::Counter,
        labels: &["tenant_id", "provider_id", "outcome"],
        help: "Publish requests by outcome",
    },
    MetricInfo {
        name: REQUEST_DURATION,
        kind: Kind::Histogram,
        labels: &["outcome"],
        help: "Publish request duration",
    },
    MetricInfo {
        name: OUTBOX_DEPTH,
        kind: Kind::Gauge,
        labels: KEY,
        help: "Messages waiting in the durable outbox",
    },
    MetricInfo {
        name: OUTBOX_OLDEST_AGE,
        kind: Kind::Gauge,
        labels: KEY,
        help: "Age of the oldest message waiting in the outbox",
    },
    MetricInfo {
        name: OUTBOX_ENQUEUED,
        kind: Kind::Counter,
        labels: KEY,
        help: "Messages accepted into the outbox",
    },
    MetricInfo {
        name: OUTBOX_DELIVERED,
        kind: Kind::Counter,
        labels: KEY,
        help: "Messages delivered from the outbox",
    },
];

/// The name to register with `prometheus-client` (counters without `_total`).
pub fn registration_name(info: &MetricInfo) -> &'static str {
    match info.kind {
        Kind::Counter => info.name.strip_suffix("_total").unwrap_or(info.name),
        Kind::Gauge | Kind::Histogram => info.name,
    }
}
