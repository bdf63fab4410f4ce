//! The outbox drainer: delivers queued messages, oldest first per key, as soon as the key's
//! breaker admits them (when traffic is idle, its deliveries are the half-open probes).
//!
//! One task visits every key with a backlog in turn and delivers that key's head through
//! the dispatcher (breaker permits, retries, deadline: the same path as live traffic).
//! On an ack the head is removed; on `circuit_open` the key waits for the breaker's
//! `retry_after`; on another failure it backs off exponentially (100 ms to 5 s). A key's
//! next message is only tried after its head is delivered, so order per key holds. The
//! task sleeps when there is nothing to do, and wakes on every new queued message.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use beamline_broker::OutgoingMessage;
use beamline_core::retry::Cause;
use beamline_core::{BreakerKey, Clock, Timestamp};
use beamline_metrics::RouterMetrics;
use beamline_outbox::Outbox;

use crate::clock::{TokioClock, unix_ms};
use crate::routing::Router;

const IDLE_POLL: Duration = Duration::from_millis(50);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct KeyWait {
    until: Timestamp,
    backoff: Duration,
}

/// Publishes every key's outbox level to the metrics; keys drained since the last call
/// are set to 0.
pub fn report_levels(outbox: &Outbox, metrics: &RouterMetrics, reported: &mut HashSet<BreakerKey>) {
    let now = unix_ms();
    let mut seen = HashSet::new();
    for b in outbox.backlog() {
        let (Ok(tenant), Ok(provider)) = (b.tenant_id.parse(), b.provider_id.parse()) else {
            continue;
        };
        let key = BreakerKey::new(tenant, provider);
        let age = Duration::from_millis(now.saturating_sub(b.oldest_enqueued_unix_ms));
        metrics.outbox_level(&key, b.depth as u64, age);
        seen.insert(key);
    }
    for gone in reported.difference(&seen) {
        metrics.outbox_level(gone, 0, Duration::ZERO);
    }
    *reported = seen;
}

/// Runs until the task is aborted.
pub async fn run(router: Arc<Router>, metrics: Arc<RouterMetrics>, clock: TokioClock) {
    let Some(outbox) = router.outbox().cloned() else {
        return;
    };
    let wake = router.drainer_signal();
    let mut waits: HashMap<BreakerKey, KeyWait> = HashMap::new();
    let mut reported = HashSet::new();
    loop {
        let mut delivered = 0usize;
        for key in outbox.keys() {
            let now = clock.now();
            let wait = waits.entry(key.clone()).or_default();
            if wait.until > now {
                continue;
            }
            let head = match outbox.head(&key) {
                Ok(Some(head)) => head,
                Ok(None) => continue,
                Err(error) => {
                    tracing::error!(%error, tenant_id = %key.tenant(), provider_id = %key.provider(), "outbox read failed");
                    wait.until = now.add(MAX_BACKOFF);
                    continue;
                }
            };
            let policy = router.policies().get(key.tenant());
            let message = OutgoingMessage {
                tenant: key.tenant().clone(),
                provider: key.provider().clone(),
                message_id: head.message.message_id.clone(),
                payload: head.message.payload.clone(),
            };
            let result = router
                .dispatcher()
                .dispatch(
                    &message,
                    policy.as_ref().map(|p| &p.breaker),
                    policy.as_ref().map(|p| &p.retry),
                )
                .await;
            let now = clock.now();
            match result {
                Ok(_) => {
                    if let Err(error) = outbox.remove(head.seq).await {
                        // Delivered but still stored: it will be delivered again and the
                        // broker will de-duplicate it by message id.
                        tracing::error!(%error, seq = head.seq, "outbox removal failed after delivery");
                    }
                    metrics.outbox_delivered(&key);
                    *wait = KeyWait::default();
                    delivered += 1;
                }
                Err(u) if u.cause == Cause::CircuitOpen => {
                    wait.until = now.add(
                        u.retry_after
                            .unwrap_or(MIN_BACKOFF)
                            .max(Duration::from_millis(5)),
                    );
                }
                Err(u) => {
                    wait.backoff = (wait.backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
                    wait.until = now.add(wait.backoff);
                    tracing::debug!(cause = u.cause.as_str(), tenant_id = %key.tenant(), provider_id = %key.provider(), "outbox delivery failed; backing off");
                }
            }
        }
        waits.retain(|k, _| outbox.has_backlog(k));
        report_levels(&outbox, &metrics, &mut reported);
        if delivered == 0 {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
            }
        }
    }
}
