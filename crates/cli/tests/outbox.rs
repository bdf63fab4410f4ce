//! The degraded path through the real HTTP server on the embedded broker: messages no
//! provider can take are answered 202 `queued` only once durable, delivered in order per
//! key when the breaker admits again, and a full outbox answers 503, never a silent drop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use beamline_core::policy::DegradedMode;
use beamline_metrics::{Snapshot, r11};
use beamline_server::config::ServerConfig;
use beamline_test_util::TestRouter;
use reqwest::Method;
use serde_json::json;

fn outbox_config(dir: &std::path::Path, capacity: usize) -> ServerConfig {
    let mut config = ServerConfig {
        data_dir: Some(dir.to_path_buf()),
        outbox_capacity: capacity,
        degraded_mode: DegradedMode::Outbox,
        ..ServerConfig::default()
    };
    config.breaker.failure_threshold = 3;
    config.breaker.open_timeout_ms = 200;
    config.breaker.open_timeout_max_ms = 400;
    config.retry.max_attempts = 2;
    config.retry.base_ms = 5;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_messages_are_delivered_in_order_once_the_provider_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let router = TestRouter::start(outbox_config(dir.path(), 1000)).await;
    let c = &router.client;
    c.set_fault(
        "p",
        None,
        json!({"type": "error", "kind": "connection_refused"}),
    )
    .await
    .unwrap();
    let mut ids = Vec::new();
    for i in 0..30 {
        let id = format!("m{i:03}");
        let r = c.publish("t", "p", &id, json!({"i": i})).await.unwrap();
        assert_eq!(
            (r.status, r.body["status"].as_str()),
            (202, Some("queued")),
            "{}",
            r.body
        );
        ids.push(id);
    }
    let outbox = c.admin(Method::GET, "/admin/outbox", None).await.unwrap();
    assert_eq!(outbox["depth"], 30, "{outbox}");
    c.clear_faults(None).await.unwrap();
    // New traffic joins the queue behind the backlog instead of overtaking it.
    let r = c.publish("t", "p", "m030", json!({"i": 30})).await.unwrap();
    assert!(r.status == 202 || r.status == 200, "{}", r.body);
    ids.push("m030".into());
    let scrape = c.scraper();
    let drained = r11::wait_for(
        scrape,
        "the outbox to drain",
        Duration::from_secs(10),
        |s: &Snapshot| {
            r11::depth(s, &[("tenant_id", "t"), ("provider_id", "p")]) == 0.0
                && r11::delivered(s, &[]) >= 30.0
        },
    )
    .await;
    let snapshot = drained.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        r11::enqueued(&snapshot, &[]),
        r11::delivered(&snapshot, &[])
    );
    let stored = c.stored_message_ids("beamline.provider.p").await.unwrap();
    assert_eq!(
        stored, ids,
        "every accepted message stored exactly once, in order"
    );
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_answers_503_and_keeps_what_it_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let router = TestRouter::start(outbox_config(dir.path(), 5)).await;
    let c = &router.client;
    c.set_fault(
        "p",
        None,
        json!({"type": "error", "kind": "broker_unavailable"}),
    )
    .await
    .unwrap();
    let mut statuses = Vec::new();
    for i in 0..8 {
        let r = c
            .publish("t", "p", &format!("f{i}"), json!(i))
            .await
            .unwrap();
        statuses.push((
            r.status,
            r.body["code"]
                .as_str()
                .unwrap_or(r.body["status"].as_str().unwrap_or(""))
                .to_owned(),
        ));
    }
    assert_eq!(
        statuses.iter().filter(|(s, _)| *s == 202).count(),
        5,
        "{statuses:?}"
    );
    assert!(
        statuses[5..]
            .iter()
            .all(|(s, code)| *s == 503 && code == "outbox_full"),
        "{statuses:?}"
    );
    router.stop().await;
    // The accepted five survive a restart on the same data directory and are delivered
    // (to the new process's embedded broker) once nothing is faulted.
    let router = TestRouter::start(outbox_config(dir.path(), 5)).await;
    let c = &router.client;
    let drained = r11::wait_for(
        c.scraper(),
        "the outbox to drain after a restart",
        Duration::from_secs(10),
        |s| r11::delivered(s, &[]) >= 5.0 && r11::depth(s, &[]) == 0.0,
    )
    .await;
    drained.unwrap_or_else(|e| panic!("{e}"));
    let stored = c.stored_message_ids("beamline.provider.p").await.unwrap();
    assert_eq!(stored, ["f0", "f1", "f2", "f3", "f4"]);
    router.stop().await;
}
