//! Routing by tenant policy through the real HTTP server: weighted choice, fallbacks when a
//! breaker is open, sticky sessions, `/v1/decide`, and the refusals that come before any
//! dispatch (`unknown_provider`, `no_policy`, `message_id_conflict`, `invalid_policy`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use beamline_core::breaker::State;
use beamline_scenario::client::RouterClient;
use beamline_server::config::ServerConfig;
use beamline_test_util::TestRouter;
use reqwest::Method;
use serde_json::{Value, json};

async fn put_policy(
    client: &RouterClient,
    tenant: &str,
    policy: Value,
) -> Result<Value, beamline_scenario::client::ClientError> {
    client
        .admin(
            Method::PUT,
            &format!("/admin/policies/{tenant}"),
            Some(policy),
        )
        .await
}

async fn publish(
    client: &RouterClient,
    tenant: &str,
    provider: Option<&str>,
    id: &str,
) -> (u16, Value) {
    let mut body = json!({"tenant_id": tenant, "message_id": id, "payload": {"n": id}});
    if let Some(p) = provider {
        body["provider_id"] = json!(p);
    }
    let r = client
        .publish_raw(body.to_string().into_bytes(), "application/json")
        .await
        .unwrap();
    (r.status, r.body)
}

fn fast_breaker() -> ServerConfig {
    let mut config = ServerConfig::default();
    config.breaker.failure_threshold = 2;
    config.breaker.open_timeout_ms = 60_000;
    config.breaker.open_timeout_max_ms = 60_000;
    config.retry.max_attempts = 1;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_falls_back_while_the_primary_is_open_and_returns_when_it_closes() {
    let router = TestRouter::start(fast_breaker()).await;
    let c = &router.client;
    put_policy(
        c,
        "acme",
        json!({
            "providers": [{"id": "primary", "weight": 1}],
            "fallbacks": [{"on": "circuit_open", "to": "backup"}, {"on": "retries_exhausted", "to": "backup"}],
            "degraded_mode": "reject"
        }),
    )
    .await
    .unwrap();
    let (status, body) = publish(c, "acme", None, "m1").await;
    assert_eq!(
        (
            status,
            body["provider_id"].as_str(),
            body["route_reason"].as_str()
        ),
        (200, Some("primary"), Some("weighted"))
    );

    c.set_fault(
        "primary",
        None,
        json!({"type": "error", "kind": "broker_unavailable"}),
    )
    .await
    .unwrap();
    // Two failures open the primary's breaker; the failed dispatches fall back at once.
    for i in 0..2 {
        let (status, body) = publish(c, "acme", None, &format!("f{i}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["provider_id"], "backup");
        assert_eq!(body["route_reason"], "fallback");
    }
    router
        .wait_for_state("acme", "primary", State::Open, Duration::from_secs(2))
        .await;
    let decided = c.admin(Method::GET, "/admin/clock", None).await.unwrap();
    assert!(decided["now_ms"].is_u64());
    let d = reqwest::Client::new()
        .post(format!("{}/v1/decide", c.base()))
        .json(&json!({"tenant_id": "acme"}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        (d["provider_id"].as_str(), d["reason"].as_str()),
        (Some("backup"), Some("fallback")),
        "{d}"
    );
    // While open, the primary is never tried: no broker attempt for it.
    let before = c
        .attempts(0)
        .await
        .unwrap()
        .iter()
        .filter(|a| a.provider_id == "primary")
        .count();
    for i in 0..5 {
        let (status, body) = publish(c, "acme", None, &format!("o{i}")).await;
        assert_eq!(
            (status, body["provider_id"].as_str()),
            (200, Some("backup"))
        );
    }
    let after = c
        .attempts(0)
        .await
        .unwrap()
        .iter()
        .filter(|a| a.provider_id == "primary")
        .count();
    assert_eq!(
        before, after,
        "selection never picks a provider whose breaker rejects"
    );

    c.clear_faults(None).await.unwrap();
    c.admin(Method::POST, "/admin/breakers/acme/primary/reset", None)
        .await
        .unwrap();
    let (status, body) = publish(c, "acme", None, "back").await;
    assert_eq!(
        (status, body["provider_id"].as_str()),
        (200, Some("primary"))
    );
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_sessions_keep_their_provider_and_weights_spread_the_rest() {
    let router = TestRouter::embedded().await;
    let c = &router.client;
    put_policy(c, "s", json!({"providers": [{"id": "a", "weight": 1}, {"id": "b", "weight": 1}], "sticky": {"ttl_secs": 60}}))
        .await
        .unwrap();
    let mut first = None;
    for i in 0..10 {
        let body = json!({"tenant_id": "s", "session_id": "user-7", "message_id": format!("s{i}"), "payload": i});
        let r = c
            .publish_raw(body.to_string().into_bytes(), "application/json")
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        let p = r.body["provider_id"].as_str().unwrap().to_owned();
        let first = first.get_or_insert(p.clone());
        assert_eq!(&p, first, "a sticky session keeps its provider");
        if i > 0 {
            assert_eq!(r.body["route_reason"], "sticky");
        }
    }
    let mut seen = std::collections::HashSet::new();
    for i in 0..40 {
        let (status, body) = publish(c, "s", None, &format!("w{i}")).await;
        assert_eq!(status, 200);
        seen.insert(body["provider_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen.len(), 2, "weighted picks use both providers: {seen:?}");
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_before_dispatch_have_stable_codes() {
    let config = ServerConfig {
        providers: vec!["p1".parse().unwrap(), "p2".parse().unwrap()],
        ..ServerConfig::default()
    };
    let router = TestRouter::start(config).await;
    let c = &router.client;
    let (status, body) = publish(c, "t", Some("nope"), "x1").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("unknown_provider"))
    );
    let (status, body) = publish(c, "t", None, "x2").await;
    assert_eq!((status, body["code"].as_str()), (404, Some("no_policy")));
    let (status, _) = publish(c, "t", Some("p1"), "dup").await;
    assert_eq!(status, 200);
    let again = json!({"tenant_id": "t", "provider_id": "p1", "message_id": "dup", "payload": {"n": "dup"}});
    let r = c
        .publish_raw(again.to_string().into_bytes(), "application/json")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "same id and payload is an idempotent retry");
    assert_eq!(r.body["duplicate"], true);
    let other = json!({"tenant_id": "t", "provider_id": "p1", "message_id": "dup", "payload": {"n": "other"}});
    let r = c
        .publish_raw(other.to_string().into_bytes(), "application/json")
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (409, Some("message_id_conflict"))
    );
    let err = put_policy(
        c,
        "t",
        json!({"providers": [{"id": "p1"}], "circuit_breaker": {"latency_threshold_ms": 99999}}),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("invalid_policy") && text.contains("circuit_breaker.latency_threshold_ms"),
        "{text}"
    );
    put_policy(c, "t", json!({"providers": [{"id": "p1"}]}))
        .await
        .unwrap();
    let (status, body) = publish(c, "t", Some("p2"), "x3").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("unknown_provider")),
        "p2 is not in t's policy"
    );
    let stored = c.stored_message_ids("beamline.provider.p1").await.unwrap();
    assert_eq!(stored, vec!["dup".to_owned()]);
    router.stop().await;
}

/// A breaker an operator holds open tells clients to come back after the open timeout,
/// with a policy (selection sees it rejects) or without (the acquire rejects), not in 1 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_held_open_answers_retry_after_the_open_timeout() {
    let router = TestRouter::start(fast_breaker()).await;
    let c = &router.client;
    put_policy(
        c,
        "held",
        json!({"providers": [{"id": "p1"}], "degraded_mode": "reject"}),
    )
    .await
    .unwrap();
    for tenant in ["held", "plain"] {
        c.admin(
            Method::POST,
            &format!("/admin/breakers/{tenant}/p1/force-open"),
            None,
        )
        .await
        .unwrap();
        let provider = (tenant == "plain").then_some("p1");
        let (status, body) = publish(c, tenant, provider, &format!("{tenant}-1")).await;
        assert_eq!(
            (status, &body["reason"]),
            (503, &json!("circuit_open")),
            "{body}"
        );
        assert_eq!(body["retry_after_ms"], 60_000, "{tenant}: {body}");
    }
    router.stop().await;
}
