//! The scenario runner: the product's proof and the operator's reproduction tool.
//!
//! [`run`] starts a router in-process on a free loopback port (embedded broker, or a real
//! NATS JetStream with [`Target::Nats`]) or targets a running one ([`Target::Remote`],
//! which must have faults enabled), drives concurrent HTTP clients through each scenario,
//! injects broker faults through the admin API, and checks the R10 behaviour from the
//! outside: HTTP answers, the router's transition and broker-attempt journals, `/metrics`
//! (through `beamline_metrics::r10`), and what the broker stored.

pub mod analysis;
pub mod client;
pub mod load;
pub mod report;
pub mod scenarios;

use std::time::Duration;

use beamline_broker::jetstream::NatsConfig;
use beamline_core::Clock;
use beamline_core::breaker::BreakerConfig;
use beamline_core::retry::RetryConfig;
use beamline_server::clock::TokioClock;
use beamline_server::config::{BrokerConfig, ServerConfig};
use beamline_server::{RunningServer, Server};
use indicatif::{MultiProgress, ProgressDrawTarget};

use crate::client::{ClientError, RouterClient};
use crate::report::{RunReport, ScenarioReport};
use crate::scenarios::Ctx;

/// Every scenario: name and one-line description.
pub const SCENARIOS: &[(&str, &str)] = &[
    (
        "mass_failure_opens_breaker",
        "baseline, then every publish fails: the breaker opens and sheds load",
    ),
    (
        "recovery_after_failure",
        "the fault is removed: half-open, bounded probes, closed, traffic normal",
    ),
];

/// Load size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Name (`ci`, `heavy`, `custom`).
    pub name: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Requests per client per phase.
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
            Target::Remote { url, .. } => format!(" --url {url} --admin-token <token>"),
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
    /// Seed for the router's jitter (in-process targets); random when `None`.
    pub seed: Option<u64>,
    /// Show progress bars on stderr.
    pub progress: bool,
}

/// The run could not be carried out (as opposed to a scenario failing).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// An unknown scenario was asked for.
    #[error("unknown scenario {0:?}; known: {known}", known = SCENARIOS.iter().map(|s| s.0).collect::<Vec<_>>().join(", "))]
    UnknownScenario(String),
    /// The in-process router did not start.
    #[error("cannot start the router: {0}")]
    Start(String),
    /// Talking to the router failed.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// The router configuration scenarios run under: production semantics with short
/// timeouts so a whole run takes seconds.
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

/// Runs the scenarios and returns the report (a failed assertion is in the report, not an
/// error).
pub async fn run(options: RunOptions) -> Result<RunReport, RunError> {
    let clock = TokioClock::new();
    let started = clock.now();
    let names: Vec<String> = if options.scenarios.is_empty() {
        SCENARIOS.iter().map(|s| s.0.to_owned()).collect()
    } else {
        options.scenarios.clone()
    };
    if let Some(unknown) = names
        .iter()
        .find(|n| !SCENARIOS.iter().any(|s| s.0 == n.as_str()))
    {
        return Err(RunError::UnknownScenario(unknown.clone()));
    }
    let seed = options.seed.unwrap_or_else(rand::random::<u64>);
    let (server, client): (Option<RunningServer>, RouterClient) = match &options.target {
        Target::Remote { url, token } => (None, RouterClient::new(url, Some(token.clone()))?),
        local => {
            let config = scenario_config(local, seed);
            let token = config.admin_token.clone();
            let valid = config
                .validate()
                .map_err(|e| RunError::Start(e.to_string()))?;
            let server = Server::start(valid)
                .await
                .map_err(|e| RunError::Start(e.to_string()))?;
            let client = RouterClient::new(&format!("http://{}", server.addr()), token)?;
            (Some(server), client)
        }
    };
    let result = run_scenarios(&client, &options, &names, seed).await;
    if let Some(server) = server {
        server.shutdown().await;
    }
    let scenarios = result?;
    let scenario_flags: String = if options.scenarios.is_empty() {
        String::new()
    } else {
        names.iter().map(|n| format!(" --scenario {n}")).collect()
    };
    Ok(RunReport {
        profile: options.profile.name.clone(),
        clients: options.profile.clients,
        requests: options.profile.requests,
        target: options.target.describe(),
        seed,
        scenarios,
        duration: clock.now().since(started),
        reproduce: format!(
            "beamline-router scenario run --clients {} --requests {} --seed {seed}{}{scenario_flags}",
            options.profile.clients,
            options.profile.requests,
            options.target.flags()
        ),
    })
}

async fn run_scenarios(
    client: &RouterClient,
    options: &RunOptions,
    names: &[String],
    seed: u64,
) -> Result<Vec<ScenarioReport>, RunError> {
    let config = client.config().await?;
    let breaker: BreakerConfig =
        serde_json::from_value(config["breaker"].clone()).map_err(|e| ClientError::Decode {
            path: "/admin/config".into(),
            detail: e.to_string(),
        })?;
    let retry: RetryConfig =
        serde_json::from_value(config["retry"].clone()).map_err(|e| ClientError::Decode {
            path: "/admin/config".into(),
            detail: e.to_string(),
        })?;
    let progress = MultiProgress::new();
    if !options.progress {
        progress.set_draw_target(ProgressDrawTarget::hidden());
    }
    let ctx = Ctx {
        client,
        clients: options.profile.clients.max(1),
        requests: options.profile.requests.max(1),
        run_id: format!("{:08x}", seed as u32 ^ rand::random::<u32>()),
        breaker,
        retry,
        progress,
    };
    let clock = TokioClock::new();
    let mut reports = Vec::new();
    for name in names {
        let started = clock.now();
        let mut report = match name.as_str() {
            "mass_failure_opens_breaker" => scenarios::mass_failure_opens_breaker(&ctx).await?,
            "recovery_after_failure" => scenarios::recovery_after_failure(&ctx).await?,
            other => return Err(RunError::UnknownScenario(other.to_owned())),
        };
        report.duration = clock.now().since(started);
        reports.push(report);
    }
    let _ = ctx.progress.clear();
    tokio::time::sleep(Duration::ZERO).await;
    Ok(reports)
}
