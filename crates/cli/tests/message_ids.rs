//! Message ids through the real HTTP server, on the embedded broker and on a real
//! nats-server: an id is the tenant's, a retry is stored once, an id reused for another
//! message is refused while remembered and never loses that message when it is not, and a
//! retry of a queued message is queued, not refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use beamline_core::policy::DegradedMode;
use beamline_server::config::{BrokerConfig, ServerConfig};
use beamline_test_util::{NatsServer, TestRouter};
use serde_json::{Value, json};

fn on(nats: Option<&NatsServer>) -> ServerConfig {
    ServerConfig {
        broker: nats.map_or_else(BrokerConfig::default, NatsServer::broker_config),
        ..ServerConfig::default()
    }
}

async fn stored(router: &TestRouter, provider: &str) -> Vec<String> {
    router
        .client
        .stored_message_ids(&format!("beamline.provider.{provider}"))
        .await
        .unwrap()
}

async fn ids_are_per_tenant_and_a_reuse_never_loses_a_message(config: ServerConfig) {
    let router = TestRouter::start(config).await;
    let c = &router.client;
    // Two tenants, one id: two messages, both stored.
    for tenant in ["ta", "tb"] {
        let r = c
            .publish(tenant, "shared", "order-42", json!({"from": tenant}))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["duplicate"], false, "{tenant}: {}", r.body);
    }
    assert_eq!(stored(&router, "shared").await, ["order-42", "order-42"]);

    // A retry (same tenant, id, payload) is stored once.
    let again = c
        .publish("ta", "shared", "order-42", json!({"from": "ta"}))
        .await
        .unwrap();
    assert_eq!(
        (again.status, &again.body["duplicate"]),
        (200, &json!(true))
    );
    assert_eq!(stored(&router, "shared").await.len(), 2);

    // The same message sent explicitly to another provider: refused, it is stored already.
    let moved = c
        .publish("ta", "elsewhere", "order-42", json!({"from": "ta"}))
        .await
        .unwrap();
    assert_eq!(moved.status, 409, "{}", moved.body);
    assert_eq!(moved.body["code"], "message_id_conflict");

    // Another payload under a remembered id: refused.
    let reused = c
        .publish("ta", "shared", "order-42", json!({"from": "someone else"}))
        .await
        .unwrap();
    assert_eq!(
        (reused.status, &reused.body["code"]),
        (409, &json!("message_id_conflict"))
    );
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_per_tenant_on_the_embedded_broker() {
    ids_are_per_tenant_and_a_reuse_never_loses_a_message(on(None)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_per_tenant_on_nats() {
    let nats = NatsServer::start();
    ids_are_per_tenant_and_a_reuse_never_loses_a_message(on(Some(&nats))).await;
}

/// Once the router no longer remembers an id (restart, or evicted from its memory: here
/// the memory is off), a reused id with another payload is a new message: stored, not
/// answered "duplicate" and dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_id_reused_for_another_payload_is_stored_not_dropped() {
    let nats = NatsServer::start();
    for config in [on(None), on(Some(&nats))] {
        let router = TestRouter::start(ServerConfig {
            recent_message_ids: 0,
            ..config
        })
        .await;
        let c = &router.client;
        for i in 0..2 {
            let r = c
                .publish("t", "forgetful", "reused", json!({"i": i}))
                .await
                .unwrap();
            assert_eq!((r.status, &r.body["duplicate"]), (200, &json!(false)));
        }
        assert_eq!(stored(&router, "forgetful").await, ["reused", "reused"]);
        router.stop().await;
    }
}

/// Many requests racing with one id and different payloads: one goes ahead, the others
/// are refused with 409; none is told "published" while its payload is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_reuses_of_one_id_are_refused_not_dropped() {
    let router = TestRouter::start(on(None)).await;
    // A slow broker: every request is in flight before the first is acknowledged.
    router
        .client
        .set_fault("race", None, json!({"type": "delay", "ms": 200}))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let c = router.client.clone();
            tokio::spawn(async move { c.publish("t", "race", "same", json!({"i": i})).await })
        })
        .collect();
    let mut answers: Vec<(u16, Value)> = Vec::new();
    for t in tasks {
        let r = t.await.unwrap().unwrap();
        answers.push((r.status, r.body));
    }
    let published: Vec<_> = answers.iter().filter(|(s, _)| *s == 200).collect();
    let refused = answers.iter().filter(|(s, _)| *s == 409).count();
    assert_eq!(published.len(), 1, "{answers:?}");
    assert_eq!(published[0].1["duplicate"], false, "{answers:?}");
    assert_eq!(refused, 39, "{answers:?}");
    assert_eq!(stored(&router, "race").await, ["same"]);
    router.stop().await;
}

/// A client retrying a message that sits in the outbox is told it is queued (same
/// `outbox_seq`), even when the outbox is full, and the retry takes no second slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_of_a_queued_message_is_queued_even_when_the_outbox_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig {
        data_dir: Some(dir.path().to_path_buf()),
        outbox_capacity: 3,
        degraded_mode: DegradedMode::Outbox,
        ..on(None)
    };
    config.retry.max_attempts = 1;
    let router = TestRouter::start(config).await;
    let c = &router.client;
    c.set_fault(
        "down",
        None,
        json!({"type": "error", "kind": "connection_refused"}),
    )
    .await
    .unwrap();
    let mut seqs = Vec::new();
    for i in 0..3 {
        let r = c
            .publish("t", "down", &format!("q{i}"), json!({"i": i}))
            .await
            .unwrap();
        assert_eq!(r.status, 202, "{}", r.body);
        seqs.push(r.body["outbox_seq"].clone());
    }
    let full = c.publish("t", "down", "q3", json!({"i": 3})).await.unwrap();
    assert_eq!(
        (full.status, &full.body["code"]),
        (503, &json!("outbox_full"))
    );
    let retry = c.publish("t", "down", "q0", json!({"i": 0})).await.unwrap();
    assert_eq!(retry.status, 202, "{}", retry.body);
    assert_eq!(retry.body["outbox_seq"], seqs[0]);
    let outbox = c
        .admin(reqwest::Method::GET, "/admin/outbox", None)
        .await
        .unwrap();
    assert_eq!(outbox["depth"], 3, "{outbox}");
    router.stop().await;
}
