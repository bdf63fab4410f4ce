//! Delivery guarantees across failures, against a real `nats-server -js`:
//! - the router process is killed with SIGKILL under concurrent load while the broker is
//!   faulted (part of the traffic queued in the outbox), restarted on the same data
//!   directory: every message answered 200 or 202 ends up in the stream exactly once;
//! - `nats-server` itself is killed and restarted mid-load: the breaker opens and
//!   recovers, and again every acknowledged message is in the stream exactly once.
//!
//! A message answered with an error may be absent: its client was told.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use beamline_core::breaker::State;
use beamline_core::policy::DegradedMode;
use beamline_metrics::r10;
use beamline_scenario::client::RouterClient;
use beamline_server::config::{BrokerConfig, ServerConfig};
use beamline_test_util::{NatsServer, TestRouter, free_port, test_token};
use serde_json::json;
use tokio::task::JoinSet;

const PROVIDER: &str = "pcrash";

fn resilient_config(nats: &NatsServer, data_dir: &std::path::Path) -> ServerConfig {
    let nats = beamline_broker::jetstream::NatsConfig {
        url: nats.url(),
        ..Default::default()
    };
    ServerConfig {
        broker: BrokerConfig::Nats(nats),
        ..resilient_config_embedded(data_dir)
    }
}

/// Fast breaker and retry settings, the durable outbox, and (unless replaced) the durable
/// embedded broker in the same data directory.
fn resilient_config_embedded(data_dir: &std::path::Path) -> ServerConfig {
    let mut config = ServerConfig {
        data_dir: Some(data_dir.to_path_buf()),
        degraded_mode: DegradedMode::Outbox,
        ..ServerConfig::default()
    };
    config.breaker.failure_threshold = 3;
    config.breaker.open_timeout_ms = 300;
    config.breaker.open_timeout_max_ms = 1000;
    config.breaker.latency_threshold_ms = 400;
    config.retry.max_attempts = 2;
    config.retry.base_ms = 10;
    config.retry.attempt_timeout_ms = 500;
    config.retry.total_deadline_ms = 1500;
    config
}

/// Sends messages from `clients` tasks until `stop`; returns every answer by message id.
async fn load(
    client: RouterClient,
    clients: usize,
    stop: Arc<AtomicBool>,
    tag: &'static str,
) -> HashMap<String, u16> {
    let mut set = JoinSet::new();
    for c in 0..clients {
        let (client, stop) = (client.clone(), Arc::clone(&stop));
        set.spawn(async move {
            let mut answers = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let id = format!("{tag}-{c}-{i}");
                let status = match client
                    .publish("tcrash", PROVIDER, &id, json!({"c": c, "i": i}))
                    .await
                {
                    Ok(r) => r.status,
                    Err(_) => 0,
                };
                answers.push((id, status));
                i += 1;
                if status == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            answers
        });
    }
    let mut all = HashMap::new();
    while let Some(done) = set.join_next().await {
        all.extend(done.unwrap());
    }
    all
}

/// Every message answered 200/202 is stored exactly once; nothing is stored twice.
async fn assert_exactly_once(client: &RouterClient, answers: &HashMap<String, u16>) {
    let stored = client
        .stored_message_ids(&format!("beamline.provider.{PROVIDER}"))
        .await
        .unwrap();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in &stored {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "stored twice: {duplicated:?}");
    let acknowledged: Vec<&String> = answers
        .iter()
        .filter(|(_, s)| **s == 200 || **s == 202)
        .map(|(id, _)| id)
        .collect();
    let missing: Vec<_> = acknowledged
        .iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages missing: {:?}",
        missing.len(),
        acknowledged.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        acknowledged.len() > 50,
        "too little load to mean anything: {}",
        acknowledged.len()
    );
}

/// Waits until the outbox is empty, asking the admin API (the metrics gauge has no series
/// until the drainer's first round, so it cannot tell "empty" from "not reported yet").
async fn wait_drained(client: &RouterClient) {
    for _ in 0..600 {
        let outbox = client
            .admin(reqwest::Method::GET, "/admin/outbox", None)
            .await
            .unwrap();
        if outbox["depth"].as_u64() == Some(0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the outbox did not drain within 30 s");
}

struct Child_ {
    child: Child,
}

impl Drop for Child_ {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_router(config_path: &std::path::Path) -> Child_ {
    let child = Command::new(env!("CARGO_BIN_EXE_beamline-router"))
        .args(["serve", "--log-format", "text", "--config"])
        .arg(config_path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Child_ { child }
}

async fn wait_healthy(client: &RouterClient) {
    for _ in 0..200 {
        if client.config().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("router did not come up at {}", client.base());
}

/// Writes `config` (on a free port, with the test token and faults on) for a child router
/// process; returns the config file's path and a client for it.
fn child_config(
    dir: &std::path::Path,
    mut config: ServerConfig,
) -> (std::path::PathBuf, RouterClient) {
    let port = free_port();
    config.listen = ([127, 0, 0, 1], port).into();
    config.admin_token = Some(test_token());
    config.faults_enabled = true;
    let config_path = dir.join("router.toml");
    std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
    let client =
        RouterClient::new(&format!("http://127.0.0.1:{port}"), Some(test_token())).unwrap();
    (config_path, client)
}

/// Kills a router child process mid-load and restarts it on the same data directory.
async fn kill_and_restart_under_load(broker: Option<&NatsServer>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = match broker {
        Some(nats) => resilient_config(nats, &data),
        None => resilient_config_embedded(&data),
    };
    let (config_path, client) = child_config(dir.path(), config);

    let mut router = spawn_router(&config_path);
    wait_healthy(&client).await;
    // Intermittent failures: some messages are published, the rest queued once the
    // breaker opens or retries run out.
    let fault = json!({"type": "intermittent", "probability": 0.7, "fault": {"type": "error", "kind": "broker_unavailable"}});
    client.set_fault(PROVIDER, None, fault).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(load(client.clone(), 8, Arc::clone(&stop), "crash"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    router.child.kill().unwrap(); // SIGKILL, mid-load
    router.child.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let answers = running.await.unwrap();
    let queued = answers.values().filter(|s| **s == 202).count();
    assert!(
        queued > 0,
        "the fault should have queued part of the traffic"
    );

    // Same data directory; faults live in memory, so the restarted router has none.
    let _router = spawn_router(&config_path);
    wait_healthy(&client).await;
    wait_drained(&client).await;
    assert_exactly_once(&client, &answers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_router_loses_no_acknowledged_message_on_nats() {
    let nats = NatsServer::start();
    kill_and_restart_under_load(Some(&nats)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_router_loses_no_acknowledged_message_on_the_durable_embedded_broker() {
    kill_and_restart_under_load(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_opens_the_breaker_which_recovers_and_nothing_acknowledged_is_lost() {
    let mut nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let router = TestRouter::start(resilient_config(&nats, dir.path())).await;
    let client = router.client.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(load(client.clone(), 6, Arc::clone(&stop), "restart"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.stop();
    let opened = r10::wait_for_state(
        client.scraper(),
        "tcrash",
        PROVIDER,
        State::Open,
        Duration::from_secs(10),
    )
    .await;
    let opened = opened.unwrap_or_else(|e| panic!("{e}"));
    assert!(r10::latest_trigger_reason(&opened, "tcrash", PROVIDER).is_some());
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.restart();
    let closed = r10::wait_for_state(
        client.scraper(),
        "tcrash",
        PROVIDER,
        State::Closed,
        Duration::from_secs(20),
    )
    .await;
    closed.unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let answers = running.await.unwrap();
    wait_drained(&client).await;
    assert_exactly_once(&client, &answers).await;
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_before_exiting() {
    let dir = tempfile::tempdir().unwrap();
    let config = resilient_config_embedded(&dir.path().join("data"));
    let (config_path, client) = child_config(dir.path(), config);
    let mut router = spawn_router(&config_path);
    wait_healthy(&client).await;
    client
        .set_fault(PROVIDER, None, json!({"type": "delay", "ms": 300}))
        .await
        .unwrap();
    let in_flight: Vec<_> = (0..5)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .publish("tterm", PROVIDER, &format!("term-{i}"), json!(i))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pid = router.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    for request in in_flight {
        let answer = request
            .await
            .unwrap()
            .expect("an in-flight request is answered, not cut");
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let status = router.child.wait().unwrap();
    assert!(status.success(), "graceful exit: {status:?}");
    // The stream is durable: a new process on the same data directory has all five.
    let _router = spawn_router(&config_path);
    wait_healthy(&client).await;
    let stored = client
        .stored_message_ids(&format!("beamline.provider.{PROVIDER}"))
        .await
        .unwrap();
    assert_eq!(stored.len(), 5, "{stored:?}");
}
