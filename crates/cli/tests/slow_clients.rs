//! Slow clients cannot hold the router's connections: headers that trickle (slowloris)
//! and idle keep-alive connections are closed after `limits.header_read_timeout_ms`, a
//! publish body that does not arrive in `limits.body_read_timeout_ms` is answered 408
//! `request_timeout`, and the router serves everyone else meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use beamline_server::config::ServerConfig;
use beamline_test_util::TestRouter;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes; what it sent.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut out = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_everyone_else_is_served() {
    let mut config = ServerConfig::default();
    config.limits.header_read_timeout_ms = 300;
    config.limits.body_read_timeout_ms = 300;
    let router = TestRouter::start(config).await;
    let addr = router.server.addr();

    // Headers that never finish.
    let mut slowloris = TcpStream::connect(addr).await.unwrap();
    slowloris
        .write_all(b"POST /v1/publish HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // A connection that never sends anything.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // A body that never finishes.
    let mut slow_body = TcpStream::connect(addr).await.unwrap();
    slow_body
        .write_all(
            b"POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"tenant_id\":",
        )
        .await
        .unwrap();

    // Meanwhile the router answers others.
    let ok = router
        .client
        .publish("t", "p", "m1", json!({"n": 1}))
        .await
        .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.body);

    let cut = Duration::from_secs(5);
    assert!(
        read_to_close(&mut slowloris, cut).await.is_some(),
        "a connection trickling its headers is closed"
    );
    assert!(
        read_to_close(&mut silent, cut).await.is_some(),
        "a silent connection is closed"
    );
    let answer = read_to_close(&mut slow_body, cut)
        .await
        .expect("a slow body is answered and the connection closed");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    router.stop().await;
}
