//! `beamline-router`: the one binary. Subcommands wire the crates together:
//! - `serve`: the HTTP service;
//! - `scenario run`: the scenario runner, printing its report;
//! - `replay`: a trace through the breaker on virtual time.
//!
//! This is the one place that prints to stdout (reports and replay output).
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod ctl;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use beamline_core::replay::{self, ReplayConfig};
use beamline_scenario::{Profile, RunOptions, Target};
use beamline_server::Server;
use beamline_server::config::{BrokerConfig, ServerConfig};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "beamline-router",
    version,
    about = "A message router with per-tenant circuit breakers in front of NATS JetStream"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the HTTP service.
    Serve(ServeArgs),
    /// The scenario runner.
    Scenario {
        #[command(subcommand)]
        command: ScenarioCommand,
    },
    /// Replay a JSON Lines trace through the breaker and retry model on virtual time.
    Replay(ReplayArgs),
    /// Operator CLI over the admin API: breakers, faults, outbox.
    Ctl(ctl::CtlArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// TOML configuration file (defaults apply to every key it omits).
    #[arg(long, env = "BEAMLINE_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address (overrides the file).
    #[arg(long, env = "BEAMLINE_LISTEN")]
    listen: Option<SocketAddr>,
    /// Publish to NATS JetStream at this URL instead of the embedded broker.
    #[arg(long, env = "BEAMLINE_NATS_URL")]
    nats: Option<String>,
    /// Enable `/admin/faults` (never in production).
    #[arg(long, env = "BEAMLINE_FAULTS_ENABLED")]
    faults_enabled: bool,
    /// Bearer token of the admin API.
    #[arg(long, env = "BEAMLINE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Validate the configuration, print the effective configuration and exit.
    #[arg(long)]
    check_config: bool,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "json")]
    log_format: LogFormat,
}

#[derive(Subcommand, Debug)]
enum ScenarioCommand {
    /// Run scenarios and print the report; exits 1 when an assertion fails.
    Run(Box<RunArgs>),
    /// List the scenarios.
    List,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Load profile: `ci` (10 clients x 20 requests) or `heavy` (50 x 100).
    #[arg(long, default_value = "ci")]
    profile: String,
    /// Override the profile's number of concurrent clients.
    #[arg(long)]
    clients: Option<usize>,
    /// Override the profile's requests per client per phase.
    #[arg(long)]
    requests: Option<usize>,
    /// Run only this scenario (repeatable; `scenario list` names them).
    #[arg(long = "scenario")]
    scenarios: Vec<String>,
    /// Pick ci or heavy at random, vary clients and requests within 20%, and run
    /// mass_failure_opens_breaker and recovery_after_failure; everything follows --seed.
    #[arg(long, conflicts_with_all = ["profile", "clients", "requests", "scenarios"])]
    randomize: bool,
    /// Seed of the router's jitter and fault draws (and of --randomize's choices).
    #[arg(long)]
    seed: Option<u64>,
    /// Load the scenario files from this folder instead of the built-in ones.
    #[arg(long)]
    scenario_dir: Option<PathBuf>,
    /// Run the in-process router against NATS JetStream at this URL.
    #[arg(long, conflicts_with = "url")]
    nats: Option<String>,
    /// Drive an already running router (started with faults enabled).
    #[arg(long, requires = "admin_token")]
    url: Option<String>,
    /// Admin token of the router given with --url.
    #[arg(long, env = "BEAMLINE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write the report as a self-contained HTML page with charts to this file.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Hide the progress bars.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct ReplayArgs {
    /// The trace (JSON Lines, DESIGN.md §6).
    trace: PathBuf,
    /// Configuration (TOML or JSON, `[breaker]`/`[retry]`) layered over the trace's own.
    #[arg(long, conflicts_with = "compare")]
    config: Option<PathBuf>,
    /// Replay under two configurations and print their summaries side by side.
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    compare: Vec<PathBuf>,
}

fn init_logs(default: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Scenario {
                command: ScenarioCommand::Run(args),
            } => scenario_run(args).await,
            Command::Scenario {
                command: ScenarioCommand::List,
            } => {
                for (name, description) in beamline_scenario::SCENARIOS {
                    println!("{name:32} {description}");
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Replay(args) => replay_trace(args),
            Command::Ctl(args) => ctl::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn effective_config(args: &ServeArgs) -> anyhow::Result<ServerConfig> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            ServerConfig::from_toml(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => ServerConfig::default(),
    };
    config = config
        .with_env_overrides(std::env::vars())
        .map_err(|e| anyhow::anyhow!(e))?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(url) = &args.nats {
        let mut nats = match config.broker {
            BrokerConfig::Nats(n) => n,
            BrokerConfig::Embedded { .. } => Default::default(),
        };
        nats.url = url.clone();
        config.broker = BrokerConfig::Nats(nats);
    }
    if args.faults_enabled {
        config.faults_enabled = true;
    }
    if let Some(token) = &args.admin_token {
        config.admin_token = Some(token.clone());
    }
    Ok(config)
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = effective_config(&args)?;
    if args.check_config {
        let printable = config.redacted();
        let valid = config
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        // The policy files too: a bad one would stop the router at start.
        if let Some(dir) = valid.raw.policies_dir.as_deref().filter(|d| d.exists()) {
            beamline_server::policies::PolicyStore::open(
                Some(dir),
                valid.raw.breaker.clone(),
                valid.raw.retry.clone(),
            )
            .map_err(|e| anyhow::anyhow!("invalid policy: {e}"))?;
        }
        println!(
            "# configuration is valid; effective configuration:\n{}",
            printable.to_toml().map_err(|e| anyhow::anyhow!(e))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    init_logs("info", args.log_format);
    let valid = config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let server = Server::start(valid).await?;
    let shutdown = async {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return ctrl_c.await.map_err(drop).unwrap_or(()),
                };
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
    };
    shutdown.await;
    tracing::info!("shutdown requested: finishing in-flight requests");
    server.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn scenario_run(args: Box<RunArgs>) -> anyhow::Result<ExitCode> {
    init_logs("error", LogFormat::Text);
    let args = *args;
    let target = match (args.nats, args.url) {
        (Some(url), _) => Target::Nats(url),
        (None, Some(url)) => Target::Remote {
            url,
            token: args.admin_token.unwrap_or_default(),
        },
        (None, None) => Target::Embedded,
    };
    let (profile, scenarios, seed) = if args.randomize {
        let seed = args.seed.unwrap_or_else(beamline_scenario::new_seed);
        let scenarios = beamline_scenario::RANDOMIZED_SCENARIOS
            .iter()
            .map(|s| s.to_string())
            .collect();
        (Profile::randomized(seed), scenarios, Some(seed))
    } else {
        let mut profile = match Profile::by_name(&args.profile) {
            Some(p) => p,
            None => bail!("unknown profile {:?}: use ci or heavy", args.profile),
        };
        profile.clients = args.clients.unwrap_or(profile.clients);
        profile.requests = args.requests.unwrap_or(profile.requests);
        (profile, args.scenarios, args.seed)
    };
    if profile.clients == 0
        || profile.requests == 0
        || profile.clients > 10_000
        || profile.requests > 100_000
    {
        bail!("--clients must be within 1..=10000 and --requests within 1..=100000");
    }
    let options = RunOptions {
        profile,
        scenarios,
        target,
        seed,
        progress: !args.quiet,
    };
    let source = beamline_scenario::ScenarioSource {
        dir: args.scenario_dir,
        randomized: args.randomize,
    };
    if let (true, Some(seed)) = (args.randomize, seed) {
        eprintln!(
            "randomized run: seed {seed}, profile {} ({} clients x {} requests)\nreproduce: {}",
            options.profile.name,
            options.profile.clients,
            options.profile.requests,
            beamline_scenario::reproduce(&options, &source, seed)
        );
    }
    let report = beamline_scenario::run_with(options, source).await?;
    print!("{}", report.render_text());
    if let Some(path) = args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(&path, json).with_context(|| format!("cannot write {}", path.display()))?;
        println!("JSON report: {}", path.display());
    }
    if let Some(path) = args.html {
        std::fs::write(&path, beamline_scenario::html::render(&report))
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("HTML report: {}", path.display());
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn replay_trace(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
    };
    let trace = read(&args.trace)?;
    let load = |p: &PathBuf| -> anyhow::Result<ReplayConfig> {
        ReplayConfig::from_toml_or_json(&read(p)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
    };
    if let [a, b] = args.compare.as_slice() {
        let comparison = replay::compare(&trace, &load(a)?, &load(b)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", args.trace.display()))?;
        let (na, nb) = (a.display().to_string(), b.display().to_string());
        let rows = comparison.rows();
        let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(6);
        let w1 = rows
            .iter()
            .map(|r| r.1.len())
            .max()
            .unwrap_or(0)
            .max(na.len());
        println!("{:w0$}  {:>w1$}  {}", "", na, nb);
        for (name, va, vb) in rows {
            println!("{name:w0$}  {va:>w1$}  {vb}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let config = args.config.as_ref().map(load).transpose()?;
    let output = replay::replay(&trace, config)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.trace.display()))?;
    print!("{}", output.to_json_lines());
    Ok(ExitCode::SUCCESS)
}
