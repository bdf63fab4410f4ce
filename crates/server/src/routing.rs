//! The router: picks a provider by the tenant's policy, dispatches, follows fallbacks, and
//! takes the degraded path (outbox or reject) when no provider can take the message now.
//!
//! Rules (DESIGN.md §5):
//! - Selection never picks a provider whose breaker would reject (see
//!   [`beamline_core::policy::decide`]); "would reject" is read from the breaker without
//!   admitting anything.
//! - A dispatch that ends in `circuit_open`, `retries_exhausted`, `timeout` or a
//!   non-retryable broker `error` follows the policy's fallback rules, at most
//!   [`MAX_FALLBACK_HOPS`] hops in all. Client faults (payload too large) never fall back.
//! - Degraded: with `degraded_mode = outbox` (and an outbox configured) the message is
//!   stored durably under its intended provider and answered 202 `queued`; otherwise the
//!   last failure is answered (503 `circuit_open`, 502, 504).
//! - Order per key: while `(tenant, provider)` has messages waiting in the outbox, new
//!   messages for that key join the queue instead of overtaking it.
//! - Tenants without a policy name their provider explicitly and use the router's default
//!   degraded mode.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use beamline_broker::OutgoingMessage;
use beamline_core::breaker::{BreakerRegistry, State};
use beamline_core::policy::{
    Decision, DegradedMode, FallbackTrigger, MAX_FALLBACK_HOPS, RouteReason, TenantPolicy, decide,
    fallback_for,
};
use beamline_core::retry::Cause;
use beamline_core::rng::{JitterRng, SplitMix64};
use beamline_core::{BreakerKey, Clock, ErrorKind, ProviderId, TenantId};
use beamline_metrics::RouterMetrics;
use beamline_outbox::{NewMessage, Outbox, OutboxError};
use bytes::Bytes;

use crate::clock::{TokioClock, unix_ms};
use crate::dispatcher::{Delivered, Dispatcher, Undelivered};
use crate::events::BreakerEvents;
use crate::policies::PolicyStore;
use crate::sticky::StickyStore;

/// One message to route.
#[derive(Clone, Debug)]
pub struct RouteRequest {
    /// Tenant.
    pub tenant: TenantId,
    /// The provider the client named, if any.
    pub provider: Option<ProviderId>,
    /// Sticky session id, if any.
    pub session: Option<String>,
    /// Message id.
    pub message_id: String,
    /// Payload.
    pub payload: Bytes,
}

/// Where a message ended up.
#[derive(Debug)]
pub enum Routed {
    /// Acknowledged by the broker.
    Published {
        /// Provider.
        provider: ProviderId,
        /// Why that provider.
        reason: RouteReason,
        /// Fallback hops taken.
        hops: usize,
        /// Delivery details.
        delivered: Delivered,
    },
    /// Stored in the outbox; will be delivered.
    Queued {
        /// The provider it is queued for.
        provider: ProviderId,
        /// Outbox sequence number.
        seq: u64,
        /// Why it was queued (`circuit_open`, `attempts_exhausted`, ..., or `backlog`).
        cause: &'static str,
    },
    /// Not delivered and not stored: the client is told.
    Failed {
        /// The last provider tried.
        provider: ProviderId,
        /// What happened.
        undelivered: Undelivered,
    },
    /// The outbox refused the message.
    OutboxRefused {
        /// The provider.
        provider: ProviderId,
        /// Why.
        error: OutboxError,
    },
}

/// Refusals before any dispatch (4xx).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The provider is not allowed for this tenant (or at all).
    #[error("provider {0} is not known for this tenant")]
    UnknownProvider(ProviderId),
    /// No provider was named and the tenant has no policy (or policies are required).
    #[error("tenant {0} has no routing policy")]
    NoPolicy(TenantId),
}

/// The router.
#[derive(Debug)]
pub struct Router {
    clock: TokioClock,
    registry: Arc<BreakerRegistry<BreakerEvents>>,
    dispatcher: Arc<Dispatcher>,
    policies: Arc<PolicyStore>,
    sticky: StickyStore,
    outbox: Option<Outbox>,
    metrics: Arc<RouterMetrics>,
    known_providers: Vec<ProviderId>,
    require_policy: bool,
    default_degraded: DegradedMode,
    rng: Mutex<SplitMix64>,
    wake_drainer: Arc<tokio::sync::Notify>,
}

/// What [`Router::new`] needs.
#[derive(Debug)]
pub struct RouterParts {
    /// Clock.
    pub clock: TokioClock,
    /// Breakers.
    pub registry: Arc<BreakerRegistry<BreakerEvents>>,
    /// Dispatcher.
    pub dispatcher: Arc<Dispatcher>,
    /// Policies.
    pub policies: Arc<PolicyStore>,
    /// Sticky sessions.
    pub sticky: StickyStore,
    /// Outbox.
    pub outbox: Option<Outbox>,
    /// Metrics.
    pub metrics: Arc<RouterMetrics>,
    /// Allowed providers (empty: any).
    pub known_providers: Vec<ProviderId>,
    /// Whether tenants need a policy.
    pub require_policy: bool,
    /// Degraded mode of tenants without a policy.
    pub default_degraded: DegradedMode,
    /// Seed of weighted picks.
    pub seed: u64,
}

impl Router {
    /// Assembles a router.
    pub fn new(parts: RouterParts) -> Self {
        Router {
            clock: parts.clock,
            registry: parts.registry,
            dispatcher: parts.dispatcher,
            policies: parts.policies,
            sticky: parts.sticky,
            outbox: parts.outbox,
            metrics: parts.metrics,
            known_providers: parts.known_providers,
            require_policy: parts.require_policy,
            default_degraded: parts.default_degraded,
            rng: Mutex::new(SplitMix64::new(parts.seed)),
            wake_drainer: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// The outbox, if configured.
    pub fn outbox(&self) -> Option<&Outbox> {
        self.outbox.as_ref()
    }

    /// The dispatcher.
    pub fn dispatcher(&self) -> &Arc<Dispatcher> {
        &self.dispatcher
    }

    /// The policies.
    pub fn policies(&self) -> &Arc<PolicyStore> {
        &self.policies
    }

    /// The sticky sessions.
    pub fn sticky(&self) -> &StickyStore {
        &self.sticky
    }

    /// Notified whenever a message is queued.
    pub fn drainer_signal(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.wake_drainer)
    }

    /// Whether the key's breaker would admit a call now. Reads only: admits nothing.
    pub fn would_admit(&self, tenant: &TenantId, provider: &ProviderId) -> bool {
        let key = BreakerKey::new(tenant.clone(), provider.clone());
        self.registry
            .get(&key)
            .is_none_or(|h| h.peek(self.clock.now()).is_none())
    }

    /// The breaker state of a key now (closed when it has no breaker yet).
    pub fn breaker_state(&self, tenant: &TenantId, provider: &ProviderId) -> State {
        let key = BreakerKey::new(tenant.clone(), provider.clone());
        self.registry
            .get(&key)
            .map_or(State::Closed, |h| h.state(self.clock.now()))
    }

    fn check_provider(
        &self,
        policy: Option<&TenantPolicy>,
        provider: &ProviderId,
    ) -> Result<(), RouteError> {
        let allowed_globally =
            self.known_providers.is_empty() || self.known_providers.contains(provider);
        let allowed_by_policy = policy.is_none_or(|p| p.knows(provider));
        if allowed_globally && allowed_by_policy {
            Ok(())
        } else {
            Err(RouteError::UnknownProvider(provider.clone()))
        }
    }

    /// The routing decision alone: nothing is admitted, dispatched or remembered.
    pub fn decide(
        &self,
        tenant: &TenantId,
        explicit: Option<&ProviderId>,
        session: Option<&str>,
    ) -> Result<(Decision, Option<Arc<TenantPolicy>>), RouteError> {
        let policy = self.policies.get(tenant);
        if policy.is_none() && (self.require_policy || explicit.is_none()) {
            return Err(RouteError::NoPolicy(tenant.clone()));
        }
        if let Some(p) = explicit {
            self.check_provider(policy.as_deref(), p)?;
        }
        let admits = |p: &ProviderId| self.would_admit(tenant, p);
        let decision = match (&policy, explicit) {
            (Some(policy), _) => {
                let sticky = match (&policy.config().sticky, session) {
                    (Some(_), Some(s)) => self.sticky.get(tenant, s, self.clock.now()),
                    _ => None,
                };
                let random = self
                    .rng
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .next_u64();
                decide(policy, explicit, sticky.as_ref(), admits, random)
            }
            (None, Some(p)) => {
                let reason = if admits(p) {
                    RouteReason::Explicit
                } else {
                    RouteReason::Degraded
                };
                Decision {
                    provider: p.clone(),
                    reason,
                    hops: 0,
                }
            }
            (None, None) => return Err(RouteError::NoPolicy(tenant.clone())),
        };
        Ok((decision, policy))
    }

    /// Routes and delivers (or queues) one message.
    pub async fn route(&self, request: RouteRequest) -> Result<Routed, RouteError> {
        let (decision, policy) = self.decide(
            &request.tenant,
            request.provider.as_ref(),
            request.session.as_deref(),
        )?;
        let degraded = match (&policy, &self.outbox) {
            (_, None) => DegradedMode::Reject,
            (Some(p), Some(_)) => p.config().degraded_mode,
            (None, Some(_)) => self.default_degraded,
        };
        let intended = decision.provider.clone();
        let message = |provider: &ProviderId| OutgoingMessage {
            tenant: request.tenant.clone(),
            provider: provider.clone(),
            message_id: request.message_id.clone(),
            payload: request.payload.clone(),
        };
        if degraded == DegradedMode::Outbox
            && let Some(outbox) = &self.outbox
            && outbox.has_backlog(&BreakerKey::new(request.tenant.clone(), intended.clone()))
        {
            return Ok(self.enqueue(&message(&intended), "backlog").await);
        }
        let (mut provider, mut reason, mut hops) =
            (decision.provider, decision.reason, decision.hops);
        let breaker = policy.as_ref().map(|p| &p.breaker);
        let retry = policy.as_ref().map(|p| &p.retry);
        loop {
            let undelivered = if reason == RouteReason::Degraded {
                // Selection already knows the breaker rejects: count the fail-fast
                // rejection as an acquire would have.
                let key = BreakerKey::new(request.tenant.clone(), provider.clone());
                self.metrics.breaker_rejection(&key);
                let retry_after = self
                    .registry
                    .get(&key)
                    .and_then(|h| h.peek(self.clock.now()))
                    .map_or(Duration::from_millis(1), |r| r.retry_after);
                Undelivered {
                    cause: Cause::CircuitOpen,
                    last_error: None,
                    attempts: 0,
                    attempt_offsets_ms: Vec::new(),
                    retry_after: Some(retry_after),
                }
            } else {
                match self
                    .dispatcher
                    .dispatch(&message(&provider), breaker, retry)
                    .await
                {
                    Ok(delivered) => {
                        if let (Some(p), Some(session)) = (&policy, &request.session)
                            && let Some(sticky) = &p.config().sticky
                        {
                            let ttl = Duration::from_secs(sticky.ttl_secs);
                            self.sticky.put(
                                &request.tenant,
                                session,
                                provider.clone(),
                                ttl,
                                self.clock.now(),
                            );
                        }
                        return Ok(Routed::Published {
                            provider,
                            reason,
                            hops,
                            delivered,
                        });
                    }
                    Err(u) => u,
                }
            };
            let client_fault = matches!(
                undelivered.last_error,
                Some(ErrorKind::PayloadTooLarge | ErrorKind::InvalidSubject)
            );
            if client_fault {
                return Ok(Routed::Failed {
                    provider,
                    undelivered,
                });
            }
            let trigger = match undelivered.cause {
                Cause::CircuitOpen => FallbackTrigger::CircuitOpen,
                Cause::AttemptsExhausted | Cause::BudgetExhausted => {
                    FallbackTrigger::RetriesExhausted
                }
                Cause::DeadlineExceeded => FallbackTrigger::Timeout,
                Cause::NonRetryable | Cause::Succeeded => FallbackTrigger::Error,
            };
            if let Some(policy) = &policy
                && hops < MAX_FALLBACK_HOPS
                && let Some((next, h)) =
                    fallback_for(policy, &provider, trigger, &|p: &ProviderId| {
                        self.would_admit(&request.tenant, p)
                    })
                && hops + h <= MAX_FALLBACK_HOPS
            {
                provider = next;
                reason = RouteReason::Fallback;
                hops += h;
                continue;
            }
            return Ok(match degraded {
                DegradedMode::Outbox => {
                    self.enqueue(&message(&intended), undelivered.cause.as_str())
                        .await
                }
                DegradedMode::Reject => Routed::Failed {
                    provider,
                    undelivered,
                },
            });
        }
    }

    async fn enqueue(&self, message: &OutgoingMessage, cause: &'static str) -> Routed {
        let provider = message.provider.clone();
        let Some(outbox) = &self.outbox else {
            return Routed::OutboxRefused {
                provider,
                error: OutboxError::Closed,
            };
        };
        let new = NewMessage {
            tenant: message.tenant.clone(),
            provider: message.provider.clone(),
            message_id: message.message_id.clone(),
            payload: message.payload.clone(),
            enqueued_unix_ms: unix_ms(),
        };
        match outbox.append(new).await {
            Ok(seq) => {
                let key = BreakerKey::new(message.tenant.clone(), message.provider.clone());
                self.metrics.outbox_enqueued(&key);
                self.wake_drainer.notify_one();
                tracing::debug!(tenant_id = %message.tenant, provider_id = %provider, seq, cause, "message queued in the outbox");
                Routed::Queued {
                    provider,
                    seq,
                    cause,
                }
            }
            Err(error) => {
                tracing::warn!(tenant_id = %message.tenant, provider_id = %provider, %error, "outbox refused a message");
                Routed::OutboxRefused { provider, error }
            }
        }
    }

    /// Forgets sticky sessions and in-memory policies, in place.
    pub fn reset_all(&self) {
        self.sticky.reset_all();
    }
}
