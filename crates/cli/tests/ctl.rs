//! `beamline-router ctl` as an operator runs it: the real binary against an in-process
//! router, each command's output and exit code, and the one-line errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use beamline_core::breaker::State;
use beamline_core::policy::DegradedMode;
use beamline_server::config::ServerConfig;
use beamline_test_util::{TestRouter, free_port, test_token};
use serde_json::{Value, json};

/// What one run of the binary left.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// Runs `beamline-router ctl ARGS` with `--url` and, when given, `--token`; the
/// environment's BEAMLINE_* variables are removed so the test sees only its flags.
async fn ctl_with_env(url: &str, token: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_beamline-router"));
    command
        .arg("ctl")
        .args(args)
        .env_remove("BEAMLINE_URL")
        .env_remove("BEAMLINE_ADMIN_TOKEN")
        .envs(env.iter().copied());
    if !url.is_empty() {
        command.args(["--url", url]);
    }
    if let Some(t) = token {
        command.args(["--token", t]);
    }
    let out = command.output().await.expect("cannot run the binary");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `ctl ARGS` against `router` with the right token.
async fn ctl(router: &TestRouter, args: &[&str]) -> Run {
    ctl_with_env(router.client.base(), Some(&test_token()), args, &[]).await
}

/// `ctl ARGS` against `router` with the right token; asserts exit 0.
async fn ok(router: &TestRouter, args: &[&str]) -> Run {
    let run = ctl(router, args).await;
    assert_eq!(run.code, Some(0), "ctl {args:?}: {run:#?}");
    assert!(run.stderr.is_empty(), "ctl {args:?}: {run:#?}");
    run
}

/// `ctl ARGS` against `router` with the right token; asserts exit `code` and one line on
/// stderr.
async fn fails(router: &TestRouter, args: &[&str], code: i32) -> Run {
    let run = ctl(router, args).await;
    assert_eq!(run.code, Some(code), "ctl {args:?}: {run:#?}");
    assert!(run.stdout.is_empty(), "ctl {args:?}: {run:#?}");
    assert!(run.stderr.starts_with("error: "), "ctl {args:?}: {run:#?}");
    assert_eq!(run.stderr.trim_end().lines().count(), 1, "{run:#?}");
    run
}

/// A router whose breakers open after 3 consecutive failures, stay open for a minute and
/// do not retry, so a handful of publishes opens one.
async fn router() -> TestRouter {
    let mut config = ServerConfig::default();
    config.breaker.failure_threshold = 3;
    config.breaker.open_timeout_ms = 60_000;
    config.retry.max_attempts = 1;
    TestRouter::start(config).await
}

/// The table line of `tenant`/`provider` in `ctl list` output.
fn row<'a>(table: &'a str, tenant: &str, provider: &str) -> Option<&'a str> {
    table.lines().find(|l| {
        let mut cells = l.split_whitespace();
        cells.next() == Some(tenant) && cells.next() == Some(provider)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_inspects_and_operates_breakers_and_faults_on_a_live_router() {
    let router = router().await;

    // Faults: empty, set, listed (table and JSON).
    assert_eq!(ok(&router, &["faults"]).await.stdout, "no fault rules\n");
    let set = ok(
        &router,
        &["faults", "set", "p1", "--error", "broker_unavailable"],
    )
    .await;
    assert!(
        set.stdout.starts_with("PROVIDER  TENANT  FAULT\n"),
        "{}",
        set.stdout
    );
    assert!(
        set.stdout
            .contains("p1        *       error broker_unavailable"),
        "{}",
        set.stdout
    );
    let intermittent = ok(
        &router,
        &[
            "faults",
            "set",
            "p9",
            "--tenant",
            "acme",
            "--delay-ms",
            "5",
            "--intermittent",
            "0.25",
        ],
    )
    .await;
    assert!(
        intermittent
            .stdout
            .contains("delay 5ms with probability 0.25"),
        "{}",
        intermittent.stdout
    );
    let listed = ok(&router, &["faults", "list", "--json"]).await.json();
    let rules = listed["faults"].as_array().unwrap();
    assert_eq!(rules.len(), 2, "{listed}");
    assert!(rules.contains(&json!({
        "provider_id": "p1", "tenant_id": null,
        "fault": {"type": "error", "kind": "broker_unavailable"}
    })));

    // Drive acme/p1 open through the fault; acme/p2 stays healthy.
    for i in 0..3 {
        let r = router
            .client
            .publish("acme", "p1", &format!("m{i}"), json!({"i": i}))
            .await
            .unwrap();
        assert_eq!(r.status, 502, "{:?}", r.body);
    }
    let r = router
        .client
        .publish("acme", "p2", "ok-1", json!({}))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    router
        .wait_for_state("acme", "p1", State::Open, Duration::from_secs(5))
        .await;

    // list: table, filters, JSON.
    let list = ok(&router, &["list"]).await.stdout;
    assert!(list.starts_with("TENANT  PROVIDER  STATE"), "{list}");
    let p1 = row(&list, "acme", "p1").unwrap_or_else(|| panic!("{list}"));
    assert!(p1.contains(" open "), "{p1}");
    assert!(p1.contains("3/3"), "{p1}");
    assert!(p1.contains("failure_threshold_exceeded"), "{p1}");
    let p2 = row(&list, "acme", "p2").unwrap_or_else(|| panic!("{list}"));
    assert!(p2.contains(" closed "), "{p2}");
    let open = ok(&router, &["list", "--state", "open"]).await.stdout;
    assert!(
        row(&open, "acme", "p1").is_some() && row(&open, "acme", "p2").is_none(),
        "{open}"
    );
    let closed = ok(&router, &["list", "--state", "closed"]).await.stdout;
    assert!(
        row(&closed, "acme", "p1").is_none() && row(&closed, "acme", "p2").is_some(),
        "{closed}"
    );
    let half = ok(&router, &["list", "--state", "half_open"]).await.stdout;
    assert_eq!(half, "no breakers\n");
    let only_p2 = ok(&router, &["list", "--tenant", "acme", "--provider", "p2"])
        .await
        .stdout;
    assert_eq!(only_p2.lines().count(), 2, "{only_p2}");
    let as_json = ok(&router, &["--json", "list"]).await.json();
    assert_eq!(
        as_json["breakers"].as_array().unwrap().len(),
        2,
        "{as_json}"
    );
    let bad_state = ctl(&router, &["list", "--state", "ajar"]).await;
    assert_eq!(bad_state.code, Some(2), "{bad_state:#?}");

    // status: key/value view and JSON.
    let status = ok(&router, &["status", "acme", "p1"]).await.stdout;
    for expected in [
        "breaker ",
        "acme/p1",
        "\nstate ",
        " open\n",
        "3 calls, 3 failures, 0 slow",
        "100.0%",
        "last opening rules",
        "failure_threshold_exceeded",
        "config.failure_threshold ",
        "stats.failures ",
    ] {
        assert!(status.contains(expected), "{expected:?} not in\n{status}");
    }
    let status = ok(&router, &["status", "acme", "p1", "--json"])
        .await
        .json();
    assert_eq!(status["state"], "open");
    assert_eq!(status["config"]["failure_threshold"], 3);
    let missing = fails(&router, &["status", "acme", "nope"], 6).await;
    assert!(missing.stderr.contains("breaker_not_found"), "{missing:#?}");
    let invalid = fails(&router, &["status", "a.b", "p1"], 1).await;
    assert!(invalid.stderr.contains("invalid_tenant_id"), "{invalid:#?}");
    // A slash in an id is encoded, not taken as a path separator.
    let slash = fails(&router, &["status", "acme/p1", "x"], 1).await;
    assert!(slash.stderr.contains("invalid_tenant_id"), "{slash:#?}");

    // Operator actions.
    let forced = ok(&router, &["force-closed", "acme", "p1"]).await.stdout;
    assert_eq!(
        forced,
        "acme/p1: force-closed done; state closed (forced closed)\n"
    );
    let forced = ok(&router, &["force-open", "acme", "p2"]).await.stdout;
    assert_eq!(
        forced,
        "acme/p2: force-open done; state open (forced open)\n"
    );
    let open = ok(&router, &["list", "--state", "open"]).await.stdout;
    assert!(
        row(&open, "acme", "p2")
            .unwrap()
            .contains("open (forced open)"),
        "{open}"
    );
    let released = ok(&router, &["release", "acme", "p2"]).await.stdout;
    assert!(
        released.starts_with("acme/p2: release done; state "),
        "{released}"
    );
    assert!(!released.contains("forced"), "{released}");
    let reset = ok(&router, &["reset", "acme", "p1", "--json"]).await.json();
    assert_eq!(
        (reset["state"].as_str(), reset["forced"].as_str()),
        (Some("closed"), None)
    );
    let unknown = ctl(&router, &["explode", "acme", "p1"]).await;
    assert_eq!(unknown.code, Some(2), "{unknown:#?}");

    // Faults cleared by provider and tenant, then all; reset-all.
    let cleared = ok(&router, &["faults", "clear", "p9", "--tenant", "acme"])
        .await
        .stdout;
    assert!(cleared.starts_with("cleared 1 rule(s)\n"), "{cleared}");
    assert!(!cleared.contains("p9"), "{cleared}");
    let cleared = ok(&router, &["faults", "clear"]).await.stdout;
    assert_eq!(cleared, "cleared 1 rule(s)\nno fault rules\n");
    let all = ok(&router, &["reset-all"]).await.stdout;
    assert!(
        all.starts_with("reset ") && all.ends_with(" breaker(s)\n"),
        "{all}"
    );

    // Local validation never reaches the router.
    let bad_p = ctl(
        &router,
        &["faults", "set", "p1", "--timeout", "--intermittent", "1.5"],
    )
    .await;
    assert_eq!(bad_p.code, Some(2), "{bad_p:#?}");
    let two = ctl(
        &router,
        &["faults", "set", "p1", "--timeout", "--close-connection"],
    )
    .await;
    assert_eq!(two.code, Some(2), "{two:#?}");
    let kind = ctl(&router, &["faults", "set", "p1", "--error", "gremlins"]).await;
    assert_eq!(kind.code, Some(2), "{kind:#?}");
    assert!(
        kind.stderr.contains("broker_unavailable"),
        "the known kinds are listed: {kind:#?}"
    );
    assert_eq!(ok(&router, &["faults"]).await.stdout, "no fault rules\n");

    // The outbox: this router has none.
    let outbox = ok(&router, &["outbox"]).await.stdout;
    assert!(
        outbox.contains("enabled") && outbox.contains("false"),
        "{outbox}"
    );
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_errors_are_one_line_with_distinct_exit_codes_and_never_show_the_token() {
    let router = router().await;
    let url = router.client.base().to_owned();

    // Unreachable: nothing listens on a fresh free port.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let run = ctl_with_env(&nowhere, Some(&test_token()), &["list"], &[]).await;
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(
        run.stderr
            .starts_with(&format!("error: cannot reach the router at {nowhere}")),
        "{run:#?}"
    );
    assert!(
        run.stderr.contains("is it running? check --url"),
        "{run:#?}"
    );
    let run = ctl_with_env("127.0.0.1:8080", Some(&test_token()), &["list"], &[]).await;
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(
        run.stderr.contains("--url must start with http://"),
        "{run:#?}"
    );

    // No token, wrong token.
    let run = ctl_with_env(&url, None, &["list"], &[]).await;
    assert_eq!(run.code, Some(4), "{run:#?}");
    assert_eq!(
        run.stderr,
        "error: no admin token: pass --token or set BEAMLINE_ADMIN_TOKEN\n"
    );
    let wrong = "wrong-token-that-must-not-leak-42";
    for args in [
        &["list"][..],
        &["status", "acme", "p1"],
        &["faults"],
        &["reset-all"],
    ] {
        let run = ctl_with_env(&url, Some(wrong), args, &[]).await;
        assert_eq!(run.code, Some(5), "{args:?} {run:#?}");
        assert!(
            run.stderr.contains("the admin token was refused"),
            "{run:#?}"
        );
        assert!(
            !run.stderr.contains(wrong) && !run.stdout.contains(wrong),
            "{run:#?}"
        );
    }
    let run = ctl_with_env(&url, Some(wrong), &["list"], &[("RUST_BACKTRACE", "1")]).await;
    assert!(!run.stderr.contains(wrong), "{run:#?}");

    // URL and token from the environment; --help lists the flag, never the token.
    let token = test_token();
    let env = [
        ("BEAMLINE_URL", url.as_str()),
        ("BEAMLINE_ADMIN_TOKEN", token.as_str()),
    ];
    let run = ctl_with_env("", None, &["list"], &env).await;
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (Some(0), "no breakers\n"),
        "{run:#?}"
    );
    let help = ctl_with_env("", None, &["--help"], &env).await;
    assert_eq!(help.code, Some(0), "{help:#?}");
    assert!(
        help.stdout.contains("--url") && !help.stdout.contains(&token),
        "{help:#?}"
    );
    assert!(
        help.stdout.contains("--token") && help.stdout.contains("[env: BEAMLINE_ADMIN_TOKEN]"),
        "the token flag is documented, its value is not: {help:#?}"
    );
    router.stop().await;

    // Faults on a router that has them disabled: refused with its own message.
    let no_faults = TestRouter::start_with(ServerConfig::default(), false).await;
    let run = ctl_with_env(no_faults.client.base(), Some(&token), &["faults"], &[]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.contains("fault injection is disabled"),
        "{run:#?}"
    );
    no_faults.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_outbox_shows_the_queued_backlog_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        data_dir: Some(dir.path().to_path_buf()),
        degraded_mode: DegradedMode::Outbox,
        ..ServerConfig::default()
    };
    let router = TestRouter::start(config).await;
    ok(&router, &["force-open", "acme", "p1"]).await;
    for i in 0..2 {
        let r = router
            .client
            .publish("acme", "p1", &format!("q{i}"), json!({"i": i}))
            .await
            .unwrap();
        assert_eq!((r.status, r.code()), (202, "queued"), "{:?}", r.body);
    }
    let outbox = ok(&router, &["outbox"]).await.stdout;
    let depth = outbox
        .lines()
        .find(|l| l.starts_with("depth "))
        .unwrap_or_else(|| panic!("{outbox}"));
    assert_eq!(depth.split_whitespace().nth(1), Some("2"), "{outbox}");
    assert!(outbox.contains("\nkeys:\n"), "{outbox}");
    let key = outbox
        .lines()
        .find(|l| l.contains("acme") && l.contains("p1"))
        .unwrap_or_else(|| panic!("no backlog row for acme/p1:\n{outbox}"));
    assert!(key.split_whitespace().any(|c| c == "2"), "{key}");
    let as_json = ok(&router, &["outbox", "--json"]).await.json();
    assert_eq!(as_json["depth"], 2, "{as_json}");
    router.stop().await;
}
