//! The replay engine beyond the regression cases: split acquire/complete, admin actions,
//! several keys, `never`, metrics-only mode, error reporting, and no panic on any input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code

use beamline_core::breaker::State;
use beamline_core::replay::{self, Decision, Limits, Millis, OutputLine, ReplayConfig, TraceError};
use proptest::prelude::*;

/// `cases` cases; failures are saved to (and replayed from) `proptest-regressions/replay.txt` in the crate,
/// committed. (proptest's default location is derived from the source path, which it
/// cannot resolve from a workspace member's directory.)
fn persisted(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(
                "proptest-regressions/replay.txt",
            ),
        )),
        ..ProptestConfig::default()
    }
}

const EXACT: &str = r#"{"config":{"breaker":{"failure_threshold":2,"open_timeout_ms":100,"open_timeout_max_ms":100,"open_timeout_jitter":0,"half_open_max_calls":1,"success_threshold":1,"probe_lease_ms":50}}}"#;

fn run(body: &str) -> replay::ReplayOutput {
    replay::replay(&format!("{EXACT}\n{body}"), None).unwrap()
}

#[test]
fn split_acquire_and_complete_measure_latency_between_them() {
    let out = run(r#"{"t":0,"op":"acquire","id":"a"}
{"t":30,"op":"acquire","id":"b"}
{"t":40,"op":"complete","id":"b","outcome":"failure"}
{"t":70,"op":"complete","id":"a","outcome":"failure"}
{"t":71,"op":"acquire","id":"c"}
{"t":72,"op":"complete","id":"c","outcome":"success"}"#);
    let outcomes: Vec<_> = out
        .lines
        .iter()
        .filter_map(|l| match l {
            OutputLine::Outcome(o) => Some((o.id.clone(), o.latency_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("b".to_string(), Millis::from_ms(10)),
            ("a".to_string(), Millis::from_ms(70))
        ]
    );
    let t: Vec<_> = out.transitions().map(|t| t.t).collect();
    assert_eq!(t, [Millis::from_ms(70)]);
    // c was refused, so its complete is accepted and records nothing.
    assert_eq!(out.summary.totals.rejected, 1);
}

#[test]
fn a_probe_that_never_reports_expires_at_its_lease() {
    let out = run(r#"{"t":0,"op":"call","outcome":"failure"}
{"t":1,"op":"call","outcome":"failure"}
{"t":200,"op":"call","id":"p","outcome":"never"}
{"t":300,"op":"state"}"#);
    let t: Vec<_> = out
        .transitions()
        .map(|t| (t.t.as_ms_f64(), t.transition.as_str(), t.reason.as_str()))
        .collect();
    assert_eq!(
        t,
        [
            (1.0, "closed->open", "failure_threshold_exceeded"),
            (101.0, "open->half_open", "timeout_elapsed"),
            (250.0, "half_open->open", "half_open_failure"),
        ],
        "the replay ends at 300, before the next half-open at 350"
    );
    assert_eq!(out.summary.totals.unreported, 1);
}

#[test]
fn admin_actions_print_and_hold() {
    let out = run(r#"{"t":0,"op":"admin","action":"force_open"}
{"t":10,"op":"call","id":"x","outcome":"success"}
{"t":500,"op":"state"}
{"t":501,"op":"admin","action":"release"}
{"t":502,"op":"call","id":"y","outcome":"success"}
{"t":600,"op":"admin","action":"force_closed"}
{"t":601,"op":"call","outcome":"failure"}
{"t":602,"op":"call","outcome":"failure"}
{"t":603,"op":"call","id":"z","outcome":"failure"}
{"t":700,"op":"admin","action":"reset"}"#);
    let d: Vec<_> = out
        .decisions()
        .map(|d| (d.id.as_str(), d.decision, d.state))
        .collect();
    assert_eq!(d[0], ("x", Decision::Rejected, State::Open));
    assert_eq!(d[1], ("y", Decision::Allowed, State::HalfOpen));
    assert_eq!(d[4], ("z", Decision::Allowed, State::Closed));
    let read = out
        .lines
        .iter()
        .find_map(|l| match l {
            OutputLine::Read(r) => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(read.forced, Some("open"));
    assert_eq!(read.open_remaining_ms, None);
    let reasons: Vec<_> = out.transitions().map(|t| t.reason.as_str()).collect();
    assert_eq!(
        reasons,
        ["manual", "manual", "success_threshold_reached"],
        "held closed: three failures open nothing"
    );
    assert_eq!(out.summary.totals.openings_by_reason["manual"], 1);
}

#[test]
fn keys_are_independent_and_named_in_the_output() {
    let out = run(r#"{"t":0,"op":"call","tenant":"a","outcome":"failure"}
{"t":1,"op":"call","tenant":"a","outcome":"failure"}
{"t":2,"op":"call","tenant":"b","id":"b1","outcome":"success"}
{"t":3,"op":"call","tenant":"a","id":"a3","outcome":"success"}"#);
    let text = out.to_json_lines();
    assert!(
        text.contains(r#"{"t":2,"id":"b1","decision":"allowed","state":"closed","tenant":"b","provider":"default"}"#),
        "{text}"
    );
    assert_eq!(out.summary.keys, 2);
    assert_eq!(out.summary.per_key["a/default"].rejected, 1);
    assert_eq!(out.summary.per_key["b/default"].rejected, 0);
}

#[test]
fn metrics_only_reports_openings_but_rejects_nothing() {
    let shadow = ReplayConfig::from_toml_or_json("[breaker]\nmode = \"metrics_only\"\n").unwrap();
    let trace = format!(
        "{EXACT}\n{}",
        r#"{"t":0,"op":"call","outcome":"failure"}
{"t":1,"op":"call","outcome":"failure"}
{"t":2,"op":"call","outcome":"failure"}"#
    );
    let out = replay::replay(&trace, Some(shadow)).unwrap();
    assert_eq!(out.summary.totals.rejected, 0);
    assert_eq!(out.summary.totals.openings, 1);
}

#[test]
fn errors_name_the_line() {
    let err = |body: &str| {
        replay::replay(&format!("{EXACT}\n{body}"), None)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err("{\"t\":0,\"op\":\"complete\",\"id\":\"q\",\"outcome\":\"success\"}"),
        "line 2: complete `q` has no earlier acquire"
    );
    assert!(
        err("{\"t\":0,\"op\":\"acquire\",\"id\":\"q\"}\n{\"t\":1,\"op\":\"acquire\",\"id\":\"q\"}")
            .starts_with("line 3: acquire `q` is still outstanding from line 2")
    );
    let e = replay::replay(r#"{"config":{"breaker":{"success_threshold":9}}}"#, None).unwrap_err();
    assert!(matches!(e, TraceError::Config { line: Some(1), .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("line 1: breaker.success_threshold (9)"),
        "{e}"
    );
}

#[test]
fn the_scheduled_work_is_bounded() {
    let limits = Limits {
        max_scheduled: 5,
        ..Limits::default()
    };
    let body: String = (0..10)
        .map(|i| {
            format!("{{\"t\":{i},\"op\":\"call\",\"outcome\":\"success\",\"latency_ms\":1}}\n")
        })
        .collect();
    let e = replay::replay_with_limits(&body, None, &limits).unwrap_err();
    assert_eq!(e, TraceError::TooManyEvents { max: 5 });
}

fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(r#"{"t":0,"op":"call","outcome":"failure"}"#.to_string()),
        Just(r#"{"t":5,"op":"call","outcome":"never"}"#.to_string()),
        Just(r#"{"t":1e12,"op":"call","outcome":"success","latency_ms":1e12}"#.to_string()),
        Just(r#"{"t":3,"op":"acquire","id":"a"}"#.to_string()),
        Just(r#"{"t":4,"op":"complete","id":"a","outcome":"timeout"}"#.to_string()),
        Just(r#"{"t":2,"op":"admin","action":"release"}"#.to_string()),
        Just(
            r#"{"t":9,"op":"execute","attempts":["failure"],"attempt_latency_ms":[3000]}"#
                .to_string()
        ),
        Just(r#"{"op":"delays","retries":[4294967295]}"#.to_string()),
        Just(r#"{"config":{"retry":{"max_attempts":100,"base_ms":0}}}"#.to_string()),
        Just(r#"{"t":"x","op":"state"}"#.to_string()),
        "[ -~]{0,40}",
        Just(String::new()),
    ]
}

proptest! {
    #![proptest_config(persisted(256))]

    /// Any input gives output or an error; never a panic.
    #[test]
    fn no_input_panics(lines in prop::collection::vec(fragment(), 0..30)) {
        let _ = replay::replay(&lines.join("\n"), None);
    }
}
