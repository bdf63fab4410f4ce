//! The publish path, end to end, against one local `nats-server -js` started here
//! (docs/PERFORMANCE.md, "Publish path"):
//!
//! 1. `raw`: async-nats JetStream publishes, `CONCURRENCY` in flight (each worker task
//!    sends a publish and awaits its ack, `CONCURRENCY` workers);
//! 2. `dispatcher`: the router's `Dispatcher::dispatch` in-process (no HTTP), breaker and
//!    metrics on, built as `Server::start` builds it, same workers and concurrency;
//! 3. `http_*`: `POST /v1/publish` through an in-process router (NATS and embedded
//!    broker) with `HTTP_CLIENTS` keep-alive reqwest clients, against an axum endpoint
//!    that does nothing (the HTTP floor), same load;
//! 4. `outbox`: `Outbox::append` (durable, group-committed) with `CONCURRENCY` appends in
//!    flight.
//!
//! Rounds interleave the workloads so machine noise hits them alike; each figure is the
//! median over rounds. Env: `PUBLISH_PATH_ROUNDS` (default 5), `PUBLISH_PATH_MESSAGES`
//! (per workload per round, default 20000). A plain `harness = false` main: criterion's
//! per-iteration model does not fit throughput with hundreds of operations in flight.
#![allow(
    clippy::disallowed_methods, // a benchmark measures wall time: that is its job
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_nats::jetstream;
use beamline_broker::OutgoingMessage;
use beamline_broker::jetstream::{JetStreamPublisher, NatsConfig};
use beamline_core::breaker::BreakerRegistry;
use beamline_core::{ProviderId, TenantId};
use beamline_metrics::RouterMetrics;
use beamline_outbox::{NewMessage, Outbox};
use beamline_server::clock::TokioClock;
use beamline_server::config::{BrokerConfig, ServerConfig};
use beamline_server::dispatcher::Dispatcher;
use beamline_server::events::BreakerEvents;
use beamline_server::{RunningServer, Server};
use beamline_test_util::NatsServer;
use bytes::Bytes;

/// Operations in flight for the raw, dispatcher and outbox workloads.
const CONCURRENCY: usize = 256;
/// Concurrent keep-alive HTTP clients.
const HTTP_CLIENTS: usize = 64;
/// Keys the dispatcher spreads its messages over.
const KEYS: u64 = 4;
const PAYLOAD: &[u8] =
    br#"{"order":12345,"items":["a","b","c"],"note":"benchmark payload of about 100 bytes....."}"#;

/// One run of one workload.
#[derive(Clone, Copy, Debug)]
struct Run {
    per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
}

/// Runs `op(i)` for `i` in `0..n`, `workers` at a time (each worker awaits its operation
/// before taking the next index), and measures throughput and per-operation latency.
async fn drive<F, Fut>(n: u64, workers: usize, op: F) -> Run
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (op, next, errors) = (Arc::clone(&op), Arc::clone(&next), Arc::clone(&errors));
        set.spawn(async move {
            let mut lat = Vec::with_capacity((n as usize / workers) + 1);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let t = Instant::now();
                if !op(i).await {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                lat.push(t.elapsed().as_micros() as u32);
            }
            lat
        });
    }
    let mut all = Vec::with_capacity(n as usize);
    while let Some(lat) = set.join_next().await {
        all.extend(lat.unwrap());
    }
    let took = start.elapsed();
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 - 1.0) * p).round() as usize] as f64;
    Run {
        per_sec: n as f64 / took.as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        errors: errors.load(Ordering::Relaxed),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn nats_config(url: &str) -> NatsConfig {
    NatsConfig {
        url: url.to_owned(),
        ..NatsConfig::default()
    }
}

async fn start_router(broker: BrokerConfig, data_dir: Option<std::path::PathBuf>) -> RunningServer {
    let config = ServerConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        broker,
        seed: 7,
        data_dir,
        ..ServerConfig::default()
    };
    Server::start(config.validate().unwrap()).await.unwrap()
}

/// The HTTP floor: an axum route that reads the body and answers a fixed small JSON.
async fn start_noop() -> std::net::SocketAddr {
    async fn noop(body: Bytes) -> ([(axum::http::HeaderName, &'static str); 1], &'static str) {
        std::hint::black_box(body);
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            r#"{"status":"published"}"#,
        )
    }
    let app = axum::Router::new().route("/v1/publish", axum::routing::post(noop));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn http_op(
    client: reqwest::Client,
    url: String,
    prefix: &'static str,
) -> impl Fn(u64) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync + 'static {
    let base = Arc::new(AtomicU64::new(0));
    move |i| {
        let client = client.clone();
        let url = url.clone();
        let seq = base.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            let body = format!(
                r#"{{"tenant_id":"tenant-{}","provider_id":"http","message_id":"{prefix}-{seq}-{i}","payload":{}}}"#,
                i % KEYS,
                std::str::from_utf8(PAYLOAD).unwrap()
            );
            match client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
            {
                Ok(r) => {
                    let ok = r.status().is_success();
                    let _ = r.bytes().await;
                    ok
                }
                Err(_) => false,
            }
        })
    }
}

#[derive(Default)]
struct Series(Vec<(&'static str, Vec<Run>)>);

impl Series {
    fn push(&mut self, name: &'static str, run: Run) {
        eprintln!(
            "  {name:22} {:>9.0} msg/s  p50 {:>7.0} us  p99 {:>7.0} us  errors {}",
            run.per_sec, run.p50_us, run.p99_us, run.errors
        );
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => v.push(run),
            None => self.0.push((name, vec![run])),
        }
    }

    fn median_of(&self, name: &str) -> Option<(f64, f64, f64, u64)> {
        let runs = &self.0.iter().find(|(n, _)| *n == name)?.1;
        Some((
            median(runs.iter().map(|r| r.per_sec).collect()),
            median(runs.iter().map(|r| r.p50_us).collect()),
            median(runs.iter().map(|r| r.p99_us).collect()),
            runs.iter().map(|r| r.errors).sum(),
        ))
    }
}

#[tokio::main]
async fn main() {
    // `cargo bench --workspace --no-run` only compiles; `cargo test --benches` runs the
    // binary with no `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rounds = env_or("PUBLISH_PATH_ROUNDS", 5).max(1);
    let n = env_or("PUBLISH_PATH_MESSAGES", 20_000).max(1);
    let nats = NatsServer::start();
    let url = nats.url();
    eprintln!(
        "publish_path: nats-server at {url}, {rounds} rounds x {n} messages, concurrency {CONCURRENCY}, http clients {HTTP_CLIENTS}"
    );

    // The router's way to the broker; it also creates the file-backed stream all
    // workloads publish to.
    let valid = ServerConfig {
        broker: BrokerConfig::Nats(nats_config(&url)),
        seed: 7,
        ..ServerConfig::default()
    }
    .validate()
    .unwrap();
    let js_pub = JetStreamPublisher::connect(&nats_config(&url), valid.retry.attempt_timeout())
        .await
        .unwrap();
    let clock = TokioClock::new();
    let metrics = Arc::new(RouterMetrics::new(valid.raw.max_tenant_labels));
    let registry = Arc::new(BreakerRegistry::new(
        valid.breaker.clone(),
        64,
        7,
        BreakerEvents::new(Arc::clone(&metrics)),
    ));
    let dispatcher = Arc::new(Dispatcher::new(
        clock,
        Arc::clone(&registry),
        Arc::new(js_pub),
        Arc::clone(&metrics),
        valid.retry.clone(),
        7,
    ));
    let tenants: Arc<Vec<TenantId>> = Arc::new(
        (0..KEYS)
            .map(|k| TenantId::try_new(&format!("tenant-{k}")).unwrap())
            .collect(),
    );
    let provider = ProviderId::try_new("dispatch").unwrap();

    // Raw async-nats on its own connection, as a client library user would.
    let raw_client = async_nats::ConnectOptions::new()
        .connect(url.as_str())
        .await
        .unwrap();
    let raw_js = jetstream::new(raw_client);

    let nats_router = start_router(BrokerConfig::Nats(nats_config(&url)), None).await;
    let embedded_router = start_router(BrokerConfig::default(), None).await;
    let noop = start_noop().await;
    let outbox_dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(&outbox_dir.path().join("outbox.redb"), usize::MAX / 2).unwrap();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(HTTP_CLIENTS)
        .tcp_nodelay(true)
        .build()
        .unwrap();

    let mut series = Series::default();
    let payload = Bytes::from_static(PAYLOAD);
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);

        let js = raw_js.clone();
        let p = payload.clone();
        let run = drive(n, CONCURRENCY, move |i| {
            let js = js.clone();
            let p = p.clone();
            async move {
                let msg = jetstream::message::PublishMessage::build()
                    .payload(p)
                    .message_id(format!("raw-{round}-{i}"));
                match js.send_publish("beamline.provider.raw", msg).await {
                    Ok(ack) => ack.await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await;
        series.push("raw", run);

        let d = Arc::clone(&dispatcher);
        let (t, pr, p) = (Arc::clone(&tenants), provider.clone(), payload.clone());
        let run = drive(n, CONCURRENCY, move |i| {
            let d = Arc::clone(&d);
            let message = OutgoingMessage {
                tenant: t[(i % KEYS) as usize].clone(),
                provider: pr.clone(),
                message_id: format!("dispatch-{round}-{i}"),
                payload: p.clone(),
            };
            async move { d.dispatch(&message, None, None).await.is_ok() }
        })
        .await;
        series.push("dispatcher", run);

        let op = http_op(
            http.clone(),
            format!("http://{}/v1/publish", nats_router.addr()),
            "http-nats",
        );
        series.push("http_router_nats", drive(n, HTTP_CLIENTS, op).await);

        let op = http_op(
            http.clone(),
            format!("http://{}/v1/publish", embedded_router.addr()),
            "http-embedded",
        );
        series.push("http_router_embedded", drive(n, HTTP_CLIENTS, op).await);

        let op = http_op(http.clone(), format!("http://{noop}/v1/publish"), "noop");
        series.push("http_noop", drive(n, HTTP_CLIENTS, op).await);

        let o = outbox.clone();
        let (t, pr, p) = (Arc::clone(&tenants), provider.clone(), payload.clone());
        let run = drive(n, CONCURRENCY, move |i| {
            let o = o.clone();
            let message = NewMessage {
                tenant: t[(i % KEYS) as usize].clone(),
                provider: pr.clone(),
                message_id: format!("outbox-{round}-{i}"),
                payload: p.clone(),
                enqueued_unix_ms: 0,
            };
            async move { o.append(message).await.is_ok() }
        })
        .await;
        series.push("outbox_append", run);
    }

    println!();
    println!(
        "publish_path medians over {rounds} rounds x {n} messages (concurrency {CONCURRENCY}; HTTP: {HTTP_CLIENTS} clients)"
    );
    println!(
        "{:22} {:>10} {:>9} {:>9} {:>7}",
        "workload", "msg/s", "p50 us", "p99 us", "errors"
    );
    for (name, _) in &series.0 {
        let (r, p50, p99, e) = series.median_of(name).unwrap();
        println!("{name:22} {r:>10.0} {p50:>9.0} {p99:>9.0} {e:>7}");
    }
    let rate = |name: &str| series.median_of(name).map_or(f64::NAN, |m| m.0);
    // Ratio per round (same round, adjacent in time), then the median of those.
    let paired = |a: &str, b: &str| {
        let get = |name: &str| &series.0.iter().find(|(n, _)| *n == name).unwrap().1;
        median(
            get(a)
                .iter()
                .zip(get(b))
                .map(|(x, y)| x.per_sec / y.per_sec)
                .collect(),
        )
    };
    println!();
    println!(
        "dispatcher / raw: {:.2} (ratio of medians {:.2}); target >= 0.80",
        paired("dispatcher", "raw"),
        rate("dispatcher") / rate("raw")
    );
    println!(
        "http router (nats) / raw: {:.2}; http router (nats) / http noop: {:.2}; http router (embedded) / http noop: {:.2}",
        paired("http_router_nats", "raw"),
        paired("http_router_nats", "http_noop"),
        paired("http_router_embedded", "http_noop"),
    );
    println!("outbox / raw: {:.2}", paired("outbox_append", "raw"));
    let snapshot = metrics.render();
    let attempts = snapshot
        .lines()
        .filter(|l| l.contains("publish_attempt") && !l.starts_with('#'))
        .count();
    eprintln!("(dispatcher metrics rendered: {attempts} publish-attempt series)");

    nats_router.shutdown().await;
    embedded_router.shutdown().await;
    drop(outbox);
    drop(nats);
}
