//! The Grafana dashboard ops/grafana/beamline-router.json, checked as data: every query
//! parses as PromQL once Grafana's variables are substituted and reads only what the router
//! exports; the filters, the panels the issue asks for, and the state value mapping exist.

use std::collections::BTreeSet;

use beamline_metrics::names;
use beamline_ops_check::{dashboard, promql, rules};
use serde_json::Value;

/// Stands for a dashboard variable's value while checking label values.
const PLACEHOLDER: &str = "__grafana_variable__";

fn as_placeholder(_: &str) -> String {
    PLACEHOLDER.to_owned()
}

fn load() -> Value {
    dashboard::load().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn dashboard_is_a_current_grafana_dashboard_with_a_stable_uid() {
    let d = load();
    let schema = d["schemaVersion"].as_u64().unwrap_or(0);
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    assert_eq!(d["uid"], "beamline-router");
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().unwrap() {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate panel id {}",
            p["id"]
        );
        for key in ["x", "y", "w", "h"] {
            assert!(
                p["gridPos"][key].is_u64(),
                "panel {} has no gridPos.{key}",
                p["title"]
            );
        }
    }
}

#[test]
fn every_panel_query_parses_and_reads_only_exported_series() {
    let d = load();
    let recorded = rules::recorded_names().unwrap();
    let mut problems = Vec::new();
    let queries = dashboard::queries(&d);
    assert!(queries.len() >= 15, "only {} queries", queries.len());
    for q in &queries {
        if q.expr.trim().is_empty() {
            problems.push(format!("{} / {}: empty expression", q.panel, q.ref_id));
            continue;
        }
        for (rate, range) in [("1m", "1h"), ("15s", "5m"), ("2h", "7d")] {
            let expr = dashboard::substitute(&q.expr, rate, range, &as_placeholder);
            for p in promql::check(&expr, &recorded, &[PLACEHOLDER]) {
                problems.push(format!(
                    "{} / {} ({rate}, {range}): {p}\n    {expr}",
                    q.panel, q.ref_id
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn queries_use_grafana_intervals_not_fixed_ranges() {
    let d = load();
    let mut problems = Vec::new();
    for q in dashboard::queries(&d) {
        let reads = promql::reads(&dashboard::substitute(&q.expr, "1m", "1h", &as_placeholder));
        // With the built-ins substituted by sentinels, any other range is hard-coded.
        let sentinel = dashboard::substitute(&q.expr, "7777s", "8888s", &as_placeholder);
        let literal_range = sentinel
            .split('[')
            .skip(1)
            .any(|after| !after.starts_with("7777s]") && !after.starts_with("8888s]"));
        if literal_range {
            problems.push(format!(
                "{}: use $__rate_interval or $__range, not a fixed range: {}",
                q.panel, q.expr
            ));
        }
        if reads.is_err() {
            problems.push(format!("{}: does not parse", q.panel));
        }
        if q.expr.contains("increase(") && !q.expr.contains("$__range") {
            problems.push(format!(
                "{}: increase() over the dashboard range should use $__range",
                q.panel
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn tenant_and_provider_variables_are_multi_valued_with_all_and_read_exported_labels() {
    let d = load();
    let recorded = rules::recorded_names().unwrap();
    for name in dashboard::FILTER_VARIABLES {
        let v = dashboard::variables(&d)
            .into_iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no `{name}` variable"));
        assert_eq!(v["type"], "query", "{name}");
        assert_eq!(v["multi"], true, "{name} must be multi-valued");
        assert_eq!(v["includeAll"], true, "{name} must include All");
        assert_eq!(
            v["allValue"], ".*",
            "{name}: All must match every value, including new ones"
        );
        let query = dashboard::variable_query(v).unwrap_or_default();
        let (selector, label) = dashboard::label_values_query(query)
            .unwrap_or_else(|| panic!("{name}: `{query}` is not label_values(selector, label)"));
        assert_eq!(label, name);
        let selector = dashboard::substitute(selector, "1m", "1h", &as_placeholder);
        let problems = promql::check(&selector, &recorded, &[PLACEHOLDER]);
        assert!(problems.is_empty(), "{name}: {problems:?}");
        let metric = promql::reads(&selector).unwrap().selectors[0]
            .name
            .clone()
            .unwrap();
        let info = promql::exported(&metric).unwrap().0;
        assert!(info.labels.contains(&name), "{metric} has no {name} label");
    }
}

#[test]
fn every_query_filters_by_the_variables_its_metric_has() {
    let d = load();
    let mut problems = Vec::new();
    for q in dashboard::queries(&d) {
        let expr = dashboard::substitute(&q.expr, "1m", "1h", &|name: &str| format!("${name}"));
        for sel in promql::reads(&expr).unwrap().selectors {
            let Some((info, _)) = sel.name.as_deref().and_then(promql::exported) else {
                continue;
            };
            for var in dashboard::FILTER_VARIABLES {
                let filtered = sel
                    .matchers
                    .iter()
                    .any(|(l, op, v)| l == var && *op == "=~" && *v == format!("${var}"));
                if info.labels.contains(&var) && !filtered {
                    problems.push(format!(
                        "{} / {}: `{}` is not filtered by {var}=~\"${var}\"",
                        q.panel, q.ref_id, info.name
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_panel_queries_prometheus_through_the_datasource_variable() {
    let d = load();
    let var = dashboard::variables(&d)
        .into_iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(var["query"], "prometheus");
    let uid = format!("${{{}}}", var["name"].as_str().unwrap());
    for panel in dashboard::panels(&d) {
        assert_eq!(
            panel["datasource"]["uid"],
            uid.as_str(),
            "panel {}",
            panel["title"]
        );
        assert!(
            panel["targets"].as_array().is_some_and(|t| !t.is_empty()),
            "panel {} has no query",
            panel["title"]
        );
        for t in panel["targets"].as_array().unwrap() {
            assert_eq!(
                t["datasource"]["uid"],
                uid.as_str(),
                "panel {}",
                panel["title"]
            );
        }
        assert!(
            panel["description"].as_str().is_some_and(|s| s.len() > 40),
            "panel {} needs a description for the 3 a.m. reader",
            panel["title"]
        );
    }
}

#[test]
fn every_exported_metric_is_on_some_panel() {
    let d = load();
    let mut shown = BTreeSet::new();
    for q in dashboard::queries(&d) {
        let expr = dashboard::substitute(&q.expr, "1m", "1h", &as_placeholder);
        shown.extend(promql::metrics_read(&expr).unwrap());
    }
    let missing: Vec<&str> = names::ALL
        .iter()
        .map(|m| m.name)
        .filter(|n| !shown.contains(n))
        .collect();
    assert!(missing.is_empty(), "metrics no panel shows: {missing:?}");
}

#[test]
fn breaker_state_timeline_maps_0_1_2_to_closed_open_half_open() {
    let d = load();
    let panel = dashboard::panels(&d)
        .into_iter()
        .find(|p| p["type"] == "state-timeline")
        .expect("a state-timeline panel");
    let expr = panel["targets"][0]["expr"].as_str().unwrap();
    assert!(expr.contains(names::BREAKER_STATE), "{expr}");
    let mappings = panel["fieldConfig"]["defaults"]["mappings"]
        .as_array()
        .unwrap();
    let options = &mappings.iter().find(|m| m["type"] == "value").unwrap()["options"];
    for (value, text) in [("0", "closed"), ("1", "open"), ("2", "half_open")] {
        assert_eq!(options[value]["text"], text, "mapping of {value}");
    }
}

#[test]
fn the_issue_s_panels_are_all_there() {
    let d = load();
    let queries = dashboard::queries(&d);
    let has = |panel_type: &[&str], needle: &str| {
        queries
            .iter()
            .any(|q| panel_type.contains(&q.panel_type.as_str()) && q.expr.contains(needle))
    };
    let any = [
        "timeseries",
        "stat",
        "state-timeline",
        "piechart",
        "barchart",
        "bargauge",
        "table",
    ];
    let wanted: [(&str, &[&str], &str); 13] = [
        (
            "breaker state per key",
            &["state-timeline"],
            names::BREAKER_STATE,
        ),
        ("open breakers now", &["stat"], names::BREAKER_STATE),
        (
            "openings by trigger reason over the range",
            &["piechart", "barchart", "bargauge"],
            names::BREAKER_TRIGGER_REASON,
        ),
        (
            "transitions rate",
            &["timeseries"],
            names::BREAKER_TRANSITIONS,
        ),
        (
            "fail-fast rejections rate",
            &["timeseries"],
            names::BREAKER_REJECTIONS,
        ),
        ("publish attempts", &["timeseries"], names::PUBLISH_ATTEMPTS),
        (
            "publish errors by kind",
            &["timeseries"],
            names::PUBLISH_ERRORS,
        ),
        (
            "publish duration quantiles",
            &["timeseries"],
            "router_publish_duration_seconds_bucket",
        ),
        ("retries rate", &["timeseries"], names::PUBLISH_RETRIES),
        ("outbox depth", &any, names::OUTBOX_DEPTH),
        ("outbox oldest age", &any, names::OUTBOX_OLDEST_AGE),
        ("request outcomes", &["timeseries"], names::REQUESTS),
        ("latest trigger reason", &any, names::BREAKER_LAST_TRIGGER),
    ];
    for (what, types, needle) in wanted {
        assert!(
            has(types, needle),
            "no {types:?} panel for {what} ({needle})"
        );
    }
    for q in ["0.5", "0.95", "0.99"] {
        assert!(
            queries.iter().any(|x| x.expr.contains(&format!("histogram_quantile({q}, sum by (provider_id, le) (rate(router_publish_duration_seconds_bucket"))),
            "no p{} of publish duration", &q[2..]
        );
    }
    let reasons = queries
        .iter()
        .find(|q| q.expr.contains(names::BREAKER_TRIGGER_REASON) && q.panel_type != "table")
        .unwrap();
    assert!(
        reasons.expr.contains("$__range") && reasons.instant,
        "openings by reason: an instant query over $__range"
    );
    assert!(
        reasons.expr.contains("by (reason)"),
        "openings by reason must group by reason"
    );
    let errors = queries
        .iter()
        .find(|q| q.expr.contains(names::PUBLISH_ERRORS))
        .unwrap();
    assert!(
        errors.expr.contains("provider_id") && errors.expr.contains("error_kind"),
        "errors by provider and kind"
    );
}
