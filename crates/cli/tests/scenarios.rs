//! The scenario runner end to end: every scenario file on the ci profile, against the
//! embedded broker and against a real `nats-server -js` started by the harness. A failed
//! assertion fails the test with the whole report. Scenarios run one at a time (a lock):
//! their timing bounds assume the machine is not also running the other scenarios.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use beamline_scenario::report::{RunReport, Verdict};
use beamline_scenario::{Profile, RunOptions, Target};
use beamline_test_util::NatsServer;
use tokio::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

async fn run(name: &str, target: Target) -> RunReport {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut options = RunOptions::quiet(Profile::ci(), target, 7);
    options.scenarios = vec![name.to_owned()];
    let report = beamline_scenario::run(options)
        .await
        .expect("the run could not be carried out");
    assert_eq!(report.scenarios.len(), 1);
    report
}

async fn passes(name: &str, target: Target) -> RunReport {
    let report = run(name, target).await;
    assert!(
        report.passed(),
        "scenario {name} failed:\n{}",
        report.render_text()
    );
    report
}

async fn passes_on_nats(name: &str) {
    let nats = NatsServer::start();
    passes(name, Target::Nats(nats.url())).await;
}

macro_rules! scenario_tests {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::passes(stringify!($name), beamline_scenario::Target::Embedded).await;
                }
            )*
        }
        mod nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::passes_on_nats(stringify!($name)).await;
                }
            )*
        }
    };
}

scenario_tests!(
    mass_failure_opens_breaker,
    recovery_after_failure,
    latency_trigger,
    error_rate_partial_failure,
    timeout_fault,
    thundering_herd_recovery,
    fallback_to_secondary,
    outbox_no_loss,
    deadline_vs_sla,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_connection_passes_on_a_real_nats_server() {
    passes_on_nats("close_connection").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_connection_is_not_applicable_on_the_embedded_broker_and_not_a_pass() {
    let report = run("close_connection", Target::Embedded).await;
    let s = &report.scenarios[0];
    assert_eq!(
        s.verdict,
        Verdict::NotApplicable,
        "{}",
        report.render_text()
    );
    assert!(s.not_applicable.as_deref().unwrap().contains("NATS"));
    assert!(
        !report.passed(),
        "a run of only not-applicable scenarios is not a pass"
    );
    assert!(report.render_text().contains("N/A   close_connection"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_and_html_reports_carry_every_assertion_and_the_charts() {
    let report = passes("mass_failure_opens_breaker", Target::Embedded).await;
    let json = serde_json::to_value(&report).unwrap();
    for field in [
        "profile",
        "clients",
        "requests",
        "target",
        "broker",
        "seed",
        "scenarios",
        "duration",
        "total_requests",
        "throughput_rps",
        "reproduce",
    ] {
        assert!(json.get(field).is_some(), "run field {field}");
    }
    let s = &json["scenarios"][0];
    for field in [
        "name",
        "description",
        "verdict",
        "assertions",
        "stats",
        "numbers",
        "config",
        "timeline",
        "requests",
        "duration",
    ] {
        assert!(s.get(field).is_some(), "scenario field {field}");
    }
    assert_eq!(s["verdict"], "pass");
    let a = &s["assertions"][0];
    for field in ["name", "kind", "passed", "measured", "bound"] {
        assert!(a.get(field).is_some(), "assertion field {field}");
    }
    assert!(s["stats"]["failing.shed_p99_ms"].is_number());
    let n = &s["numbers"][0];
    assert!(n["name"].is_string() && n["value"].is_string(), "{n}");
    let lanes = s["timeline"]["lanes"].as_array().unwrap();
    assert_eq!(lanes.len(), 1);
    let states: Vec<&str> = lanes[0]["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["state"].as_str().unwrap())
        .collect();
    assert_eq!(&states[..2], ["closed", "open"]);
    let html = beamline_scenario::html::render(&report);
    assert_eq!(html.matches("<svg").count(), 4);
    for a in &report.scenarios[0].assertions {
        assert!(
            html.contains(&a.name.replace('<', "&lt;").replace('>', "&gt;")),
            "{}",
            a.name
        );
    }
}

/// Every scenario against a router that is already running with its own (default)
/// settings and faults enabled (`scenario run --url`): each scenario's settings reach its
/// tenants through tenant policies, retry budget included, and all pass or are not
/// applicable (`close_connection`: the router publishes to the embedded broker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_passes_against_a_running_router() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let router = beamline_test_util::TestRouter::start(beamline_server::config::ServerConfig {
        data_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    })
    .await;
    let target = Target::Remote {
        url: format!("http://{}", router.server.addr()),
        token: beamline_test_util::test_token(),
    };
    let report = beamline_scenario::run(RunOptions::quiet(Profile::ci(), target, 7))
        .await
        .expect("the run could not be carried out");
    assert!(report.passed(), "{}", report.render_text());
    let not_applicable: Vec<&str> = report
        .scenarios
        .iter()
        .filter(|s| s.verdict == Verdict::NotApplicable)
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(
        not_applicable,
        ["close_connection"],
        "{}",
        report.render_text()
    );
    router.stop().await;
}
