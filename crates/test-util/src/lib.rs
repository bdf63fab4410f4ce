//! Test lifecycle helpers (DESIGN.md §8), used by every integration test:
//! - [`free_port`]: a free loopback port;
//! - [`NatsServer`]: a real `nats-server -js` on a free port with its own store directory,
//!   a direct child of the test (stopped on drop), restartable on the same store;
//! - [`TestRouter`]: an in-process router on a free port with faults and the admin API on,
//!   its client, [`TestRouter::reset_all`] and [`TestRouter::wait_for_state`] (which dumps
//!   the breaker metrics when the state is not reached in time).
//!
//! Helpers panic with a clear message when the environment is missing something (no
//! `nats-server` on PATH): tests must fail loudly, never skip silently.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use beamline_core::breaker::State;
use beamline_metrics::{Snapshot, r10};
use beamline_scenario::client::RouterClient;
use beamline_server::config::{BrokerConfig, ServerConfig};
use beamline_server::{RunningServer, Server};

/// A free TCP port on 127.0.0.1 (bound and released; good enough on a test machine).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// The `nats-server` binary, or a panic that says how to install it.
pub fn nats_server_binary() -> PathBuf {
    binary_on_path("nats-server").unwrap_or_else(|| {
        panic!("nats-server is not installed: run `.ci/run`, or `apt-get install -y nats-server`")
    })
}

/// The `promtool` binary (Debian package `prometheus`), or a panic that says how to
/// install it.
pub fn promtool_binary() -> PathBuf {
    binary_on_path("promtool").unwrap_or_else(|| {
        panic!("promtool is not installed: run `.ci/run`, or `apt-get install -y prometheus`")
    })
}

fn binary_on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|p| p.join(name))
        .find(|p| p.is_file())
}

/// A real `nats-server -js` child process.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
    config: Option<PathBuf>,
}

impl NatsServer {
    /// Starts a server on a free port with a fresh store and waits until it accepts
    /// connections.
    pub fn start() -> NatsServer {
        Self::start_with_config("")
    }

    /// [`NatsServer::start`] with `config` (nats-server configuration text: users,
    /// permissions, limits) in its configuration file; the port, JetStream and the store
    /// are set by flags.
    pub fn start_with_config(config: &str) -> NatsServer {
        let store = tempfile::tempdir().expect("cannot create a temporary store directory");
        let config = (!config.is_empty()).then(|| {
            let path = store.path().join("nats.conf");
            std::fs::write(&path, config).expect("cannot write the nats-server config");
            path
        });
        let mut server = NatsServer {
            child: None,
            port: free_port(),
            store,
            config,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = self.store.path().join("nats.log");
        let mut command = Command::new(nats_server_binary());
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let child = command
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(self.store.path().join("js"))
            .arg("-l")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start nats-server");
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        for _ in 0..500 {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(50)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "nats-server did not accept connections on {addr}; log: {}",
            log.display()
        );
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The router's broker settings for this server (defaults otherwise).
    pub fn broker_config(&self) -> BrokerConfig {
        BrokerConfig::Nats(beamline_broker::jetstream::NatsConfig {
            url: self.url(),
            ..Default::default()
        })
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store (streams survive).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A random admin token for tests.
pub fn test_token() -> String {
    "test-token-0123456789abcdef".to_owned()
}

/// An in-process router with faults and the admin API enabled, and its client.
#[derive(Debug)]
pub struct TestRouter {
    /// The running server.
    pub server: RunningServer,
    /// A client with the admin token.
    pub client: RouterClient,
}

impl TestRouter {
    /// Starts a router on a free port from `config` (listen, token and faults are set here).
    pub async fn start(config: ServerConfig) -> TestRouter {
        Self::start_with(config, true).await
    }

    /// [`TestRouter::start`] with fault injection on or off (`/admin/faults` answers 403
    /// `faults_disabled` when off).
    pub async fn start_with(mut config: ServerConfig, faults_enabled: bool) -> TestRouter {
        config.listen = ([127, 0, 0, 1], 0).into();
        config.admin_token = Some(test_token());
        config.faults_enabled = faults_enabled;
        let valid = config
            .validate()
            .unwrap_or_else(|e| panic!("invalid test config: {e}"));
        let server = Server::start(valid)
            .await
            .unwrap_or_else(|e| panic!("router did not start: {e}"));
        let client = RouterClient::new(&format!("http://{}", server.addr()), Some(test_token()))
            .expect("client");
        TestRouter { server, client }
    }

    /// Starts a router on the embedded broker with default settings.
    pub async fn embedded() -> TestRouter {
        Self::start(ServerConfig {
            broker: BrokerConfig::default(),
            ..ServerConfig::default()
        })
        .await
    }

    /// Clears breakers, journals, faults, metrics and the embedded broker in place.
    pub fn reset_all(&self) {
        self.server.app().reset_all();
    }

    /// Waits until the key's breaker is in `state`; panics with a metrics dump if not.
    pub async fn wait_for_state(
        &self,
        tenant: &str,
        provider: &str,
        state: State,
        timeout: Duration,
    ) -> Snapshot {
        match r10::wait_for_state(self.client.scraper(), tenant, provider, state, timeout).await {
            Ok(snapshot) => snapshot,
            Err(e) => panic!("{e}"),
        }
    }

    /// Stops the router.
    pub async fn stop(self) {
        self.server.shutdown().await;
    }
}
