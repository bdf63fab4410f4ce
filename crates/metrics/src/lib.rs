//! Metrics of Beamline Router (DESIGN.md §7).
//!
//! This is the only crate that touches the Prometheus registry. It holds:
//! - [`names`]: every metric name, in one list;
//! - [`RouterMetrics`]: the registry and typed recording methods the other crates call;
//! - [`TenantLabels`]: the cap on tenant label cardinality;
//! - [`exposition`]: a parser of the text exposition, so readers need no registry access;
//! - the per-risk access modules that tests and the scenario runner read metrics through:
//!   [`r10`] (circuit breaker and retry) and [`r11`] (durable outbox).

pub mod exposition;
pub mod names;
pub mod r10;
pub mod r11;
mod registry;
mod tenants;

pub use exposition::{Sample, Snapshot};
pub use registry::{NO_PROVIDER, RequestOutcome, RouterMetrics};
pub use tenants::{OVERFLOW_TENANT, TenantLabels};
