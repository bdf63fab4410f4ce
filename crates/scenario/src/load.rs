//! The load generator: N concurrent clients, each sending requests in turn until its
//! request count is reached, the phase's duration has passed, or the phase is stopped
//! (a watched condition held).
//!
//! Every request is recorded with the router-clock instant it was sent (through
//! [`RouterTime`]), so answers, the router's journals and charts share one time axis.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use beamline_core::Clock;
use beamline_server::clock::TokioClock;
use futures::future::join_all;
use indicatif::ProgressBar;
use serde_json::json;

use crate::client::{ClientError, PublishResponse, RouterClient};

/// The router's clock, read from here: a local clock plus the offset measured against
/// `GET /admin/clock` (half the round trip is the error bound; microseconds on loopback).
#[derive(Clone, Copy, Debug)]
pub struct RouterTime {
    clock: TokioClock,
    offset_us: i64,
}

impl RouterTime {
    /// Measures the offset of the router's clock from a local one.
    pub async fn calibrate(client: &RouterClient) -> Result<Self, ClientError> {
        let clock = TokioClock::new();
        let mut best: Option<(u64, i64)> = None;
        for _ in 0..3 {
            let before = local_us(&clock);
            let router = client.now_us().await?;
            let after = local_us(&clock);
            let rtt = after.saturating_sub(before);
            let offset = router as i64 - (before + rtt / 2) as i64;
            if best.is_none_or(|(r, _)| rtt < r) {
                best = Some((rtt, offset));
            }
        }
        Ok(RouterTime {
            clock,
            offset_us: best.map_or(0, |b| b.1),
        })
    }

    /// Now, in router-clock microseconds.
    pub fn now_us(&self) -> u64 {
        (local_us(&self.clock) as i64 + self.offset_us).max(0) as u64
    }
}

fn local_us(clock: &TokioClock) -> u64 {
    clock.now().as_nanos() / 1000
}

/// What one phase of load sends.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Concurrent clients.
    pub clients: usize,
    /// Requests per client (`None`: until stopped or the duration passes).
    pub requests: Option<usize>,
    /// Stop sending after this long.
    pub duration: Option<Duration>,
    /// Tenants; request `seq` of client `c` goes to tenant `(c + seq × clients) mod n`.
    pub tenants: Vec<String>,
    /// Provider (`None`: `provider_id` is left out and the tenant policy routes).
    pub provider: Option<String>,
    /// Prefix of the message ids (each id is `<prefix>-<client>-<seq>`).
    pub id_prefix: String,
    /// Pause between a client's requests.
    pub pause: Duration,
}

/// One request and its answer.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// Index of the phase that sent it.
    pub phase: usize,
    /// Client index.
    pub client: usize,
    /// Sequence number within the client.
    pub seq: usize,
    /// The tenant.
    pub tenant: String,
    /// The message id sent.
    pub message_id: String,
    /// When it was sent, router clock µs.
    pub sent_us: u64,
    /// The answer (status 0: no answer).
    pub response: PublishResponse,
}

impl RequestRecord {
    /// The provider that took the message, from the answer (empty when absent).
    pub fn provider(&self) -> &str {
        self.response
            .body
            .get("provider_id")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
    }
}

/// Runs the load; every request is answered or recorded as a transport failure. `stop`
/// ends it early (clients finish the request in flight).
pub async fn drive(
    client: &RouterClient,
    time: RouterTime,
    phase: usize,
    spec: &LoadSpec,
    progress: &ProgressBar,
    stop: Arc<AtomicBool>,
) -> Vec<RequestRecord> {
    let length = spec.requests.map(|r| (r * spec.clients) as u64);
    progress.set_length(length.unwrap_or(0));
    let timer = spec.duration.map(|d| {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            stop.store(true, Ordering::SeqCst);
        })
    });
    let tasks = (0..spec.clients).map(|c| {
        let client = client.clone();
        let spec = spec.clone();
        let progress = progress.clone();
        let stop = Arc::clone(&stop);
        async move {
            let mut records = Vec::new();
            let mut seq = 0usize;
            while spec.requests.is_none_or(|r| seq < r) && !stop.load(Ordering::SeqCst) {
                let n = spec.tenants.len().max(1);
                let tenant = spec.tenants[(c + seq * spec.clients) % n].clone();
                let message_id = format!("{}-{c}-{seq}", spec.id_prefix);
                let payload = json!({"client": c, "seq": seq});
                let sent_us = time.now_us();
                let response = match crate::api::publish_to(
                    &client,
                    &tenant,
                    spec.provider.as_deref(),
                    &message_id,
                    payload,
                )
                .await
                {
                    Ok(r) => r,
                    Err(e) => PublishResponse {
                        status: 0,
                        latency: Duration::ZERO,
                        body: json!({"code": "transport_error", "message": e.to_string()}),
                    },
                };
                records.push(RequestRecord {
                    phase,
                    client: c,
                    seq,
                    tenant,
                    message_id,
                    sent_us,
                    response,
                });
                seq += 1;
                if length.is_none() {
                    progress.set_length(progress.position() + 1);
                }
                progress.inc(1);
                if !spec.pause.is_zero() {
                    tokio::time::sleep(spec.pause).await;
                }
            }
            records
        }
    });
    let records: Vec<RequestRecord> = join_all(tasks).await.into_iter().flatten().collect();
    if let Some(t) = timer {
        t.abort();
    }
    records
}

/// The `q` quantile (0..=1) of `values`, nearest-rank; zero for no values.
pub fn quantile(values: &mut [Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort_unstable();
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_nearest_rank() {
        let mut v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&mut v, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&mut v, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&mut v, 1.0), Duration::from_millis(100));
        assert_eq!(quantile(&mut [], 0.5), Duration::ZERO);
    }
}
