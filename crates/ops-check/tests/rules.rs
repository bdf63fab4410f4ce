//! The Prometheus rules in ops/prometheus: promtool accepts them and their unit tests
//! pass, every alert is tested firing and not firing, every expression reads only series
//! the router exports, and every alert carries what a 3 a.m. reader needs.

use std::collections::BTreeSet;

use beamline_ops_check::markdown;
use beamline_ops_check::{promql, promtool, read_repo_file, repo_root, rules};

/// Runs promtool with `args` followed by `files` from the repository root; panics with
/// promtool's own output when it fails or is missing.
fn promtool_ok(args: &[&str], files: &[String]) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(files.iter().map(String::as_str));
    if let Err(e) = promtool::run(&all, &repo_root()) {
        panic!("{e}");
    }
}

#[test]
fn promtool_check_rules_accepts_every_rule_file() {
    let files: Vec<String> = rules::RULE_FILES.iter().map(|f| f.to_string()).collect();
    promtool_ok(&["check", "rules"], &files);
}

#[test]
fn promtool_check_config_accepts_the_example_prometheus_config() {
    promtool_ok(
        &["check", "config"],
        &["ops/prometheus/prometheus.yml".to_owned()],
    );
}

#[test]
fn promtool_unit_tests_pass() {
    let files = rules::test_files().unwrap();
    assert!(
        !files.is_empty(),
        "no promtool tests in {}",
        rules::TESTS_DIR
    );
    promtool_ok(&["test", "rules"], &files);
}

#[test]
fn every_promtool_test_file_loads_both_rule_files() {
    for (file, test) in rules::tests().unwrap() {
        for rule_file in &test.rule_files {
            let name = rule_file.rsplit('/').next().unwrap_or_default();
            assert!(
                rules::RULE_FILES.iter().any(|f| f.ends_with(name)),
                "{file} loads {rule_file}, which is not one of {:?}",
                rules::RULE_FILES
            );
        }
        let tests_alerts = test.tests.iter().any(|t| !t.alert_rule_test.is_empty());
        if tests_alerts {
            // Alerts read recording rules: a test of alerts without them tests nothing real.
            for wanted in ["recording.yml", "alerts.yml"] {
                assert!(
                    test.rule_files.iter().any(|f| f.ends_with(wanted)),
                    "{file} tests alerts but does not load {wanted}"
                );
            }
        }
    }
}

#[test]
fn every_alert_is_unit_tested_firing_and_not_firing() {
    let tests = rules::tests().unwrap();
    let mut problems = Vec::new();
    for alert in rules::alerts().unwrap() {
        let name = alert.alert.unwrap_or_default();
        let cases: Vec<_> = tests
            .iter()
            .flat_map(|(_, f)| f.tests.iter())
            .flat_map(|t| t.alert_rule_test.iter())
            .filter(|a| a.alertname == name)
            .collect();
        if !cases.iter().any(|c| !c.exp_alerts.is_empty()) {
            problems.push(format!("{name}: no promtool case where it fires"));
        }
        if !cases.iter().any(|c| c.exp_alerts.is_empty()) {
            problems.push(format!("{name}: no promtool case where it does not fire"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_recording_rule_is_unit_tested() {
    let tests = rules::tests().unwrap();
    let exprs: Vec<&str> = tests
        .iter()
        .flat_map(|(_, f)| f.tests.iter())
        .flat_map(|t| t.promql_expr_test.iter())
        .map(|e| e.expr.as_str())
        .collect();
    let untested: Vec<String> = rules::recorded_names()
        .unwrap()
        .into_iter()
        .filter(|name| !exprs.iter().any(|e| e.contains(name.as_str())))
        .collect();
    assert!(
        untested.is_empty(),
        "recording rules without a promql_expr_test: {untested:?}"
    );
}

#[test]
fn every_rule_reads_only_series_the_router_exports() {
    let recorded = rules::recorded_names().unwrap();
    let mut problems = Vec::new();
    for (file, rule) in rules::all_rules().unwrap() {
        let name = rule.alert.or(rule.record).unwrap_or_default();
        for p in promql::check(&rule.expr, &recorded, &[]) {
            problems.push(format!("{file} {name}: {p}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn recording_rules_follow_the_level_metric_operations_convention() {
    for name in rules::recorded_names().unwrap() {
        let parts: Vec<&str> = name.split(':').collect();
        assert_eq!(parts.len(), 3, "`{name}` is not level:metric:operations");
        assert!(
            parts[1].starts_with("router_"),
            "`{name}`: the metric part should name the router metric it is built from"
        );
    }
}

#[test]
fn every_alert_has_summary_description_runbook_severity_and_for() {
    let mut problems = Vec::new();
    for alert in rules::alerts().unwrap() {
        let name = alert.alert.clone().unwrap_or_default();
        if !name.starts_with("Beamline") {
            problems.push(format!("{name}: alert names start with Beamline"));
        }
        for key in ["summary", "description", "runbook_url"] {
            if alert
                .annotations
                .get(key)
                .is_none_or(|v| v.trim().is_empty())
            {
                problems.push(format!("{name}: no `{key}` annotation"));
            }
        }
        match alert.labels.get("severity").map(String::as_str) {
            Some("warning" | "critical") => {}
            other => problems.push(format!(
                "{name}: severity {other:?} is not warning|critical"
            )),
        }
        if alert.for_duration.is_none() {
            problems.push(format!(
                "{name}: no `for:` (write `for: 0m` to fire at once on purpose)"
            ));
        }
        let summary = alert
            .annotations
            .get("summary")
            .cloned()
            .unwrap_or_default();
        if summary.len() > 120 {
            problems.push(format!("{name}: summary longer than 120 characters"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_runbook_url_points_at_an_existing_runbook_section_for_that_alert() {
    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    for alert in rules::alerts().unwrap() {
        let name = alert.alert.clone().unwrap_or_default();
        names.insert(name.clone());
        let url = alert
            .annotations
            .get("runbook_url")
            .cloned()
            .unwrap_or_default();
        let Some((path, anchor)) = url.split_once('#') else {
            problems.push(format!("{name}: runbook_url `{url}` has no #anchor"));
            continue;
        };
        let Ok(text) = read_repo_file(path) else {
            problems.push(format!("{name}: runbook_url file `{path}` does not exist"));
            continue;
        };
        let expected = markdown::anchor(&format!("Alert: {name}"));
        if anchor != expected {
            problems.push(format!(
                "{name}: anchor `#{anchor}`, expected `#{expected}`"
            ));
        }
        match markdown::section(&text, anchor) {
            None => problems.push(format!("{name}: no heading in {path} renders as #{anchor}")),
            Some(body) if body.trim().len() < 200 => problems.push(format!(
                "{name}: the runbook section #{anchor} is nearly empty"
            )),
            Some(_) => {}
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
