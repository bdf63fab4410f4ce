//! The scenario runner end to end: both scenarios on the ci profile, against the embedded
//! broker and against a real `nats-server -js` started by the harness. A failed assertion
//! fails the test with the whole report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use beamline_scenario::{Profile, RunOptions, Target};
use beamline_test_util::NatsServer;

async fn run_ci(target: Target) {
    let report = beamline_scenario::run(RunOptions {
        profile: Profile::ci(),
        scenarios: vec![],
        target,
        seed: Some(7),
        progress: false,
    })
    .await
    .expect("the run could not be carried out");
    assert!(
        report.passed(),
        "scenario assertions failed:\n{}",
        report.render_text()
    );
    assert_eq!(report.scenarios.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_scenarios_pass_on_the_embedded_broker() {
    run_ci(Target::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_scenarios_pass_on_a_real_nats_server() {
    let nats = NatsServer::start();
    run_ci(Target::Nats(nats.url())).await;
}
