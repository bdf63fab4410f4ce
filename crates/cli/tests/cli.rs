//! The binary as a user runs it: the README's main command and its exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_beamline-router"))
}

#[test]
fn scenario_run_prints_a_passing_report_and_exits_zero() {
    let out = bin()
        .args([
            "scenario",
            "run",
            "--profile",
            "ci",
            "--quiet",
            "--seed",
            "3",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("PASS  mass_failure_opens_breaker"),
        "{stdout}"
    );
    assert!(stdout.contains("PASS  recovery_after_failure"), "{stdout}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}

#[test]
fn unknown_profiles_and_scenarios_are_refused_with_exit_2() {
    let out = bin()
        .args(["scenario", "run", "--profile", "huge"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown profile"));
    let out = bin()
        .args(["scenario", "run", "--scenario", "nope", "--quiet"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scenario"));
}

#[test]
fn check_config_prints_the_effective_config_and_refuses_invalid_ones() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[breaker]\nfailure_threshold = 7\n").unwrap();
    let out = bin()
        .args(["serve", "--check-config", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("failure_threshold = 7"));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let reparsed = beamline_server::config::ServerConfig::from_toml(&printed)
        .expect("the printed config parses back");
    assert_eq!(reparsed.breaker.failure_threshold, 7);
    let out = bin()
        .args(["serve", "--check-config", "--config"])
        .arg(&good)
        .env("BEAMLINE__BREAKER__MIN_CALLS", "3")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("min_calls = 3"),
        "environment overrides apply"
    );
    let out = bin()
        .args(["serve", "--check-config"])
        .env("BEAMLINE__BREAKER__MIN_CALS", "3")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BEAMLINE__BREAKER__MIN_CALS"));
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[breaker]\nlatency_threshold_ms = 9000\n").unwrap();
    let out = bin()
        .args(["serve", "--check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("breaker.latency_threshold_ms"));
}

#[test]
fn replay_prints_decisions_transitions_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.jsonl");
    std::fs::write(
        &trace,
        "{\"config\":{\"breaker\":{\"failure_threshold\":2,\"open_timeout_jitter\":0}}}\n\
         {\"t\":0,\"op\":\"call\",\"id\":\"c1\",\"outcome\":\"failure\",\"latency_ms\":5}\n\
         {\"t\":10,\"op\":\"call\",\"id\":\"c2\",\"outcome\":\"failure\",\"latency_ms\":5}\n\
         {\"t\":20,\"op\":\"call\",\"id\":\"c3\",\"outcome\":\"success\"}\n",
    )
    .unwrap();
    let out = bin().arg("replay").arg(&trace).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("\"transition\":\"closed->open\""),
        "{stdout}"
    );
    assert!(stdout.contains("\"summary\""), "{stdout}");
}
