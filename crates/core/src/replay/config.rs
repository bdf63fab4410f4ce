//! The configuration a replay runs under: breaker and retry keys, and the jitter seed.
//!
//! A [`ReplayConfig`] is a *layer*: it remembers which keys it sets, so that layers can be
//! stacked. A replay runs under `defaults < the trace's config line < the override`, key by
//! key: an override file that sets only `breaker.min_calls` keeps every other value the
//! trace's config line chose. Keys are checked (names and types) when a layer is parsed;
//! values are validated together when the replay starts, since rules span keys
//! (`latency_threshold_ms` must be below `retry.attempt_timeout_ms`).
//!
//! Shape, in JSON (`{"config": {...}}` around it is accepted too, so a trace's first line
//! can serve as a config file):
//! `{"breaker": {"failure_threshold": 0}, "retry": {"max_attempts": 4}, "seed": 7}`; in TOML:
//!
//! ```toml
//! seed = 7
//! [breaker]
//! failure_threshold = 0
//! [retry]
//! max_attempts = 4
//! ```

use std::sync::Arc;

use serde_json::{Map, Value};

use super::TraceError;
use crate::breaker::{BreakerConfig, BreakerSettings, ConfigError};
use crate::retry::{RetryConfig, RetrySettings};

/// The jitter seed of a replay whose config names none.
pub const DEFAULT_SEED: u64 = 0x5EED;

/// Breaker keys, retry keys and the seed for a replay, as a stackable layer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplayConfig {
    breaker: Map<String, Value>,
    retry: Map<String, Value>,
    seed: Option<u64>,
}

impl ReplayConfig {
    /// The empty layer: every key at its default.
    pub fn new() -> Self {
        Self::default()
    }

    /// A layer that sets every key to the given values.
    pub fn from_parts(breaker: &BreakerConfig, retry: &RetryConfig, seed: u64) -> Self {
        let as_map = |v: Result<Value, serde_json::Error>| match v {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        ReplayConfig {
            breaker: as_map(serde_json::to_value(breaker)),
            retry: as_map(serde_json::to_value(retry)),
            seed: Some(seed),
        }
    }

    /// This layer with its seed set to `seed`.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Parses a config file: JSON when the text starts with `{`, TOML otherwise.
    pub fn from_toml_or_json(text: &str) -> Result<Self, TraceError> {
        let file = |message: String| TraceError::ConfigFile { message };
        let value = if text.trim_start().starts_with('{') {
            serde_json::from_str::<Value>(text).map_err(|e| file(format!("invalid JSON: {e}")))?
        } else {
            let toml: toml::Value =
                toml::from_str(text).map_err(|e| file(format!("invalid TOML: {e}")))?;
            serde_json::to_value(toml).map_err(|e| file(format!("invalid TOML: {e}")))?
        };
        Self::from_json_value(&value).map_err(file)
    }

    /// Reads a layer from `{"breaker":..,"retry":..,"seed":..}`, optionally wrapped in
    /// `{"config": ...}`. Unknown keys and ill-typed values are refused.
    pub fn from_json_value(value: &Value) -> Result<Self, String> {
        let Value::Object(outer) = value else {
            return Err("a config must be an object".into());
        };
        let inner = match outer.get("config") {
            Some(Value::Object(inner)) if outer.len() == 1 => inner,
            Some(_) if outer.len() != 1 => {
                return Err("a config line holds only `config`".into());
            }
            Some(_) => return Err("`config` must be an object".into()),
            None => outer,
        };
        let mut config = ReplayConfig::new();
        for (section, v) in inner {
            match section.as_str() {
                "breaker" => {
                    let map = section_map(section, v)?;
                    serde_json::from_value::<BreakerConfig>(Value::Object(map.clone()))
                        .map_err(|e| format!("breaker: {e}"))?;
                    config.breaker = map;
                }
                "retry" => {
                    let map = section_map(section, v)?;
                    serde_json::from_value::<RetryConfig>(Value::Object(map.clone()))
                        .map_err(|e| format!("retry: {e}"))?;
                    config.retry = map;
                }
                "seed" => {
                    config.seed = Some(
                        v.as_u64()
                            .ok_or_else(|| format!("seed must be an unsigned integer, not {v}"))?,
                    );
                }
                other => {
                    return Err(format!(
                        "unknown config section `{other}`: expected breaker, retry or seed"
                    ));
                }
            }
        }
        Ok(config)
    }

    /// This layer stacked over `base`: keys set here win, the others come from `base`.
    pub fn layered_over(&self, base: &ReplayConfig) -> ReplayConfig {
        let merge = |top: &Map<String, Value>, bottom: &Map<String, Value>| {
            let mut out = bottom.clone();
            out.extend(top.iter().map(|(k, v)| (k.clone(), v.clone())));
            out
        };
        ReplayConfig {
            breaker: merge(&self.breaker, &base.breaker),
            retry: merge(&self.retry, &base.retry),
            seed: self.seed.or(base.seed),
        }
    }

    /// The breaker configuration: this layer's keys over the defaults.
    pub fn breaker(&self) -> BreakerConfig {
        // The keys were checked when the layer was parsed, so this cannot fail; the default
        // is only a fallback for layers built by hand.
        serde_json::from_value(Value::Object(self.breaker.clone())).unwrap_or_default()
    }

    /// The retry configuration: this layer's keys over the defaults.
    pub fn retry(&self) -> RetryConfig {
        serde_json::from_value(Value::Object(self.retry.clone())).unwrap_or_default()
    }

    /// The jitter seed (breaker open-timeout jitter and retry backoff jitter).
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or(DEFAULT_SEED)
    }

    /// Validates the whole configuration.
    pub fn validate(&self) -> Result<(Arc<BreakerSettings>, RetrySettings), ConfigError> {
        let retry = self.retry().validate()?;
        let breaker = self.breaker().validate(retry.attempt_timeout())?;
        Ok((Arc::new(breaker), retry))
    }
}

fn section_map(section: &str, v: &Value) -> Result<Map<String, Value>, String> {
    match v {
        Value::Object(map) => Ok(map.clone()),
        other => Err(format!("`{section}` must be an object, not {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_and_json_give_the_same_layer() {
        let toml = "seed = 7\n[breaker]\nfailure_threshold = 0\n[retry]\nmax_attempts = 4\n";
        let json =
            r#"{"config":{"breaker":{"failure_threshold":0},"retry":{"max_attempts":4},"seed":7}}"#;
        let a = ReplayConfig::from_toml_or_json(toml).unwrap();
        let b = ReplayConfig::from_toml_or_json(json).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.breaker().failure_threshold, 0);
        assert_eq!(a.breaker().min_calls, 10);
        assert_eq!(a.retry().max_attempts, 4);
        assert_eq!(a.seed(), 7);
    }

    #[test]
    fn layers_stack_key_by_key() {
        let base =
            ReplayConfig::from_toml_or_json(r#"{"breaker":{"failure_threshold":0,"min_calls":3}}"#)
                .unwrap();
        let top = ReplayConfig::from_toml_or_json("[breaker]\nmin_calls = 20\n").unwrap();
        let c = top.layered_over(&base);
        assert_eq!(c.breaker().failure_threshold, 0);
        assert_eq!(c.breaker().min_calls, 20);
        assert_eq!(c.seed(), DEFAULT_SEED);
    }

    #[test]
    fn unknown_keys_and_bad_types_are_refused() {
        for bad in [
            r#"{"breaker":{"failure_treshold":3}}"#,
            r#"{"breaker":{"min_calls":"ten"}}"#,
            r#"{"retry":[]}"#,
            r#"{"circuit":{}}"#,
            r#"{"seed":-1}"#,
            "[breaker\n",
        ] {
            assert!(ReplayConfig::from_toml_or_json(bad).is_err(), "{bad}");
        }
        let e = ReplayConfig::from_toml_or_json("[breaker]\nfailure_treshold = 3\n").unwrap_err();
        assert!(
            e.to_string().contains("unknown field `failure_treshold`"),
            "{e}"
        );
    }

    #[test]
    fn from_parts_round_trips() {
        let b = BreakerConfig {
            min_calls: 3,
            probe_lease_ms: Some(500),
            ..Default::default()
        };
        let c = ReplayConfig::from_parts(&b, &RetryConfig::default(), 1);
        assert_eq!(c.breaker(), b);
        assert_eq!(c.seed(), 1);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn validation_spans_sections() {
        let c = ReplayConfig::from_toml_or_json(
            r#"{"breaker":{"latency_threshold_ms":900},"retry":{"attempt_timeout_ms":800}}"#,
        )
        .unwrap();
        assert_eq!(
            c.validate().unwrap_err().key,
            "breaker.latency_threshold_ms"
        );
    }
}
