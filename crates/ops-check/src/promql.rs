//! PromQL checks against the product's metrics.
//!
//! [`check`] parses an expression with `promql-parser` and checks, for every selector:
//! - the metric name is a series the router exports (a name of `names::ALL`; for a
//!   histogram one of its `_bucket`, `_sum`, `_count` series, never the bare name) or the
//!   name of a recording rule we define;
//! - every matched label is one of that metric's labels (`le` only on `_bucket`; the
//!   scrape's `job` and `instance` everywhere);
//! - every label value matched with `=`, `!=` or a plain alternation `a|b` is a value the
//!   product can emit for that label (reasons, states, outcomes, error kinds).
//!
//! Grouping and matching labels (`by`, `without`, `on`, `ignoring`, `group_left`) must be
//! label names some metric carries.

use std::collections::BTreeSet;

use beamline_core::breaker::{State, TransitionReason};
use beamline_core::{ErrorKind, FailureKind, Outcome};
use beamline_metrics::RequestOutcome;
use beamline_metrics::names::{self, Kind, MetricInfo};
use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{self, Expr, LabelModifier, VectorSelector};
use promql_parser::util::{ExprVisitor, walk_expr};

/// Labels every scraped series carries (added by Prometheus).
pub const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// The `outcome` values of `router_requests_total` and `router_request_duration_seconds`.
pub fn request_outcomes() -> Vec<&'static str> {
    use RequestOutcome::{Failed, Invalid, Published, Queued, Rejected};
    // Exhaustive on purpose: a new variant stops this crate compiling until it is listed.
    const fn listed(o: RequestOutcome) {
        match o {
            Published | Queued | Rejected | Failed | Invalid => {}
        }
    }
    listed(Published);
    [Published, Queued, Rejected, Failed, Invalid]
        .into_iter()
        .map(RequestOutcome::as_str)
        .collect()
}

/// One selector found in an expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    /// The metric name (from the name or a `__name__="..."` matcher).
    pub name: Option<String>,
    /// `(label, op, value)` for every other matcher; `op` is `=`, `!=`, `=~` or `!~`.
    pub matchers: Vec<(String, &'static str, String)>,
}

/// Everything an expression reads.
#[derive(Clone, Debug, Default)]
pub struct Reads {
    /// Every selector, in order of appearance.
    pub selectors: Vec<Selector>,
    /// Labels named in `by`, `without`, `on`, `ignoring`, `group_left`, `group_right`.
    pub grouping_labels: BTreeSet<String>,
}

fn op_str(op: &MatchOp) -> &'static str {
    match op {
        MatchOp::Equal => "=",
        MatchOp::NotEqual => "!=",
        MatchOp::Re(_) => "=~",
        MatchOp::NotRe(_) => "!~",
    }
}

fn selector(vs: &VectorSelector) -> Selector {
    let mut name = vs.name.clone();
    let mut matchers = Vec::new();
    let all: Vec<&Matcher> = vs
        .matchers
        .matchers
        .iter()
        .chain(vs.matchers.or_matchers.iter().flatten())
        .collect();
    for m in all {
        if m.name == "__name__" && matches!(m.op, MatchOp::Equal) {
            name = Some(m.value.clone());
        } else {
            matchers.push((m.name.clone(), op_str(&m.op), m.value.clone()));
        }
    }
    Selector { name, matchers }
}

fn modifier_labels(m: &LabelModifier, out: &mut BTreeSet<String>) {
    out.extend(m.labels().labels.iter().cloned());
}

struct Collector(Reads);

impl ExprVisitor for Collector {
    type Error = String;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
        match expr {
            Expr::VectorSelector(vs) => self.0.selectors.push(selector(vs)),
            Expr::MatrixSelector(ms) => self.0.selectors.push(selector(&ms.vs)),
            Expr::Aggregate(agg) => {
                if let Some(m) = &agg.modifier {
                    modifier_labels(m, &mut self.0.grouping_labels);
                }
            }
            Expr::Binary(bin) => {
                if let Some(modifier) = &bin.modifier {
                    if let Some(m) = &modifier.matching {
                        modifier_labels(m, &mut self.0.grouping_labels);
                    }
                    if let Some(labels) = modifier.card.labels() {
                        self.0.grouping_labels.extend(labels.labels.iter().cloned());
                    }
                }
            }
            _ => {}
        }
        Ok(true)
    }
}

/// Parses `expr` and lists what it reads.
pub fn reads(expr: &str) -> Result<Reads, String> {
    let ast = parser::parse(expr).map_err(|e| format!("does not parse as PromQL: {e}"))?;
    let mut collector = Collector(Reads::default());
    walk_expr(&mut collector, &ast)?;
    Ok(collector.0)
}

/// The exported series a name refers to: the metric and, for histograms, the suffix.
pub fn exported(series: &str) -> Option<(&'static MetricInfo, &'static str)> {
    names::ALL.iter().find_map(|m| match m.kind {
        Kind::Histogram => ["_bucket", "_sum", "_count"]
            .into_iter()
            .find(|suffix| series.strip_suffix(suffix) == Some(m.name))
            .map(|suffix| (m, suffix)),
        Kind::Counter | Kind::Gauge => (series == m.name).then_some((m, "")),
    })
}

/// The values the product can put in `label` of `metric`, when that label is a closed set.
pub fn closed_values(metric: &str, label: &str) -> Option<Vec<&'static str>> {
    let states = || {
        [State::Closed, State::Open, State::HalfOpen]
            .into_iter()
            .map(State::as_str)
            .collect()
    };
    match label {
        "reason" => Some(
            TransitionReason::ALL
                .into_iter()
                .map(TransitionReason::as_str)
                .collect(),
        ),
        "from" | "to" => Some(states()),
        "error_kind" => Some(ErrorKind::ALL.into_iter().map(ErrorKind::as_str).collect()),
        "result" => Some(vec!["success", "failure"]),
        "outcome" if metric == names::BREAKER_CALLS => Some(
            [
                Outcome::Success,
                Outcome::Failure(FailureKind::Timeout),
                Outcome::Ignored,
            ]
            .into_iter()
            .map(Outcome::as_str)
            .collect(),
        ),
        "outcome" => Some(request_outcomes()),
        _ => None,
    }
}

/// The literal alternatives of a regex like `a|b_c`, or `None` for anything fancier.
fn plain_alternatives(regex: &str) -> Option<Vec<&str>> {
    let plain = regex
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '|');
    plain.then(|| regex.split('|').collect())
}

/// Every label name some exported metric carries, plus the target labels and `le`.
pub fn known_label_names() -> BTreeSet<&'static str> {
    names::ALL
        .iter()
        .flat_map(|m| m.labels.iter().copied())
        .chain(TARGET_LABELS)
        .chain(["le"])
        .collect()
}

/// Checks one expression. `recorded` are the recording rules' names, `placeholders` label
/// values that stand for dashboard variables (not checked against closed sets). Returns
/// every problem found, empty when the expression is fine.
pub fn check(expr: &str, recorded: &BTreeSet<String>, placeholders: &[&str]) -> Vec<String> {
    let reads = match reads(expr) {
        Ok(r) => r,
        Err(e) => return vec![e],
    };
    let mut problems = Vec::new();
    for sel in &reads.selectors {
        let Some(name) = &sel.name else {
            problems.push(format!("a selector has no metric name: {sel:?}"));
            continue;
        };
        if recorded.contains(name) {
            continue;
        }
        let Some((info, suffix)) = exported(name) else {
            problems.push(format!(
                "`{name}` is neither a series the router exports (beamline_metrics::names::ALL) \
                 nor a recording rule in ops/prometheus/recording.yml"
            ));
            continue;
        };
        for (label, op, value) in &sel.matchers {
            let allowed = info.labels.contains(&label.as_str())
                || TARGET_LABELS.contains(&label.as_str())
                || (label == "le" && suffix == "_bucket");
            if !allowed {
                problems.push(format!(
                    "`{name}` has no label `{label}` (its labels: {:?})",
                    info.labels
                ));
                continue;
            }
            if placeholders.contains(&value.as_str()) {
                continue;
            }
            let Some(values) = closed_values(info.name, label) else {
                continue;
            };
            let literals = match *op {
                "=" | "!=" => Some(vec![value.as_str()]),
                _ => plain_alternatives(value),
            };
            for literal in literals.unwrap_or_default() {
                if !values.contains(&literal) {
                    problems.push(format!(
                        "`{name}{{{label}{op}\"{value}\"}}`: `{literal}` is not a value the router \
                         emits for `{label}` ({values:?})"
                    ));
                }
            }
        }
    }
    let known = known_label_names();
    for label in &reads.grouping_labels {
        if !known.contains(label.as_str()) {
            problems.push(format!(
                "groups or matches on `{label}`, a label no router metric has"
            ));
        }
    }
    problems
}

/// Every metric (as named in `names::ALL`) an expression reads, directly.
pub fn metrics_read(expr: &str) -> Result<BTreeSet<&'static str>, String> {
    Ok(reads(expr)?
        .selectors
        .iter()
        .filter_map(|s| s.name.as_deref().and_then(exported))
        .map(|(info, _)| info.name)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(expr: &str) -> Vec<String> {
        check(
            expr,
            &BTreeSet::from(["a:router_x:b".to_owned()]),
            &["PLACEHOLDER"],
        )
    }

    #[test]
    fn accepts_exported_series_recorded_names_and_valid_values() {
        let expr = r#"sum by (provider_id, le) (rate(router_publish_duration_seconds_bucket{provider_id="p"}[5m]))
            / on (provider_id) group_left a:router_x:b
            + sum(router_circuit_breaker_state_transitions_total{reason=~"half_open_failure|manual", to="open", tenant_id="PLACEHOLDER"})"#;
        assert_eq!(problems(expr), Vec::<String>::new());
    }

    #[test]
    fn rejects_unknown_metrics_and_bare_histogram_names() {
        assert_eq!(problems("router_nope_total").len(), 1);
        assert_eq!(problems("router_publish_duration_seconds").len(), 1);
        assert_eq!(problems("router_circuit_breaker_state_total").len(), 1);
    }

    #[test]
    fn rejects_labels_the_metric_does_not_have() {
        // The publish histogram has only provider_id.
        assert_eq!(
            problems(r#"router_publish_duration_seconds_count{tenant_id="t"}"#).len(),
            1
        );
        assert_eq!(problems(r#"router_outbox_depth{le="1"}"#).len(), 1);
        assert_eq!(problems("sum by (provider) (router_outbox_depth)").len(), 1);
    }

    #[test]
    fn rejects_label_values_the_router_never_emits() {
        assert_eq!(
            problems(r#"router_circuit_breaker_trigger_reason_total{reason="half_open_failed"}"#)
                .len(),
            1
        );
        assert_eq!(
            problems(r#"router_requests_total{outcome=~"published|dropped"}"#).len(),
            1
        );
        assert_eq!(
            problems(r#"router_circuit_breaker_calls_total{outcome="published"}"#).len(),
            1
        );
        assert_eq!(
            problems(r#"router_circuit_breaker_state_transitions_total{to="half-open"}"#).len(),
            1
        );
    }

    #[test]
    fn reports_parse_errors() {
        assert_eq!(problems("sum(rate(router_outbox_depth[5m])").len(), 1);
    }
}
