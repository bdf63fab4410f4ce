//! The retry model as clients see it, against a real `nats-server -js`: attempts never
//! exceed `max_attempts`, every delay between attempts stays inside the jittered backoff
//! bounds, and no request outlives its total deadline by more than a few milliseconds.
//! Timing is read from the router's answers (`attempt_offsets_ms`) and the client's clock;
//! the breaker is configured never to open so that only the retry model acts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use beamline_server::config::ServerConfig;
use beamline_test_util::{NatsServer, TestRouter};
use futures::future::join_all;
use serde_json::{Value, json};

const MAX_ATTEMPTS: u32 = 4;
const BASE_MS: f64 = 50.0;
const CAP_MS: f64 = 120.0;
const JITTER: f64 = 0.2;
const ATTEMPT_TIMEOUT_MS: u64 = 100;
const DEADLINE_MS: u64 = 400;
/// Scheduling and HTTP slack allowed on a loaded 2-core machine.
const SLACK_MS: f64 = 25.0;

fn config(nats: &NatsServer) -> ServerConfig {
    let mut config = ServerConfig {
        broker: nats.broker_config(),
        ..ServerConfig::default()
    };
    config.breaker.failure_threshold = 0;
    config.breaker.error_rate_threshold = 0.0;
    config.breaker.slow_call_rate_threshold = 0.0;
    config.breaker.latency_threshold_ms = 50;
    config.retry.max_attempts = MAX_ATTEMPTS;
    config.retry.base_ms = BASE_MS as u64;
    config.retry.max_ms = CAP_MS as u64;
    config.retry.jitter = JITTER;
    config.retry.attempt_timeout_ms = ATTEMPT_TIMEOUT_MS;
    config.retry.total_deadline_ms = DEADLINE_MS;
    config.retry.budget_min_per_sec = 10_000;
    config
}

/// Bounds of the delay before retry `n` (1-based).
fn delay_bounds(n: u32) -> (f64, f64) {
    let raw = (BASE_MS * 2f64.powi(n as i32 - 1)).min(CAP_MS);
    (
        (raw * (1.0 - JITTER)).max(0.0),
        (raw * (1.0 + JITTER)).min(CAP_MS),
    )
}

async fn run(
    router: &TestRouter,
    provider: &str,
    fault: Value,
    attempt_ms: f64,
) -> Vec<(u16, Value, Duration)> {
    router
        .client
        .set_fault(provider, None, fault)
        .await
        .unwrap();
    let requests = (0..40).map(|i| {
        let client = router.client.clone();
        let provider = provider.to_owned();
        async move {
            let r = client
                .publish("timing", &provider, &format!("{provider}-{i}"), json!(i))
                .await
                .unwrap();
            (r.status, r.body, r.latency)
        }
    });
    let answers = join_all(requests).await;
    for (status, body, latency) in &answers {
        let offsets: Vec<f64> = body["attempt_offsets_ms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert!(
            (1..=MAX_ATTEMPTS as usize).contains(&offsets.len()),
            "{body}"
        );
        assert_eq!(
            body["attempts"].as_u64(),
            Some(offsets.len() as u64),
            "{body}"
        );
        for (i, pair) in offsets.windows(2).enumerate() {
            let (lo, hi) = delay_bounds(i as u32 + 1);
            let gap = pair[1] - pair[0];
            let (min_gap, max_gap) = (attempt_ms + lo - 1.0, attempt_ms + hi + SLACK_MS);
            assert!(
                gap >= min_gap && gap <= max_gap,
                "retry {} after {gap} ms, not in [{min_gap}, {max_gap}]: {body}",
                i + 1
            );
        }
        let last_start = offsets.last().copied().unwrap_or(0.0);
        assert!(
            last_start < DEADLINE_MS as f64,
            "an attempt started past the deadline: {body}"
        );
        assert!(
            latency.as_secs_f64() * 1000.0 <= DEADLINE_MS as f64 + SLACK_MS,
            "request took {latency:?}, deadline {DEADLINE_MS} ms: {status} {body}"
        );
    }
    router.client.clear_faults(Some(provider)).await.unwrap();
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stay_inside_the_backoff_bounds_and_the_deadline() {
    let nats = NatsServer::start();
    let router = TestRouter::start(config(&nats)).await;

    // Fast failures: every attempt fails at once; all four attempts fit in the deadline.
    let fast = run(
        &router,
        "perr",
        json!({"type": "error", "kind": "broker_unavailable"}),
        0.0,
    )
    .await;
    for (status, body, _) in &fast {
        assert_eq!(
            (*status, body["cause"].as_str()),
            (502, Some("attempts_exhausted")),
            "{body}"
        );
        assert_eq!(body["attempts"], MAX_ATTEMPTS);
    }

    // Hanging broker: every attempt is cut at the attempt timeout; the deadline stops the
    // retries before max_attempts.
    let slow = run(
        &router,
        "phang",
        json!({"type": "timeout"}),
        ATTEMPT_TIMEOUT_MS as f64,
    )
    .await;
    for (status, body, _) in &slow {
        assert_eq!(
            (*status, body["code"].as_str()),
            (504, Some("deadline_exceeded")),
            "{body}"
        );
        assert!(
            body["attempts"].as_u64().unwrap() < u64::from(MAX_ATTEMPTS),
            "{body}"
        );
    }

    // Intermittent failures: some requests succeed after retries, never past the caps.
    let mixed = json!({"type": "intermittent", "probability": 0.5, "fault": {"type": "error", "kind": "connection_closed"}});
    let answers = run(&router, "pmix", mixed, 0.0).await;
    assert!(
        answers
            .iter()
            .any(|(s, b, _)| *s == 200 && b["attempts"].as_u64().unwrap() > 1),
        "some success after a retry"
    );
    router.stop().await;
}
