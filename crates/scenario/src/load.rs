//! The load generator: N concurrent clients, each sending M requests in turn.

use std::time::Duration;

use futures::future::join_all;
use indicatif::ProgressBar;
use serde_json::json;

use crate::client::{PublishResponse, RouterClient};

/// What one phase of load sends.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Concurrent clients.
    pub clients: usize,
    /// Requests per client.
    pub requests: usize,
    /// Tenants, used round-robin by client index.
    pub tenants: Vec<String>,
    /// Provider.
    pub provider: String,
    /// Prefix of the message ids (each id is `<prefix>-<client>-<seq>`).
    pub id_prefix: String,
    /// Pause between a client's requests.
    pub pause: Duration,
}

/// One request and its answer.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// The tenant.
    pub tenant: String,
    /// The message id sent.
    pub message_id: String,
    /// The answer (status 0: no answer).
    pub response: PublishResponse,
}

/// Runs the load; every request is answered or recorded as a transport failure.
pub async fn drive(
    client: &RouterClient,
    spec: &LoadSpec,
    progress: &ProgressBar,
) -> Vec<RequestRecord> {
    progress.set_length((spec.clients * spec.requests) as u64);
    let tasks = (0..spec.clients).map(|c| {
        let client = client.clone();
        let spec = spec.clone();
        let progress = progress.clone();
        async move {
            let tenant = spec.tenants[c % spec.tenants.len().max(1)].clone();
            let mut records = Vec::with_capacity(spec.requests);
            for seq in 0..spec.requests {
                let message_id = format!("{}-{c}-{seq}", spec.id_prefix);
                let payload = json!({"client": c, "seq": seq});
                let response = match client
                    .publish(&tenant, &spec.provider, &message_id, payload)
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
                    tenant: tenant.clone(),
                    message_id,
                    response,
                });
                progress.inc(1);
                if !spec.pause.is_zero() {
                    tokio::time::sleep(spec.pause).await;
                }
            }
            records
        }
    });
    join_all(tasks).await.into_iter().flatten().collect()
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
