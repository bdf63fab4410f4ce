//! R11 access module: the durable outbox's metrics, as tests and the scenario runner read
//! them (same rules as [`crate::r10`]).

use crate::exposition::Snapshot;
pub use crate::names::{OUTBOX_DELIVERED, OUTBOX_DEPTH, OUTBOX_ENQUEUED, OUTBOX_OLDEST_AGE};
pub use crate::r10::{WaitError, wait_for};

/// Metric name prefixes this module covers.
pub const PREFIXES: [&str; 1] = ["router_outbox_"];

/// The sum of `name` over samples carrying `labels`.
pub fn value(snapshot: &Snapshot, name: &str, labels: &[(&str, &str)]) -> f64 {
    snapshot.value(name, labels)
}

/// Messages waiting, over every key (or one key with `labels`).
pub fn depth(snapshot: &Snapshot, labels: &[(&str, &str)]) -> f64 {
    snapshot.value(OUTBOX_DEPTH, labels)
}

/// Messages ever accepted into the outbox.
pub fn enqueued(snapshot: &Snapshot, labels: &[(&str, &str)]) -> f64 {
    snapshot.value(OUTBOX_ENQUEUED, labels)
}

/// Messages ever delivered from the outbox.
pub fn delivered(snapshot: &Snapshot, labels: &[(&str, &str)]) -> f64 {
    snapshot.value(OUTBOX_DELIVERED, labels)
}

/// The age of the oldest waiting message over the selected keys, in seconds.
pub fn oldest_age_seconds(snapshot: &Snapshot, labels: &[(&str, &str)]) -> f64 {
    snapshot
        .select(OUTBOX_OLDEST_AGE, labels)
        .map(|s| s.value)
        .fold(0.0, f64::max)
}

/// The change of `name` over `labels` between two scrapes around an action.
pub fn delta(before: &Snapshot, after: &Snapshot, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.value(name, labels) - before.value(name, labels)
}

/// Every outbox sample, one per line.
pub fn dump(snapshot: &Snapshot) -> String {
    snapshot.dump(&PREFIXES)
}
