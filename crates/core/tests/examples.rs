//! The example traces and tuning files under `examples/` at the repository root (shown in
//! the README for `beamline-router replay`) replay, and say what they claim to show.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code

use std::path::PathBuf;

use beamline_core::replay::{self, ReplayConfig};

fn read(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

fn tunings() -> (ReplayConfig, ReplayConfig) {
    (
        ReplayConfig::from_toml_or_json(&read("tuning-a.toml")).unwrap(),
        ReplayConfig::from_toml_or_json(&read("tuning-b.toml")).unwrap(),
    )
}

#[test]
fn provider_outage_opens_the_failing_providers_breakers_only() {
    let out = replay::replay(&read("provider-outage.jsonl"), None).unwrap();
    let s = &out.summary;
    assert_eq!(s.keys, 4);
    for tenant in ["acme", "globex"] {
        let failing = &s.per_key[&format!("{tenant}/p1")];
        assert_eq!(
            failing.openings_by_reason.get("failure_threshold_exceeded"),
            Some(&1),
            "{tenant}/p1: {failing:?}"
        );
        assert!(failing.rejected > 50, "{tenant}/p1: {failing:?}");
        let healthy = &s.per_key[&format!("{tenant}/p2")];
        assert_eq!(healthy.openings, 0, "{tenant}/p2: {healthy:?}");
    }
    // Requests made during the outage stop at the breaker instead of retrying into it.
    assert!(
        s.requests_by_cause
            .get("circuit_open")
            .is_some_and(|n| *n > 0),
        "{s:?}"
    );
    // The output is valid JSON Lines ending with the summary.
    let text = out.to_json_lines();
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
    assert!(text.lines().last().unwrap().starts_with(r#"{"summary":"#));
}

#[test]
fn latency_incident_opens_on_the_latency_rule() {
    let out = replay::replay(&read("latency-incident.jsonl"), None).unwrap();
    let t = &out.summary.totals;
    assert_eq!(
        t.openings_by_reason.get("latency_threshold_exceeded"),
        Some(&1),
        "{t:?}"
    );
    let opened = t.first_opening_ms.unwrap().as_ms_f64();
    assert!((20_000.0..50_000.0).contains(&opened), "{t:?}");
}

#[test]
fn tuning_b_detects_both_incidents_sooner_than_tuning_a() {
    let (a, b) = tunings();
    for trace in ["provider-outage.jsonl", "latency-incident.jsonl"] {
        let c = replay::compare(&read(trace), &a, &b).unwrap();
        let (ta, tb) = (&c.a.totals, &c.b.totals);
        let first = |t: &replay::Counters| t.first_opening_ms.unwrap();
        assert!(first(tb) < first(ta), "{trace}: {ta:?}\n{tb:?}");
        let rows = c.rows();
        assert!(
            rows.iter().any(|(name, _, _)| name == "rejected"),
            "{rows:?}"
        );
        println!("{trace}:");
        for (name, va, vb) in rows {
            println!("  {name:<34} {va:>14} {vb:>14}");
        }
    }
}
