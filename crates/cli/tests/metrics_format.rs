//! `/metrics` as scrapers see it: the classic text format passes `promtool check metrics`
//! (a real promtool, installed by `.ci/run`), and the OpenMetrics form is served to
//! scrapers that ask for it; both carry the same samples.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use beamline_core::breaker::State;
use beamline_metrics::{Snapshot, r10};
use beamline_test_util::TestRouter;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_text_format_passes_promtool_and_matches_openmetrics() {
    let router = TestRouter::embedded().await;
    let c = &router.client;
    c.publish("t", "ok", "m1", json!(1)).await.unwrap();
    c.set_fault(
        "bad",
        None,
        json!({"type": "error", "kind": "broker_unavailable"}),
    )
    .await
    .unwrap();
    for i in 0..6 {
        c.publish("t", "bad", &format!("b{i}"), json!(i))
            .await
            .unwrap();
    }
    router
        .wait_for_state("t", "bad", State::Open, Duration::from_secs(2))
        .await;

    let url = format!("{}/metrics", c.base());
    let http = reqwest::Client::new();
    let plain = http.get(&url).send().await.unwrap();
    assert!(
        plain.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let plain = plain.text().await.unwrap();
    let open = http
        .get(&url)
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(open.trim_end().ends_with("# EOF"));

    let promtool = beamline_test_util::promtool_binary();
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(plain.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics:\n{said}\n--- exposition:\n{plain}"
    );

    let (a, b) = (
        Snapshot::parse(&plain).unwrap(),
        Snapshot::parse(&open).unwrap(),
    );
    assert_eq!(r10::state(&a, "t", "bad"), Some(State::Open));
    assert_eq!(
        r10::latest_trigger_reason(&a, "t", "bad"),
        r10::latest_trigger_reason(&b, "t", "bad")
    );
    assert_eq!(
        r10::rejections(&a, "t", "bad"),
        r10::rejections(&b, "t", "bad")
    );
    router.stop().await;
}
