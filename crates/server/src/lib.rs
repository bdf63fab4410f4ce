//! The Beamline Router service.
//!
//! [`Server::start`] builds every component from a validated configuration, binds the HTTP
//! listener and serves until [`RunningServer::shutdown`]. Layout:
//! - [`config`]: the configuration, its defaults and validation;
//! - [`clock`]: the production clock (tokio's);
//! - [`events`]: breaker events fanned out to metrics, logs and the transition journal;
//! - [`dispatcher`]: retries under the breaker, per message;
//! - [`routing`]: policy-driven provider choice, fallbacks, the degraded path;
//! - [`policies`], [`sticky`], [`recent`]: the stores routing reads;
//! - [`drain`]: the outbox drainer;
//! - [`publish`], [`admin`]: the HTTP handlers; [`error`]: their error answers.

pub mod admin;
pub mod clock;
pub mod config;
pub mod dispatcher;
pub mod drain;
pub mod error;
pub mod events;
pub mod http;
pub mod policies;
pub mod publish;
pub mod recent;
pub mod routing;
pub mod sticky;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use beamline_broker::Publisher;
use beamline_broker::embedded::EmbeddedBroker;
use beamline_broker::faults::FaultInjector;
use beamline_broker::jetstream::{ConnectError, JetStreamPublisher};
use beamline_core::Clock;
use beamline_core::breaker::BreakerRegistry;
use beamline_metrics::RouterMetrics;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::clock::TokioClock;
use crate::config::{BrokerConfig, ValidConfig};
use crate::dispatcher::Dispatcher;
use crate::error::ApiError;
use crate::events::BreakerEvents;
use crate::policies::{PolicyError, PolicyStore};
use crate::recent::RecentIds;
use crate::routing::{Router, RouterParts};
use crate::sticky::StickyStore;
use beamline_outbox::{Outbox, OutboxError};

/// Shards of the breaker registry.
const REGISTRY_SHARDS: usize = 64;
/// How often idle breakers are evicted.
const EVICTION_PERIOD: Duration = Duration::from_secs(60);

/// Everything a request handler needs. Cheap to clone.
pub type App = Arc<AppState>;

/// The server's components.
#[derive(Debug)]
pub struct AppState {
    /// The validated configuration.
    pub config: ValidConfig,
    /// The clock.
    pub clock: TokioClock,
    /// Metrics.
    pub metrics: Arc<RouterMetrics>,
    /// Breakers.
    pub registry: Arc<BreakerRegistry<BreakerEvents>>,
    /// The router (policies, dispatcher, outbox).
    pub router: Arc<Router>,
    /// Recently seen message ids.
    pub recent_ids: RecentIds,
    /// The fault injector, when faults are enabled.
    pub faults: Option<Arc<FaultInjector>>,
    /// The embedded broker, when it is the broker.
    pub embedded: Option<Arc<EmbeddedBroker>>,
    /// The JetStream adapter, when NATS is the broker.
    pub jetstream: Option<JetStreamPublisher>,
}

impl AppState {
    /// Clears breakers, journals, faults, metrics and the embedded broker in place
    /// (DESIGN.md §8), without restarting anything.
    pub fn reset_all(&self) {
        let now = self.clock.now();
        self.registry.reset_all(now);
        self.registry.observer().reset_all();
        if let Some(f) = &self.faults {
            f.reset_all();
        }
        if let Some(e) = &self.embedded {
            e.reset_all();
        }
        self.router.reset_all();
        self.recent_ids.reset_all();
        self.metrics.reset_all();
    }
}

/// Starting the server failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The broker could not be reached or prepared.
    #[error(transparent)]
    Broker(#[from] ConnectError),
    /// The embedded broker's store could not be opened.
    #[error("{0}")]
    Embedded(String),
    /// A tenant policy file is invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The outbox could not be opened.
    #[error("cannot open the outbox: {0}")]
    Outbox(#[from] OutboxError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The service.
#[derive(Debug)]
pub struct Server;

/// A server that is serving.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    app: App,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
}

impl Server {
    /// Builds every component and starts serving on `config.raw.listen` (port 0 picks a
    /// free port; see [`RunningServer::addr`]).
    pub async fn start(config: ValidConfig) -> Result<RunningServer, StartError> {
        let seed = match config.raw.seed {
            0 => rand::random::<u64>(),
            s => s,
        };
        let clock = TokioClock::new();
        let metrics = Arc::new(RouterMetrics::new(config.raw.max_tenant_labels));
        let events = BreakerEvents::new(Arc::clone(&metrics));
        let registry = Arc::new(BreakerRegistry::new(
            config.breaker.clone(),
            REGISTRY_SHARDS,
            seed,
            events,
        ));
        let (base, embedded, jetstream): (Arc<dyn Publisher>, _, _) = match &config.raw.broker {
            BrokerConfig::Embedded { max_messages } => {
                let broker = Arc::new(match &config.raw.data_dir {
                    Some(dir) => {
                        std::fs::create_dir_all(dir)
                            .map_err(|e| StartError::Embedded(format!("{}: {e}", dir.display())))?;
                        EmbeddedBroker::open(&dir.join("broker.redb"), *max_messages)
                            .map_err(|e| StartError::Embedded(e.to_string()))?
                    }
                    None => EmbeddedBroker::new(*max_messages),
                });
                (broker.clone(), Some(broker), None)
            }
            BrokerConfig::Nats(nats) => {
                let js = JetStreamPublisher::connect(nats, config.retry.attempt_timeout()).await?;
                (Arc::new(js.clone()), None, Some(js))
            }
        };
        let faults = config.raw.faults_enabled.then(|| {
            Arc::new(FaultInjector::new(
                base.clone(),
                Arc::new(clock),
                seed.rotate_left(17),
            ))
        });
        let publisher: Arc<dyn Publisher> = match &faults {
            Some(f) => f.clone(),
            None => base,
        };
        let dispatcher = Arc::new(Dispatcher::new(
            clock,
            Arc::clone(&registry),
            publisher.clone(),
            Arc::clone(&metrics),
            config.retry.clone(),
            seed.rotate_left(33),
        ));
        let policies = Arc::new(PolicyStore::open(
            config.raw.policies_dir.as_deref(),
            config.raw.breaker.clone(),
            config.raw.retry.clone(),
        )?);
        let outbox = match &config.raw.data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| OutboxError::Storage(format!("{}: {e}", dir.display())))?;
                Some(Outbox::open(
                    &dir.join("outbox.redb"),
                    config.raw.outbox_capacity,
                )?)
            }
            None => None,
        };
        let router = Arc::new(Router::new(RouterParts {
            clock,
            registry: Arc::clone(&registry),
            dispatcher,
            policies,
            sticky: StickyStore::new(config.raw.sticky_max_sessions),
            outbox,
            metrics: Arc::clone(&metrics),
            known_providers: config.raw.providers.clone(),
            require_policy: config.raw.require_policy,
            default_degraded: config.raw.degraded_mode,
            seed: seed.rotate_left(49),
        }));
        let recent_ids = RecentIds::new(config.raw.recent_message_ids);
        let listen = config.raw.listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: listen,
            source,
        })?;
        let app: App = Arc::new(AppState {
            config,
            clock,
            metrics,
            registry,
            router: Arc::clone(&router),
            recent_ids,
            faults,
            embedded,
            jetstream,
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let routes = routes(Arc::clone(&app));
        let header_read_timeout =
            Duration::from_millis(app.config.raw.limits.header_read_timeout_ms);
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            http::serve(listener, routes, header_read_timeout, shutdown).await;
        });
        let background = vec![
            tokio::spawn(evict_idle_breakers(Arc::clone(&app))),
            tokio::spawn(drain::run(router, Arc::clone(&app.metrics), clock)),
        ];
        tracing::info!(
            %addr,
            broker = publisher.name(),
            faults_enabled = app.faults.is_some(),
            outbox = app.router.outbox().is_some(),
            "beamline router serving"
        );
        Ok(RunningServer {
            addr,
            app,
            stop: Some(stop),
            task,
            background,
        })
    }
}

async fn evict_idle_breakers(app: App) {
    let mut tick = tokio::time::interval(EVICTION_PERIOD);
    loop {
        tick.tick().await;
        let evicted = app
            .registry
            .evict_idle(app.clock.now(), app.config.breaker_idle());
        if evicted > 0 {
            tracing::debug!(evicted, "idle breakers evicted");
        }
    }
}

impl RunningServer {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's components (tests, the in-process scenario runner).
    pub fn app(&self) -> &App {
        &self.app
    }

    /// Stops accepting connections, finishes in-flight requests, stops the background
    /// tasks and returns. Every message answered `queued` is already durable; the outbox's
    /// writer finishes its last group commit when the last handle goes.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
        for task in &self.background {
            task.abort();
        }
        for task in self.background.drain(..) {
            let _ = task.await;
        }
        tracing::info!(addr = %self.addr, "beamline router stopped");
    }

    /// Waits until the server stops by itself (it only does on a fatal error).
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
    }
}

/// The HTTP routes.
pub fn routes(app: App) -> axum::Router {
    let admin = axum::Router::new()
        .route("/admin/breakers", get(admin::list_breakers))
        .route("/admin/breakers/reset-all", post(admin::reset_all_breakers))
        .route(
            "/admin/breakers/{tenant}/{provider}",
            get(admin::get_breaker),
        )
        .route(
            "/admin/breakers/{tenant}/{provider}/{action}",
            post(admin::breaker_action),
        )
        .route("/admin/transitions", get(admin::transitions))
        .route("/admin/clock", get(admin::clock))
        .route("/admin/config", get(admin::config))
        .route("/admin/policies", get(admin::list_policies))
        .route(
            "/admin/policies/{tenant}",
            get(admin::get_policy)
                .put(admin::put_policy)
                .delete(admin::delete_policy),
        )
        .route("/admin/outbox", get(admin::outbox))
        .route(
            "/admin/faults",
            get(admin::get_faults)
                .put(admin::put_fault)
                .delete(admin::delete_faults),
        )
        .route("/admin/faults/attempts", get(admin::fault_attempts))
        .route("/admin/broker/messages", get(admin::broker_messages))
        .layer(axum::extract::DefaultBodyLimit::max(admin::MAX_BODY_BYTES))
        .route_layer(axum::middleware::from_fn(admin::refuse_unknown_queries))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            admin::require_token,
        ));
    axum::Router::new()
        .route("/v1/publish", post(publish::publish))
        .route("/v1/decide", post(publish::decide))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .merge(admin)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(error::json_errors))
        .with_state(app)
}

async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

async fn healthz(State(app): State<App>) -> Response {
    axum::Json(serde_json::json!({"status": "ok", "broker": app.dispatcher_name()})).into_response()
}

impl AppState {
    fn dispatcher_name(&self) -> &'static str {
        if self.jetstream.is_some() {
            "jetstream"
        } else {
            "embedded"
        }
    }
}

/// `GET /metrics`: applies due time-driven transitions and refreshes every breaker's
/// gauges first, so no scrape reports an open breaker whose timeout has passed. Serves
/// OpenMetrics to scrapers that ask for it (Prometheus does), the classic text format
/// otherwise.
async fn metrics(State(app): State<App>, headers: axum::http::HeaderMap) -> Response {
    let now = app.clock.now();
    for handle in app.registry.handles() {
        let snapshot = handle.snapshot(now);
        app.metrics.breaker_view(handle.key(), &snapshot);
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("application/openmetrics-text") {
        let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
        ([(header::CONTENT_TYPE, content_type)], app.metrics.render()).into_response()
    } else {
        let content_type = "text/plain; version=0.0.4; charset=utf-8";
        (
            [(header::CONTENT_TYPE, content_type)],
            app.metrics.render_prometheus_text(),
        )
            .into_response()
    }
}
