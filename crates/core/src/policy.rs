//! Tenant routing policy: plain validated data, and the pure routing decision.
//!
//! A policy lists the tenant's providers with weights, ordered fallback rules, optional
//! sticky sessions, breaker and retry overrides layered over the router's defaults, and
//! what to do when no provider can take a message now (`degraded_mode`).
//!
//! [`decide`] picks a provider without I/O: it is handed what the breakers would say
//! (`admits`), the sticky session's provider if any, and a random number. Rules:
//! - an explicit provider is honoured when its breaker admits (`explicit`);
//! - a live sticky session is honoured when its provider's breaker admits (`sticky`);
//! - otherwise a weighted random pick among the providers whose breakers admit
//!   (`weighted`); providers of weight 0 are fallback-only;
//! - otherwise the fallback rules for `circuit_open` are followed from the intended
//!   provider, at most [`MAX_FALLBACK_HOPS`] hops, to the first provider that admits
//!   (`fallback`);
//! - otherwise the decision is `degraded`: the intended provider, to be queued in the
//!   outbox or rejected, per `degraded_mode`.
//!
//! Selection never picks a provider whose breaker would reject: every candidate (sticky,
//! weighted, fallback) is checked. After a pick, failures that end the dispatch
//! (`retries_exhausted`, `timeout`, `error`) follow the same rules through [`fallback_for`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::breaker::{BreakerConfig, BreakerSettings, ConfigError};
use crate::keys::ProviderId;
use crate::retry::{RetryConfig, RetrySettings};

/// Most providers in one policy.
pub const MAX_PROVIDERS: usize = 32;
/// Most fallback rules in one policy.
pub const MAX_FALLBACK_RULES: usize = 16;
/// Most fallback hops for one message.
pub const MAX_FALLBACK_HOPS: usize = 3;
/// Longest sticky session TTL.
pub const MAX_STICKY_TTL_SECS: u64 = 86_400;

/// A provider and its share of traffic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedProvider {
    /// The provider.
    pub id: ProviderId,
    /// Relative weight; 0 makes it fallback-only.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// What sends a message to a fallback.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackTrigger {
    /// The provider's breaker rejects.
    CircuitOpen,
    /// Every attempt failed.
    RetriesExhausted,
    /// The deadline passed.
    Timeout,
    /// A non-retryable broker error.
    Error,
}

/// One fallback rule: on `on` (from `from`, or from any provider), go to `to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackRule {
    /// The trigger.
    pub on: FallbackTrigger,
    /// Only from this provider (any when absent).
    #[serde(default)]
    pub from: Option<ProviderId>,
    /// Where to go.
    pub to: ProviderId,
}

/// Sticky sessions: a session's messages keep going to one provider while it is healthy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StickyConfig {
    /// How long a session keeps its provider after its last message.
    pub ttl_secs: u64,
}

/// What happens to a message no provider can take now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DegradedMode {
    /// Store it durably and answer 202 `queued`; deliver it when a breaker admits.
    #[default]
    Outbox,
    /// Answer 503 with `retry_after_ms`.
    Reject,
}

/// A tenant policy as written in a policy file or the admin API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPolicyConfig {
    /// Providers with weights.
    pub providers: Vec<WeightedProvider>,
    /// Ordered fallback rules.
    #[serde(default)]
    pub fallbacks: Vec<FallbackRule>,
    /// Sticky sessions (off when absent).
    #[serde(default)]
    pub sticky: Option<StickyConfig>,
    /// Breaker keys overriding the router's defaults for this tenant.
    #[serde(default)]
    pub circuit_breaker: Map<String, Value>,
    /// Retry keys overriding the router's defaults for this tenant.
    #[serde(default)]
    pub retry: Map<String, Value>,
    /// What to do when no provider can take a message now.
    #[serde(default)]
    pub degraded_mode: DegradedMode,
}

/// A validated policy.
#[derive(Clone, Debug)]
pub struct TenantPolicy {
    config: TenantPolicyConfig,
    total_weight: u64,
    /// Breaker settings for this tenant's breakers.
    pub breaker: std::sync::Arc<BreakerSettings>,
    /// Retry settings for this tenant's messages.
    pub retry: RetrySettings,
}

fn layered<T: Serialize + for<'de> Deserialize<'de>>(
    base: &T,
    overrides: &Map<String, Value>,
    section: &str,
) -> Result<T, ConfigError> {
    let mut value =
        serde_json::to_value(base).map_err(|e| ConfigError::new(section, "", e.to_string()))?;
    if let Value::Object(map) = &mut value {
        for (k, v) in overrides {
            if !map.contains_key(k) {
                return Err(ConfigError::new(
                    format!("{section}.{k}"),
                    v,
                    "is not a known key",
                ));
            }
            map.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(value)
        .map_err(|e| ConfigError::new(section, "", format!("has an invalid value: {e}")))
}

impl TenantPolicyConfig {
    /// Parses a policy from JSON or TOML text (JSON when it starts with `{`).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| e.to_string())
        } else {
            toml::from_str(text).map_err(|e| e.to_string())
        }
    }

    /// Validates the policy over the router's default breaker and retry configuration.
    pub fn validate(
        &self,
        breaker: &BreakerConfig,
        retry: &RetryConfig,
    ) -> Result<TenantPolicy, ConfigError> {
        if self.providers.is_empty() || self.providers.len() > MAX_PROVIDERS {
            return Err(ConfigError::new(
                "providers",
                self.providers.len(),
                format!("must list 1..={MAX_PROVIDERS} providers"),
            ));
        }
        for (i, p) in self.providers.iter().enumerate() {
            if self.providers[..i].iter().any(|q| q.id == p.id) {
                return Err(ConfigError::new(
                    format!("providers[{i}].id"),
                    &p.id,
                    "is listed twice",
                ));
            }
        }
        let total_weight: u64 = self.providers.iter().map(|p| u64::from(p.weight)).sum();
        if total_weight == 0 {
            return Err(ConfigError::new(
                "providers",
                0,
                "need at least one provider with a weight above 0",
            ));
        }
        if self.fallbacks.len() > MAX_FALLBACK_RULES {
            return Err(ConfigError::new(
                "fallbacks",
                self.fallbacks.len(),
                format!("must hold at most {MAX_FALLBACK_RULES} rules"),
            ));
        }
        let routed_to = |p: &ProviderId| {
            self.providers.iter().any(|q| q.id == *p) || self.fallbacks.iter().any(|f| f.to == *p)
        };
        for (i, rule) in self.fallbacks.iter().enumerate() {
            if rule.from.as_ref() == Some(&rule.to) {
                return Err(ConfigError::new(
                    format!("fallbacks[{i}].to"),
                    &rule.to,
                    "must differ from `from`",
                ));
            }
            if let Some(from) = &rule.from
                && !routed_to(from)
            {
                return Err(ConfigError::new(
                    format!("fallbacks[{i}].from"),
                    from,
                    "names a provider this policy never routes to (not in providers, not a fallback's `to`)",
                ));
            }
            if let Some(j) = self.fallbacks[..i].iter().position(|r| r == rule) {
                return Err(ConfigError::new(
                    format!("fallbacks[{i}]"),
                    format!("{:?} -> {}", rule.on, rule.to),
                    format!("repeats fallbacks[{j}]"),
                ));
            }
        }
        if let Some(sticky) = &self.sticky
            && !(1..=MAX_STICKY_TTL_SECS).contains(&sticky.ttl_secs)
        {
            return Err(ConfigError::new(
                "sticky.ttl_secs",
                sticky.ttl_secs,
                format!("must be within 1..={MAX_STICKY_TTL_SECS}"),
            ));
        }
        let retry_config = layered(retry, &self.retry, "retry")?;
        let retry = retry_config.validate()?;
        let breaker_config = layered(breaker, &self.circuit_breaker, "circuit_breaker")?;
        let breaker = breaker_config
            .validate(retry.attempt_timeout())
            .map_err(|e| {
                // Keys of the override section are spelled `circuit_breaker.*` in policies.
                ConfigError {
                    key: e.key.replacen("breaker.", "circuit_breaker.", 1),
                    ..e
                }
            })?;
        Ok(TenantPolicy {
            config: self.clone(),
            total_weight,
            breaker: std::sync::Arc::new(breaker),
            retry,
        })
    }
}

/// Why a provider was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteReason {
    /// The live sticky session's provider.
    Sticky,
    /// A weighted random pick.
    Weighted,
    /// A fallback rule.
    Fallback,
    /// The client named the provider.
    Explicit,
    /// No provider can take the message now.
    Degraded,
}

impl RouteReason {
    /// The spelling used in APIs.
    pub const fn as_str(self) -> &'static str {
        match self {
            RouteReason::Sticky => "sticky",
            RouteReason::Weighted => "weighted",
            RouteReason::Fallback => "fallback",
            RouteReason::Explicit => "explicit",
            RouteReason::Degraded => "degraded",
        }
    }
}

/// A routing decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The chosen provider.
    pub provider: ProviderId,
    /// Why.
    pub reason: RouteReason,
    /// Fallback hops taken.
    pub hops: usize,
}

impl TenantPolicy {
    /// The policy as configured.
    pub fn config(&self) -> &TenantPolicyConfig {
        &self.config
    }

    /// Whether `provider` appears in the policy (as a provider or a fallback target).
    pub fn knows(&self, provider: &ProviderId) -> bool {
        self.config.providers.iter().any(|p| p.id == *provider)
            || self.config.fallbacks.iter().any(|f| f.to == *provider)
    }

    /// The provider a weighted pick with `random` would choose among `candidates`.
    fn weighted<'a>(
        &'a self,
        random: u64,
        admits: &impl Fn(&ProviderId) -> bool,
    ) -> Option<&'a ProviderId> {
        let live: Vec<&WeightedProvider> = self
            .config
            .providers
            .iter()
            .filter(|p| p.weight > 0 && admits(&p.id))
            .collect();
        let total: u64 = live.iter().map(|p| u64::from(p.weight)).sum();
        if total == 0 {
            return None;
        }
        let mut point = random % total;
        for p in live {
            let w = u64::from(p.weight);
            if point < w {
                return Some(&p.id);
            }
            point -= w;
        }
        None
    }

    /// The provider traffic is meant for when nothing admits (the heaviest, first wins).
    fn intended(&self, random: u64) -> &ProviderId {
        let mut point = random % self.total_weight.max(1);
        for p in &self.config.providers {
            let w = u64::from(p.weight);
            if point < w {
                return &p.id;
            }
            point -= w;
        }
        &self.config.providers[0].id
    }
}

/// The first fallback for `trigger` from `from` that leads, within [`MAX_FALLBACK_HOPS`]
/// hops, to a provider that `admits`; with the number of hops.
pub fn fallback_for(
    policy: &TenantPolicy,
    from: &ProviderId,
    trigger: FallbackTrigger,
    admits: &impl Fn(&ProviderId) -> bool,
) -> Option<(ProviderId, usize)> {
    let mut current = from.clone();
    let mut trigger = trigger;
    let mut visited = vec![from.clone()];
    for hop in 1..=MAX_FALLBACK_HOPS {
        let rule = policy.config.fallbacks.iter().find(|r| {
            r.on == trigger
                && r.from.as_ref().is_none_or(|f| *f == current)
                && !visited.contains(&r.to)
        })?;
        if admits(&rule.to) {
            return Some((rule.to.clone(), hop));
        }
        // The next hop starts from a provider whose breaker would reject.
        current = rule.to.clone();
        visited.push(current.clone());
        trigger = FallbackTrigger::CircuitOpen;
    }
    None
}

/// Picks a provider for one message (see the module doc for the rules).
pub fn decide(
    policy: &TenantPolicy,
    explicit: Option<&ProviderId>,
    sticky: Option<&ProviderId>,
    admits: impl Fn(&ProviderId) -> bool,
    random: u64,
) -> Decision {
    // A session pinned to a provider this policy no longer names (the policy changed) is
    // not honoured.
    let sticky = sticky.filter(|p| policy.knows(p));
    let intended = match explicit {
        Some(p) if admits(p) => {
            return Decision {
                provider: p.clone(),
                reason: RouteReason::Explicit,
                hops: 0,
            };
        }
        Some(p) => p.clone(),
        None => {
            if let Some(p) = sticky.filter(|p| admits(p)) {
                return Decision {
                    provider: p.clone(),
                    reason: RouteReason::Sticky,
                    hops: 0,
                };
            }
            if let Some(p) = policy.weighted(random, &admits) {
                return Decision {
                    provider: p.clone(),
                    reason: RouteReason::Weighted,
                    hops: 0,
                };
            }
            sticky
                .cloned()
                .unwrap_or_else(|| policy.intended(random).clone())
        }
    };
    match fallback_for(policy, &intended, FallbackTrigger::CircuitOpen, &admits) {
        Some((provider, hops)) => Decision {
            provider,
            reason: RouteReason::Fallback,
            hops,
        },
        None => Decision {
            provider: intended,
            reason: RouteReason::Degraded,
            hops: 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ProviderId {
        ProviderId::try_new(s).unwrap()
    }

    fn policy(json: &str) -> TenantPolicy {
        TenantPolicyConfig::parse(json)
            .unwrap()
            .validate(&BreakerConfig::default(), &RetryConfig::default())
            .unwrap()
    }

    fn two_with_fallback() -> TenantPolicy {
        policy(
            r#"{"providers":[{"id":"a","weight":3},{"id":"b","weight":1},{"id":"c","weight":0}],
                "fallbacks":[{"on":"circuit_open","to":"c"},{"on":"retries_exhausted","from":"a","to":"b"}]}"#,
        )
    }

    #[test]
    fn weighted_picks_follow_the_weights_among_admitting_providers() {
        let pol = two_with_fallback();
        let picks: Vec<String> = (0..4)
            .map(|r| decide(&pol, None, None, |_| true, r).provider.to_string())
            .collect();
        assert_eq!(picks, ["a", "a", "a", "b"]);
        let only_b = decide(&pol, None, None, |x| x.as_str() != "a", 0);
        assert_eq!(
            (only_b.provider.as_str(), only_b.reason),
            ("b", RouteReason::Weighted)
        );
    }

    #[test]
    fn nothing_weighted_admits_so_the_circuit_open_fallback_is_taken() {
        let pol = two_with_fallback();
        let d = decide(&pol, None, None, |x| x.as_str() == "c", 0);
        assert_eq!(
            d,
            Decision {
                provider: p("c"),
                reason: RouteReason::Fallback,
                hops: 1
            }
        );
        let none = decide(&pol, None, None, |_| false, 0);
        assert_eq!(
            (none.provider.as_str(), none.reason),
            ("a", RouteReason::Degraded)
        );
    }

    #[test]
    fn sticky_and_explicit_are_honoured_only_when_their_breaker_admits() {
        let pol = two_with_fallback();
        let b = p("b");
        assert_eq!(
            decide(&pol, None, Some(&b), |_| true, 0).reason,
            RouteReason::Sticky
        );
        assert_eq!(
            decide(&pol, None, Some(&b), |x| x.as_str() != "b", 0).provider,
            p("a")
        );
        assert_eq!(
            decide(&pol, Some(&b), None, |_| true, 0).reason,
            RouteReason::Explicit
        );
        let rerouted = decide(&pol, Some(&b), None, |x| x.as_str() == "c", 0);
        assert_eq!(
            (rerouted.provider.as_str(), rerouted.reason),
            ("c", RouteReason::Fallback)
        );
    }

    #[test]
    fn a_session_pinned_to_a_provider_the_policy_no_longer_names_is_not_honoured() {
        let pol = two_with_fallback();
        let gone = p("removed");
        let d = decide(&pol, None, Some(&gone), |_| true, 0);
        assert_ne!(d.provider, gone);
        assert_eq!(d.reason, RouteReason::Weighted);
    }

    #[test]
    fn fallback_chains_stop_after_three_hops_and_never_loop() {
        let pol = policy(
            r#"{"providers":[{"id":"a"}],"fallbacks":[
                {"on":"circuit_open","from":"a","to":"b"},{"on":"circuit_open","from":"b","to":"c"},
                {"on":"circuit_open","from":"c","to":"d"},{"on":"circuit_open","from":"d","to":"e"},
                {"on":"circuit_open","from":"e","to":"a"}]}"#,
        );
        assert_eq!(
            fallback_for(&pol, &p("a"), FallbackTrigger::CircuitOpen, &|x| x.as_str()
                == "d"),
            Some((p("d"), 3))
        );
        assert_eq!(
            fallback_for(&pol, &p("a"), FallbackTrigger::CircuitOpen, &|x| x.as_str()
                == "e"),
            None
        );
        assert_eq!(
            fallback_for(&pol, &p("a"), FallbackTrigger::CircuitOpen, &|x| x.as_str()
                == "a"),
            None
        );
        let after_failure = fallback_for(
            &two_with_fallback(),
            &p("a"),
            FallbackTrigger::RetriesExhausted,
            &|_| true,
        );
        assert_eq!(after_failure, Some((p("b"), 1)));
    }

    #[test]
    fn validation_names_the_key() {
        let err = |json: &str| {
            TenantPolicyConfig::parse(json)
                .unwrap()
                .validate(&BreakerConfig::default(), &RetryConfig::default())
                .unwrap_err()
                .key
        };
        assert_eq!(err(r#"{"providers":[]}"#), "providers");
        assert_eq!(
            err(r#"{"providers":[{"id":"a"}],"fallbacks":[{"on":"error","from":"zz","to":"b"}]}"#),
            "fallbacks[0].from"
        );
        assert_eq!(
            err(
                r#"{"providers":[{"id":"a"}],"fallbacks":[{"on":"error","to":"b"},{"on":"error","to":"b"}]}"#
            ),
            "fallbacks[1]"
        );
        // A chain: `from` may name an earlier fallback's target.
        let chain = r#"{"providers":[{"id":"a"}],"fallbacks":[{"on":"circuit_open","from":"a","to":"b"},{"on":"circuit_open","from":"b","to":"c"}]}"#;
        assert!(
            TenantPolicyConfig::parse(chain)
                .unwrap()
                .validate(&BreakerConfig::default(), &RetryConfig::default())
                .is_ok()
        );
        assert_eq!(
            err(r#"{"providers":[{"id":"a"},{"id":"a"}]}"#),
            "providers[1].id"
        );
        assert_eq!(err(r#"{"providers":[{"id":"a","weight":0}]}"#), "providers");
        assert_eq!(
            err(r#"{"providers":[{"id":"a"}],"fallbacks":[{"on":"error","from":"a","to":"a"}]}"#),
            "fallbacks[0].to"
        );
        assert_eq!(
            err(r#"{"providers":[{"id":"a"}],"sticky":{"ttl_secs":0}}"#),
            "sticky.ttl_secs"
        );
        assert_eq!(
            err(r#"{"providers":[{"id":"a"}],"circuit_breaker":{"failure_treshold":1}}"#),
            "circuit_breaker.failure_treshold"
        );
        assert_eq!(
            err(r#"{"providers":[{"id":"a"}],"circuit_breaker":{"latency_threshold_ms":5000}}"#),
            "circuit_breaker.latency_threshold_ms"
        );
        assert_eq!(
            err(r#"{"providers":[{"id":"a"}],"retry":{"max_attempts":0}}"#),
            "retry.max_attempts"
        );
        assert!(TenantPolicyConfig::parse(r#"{"providers":[{"id":"a b"}]}"#).is_err());
        assert!(
            TenantPolicyConfig::parse(
                "providers = [{ id = \"a\", weight = 2 }]\ndegraded_mode = \"reject\"\n"
            )
            .is_ok()
        );
    }

    #[test]
    fn overrides_layer_over_the_router_defaults() {
        let base = BreakerConfig {
            failure_threshold: 9,
            ..BreakerConfig::default()
        };
        let pol = TenantPolicyConfig::parse(
            r#"{"providers":[{"id":"a"}],"circuit_breaker":{"min_calls":3}}"#,
        )
        .unwrap()
        .validate(&base, &RetryConfig::default())
        .unwrap();
        assert_eq!(pol.breaker.config().failure_threshold, 9);
        assert_eq!(pol.breaker.config().min_calls, 3);
    }
}
