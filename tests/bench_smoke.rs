//! The load tool against the real server, tiny and short: checks that every
//! mode runs and counts right. Timing is reported by the tool, never asserted.

mod common;

use std::time::Duration;

use common::{TempDb, TestServer};
use tally::bench;

#[tokio::test]
async fn every_mode_runs_and_counts_exactly() {
    let db = TempDb::new();
    let server = TestServer::start(db.config()).await;
    let url = server.url();

    let idle = bench::idle(
        &url,
        20,
        500.0,
        Duration::from_millis(200),
        Some(std::process::id()),
    )
    .await
    .unwrap();
    assert_eq!(idle.handshake.samples, 20);
    assert!(idle.rss_per_connection_bytes.is_some());

    let fanout = bench::fanout(&url, 10, 50.0, Duration::from_millis(400), 500.0)
        .await
        .unwrap();
    assert_eq!(fanout.clicks, 20);
    assert_eq!(fanout.listeners_missing_final_total, 0);
    assert_eq!(
        fanout.delivery.samples,
        10 * 20,
        "every listener saw every click"
    );

    let flood = bench::flood(&url, 10, 200.0, Duration::from_millis(500), 500.0)
        .await
        .unwrap();
    assert!(flood.converged, "{flood:?}");
    assert_eq!(flood.final_total, 20 + flood.clicks);
    assert_eq!(flood.ack.samples, flood.clicks);
    assert!(
        flood.clicks >= 50,
        "most planned clicks were sent: {flood:?}"
    );

    let ramp = bench::ramp(
        &url,
        5,
        50.0,
        120.0,
        Duration::from_millis(300),
        Duration::from_secs(5),
        500.0,
    )
    .await
    .unwrap();
    assert!(!ramp.steps.is_empty());
    assert!(ramp.steps.iter().all(|s| s.converged));
    server.stop().await.unwrap();
    assert_eq!(
        common::stored_total(&db).await,
        20 + flood.clicks + ramp.steps.iter().map(|s| s.clicks).sum::<u64>()
    );
}

#[tokio::test]
async fn a_missing_server_or_a_foreign_one_is_a_clear_error() {
    // A port nobody listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = bench::idle(
        &format!("http://127.0.0.1:{port}"),
        1,
        10.0,
        Duration::ZERO,
        None,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("cannot connect"), "{err}");

    // An HTTP server that is not Socket.IO: tally's own 404 for another path
    // stands in, by pointing the tool below a prefix that has no Socket.IO.
    let db = TempDb::new();
    let server = TestServer::start(db.config()).await;
    let err = bench::idle(
        &format!("{}/nope", server.url()),
        1,
        10.0,
        Duration::ZERO,
        None,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("does not speak Socket.IO"),
        "{err}"
    );
    server.stop().await.unwrap();
}
