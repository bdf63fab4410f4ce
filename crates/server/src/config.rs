//! Server configuration: one TOML file, environment overrides (`BEAMLINE__SECTION__KEY`,
//! see [`ServerConfig::with_env_overrides`]), CLI flags (applied by the binary in that
//! order), validated at once with errors that name the key.
//!
//! Every default lives here, in the `Default` impls; `serve --check-config` prints the
//! effective configuration, and the README's configuration section shows this file's
//! defaults as TOML.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use beamline_broker::jetstream::NatsConfig;
use beamline_core::ProviderId;
use beamline_core::breaker::{BreakerConfig, BreakerSettings, ConfigError};
use beamline_core::policy::DegradedMode;
use beamline_core::retry::{RetryConfig, RetrySettings};
use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "BEAMLINE__";

/// Which broker the router publishes to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BrokerConfig {
    /// The in-process broker (default): no setup.
    Embedded {
        /// Most messages it stores.
        #[serde(default = "default_embedded_capacity")]
        max_messages: usize,
    },
    /// NATS JetStream.
    Nats(NatsConfig),
}

fn default_embedded_capacity() -> usize {
    1_000_000
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig::Embedded {
            max_messages: default_embedded_capacity(),
        }
    }
}

/// Size limits on what clients send.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Largest `payload` (its JSON text), in bytes.
    pub max_payload_bytes: usize,
    /// Longest `message_id`, in bytes.
    pub max_message_id_len: usize,
    /// Time a client has to send a request's headers (also the longest a keep-alive
    /// connection may idle between requests); past it the connection is closed.
    pub header_read_timeout_ms: u64,
    /// Time a client has to send a publish body once its headers are in: 408
    /// `request_timeout` past it.
    pub body_read_timeout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: 1024 * 1024,
            max_payload_bytes: 512 * 1024,
            max_message_id_len: 128,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
        }
    }
}

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Bearer token for `/admin/*`; without one the admin API answers 401 to everyone.
    pub admin_token: Option<String>,
    /// Whether `/admin/faults` may inject broker faults (never in production).
    pub faults_enabled: bool,
    /// The broker.
    pub broker: BrokerConfig,
    /// Default breaker settings.
    pub breaker: BreakerConfig,
    /// Default retry settings.
    pub retry: RetryConfig,
    /// Input limits.
    pub limits: LimitsConfig,
    /// Most distinct tenant label values in metrics.
    pub max_tenant_labels: usize,
    /// Closed breakers unused this long are dropped.
    pub breaker_idle_secs: u64,
    /// Seed for jitter and intermittent faults; 0 picks one at startup.
    pub seed: u64,
    /// Providers messages may name; empty allows any valid provider id.
    pub providers: Vec<ProviderId>,
    /// Directory of tenant policy files (`<tenant_id>.json` or `.toml`), loaded at startup
    /// and written by `PUT/DELETE /admin/policies/{tenant}`; none keeps policies in memory.
    pub policies_dir: Option<PathBuf>,
    /// Whether every tenant needs a policy (404 `no_policy` otherwise).
    pub require_policy: bool,
    /// What happens to a message no provider can take, for tenants without a policy.
    pub degraded_mode: DegradedMode,
    /// Directory of the durable state: the outbox (`outbox.redb`) and, with the embedded
    /// broker, its stream (`broker.redb`). None keeps the embedded broker in memory and
    /// disables the outbox (degraded mode becomes `reject` for everyone).
    pub data_dir: Option<PathBuf>,
    /// Most messages the outbox holds (503 `outbox_full` past it).
    pub outbox_capacity: usize,
    /// Most live sticky sessions.
    pub sticky_max_sessions: usize,
    /// Recent `(tenant_id, message_id)` pairs remembered to refuse a reused id with a
    /// different payload (409 `message_id_conflict`).
    pub recent_message_ids: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_token: None,
            faults_enabled: false,
            broker: BrokerConfig::default(),
            breaker: BreakerConfig::default(),
            retry: RetryConfig::default(),
            limits: LimitsConfig::default(),
            max_tenant_labels: 1000,
            breaker_idle_secs: 3600,
            seed: 0,
            providers: Vec::new(),
            policies_dir: None,
            require_policy: false,
            degraded_mode: DegradedMode::Reject,
            data_dir: None,
            outbox_capacity: 100_000,
            sticky_max_sessions: 100_000,
            recent_message_ids: 100_000,
        }
    }
}

/// A configuration that passed validation.
#[derive(Clone, Debug)]
pub struct ValidConfig {
    /// The configuration as given.
    pub raw: ServerConfig,
    /// Default breaker settings.
    pub breaker: BreakerSettings,
    /// Default retry settings.
    pub retry: RetrySettings,
}

impl ServerConfig {
    /// Parses a TOML configuration file's text.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The configuration as TOML text (what `serve --check-config` prints).
    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string(self).map_err(|e| e.to_string())
    }

    /// Applies environment overrides: a variable `BEAMLINE__SECTION__KEY=value` sets
    /// `section.key` (`BEAMLINE__MAX_TENANT_LABELS=50`, `BEAMLINE__BREAKER__MIN_CALLS=5`,
    /// `BEAMLINE__BROKER__URL=...`). The value is read as a TOML value when it parses as one
    /// (numbers, booleans, arrays), as a string otherwise. Unknown keys are refused, naming
    /// the variable. Other variables are ignored.
    pub fn with_env_overrides(
        self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, String> {
        let mut tree = toml::Value::try_from(&self).map_err(|e| e.to_string())?;
        let mut applied = Vec::new();
        for (name, raw) in vars {
            let Some(path) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
            if keys.iter().any(String::is_empty) {
                return Err(format!("{name}: empty key segment"));
            }
            let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(raw.clone()));
            let mut node = &mut tree;
            for key in &keys[..keys.len() - 1] {
                let table = node
                    .as_table_mut()
                    .ok_or_else(|| format!("{name}: {key} is not a section"))?;
                node = table
                    .entry(key.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            }
            let table = node
                .as_table_mut()
                .ok_or_else(|| format!("{name}: not a section"))?;
            table.insert(keys[keys.len() - 1].clone(), value);
            applied.push(name);
        }
        if applied.is_empty() {
            return Ok(self);
        }
        tree.try_into().map_err(|e: toml::de::Error| {
            format!("environment override ({}): {e}", applied.join(", "))
        })
    }

    /// Validates every section.
    pub fn validate(self) -> Result<ValidConfig, ConfigError> {
        let retry = self.retry.validate()?;
        let breaker = self.breaker.validate(retry.attempt_timeout())?;
        if self.limits.max_payload_bytes > self.limits.max_body_bytes {
            return Err(ConfigError::new(
                "limits.max_payload_bytes",
                self.limits.max_payload_bytes,
                format!(
                    "must be at most limits.max_body_bytes ({})",
                    self.limits.max_body_bytes
                ),
            ));
        }
        if self.limits.max_message_id_len == 0 || self.limits.max_message_id_len > 1024 {
            return Err(ConfigError::new(
                "limits.max_message_id_len",
                self.limits.max_message_id_len,
                "must be within 1..=1024",
            ));
        }
        for (key, ms) in [
            (
                "limits.header_read_timeout_ms",
                self.limits.header_read_timeout_ms,
            ),
            (
                "limits.body_read_timeout_ms",
                self.limits.body_read_timeout_ms,
            ),
        ] {
            if ms == 0 {
                return Err(ConfigError::new(key, 0, "must be at least 1"));
            }
        }
        if self.outbox_capacity == 0 {
            return Err(ConfigError::new("outbox_capacity", 0, "must be at least 1"));
        }
        if self.sticky_max_sessions == 0 {
            return Err(ConfigError::new(
                "sticky_max_sessions",
                0,
                "must be at least 1",
            ));
        }
        if self.degraded_mode == DegradedMode::Outbox && self.data_dir.is_none() {
            return Err(ConfigError::new(
                "degraded_mode",
                "outbox",
                "needs data_dir: the outbox is stored there",
            ));
        }
        if self.admin_token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err(ConfigError::new(
                "admin_token",
                "<hidden>",
                "must be at least 16 characters",
            ));
        }
        Ok(ValidConfig {
            raw: self,
            breaker,
            retry,
        })
    }
}

impl ServerConfig {
    /// This configuration with its secrets hidden (the admin token, a password in the
    /// broker URL): what `--check-config` and `GET /admin/config` show.
    pub fn redacted(&self) -> ServerConfig {
        let mut shown = self.clone();
        shown.admin_token = shown.admin_token.map(|_| "<hidden>".to_owned());
        if let BrokerConfig::Nats(nats) = &mut shown.broker {
            nats.url = beamline_broker::jetstream::redact_url(&nats.url);
        }
        shown
    }
}

impl ValidConfig {
    /// The idle period after which closed breakers are dropped.
    pub fn breaker_idle(&self) -> Duration {
        Duration::from_secs(self.raw.breaker_idle_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_round_trip_through_toml() {
        let c = ServerConfig::default();
        let text = toml::to_string(&c).unwrap();
        assert_eq!(ServerConfig::from_toml(&text).unwrap(), c);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn errors_name_the_key() {
        let c = ServerConfig::from_toml("[breaker]\nlatency_threshold_ms = 5000\n").unwrap();
        assert_eq!(
            c.validate().unwrap_err().key,
            "breaker.latency_threshold_ms"
        );
        let e = ServerConfig::from_toml("[retry]\nmax_atempts = 3\n").unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
        let short = ServerConfig {
            admin_token: Some("short".into()),
            ..Default::default()
        };
        assert_eq!(short.validate().unwrap_err().key, "admin_token");
    }

    #[test]
    fn environment_overrides_set_nested_keys_and_refuse_unknown_ones() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let c = ServerConfig::default()
            .with_env_overrides(env(&[
                ("BEAMLINE__BREAKER__MIN_CALLS", "5"),
                ("BEAMLINE__FAULTS_ENABLED", "true"),
                ("BEAMLINE__ADMIN_TOKEN", "a-token-long-enough"),
                ("PATH", "/bin"),
            ]))
            .unwrap();
        assert_eq!(c.breaker.min_calls, 5);
        assert!(c.faults_enabled);
        assert_eq!(c.admin_token.as_deref(), Some("a-token-long-enough"));
        let e = ServerConfig::default()
            .with_env_overrides(env(&[("BEAMLINE__BREAKER__MIN_CALS", "5")]))
            .unwrap_err();
        assert!(
            e.contains("BEAMLINE__BREAKER__MIN_CALS") && e.contains("unknown field"),
            "{e}"
        );
        let e = ServerConfig::default()
            .with_env_overrides(env(&[("BEAMLINE__BREAKER__MIN_CALLS", "many")]))
            .unwrap_err();
        assert!(e.contains("invalid type"), "{e}");
    }

    #[test]
    fn nats_broker_section_parses() {
        let c =
            ServerConfig::from_toml("[broker]\nkind = \"nats\"\nurl = \"nats://127.0.0.1:4333\"\n")
                .unwrap();
        assert!(matches!(c.broker, BrokerConfig::Nats(ref n) if n.url.ends_with("4333")));
    }
}
