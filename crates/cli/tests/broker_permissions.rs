//! A broker that refuses the router permission to publish to a provider's subject (a
//! real nats-server with users and permissions): the publish is answered 502
//! `publish_failed` with `error_kind: permission` after one attempt (a retry cannot
//! succeed), other providers are unaffected, and nothing is stored for the denied one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use beamline_server::config::{BrokerConfig, ServerConfig};
use beamline_test_util::{NatsServer, TestRouter};
use serde_json::json;

const PERMISSIONS: &str = r#"
authorization {
  users = [
    { user: "router", password: "router-secret",
      permissions: { publish: { allow: [">"], deny: ["beamline.provider.denied"] } } }
  ]
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_the_broker_denies_is_a_permission_error_and_is_not_retried() {
    let nats = NatsServer::start_with_config(PERMISSIONS);
    let url = nats
        .url()
        .replacen("nats://", "nats://router:router-secret@", 1);
    let mut config = ServerConfig {
        broker: BrokerConfig::Nats(beamline_broker::jetstream::NatsConfig {
            url,
            ..Default::default()
        }),
        ..ServerConfig::default()
    };
    config.retry.max_attempts = 3;
    config.retry.base_ms = 10;
    config.retry.attempt_timeout_ms = 500;
    config.retry.total_deadline_ms = 5_000;
    config.breaker.latency_threshold_ms = 400;
    let router = TestRouter::start(config).await;
    let c = &router.client;

    let ok = c
        .publish("t", "allowed", "m1", json!({"n": 1}))
        .await
        .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.body);

    let denied = c
        .publish("t", "denied", "m2", json!({"n": 2}))
        .await
        .unwrap();
    assert_eq!(denied.status, 502, "{}", denied.body);
    assert_eq!(denied.body["code"], "publish_failed", "{}", denied.body);
    assert_eq!(denied.body["error_kind"], "permission", "{}", denied.body);
    assert_eq!(denied.body["attempts"], 1, "not retried: {}", denied.body);

    let again = c
        .publish("t", "allowed", "m3", json!({"n": 3}))
        .await
        .unwrap();
    assert_eq!(again.status, 200, "{}", again.body);
    assert!(
        c.stored_message_ids("beamline.provider.denied")
            .await
            .unwrap()
            .is_empty()
    );
    router.stop().await;
}
