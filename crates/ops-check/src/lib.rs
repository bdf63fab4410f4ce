//! Checks of `ops/` and `docs/` against the product (test-only crate, `publish = false`).
//!
//! The router's metric names, types, labels and label values are defined once, in
//! `beamline-metrics` (`names::ALL`) and `beamline-core` (reasons, states, outcomes, error
//! kinds). The Prometheus rules, the Grafana dashboard and the docs are hand-written text
//! that must keep agreeing with them. This crate's tests (`tests/*.rs`) make that
//! agreement mechanical:
//! - [`promql`] parses every expression and checks each selector's metric name, label
//!   names and label values against the product;
//! - [`rules`] and [`dashboard`] read the rule files and the dashboard JSON;
//! - [`markdown`] computes heading anchors the way GitHub renders them, so `runbook_url`s
//!   can be checked;
//! - [`promtool`] runs `promtool`, failing with a clear message when it is missing.
//!
//! Nothing here is used by the product at run time.

pub mod dashboard;
pub mod markdown;
pub mod promql;
pub mod promtool;
pub mod rules;

use std::path::{Path, PathBuf};

/// The repository root (two levels above this crate's manifest).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// A file of the repository, by its path from the root.
pub fn repo_path(relative: &str) -> PathBuf {
    repo_root().join(relative)
}

/// Reads a repository file, naming it in the error.
pub fn read_repo_file(relative: &str) -> Result<String, String> {
    let path = repo_path(relative);
    std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}
