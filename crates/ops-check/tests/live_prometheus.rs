//! Live check of ops/ against a real Prometheus (Debian package `prometheus`).
//!
//! Starts a router in-process through the server crate's public API (test-util's
//! `TestRouter`: embedded broker, faults and the admin API enabled, durable outbox in a
//! temporary directory), a real `prometheus` on a free loopback port scraping it every second
//! and evaluating `ops/prometheus/recording.yml` and `alerts.yml` every second, and drives
//! load through three phases: healthy, every publish to provider `p1` refused
//! (`connection_refused`, an injected broker fault), fault lifted. Then:
//! - during the mass failure, `BeamlineBreakerOpenTooLong` is pending or firing;
//! - after the fault is lifted, Prometheus sees every breaker of `p1` closed again;
//! - every rule evaluates without error (`/api/v1/rules` health);
//! - every alert and recording expression is accepted by `/api/v1/query`;
//! - every dashboard query returns data (range queries through `/api/v1/query_range`
//!   over the test, instant ones at its end), except panels that read only metrics listed
//!   in [`NOT_YET_EXPORTED`] — and the test fails as soon as one of those appears in the
//!   router's `/metrics`, so that list can only shrink.
//!
//! A missing `prometheus` binary fails the test with instructions; it is never skipped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use beamline_core::breaker::BreakerConfig;
use beamline_core::policy::DegradedMode;
use beamline_metrics::Snapshot;
use beamline_ops_check::{dashboard, promql, rules};
use beamline_server::config::ServerConfig;
use beamline_test_util::{TestRouter, free_port, test_token};
use serde_json::{Value, json};

/// The faulted provider and its tenants; `p2` stays healthy.
const KEYS: [(&str, &str); 4] = [
    ("acme", "p1"),
    ("beta", "p1"),
    ("gamma", "p1"),
    ("delta", "p2"),
];
/// Metrics the router does not export yet. Panels reading only these may be empty; the
/// test fails once the router exports one of them, so this list can only shrink.
const NOT_YET_EXPORTED: [&str; 0] = [];

/// A `prometheus` child process with its own temporary directory; killed on drop.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_prometheus(target: &str) -> Prometheus {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!(
        "beamline-ops-check-prom-{}-{port}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let rule_files: Vec<String> = rules::rule_file_paths()
        .iter()
        .map(|p| format!("  - {}\n", p.display()))
        .collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n{}\
         scrape_configs:\n  - job_name: beamline-router\n    static_configs:\n      - targets: [\"{target}\"]\n",
        rule_files.concat()
    );
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap_or_else(|e| panic!("{e}"));
    let bin = std::env::var("PROMETHEUS").unwrap_or_else(|_| "prometheus".to_owned());
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap_or_else(|e| panic!("{e}"));
    let child = Command::new(&bin)
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{bin}` ({e}). This test needs a real Prometheus: run `.ci/run` (it \
                 installs it) or `apt-get install -y --no-install-recommends prometheus`, or set \
                 PROMETHEUS to its path"
            )
        });
    Prometheus {
        child,
        dir,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// Prometheus' log so far (for failure messages).
fn prometheus_log(p: &Prometheus) -> String {
    std::fs::read_to_string(p.dir.join("prometheus.log")).unwrap_or_default()
}

async fn api(
    client: &reqwest::Client,
    url: &str,
    params: &[(&str, String)],
) -> Result<Value, String> {
    let response = client
        .get(url)
        .query(params)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let body: Value = response.json().await.map_err(|e| format!("{url}: {e}"))?;
    if body["status"] == "success" {
        Ok(body["data"].clone())
    } else {
        Err(format!("{}: {}", body["errorType"], body["error"]))
    }
}

async fn instant(client: &reqwest::Client, prom: &str, expr: &str) -> Result<Value, String> {
    api(
        client,
        &format!("{prom}/api/v1/query"),
        &[("query", expr.to_owned())],
    )
    .await
}

fn has_data(data: &Value) -> bool {
    match data["resultType"].as_str() {
        Some("scalar") | Some("string") => true,
        _ => data["result"].as_array().is_some_and(|r| !r.is_empty()),
    }
}

/// Polls `expr` every 500 ms until it returns data or `tries` run out.
async fn wait_for_data(
    client: &reqwest::Client,
    prom: &str,
    expr: &str,
    tries: u32,
) -> Option<Value> {
    for _ in 0..tries {
        if let Ok(data) = instant(client, prom, expr).await
            && has_data(&data)
        {
            return Some(data);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

async fn prometheus_time(client: &reqwest::Client, prom: &str) -> f64 {
    let data = instant(client, prom, "time()")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    data["result"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("time(): {data}"))
}

/// Sends publishes for one key until `stop`, one every 50 ms.
async fn load(
    client: reqwest::Client,
    router: String,
    tenant: &'static str,
    provider: &'static str,
    stop: Arc<AtomicBool>,
) -> u64 {
    let mut sent = 0;
    while !stop.load(Ordering::Relaxed) {
        let body = json!({"tenant_id": tenant, "provider_id": provider, "payload": {"n": sent}});
        let _ = client
            .post(format!("{router}/v1/publish"))
            .json(&body)
            .send()
            .await;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_queries_and_alerts_work_against_a_real_prometheus_scraping_a_router_under_fault()
{
    // --- the router ---------------------------------------------------------------------
    let data_dir =
        std::env::temp_dir().join(format!("beamline-ops-check-outbox-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let router_under_test = TestRouter::start(ServerConfig {
        seed: 42,
        degraded_mode: DegradedMode::Outbox,
        data_dir: Some(data_dir.clone()),
        breaker: BreakerConfig {
            open_timeout_ms: 2_000,
            open_timeout_max_ms: 8_000,
            ..BreakerConfig::default()
        },
        ..ServerConfig::default()
    })
    .await;
    let addr = router_under_test.server.addr();
    let router = format!("http://{addr}");
    let token = test_token();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // --- Prometheus ---------------------------------------------------------------------
    let prometheus = start_prometheus(&addr.to_string());
    let prom = prometheus.url.clone();
    let mut ready = false;
    for _ in 0..100 {
        if client
            .get(format!("{prom}/-/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ready,
        "prometheus did not become ready:\n{}",
        prometheus_log(&prometheus)
    );
    let start = prometheus_time(&client, &prom).await;

    // --- phase 1: healthy load until Prometheus has scraped the router ----------------------
    let stop = Arc::new(AtomicBool::new(false));
    let loads: Vec<_> = KEYS
        .iter()
        .map(|(t, p)| {
            tokio::spawn(load(
                client.clone(),
                router.clone(),
                t,
                p,
                Arc::clone(&stop),
            ))
        })
        .collect();
    let scraped = wait_for_data(
        &client,
        &prom,
        r#"up{job="beamline-router"} == 1 and on () count(router_publish_attempts_total) > 0"#,
        60,
    )
    .await;
    assert!(
        scraped.is_some(),
        "prometheus never scraped the router:\n{}",
        prometheus_log(&prometheus)
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    // --- phase 2: mass failure of p1 ----------------------------------------------------
    let fault =
        json!({"provider_id": "p1", "fault": {"type": "error", "kind": "connection_refused"}});
    let put = client
        .put(format!("{router}/admin/faults"))
        .bearer_auth(&token)
        .json(&fault)
        .send()
        .await
        .unwrap();
    assert!(
        put.status().is_success(),
        "PUT /admin/faults: {}",
        put.text().await.unwrap_or_default()
    );
    let alert = wait_for_data(
        &client,
        &prom,
        r#"ALERTS{alertname="BeamlineBreakerOpenTooLong", alertstate=~"pending|firing", provider_id="p1"}"#,
        60,
    )
    .await;
    let alert = alert.unwrap_or_else(|| {
        panic!("BeamlineBreakerOpenTooLong never became pending during the mass failure")
    });
    let reasons: Vec<&str> = alert["result"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["metric"]["reason"].as_str())
        .collect();
    assert!(
        reasons.contains(&"failure_threshold_exceeded"),
        "the pending alert should name the trigger reason, got {alert}"
    );
    // Messages no provider can take go to the durable outbox (degraded_mode = outbox).
    let queued = wait_for_data(
        &client,
        &prom,
        r#"router_outbox_depth{provider_id="p1"} > 0"#,
        40,
    )
    .await;
    assert!(
        queued.is_some(),
        "the outbox never held p1's messages during the mass failure"
    );
    // Let probes fail at least once (open timeout 2 s), so half_open_failure is recorded.
    let probe_failed = wait_for_data(
        &client,
        &prom,
        r#"router_circuit_breaker_state_transitions_total{reason="half_open_failure"}"#,
        40,
    )
    .await;
    assert!(
        probe_failed.is_some(),
        "no half_open_failure transition was scraped"
    );

    // --- phase 3: fault lifted, breakers close ------------------------------------------
    let del = client
        .delete(format!("{router}/admin/faults"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(
        del.status().is_success(),
        "DELETE /admin/faults: {}",
        del.status()
    );
    let closed = wait_for_data(
        &client,
        &prom,
        r#"count(router_circuit_breaker_state{provider_id="p1"} == 0) == 3 and on () count(router_circuit_breaker_state_transitions_total{reason="success_threshold_reached"}) > 0"#,
        80,
    )
    .await;
    assert!(
        closed.is_some(),
        "Prometheus never saw p1's breakers close after the fault was lifted"
    );
    let drained = wait_for_data(
        &client,
        &prom,
        r#"sum(router_outbox_depth{provider_id="p1"}) == 0 and on () sum(router_outbox_delivered_total{provider_id="p1"}) > 0"#,
        80,
    )
    .await;
    assert!(
        drained.is_some(),
        "the outbox did not drain after the fault was lifted"
    );
    stop.store(true, Ordering::Relaxed);
    for l in loads {
        let _ = l.await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let end = prometheus_time(&client, &prom).await;
    let range = format!("{}s", (end - start).ceil() as u64 + 5);

    let mut problems = Vec::new();

    // --- every rule is healthy ----------------------------------------------------------
    let rules_data = api(&client, &format!("{prom}/api/v1/rules"), &[])
        .await
        .unwrap();
    let mut rule_count = 0;
    for group in rules_data["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            rule_count += 1;
            if rule["health"] != "ok" {
                problems.push(format!(
                    "rule {} is {}: {}",
                    rule["name"], rule["health"], rule["lastError"]
                ));
            }
        }
    }
    let expected_rules = rules::all_rules().unwrap().len();
    if rule_count != expected_rules {
        problems.push(format!(
            "prometheus loaded {rule_count} rules, ops/prometheus has {expected_rules}"
        ));
    }

    // --- every alert and recording expression evaluates ------------------------------------
    for (file, rule) in rules::all_rules().unwrap() {
        if let Err(e) = instant(&client, &prom, &rule.expr).await {
            problems.push(format!("{file} {:?}: {e}", rule.alert.or(rule.record)));
        }
    }

    // --- every dashboard query returns data ----------------------------------------------
    let exposition = client
        .get(format!("{router}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let snapshot = Snapshot::parse(&exposition).unwrap_or_else(|e| panic!("/metrics: {e}"));
    for name in NOT_YET_EXPORTED {
        let exported = snapshot
            .samples()
            .iter()
            .any(|s| promql::exported(&s.name).is_some_and(|(info, _)| info.name == name));
        if exported {
            problems.push(format!(
                "the router now exports {name}: remove it from NOT_YET_EXPORTED"
            ));
        }
    }
    let d = dashboard::load().unwrap();
    let mut checked = 0;
    for q in dashboard::queries(&d) {
        let expr = dashboard::substitute(&q.expr, "10s", &range, &|_| ".*".to_owned());
        let result = if q.instant {
            instant(&client, &prom, &expr).await
        } else {
            let params = [
                ("query", expr.clone()),
                ("start", format!("{start}")),
                ("end", format!("{end}")),
                ("step", "2".to_owned()),
            ];
            api(&client, &format!("{prom}/api/v1/query_range"), &params).await
        };
        checked += 1;
        match result {
            Err(e) => problems.push(format!("panel {:?} {}: {e}\n    {expr}", q.panel, q.ref_id)),
            Ok(data) if !has_data(&data) => {
                let reads = promql::metrics_read(&expr).unwrap_or_default();
                let pending =
                    !reads.is_empty() && reads.iter().all(|m| NOT_YET_EXPORTED.contains(m));
                if !pending {
                    problems.push(format!(
                        "panel {:?} {} returned no data\n    {expr}",
                        q.panel, q.ref_id
                    ));
                }
            }
            Ok(_) => {}
        }
    }
    assert!(checked >= 15, "only {checked} dashboard queries");

    drop(prometheus);
    router_under_test.stop().await;
    let _ = std::fs::remove_dir_all(&data_dir);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
