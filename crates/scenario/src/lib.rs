//! The scenario runner: the product's proof and the operator's reproduction tool.
//!
//! Scenarios are data ([`spec`]): one TOML file per fault story under `scenarios/`,
//! embedded in the binary (or loaded from `--scenario-dir`). [`run`] runs each one:
//! - in-process targets ([`Target::Embedded`], [`Target::Nats`]): a fresh router per
//!   scenario on a free loopback port, configured from the runner's base settings
//!   ([`scenario_config`]) with the scenario's `[router]` overrides, so every scenario gets
//!   exactly the breaker and retry settings its file names;
//! - a running router ([`Target::Remote`], faults enabled): its own settings; a scenario
//!   whose overrides differ from them is reported not applicable, naming the keys.
//!
//! The engine ([`scenarios`]) drives concurrent HTTP clients through the phases, injects
//! broker faults through the admin API, and [`checks`] verifies the R10 behaviour from
//! the outside: HTTP answers, the transition and broker-attempt journals, `/metrics` and
//! the broker's read-back. Every failed expectation is collected into the report
//! ([`report`]), printed as text, written as JSON or as a self-contained HTML page with
//! SVG charts ([`html`]).

pub mod analysis;
pub mod api;
pub mod checks;
pub mod client;
pub mod html;
pub mod load;
pub mod report;
pub mod scenarios;
pub mod spec;

use std::path::PathBuf;

use beamline_broker::jetstream::NatsConfig;
use beamline_core::Clock;
use beamline_core::breaker::BreakerConfig;
use beamline_core::retry::RetryConfig;
use beamline_core::rng::{JitterRng, SplitMix64};
use beamline_server::clock::TokioClock;
use beamline_server::config::{BrokerConfig, ServerConfig};
use beamline_server::{RunningServer, Server};
use indicatif::{MultiProgress, ProgressDrawTarget};
use reqwest::Method;
use serde_json::Value;

use crate::client::{ClientError, RouterClient};
use crate::load::RouterTime;
use crate::report::{RunReport, ScenarioReport};
use crate::scenarios::Ctx;
use crate::spec::{BrokerNeed, ScenarioSpec, SpecError};

/// Every built-in scenario: name and one-line description (the files' own; a unit test
/// keeps the two equal).
pub const SCENARIOS: &[(&str, &str)] = &[
    (
        "mass_failure_opens_breaker",
        "baseline traffic, then every publish fails: the breaker opens and sheds load",
    ),
    (
        "recovery_after_failure",
        "the fault is removed: half-open after the timeout, bounded probes, closed, traffic normal",
    ),
    (
        "latency_trigger",
        "publishes slowed above the latency threshold: opens on latency, never on a failure rule",
    ),
    (
        "error_rate_partial_failure",
        "about 60% of publishes fail: opens on the error rate, not on consecutive failures",
    ),
    (
        "timeout_fault",
        "publishes hang: every attempt cut at the attempt timeout, no request past its deadline",
    ),
    (
        "close_connection",
        "the broker connection drops (real NATS): the router reconnects, nothing acknowledged lost",
    ),
    (
        "thundering_herd_recovery",
        "many tenants on one provider open together; recovery probes bounded per key and spread",
    ),
    (
        "fallback_to_secondary",
        "the primary fails: traffic moves to the fallback, then back when the primary recovers",
    ),
    (
        "outbox_no_loss",
        "long outage in outbox mode: every accepted message stored exactly once, in order per key",
    ),
    (
        "deadline_vs_sla",
        "a deadline shorter than the backoff schedule: retries stop at the deadline, never after",
    ),
];

/// A fresh random seed (for `--randomize` without `--seed`).
pub fn new_seed() -> u64 {
    rand::random::<u64>()
}

/// The scenarios `--randomize` runs.
pub const RANDOMIZED_SCENARIOS: [&str; 2] =
    ["mass_failure_opens_breaker", "recovery_after_failure"];

/// Load size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Name (`ci`, `heavy`).
    pub name: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Requests per client per phase (phases scale it by their `requests` fraction).
    pub requests: usize,
}

impl Profile {
    /// The CI profile: 10 clients × 20 requests.
    pub fn ci() -> Self {
        Profile {
            name: "ci".into(),
            clients: 10,
            requests: 20,
        }
    }

    /// The heavy profile: 50 clients × 100 requests.
    pub fn heavy() -> Self {
        Profile {
            name: "heavy".into(),
            clients: 50,
            requests: 100,
        }
    }

    /// A profile by name.
    pub fn by_name(name: &str) -> Option<Self> {
        match name {
            "ci" => Some(Self::ci()),
            "heavy" => Some(Self::heavy()),
            _ => None,
        }
    }

    /// `--randomize`: `ci` or `heavy` at random, clients and requests varied within ±20%,
    /// all drawn from `seed` (so the seed alone reproduces the choice).
    pub fn randomized(seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed ^ 0x5eed_5eed_5eed_5eed);
        let mut profile = if rng.next_unit() < 0.5 {
            Self::ci()
        } else {
            Self::heavy()
        };
        let mut vary =
            |n: usize| ((n as f64 * (0.8 + 0.4 * rng.next_unit())).round() as usize).max(1);
        profile.clients = vary(profile.clients);
        profile.requests = vary(profile.requests);
        profile
    }
}

/// What the runner drives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An in-process router on the embedded broker.
    Embedded,
    /// An in-process router on a NATS JetStream server at this URL.
    Nats(String),
    /// A router already running at this URL with faults enabled.
    Remote {
        /// Base URL.
        url: String,
        /// Admin token.
        token: String,
    },
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::Embedded => "in-process router, embedded broker".into(),
            Target::Nats(url) => format!("in-process router, NATS JetStream at {url}"),
            Target::Remote { url, .. } => format!("router at {url}"),
        }
    }

    fn flags(&self) -> String {
        match self {
            Target::Embedded => String::new(),
            Target::Nats(url) => format!(" --nats {url}"),
            Target::Remote { url, .. } => format!(" --url {url} --admin-token \"$TOKEN\""),
        }
    }
}

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Load size.
    pub profile: Profile,
    /// Scenarios to run (all when empty).
    pub scenarios: Vec<String>,
    /// What to drive.
    pub target: Target,
    /// Seed for the router's jitter and fault draws (in-process targets); random when
    /// `None`.
    pub seed: Option<u64>,
    /// Show progress bars on stderr.
    pub progress: bool,
}

/// Where the scenarios come from and how the run was chosen (for [`run_with`]).
#[derive(Clone, Debug, Default)]
pub struct ScenarioSource {
    /// Load the scenario files from this folder instead of the built-in ones.
    pub dir: Option<PathBuf>,
    /// The run was chosen by `--randomize` (the reproduce command says so).
    pub randomized: bool,
}

impl RunOptions {
    /// Options for `profile` on `target` with every scenario, a fixed seed and no progress
    /// bars (tests).
    pub fn quiet(profile: Profile, target: Target, seed: u64) -> Self {
        RunOptions {
            profile,
            scenarios: Vec::new(),
            target,
            seed: Some(seed),
            progress: false,
        }
    }
}

/// The run could not be carried out (as opposed to a scenario failing).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// An unknown scenario was asked for.
    #[error("unknown scenario {name:?}; known: {known}")]
    UnknownScenario {
        /// The name asked for.
        name: String,
        /// The names known.
        known: String,
    },
    /// A scenario file is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A scenario's router overrides make an invalid configuration.
    #[error("scenario {scenario}: router configuration: {detail}")]
    Config {
        /// The scenario.
        scenario: String,
        /// What is wrong (names the key).
        detail: String,
    },
    /// The in-process router did not start.
    #[error("cannot start the router: {0}")]
    Start(String),
    /// Talking to the router failed.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// The router configuration scenarios run under before their overrides: production
/// semantics with short timeouts so a whole run takes seconds.
pub fn scenario_config(target: &Target, seed: u64) -> ServerConfig {
    let broker = match target {
        Target::Nats(url) => BrokerConfig::Nats(NatsConfig {
            url: url.clone(),
            ..NatsConfig::default()
        }),
        _ => BrokerConfig::default(),
    };
    ServerConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        admin_token: Some(format!("{:032x}", rand::random::<u128>())),
        faults_enabled: true,
        broker,
        breaker: BreakerConfig {
            failure_threshold: 5,
            error_rate_threshold: 0.5,
            window_seconds: 10.0,
            window_buckets: 10,
            min_calls: 10,
            latency_threshold_ms: 250,
            slow_call_rate_threshold: 0.5,
            open_timeout_ms: 1000,
            open_timeout_max_ms: 4000,
            open_timeout_jitter: 0.1,
            half_open_max_calls: 3,
            success_threshold: 2,
            ..BreakerConfig::default()
        },
        retry: RetryConfig {
            max_attempts: 3,
            base_ms: 20,
            max_ms: 200,
            jitter: 0.2,
            attempt_timeout_ms: 500,
            total_deadline_ms: 1500,
            ..RetryConfig::default()
        },
        seed,
        ..ServerConfig::default()
    }
}

fn merge(base: &mut Value, overrides: &toml::Table) -> Result<(), String> {
    let over = serde_json::to_value(overrides).map_err(|e| e.to_string())?;
    if let (Value::Object(b), Value::Object(o)) = (base, over) {
        for (k, v) in o {
            b.insert(k, v);
        }
    }
    Ok(())
}

/// The base configuration with a scenario's `[router]` overrides applied.
pub fn config_for(spec: &ScenarioSpec, base: &ServerConfig) -> Result<ServerConfig, String> {
    if spec.router.outbox && base.data_dir.is_none() {
        return Err("router.outbox needs a data directory in the base configuration".into());
    }
    let mut breaker = serde_json::to_value(&base.breaker).map_err(|e| e.to_string())?;
    let mut retry = serde_json::to_value(&base.retry).map_err(|e| e.to_string())?;
    merge(&mut breaker, &spec.router.breaker)?;
    merge(&mut retry, &spec.router.retry)?;
    let mut config = base.clone();
    config.breaker =
        serde_json::from_value(breaker).map_err(|e| format!("[router.breaker]: {e}"))?;
    config.retry = serde_json::from_value(retry).map_err(|e| format!("[router.retry]: {e}"))?;
    if !spec.router.outbox {
        config.data_dir = None;
    }
    if let Some(mode) = spec.router.degraded_mode {
        config.degraded_mode = mode;
    }
    Ok(config)
}

/// The overrides a running router's settings do not match (`section.key`: wanted vs
/// running).
fn mismatched_overrides(spec: &ScenarioSpec, running: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(mode) = spec.router.degraded_mode {
        let wanted = serde_json::to_value(mode).unwrap_or(Value::Null);
        if running["degraded_mode"] != wanted {
            out.push(format!(
                "degraded_mode = {wanted} (router has {})",
                running["degraded_mode"]
            ));
        }
    }
    if spec.router.outbox && running["data_dir"].is_null() {
        out.push("an outbox (router has no data_dir)".into());
    }
    for (section, table) in [
        ("breaker", &spec.router.breaker),
        ("retry", &spec.router.retry),
    ] {
        let Ok(Value::Object(wanted)) = serde_json::to_value(table) else {
            continue;
        };
        for (k, v) in wanted {
            let have = &running[section][&k];
            let equal = match (v.as_f64(), have.as_f64()) {
                (Some(a), Some(b)) => (a - b).abs() < 1e-9,
                _ => &v == have,
            };
            if !equal {
                out.push(format!("{section}.{k} = {v} (router has {have})"));
            }
        }
    }
    out
}

/// Loads the scenarios and picks the ones asked for, in file order.
pub fn select(
    options: &RunOptions,
    source: &ScenarioSource,
) -> Result<Vec<ScenarioSpec>, RunError> {
    let all = match &source.dir {
        Some(dir) => spec::load_dir(dir)?,
        None => spec::builtin()?,
    };
    if options.scenarios.is_empty() {
        return Ok(all);
    }
    for name in &options.scenarios {
        if !all.iter().any(|s| &s.name == name) {
            return Err(RunError::UnknownScenario {
                name: name.clone(),
                known: all
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    Ok(all
        .into_iter()
        .filter(|s| options.scenarios.contains(&s.name))
        .collect())
}

fn decode<T: serde::de::DeserializeOwned>(value: &Value, section: &str) -> Result<T, ClientError> {
    serde_json::from_value(value[section].clone()).map_err(|e| ClientError::Decode {
        path: "/admin/config".into(),
        detail: format!("{section}: {e}"),
    })
}

/// Runs the built-in scenarios and returns the report (a failed assertion is in the
/// report, not an error).
pub async fn run(options: RunOptions) -> Result<RunReport, RunError> {
    run_with(options, ScenarioSource::default()).await
}

/// Runs the scenarios of `source` and returns the report.
pub async fn run_with(options: RunOptions, source: ScenarioSource) -> Result<RunReport, RunError> {
    let clock = TokioClock::new();
    let started = clock.now();
    let specs = select(&options, &source)?;
    let seed = options.seed.unwrap_or_else(rand::random::<u64>);
    let run_id = format!("{:08x}", rand::random::<u32>());
    let progress = MultiProgress::new();
    if !options.progress {
        progress.set_draw_target(ProgressDrawTarget::hidden());
    }
    let remote = match &options.target {
        Target::Remote { url, token } => Some(RouterClient::new(url, Some(token.clone()))?),
        _ => None,
    };
    // A running router with tenant policies gets each scenario's settings per tenant.
    let mut remote_policies = false;
    let mut broker_name = match &options.target {
        Target::Embedded => "embedded",
        Target::Nats(_) => "nats",
        Target::Remote { .. } => "remote",
    };
    if let Some(client) = &remote {
        let health = client.admin(Method::GET, "/healthz", None).await?;
        broker_name = if health["broker"] == "jetstream" {
            "nats"
        } else {
            "embedded"
        };
        let probe = format!("/admin/policies/probe-{run_id}");
        remote_policies = api::has_route(client, Method::GET, &probe, None).await?;
    }
    let mut reports = Vec::new();
    for (index, spec) in specs.iter().enumerate() {
        if spec.needs.broker == BrokerNeed::Nats && broker_name == "embedded" {
            reports.push(ScenarioReport::not_applicable(
                &spec.name,
                &spec.description,
                "needs a real NATS JetStream (the embedded broker has no connection to drop): \
                 run with --nats URL, or against a router that publishes to NATS",
            ));
            continue;
        }
        // The router this scenario drives, and the settings it runs under.
        let mut outbox_dir: Option<PathBuf> = None;
        let mut tenant_settings = None;
        let (client, server, breaker, retry) = match &remote {
            Some(client) if remote_policies => {
                // The scenario's settings (the runner's base with the file's overrides)
                // reach the router through tenant policies on the scenario's own tenants:
                // the rest of the router is left alone. Only an outbox cannot be lent.
                if spec.router.outbox && client.config().await?["data_dir"].is_null() {
                    reports.push(ScenarioReport::not_applicable(
                        &spec.name,
                        &spec.description,
                        "needs a router with an outbox (data_dir); the running router has none",
                    ));
                    continue;
                }
                let mut base = scenario_config(&Target::Embedded, seed);
                base.data_dir = Some(PathBuf::from("(remote)"));
                let config = config_for(spec, &base).map_err(|detail| RunError::Config {
                    scenario: spec.name.clone(),
                    detail,
                })?;
                tenant_settings = Some(scenarios::TenantSettings {
                    breaker: config.breaker.clone(),
                    retry: config.retry.clone(),
                    degraded_mode: config.degraded_mode,
                });
                (client.clone(), None, config.breaker, config.retry)
            }
            Some(client) => {
                let config = client.config().await?;
                let mismatch = mismatched_overrides(spec, &config);
                if !mismatch.is_empty() {
                    reports.push(ScenarioReport::not_applicable(
                        &spec.name,
                        &spec.description,
                        &format!(
                            "the running router's settings differ from the scenario's: {}",
                            mismatch.join(", ")
                        ),
                    ));
                    continue;
                }
                let breaker: BreakerConfig = decode(&config, "breaker")?;
                let retry: RetryConfig = decode(&config, "retry")?;
                (client.clone(), None, breaker, retry)
            }
            None => {
                let mut base = scenario_config(&options.target, seed);
                // A fresh outbox directory per scenario, removed when its router stops.
                let dir = std::env::temp_dir()
                    .join(format!("beamline-scenario-{run_id}-{index}-{}", spec.name));
                base.data_dir = Some(dir.clone());
                outbox_dir = spec.router.outbox.then_some(dir);
                let config_error = |detail: String| RunError::Config {
                    scenario: spec.name.clone(),
                    detail,
                };
                let config = config_for(spec, &base).map_err(config_error)?;
                let (breaker, retry) = (config.breaker.clone(), config.retry.clone());
                let token = config.admin_token.clone();
                let valid = config.validate().map_err(|e| config_error(e.to_string()))?;
                let server: RunningServer = match Server::start(valid).await {
                    Ok(server) => server,
                    Err(e) => {
                        reports.push(broken(spec, "the in-process router started", &e));
                        continue;
                    }
                };
                let client = RouterClient::new(&format!("http://{}", server.addr()), token)?;
                (client, Some(server), breaker, retry)
            }
        };
        let time = match RouterTime::calibrate(&client).await {
            Ok(time) => time,
            Err(e) => {
                if let Some(server) = server {
                    server.shutdown().await;
                }
                reports.push(broken(spec, "the router answered GET /admin/clock", &e));
                continue;
            }
        };
        let ctx = Ctx {
            client: &client,
            profile: &options.profile,
            run_id: run_id.clone(),
            index,
            breaker,
            retry,
            broker: broker_name,
            progress: &progress,
            time,
            tenant_settings,
        };
        let result = scenarios::execute(spec, &ctx).await;
        if let Some(server) = server {
            server.shutdown().await;
        }
        if let Some(dir) = outbox_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        reports.push(result.unwrap_or_else(|e| {
            broken(
                spec,
                "the scenario ran to its end (router API answered)",
                &e,
            )
        }));
    }
    let _ = progress.clear();
    let total_requests: usize = reports.iter().map(|r| r.requests).sum();
    let load_secs: f64 = reports.iter().map(|r| r.load_time.as_secs_f64()).sum();
    Ok(RunReport {
        profile: options.profile.name.clone(),
        clients: options.profile.clients,
        requests: options.profile.requests,
        target: options.target.describe(),
        broker: broker_name.to_owned(),
        seed,
        scenarios: reports,
        duration: clock.now().since(started),
        total_requests,
        throughput_rps: if load_secs > 0.0 {
            total_requests as f64 / load_secs
        } else {
            0.0
        },
        reproduce: reproduce(&options, &source, seed),
    })
}

/// A failed report for a scenario the router could not carry out (unreachable, an admin
/// call answered wrongly): the run goes on with the next scenario.
fn broken(spec: &ScenarioSpec, what: &str, error: &dyn std::fmt::Display) -> ScenarioReport {
    let mut report = ScenarioReport::new(&spec.name, &spec.description);
    report.check(
        report::AssertionKind::Setup,
        what,
        false,
        error.to_string(),
        "no error",
    );
    report.finish();
    report
}

/// The command that reproduces a run.
pub fn reproduce(options: &RunOptions, source: &ScenarioSource, seed: u64) -> String {
    let target = options.target.flags();
    let dir = source
        .dir
        .as_ref()
        .map(|d| format!(" --scenario-dir {}", d.display()))
        .unwrap_or_default();
    let scenarios: String = options
        .scenarios
        .iter()
        .map(|n| format!(" --scenario {n}"))
        .collect();
    let explicit = format!(
        "beamline-router scenario run --profile {} --clients {} --requests {}{scenarios} --seed {seed}{target}{dir}",
        options.profile.name, options.profile.clients, options.profile.requests
    );
    if source.randomized {
        format!(
            "beamline-router scenario run --randomize --seed {seed}{target}{dir}  (= {explicit})"
        )
    } else {
        explicit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn randomized_profiles_stay_within_twenty_percent_and_follow_the_seed() {
        let mut seen = std::collections::HashSet::new();
        for seed in 0..200 {
            let p = Profile::randomized(seed);
            assert_eq!(p, Profile::randomized(seed));
            let base = Profile::by_name(&p.name).unwrap();
            for (v, b) in [(p.clients, base.clients), (p.requests, base.requests)] {
                let (lo, hi) = ((b as f64 * 0.8).floor(), (b as f64 * 1.2).ceil());
                assert!((lo..=hi).contains(&(v as f64)), "{p:?}");
            }
            seen.insert(p.name);
        }
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn overrides_apply_to_the_keys_they_name_only() {
        let specs = spec::builtin().unwrap();
        let deadline = specs.iter().find(|s| s.name == "deadline_vs_sla").unwrap();
        let mut base = scenario_config(&Target::Embedded, 1);
        base.data_dir = Some("/nonexistent/outbox".into());
        let c = config_for(deadline, &base).unwrap();
        assert_eq!(
            c.data_dir, None,
            "only scenarios asking for an outbox get one"
        );
        assert_eq!(c.retry.max_attempts, 6);
        assert_eq!(c.breaker.open_timeout_ms, base.breaker.open_timeout_ms);
        for s in &specs {
            let c = config_for(s, &base).unwrap();
            assert!(c.validate().is_ok(), "{}", s.name);
        }
    }

    #[test]
    fn a_running_router_with_other_settings_is_named_key_by_key() {
        let specs = spec::builtin().unwrap();
        let latency = specs.iter().find(|s| s.name == "latency_trigger").unwrap();
        let running = serde_json::to_value(scenario_config(&Target::Embedded, 1)).unwrap();
        let m = mismatched_overrides(latency, &running);
        assert!(
            m.iter()
                .any(|x| x.starts_with("breaker.latency_threshold_ms")),
            "{m:?}"
        );
        let mass = specs
            .iter()
            .find(|s| s.name == "mass_failure_opens_breaker")
            .unwrap();
        assert!(mismatched_overrides(mass, &running).is_empty());
    }

    #[test]
    fn the_reproduce_command_names_everything_that_shapes_the_run() {
        let mut o = RunOptions::quiet(Profile::randomized(9), Target::Nats("nats://h:1".into()), 9);
        o.scenarios = RANDOMIZED_SCENARIOS.iter().map(|s| s.to_string()).collect();
        let source = ScenarioSource {
            dir: None,
            randomized: true,
        };
        let r = reproduce(&o, &source, 9);
        assert!(
            r.starts_with("beamline-router scenario run --randomize --seed 9 --nats nats://h:1"),
            "{r}"
        );
        assert!(r.contains("--scenario recovery_after_failure"), "{r}");
        assert!(
            r.contains(&format!("--clients {}", o.profile.clients)),
            "{r}"
        );
    }
}
