//! Counts survive restarts and store outages.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::{TempDb, TestClient, TestServer, TransportType, WAIT};
use tally::counter::{CounterKey, Delta};
use tally::store::{SqliteStore, Store, StoreError};

#[tokio::test]
async fn counts_survive_a_graceful_restart() {
    const CLICKS: u64 = 37;
    let db = TempDb::new();
    let mut config = db.config();
    // Nothing is flushed while running: only the shutdown flush can save the clicks.
    config.flush_interval = Duration::from_secs(3600);

    let server = TestServer::start(config.clone()).await;
    let client = TestClient::connect(&server.url(), TransportType::Websocket).await;
    for _ in 0..CLICKS {
        client.click_total().await;
    }
    client.disconnect().await;
    server.stop().await.unwrap();

    let server = TestServer::start(config).await;
    let mut client = TestClient::connect(&server.url(), TransportType::Websocket).await;
    assert_eq!(client.first_total().await, CLICKS);
    assert_eq!(client.click_total().await, CLICKS + 1);
    client.disconnect().await;
    server.stop().await.unwrap();
    assert_eq!(common::stored_total(&db).await, CLICKS + 1);
}

/// A real SQLite store whose writes and pings fail while `down` is set, as if
/// the database were unreachable.
struct FlakyStore {
    inner: SqliteStore,
    down: AtomicBool,
}

#[async_trait]
impl Store for FlakyStore {
    async fn load(&self) -> Result<Vec<(CounterKey, u64)>, StoreError> {
        self.inner.load().await
    }

    async fn add(&self, deltas: &[Delta]) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Database(sqlx::Error::PoolTimedOut));
        }
        self.inner.add(deltas).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Database(sqlx::Error::PoolTimedOut));
        }
        self.inner.ping().await
    }

    fn backend(&self) -> &'static str {
        "flaky-sqlite"
    }
}

#[tokio::test]
async fn clicks_made_while_the_store_is_down_are_written_once_it_is_back() {
    let db = TempDb::new();
    let store = Arc::new(FlakyStore {
        inner: SqliteStore::connect(&db.url()).await.unwrap(),
        down: AtomicBool::new(false),
    });
    let server = TestServer::start_with_store(db.config(), store.clone()).await;
    let http = reqwest::Client::new();
    let health = format!("{}/healthz", server.url());
    let client = TestClient::connect(&server.url(), TransportType::Polling).await;

    for _ in 0..5 {
        client.click_total().await;
    }
    wait_until_stored(&store.inner, 5).await;

    store.down.store(true, Ordering::SeqCst);
    assert_eq!(http.get(&health).send().await.unwrap().status(), 503);
    for _ in 0..7 {
        client.click_total().await;
    }
    // Several flush intervals pass while the store is down.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        stored(&store.inner).await,
        5,
        "nothing can be written while down"
    );

    store.down.store(false, Ordering::SeqCst);
    wait_until_stored(&store.inner, 12).await;
    assert_eq!(http.get(&health).send().await.unwrap().status(), 200);

    client.disconnect().await;
    server.stop().await.unwrap();
    assert_eq!(common::stored_total(&db).await, 12);
}

#[tokio::test]
async fn shutdown_reports_clicks_it_could_not_store() {
    let db = TempDb::new();
    let store = Arc::new(FlakyStore {
        inner: SqliteStore::connect(&db.url()).await.unwrap(),
        down: AtomicBool::new(true),
    });
    let server = TestServer::start_with_store(db.config(), store.clone()).await;
    let client = TestClient::connect(&server.url(), TransportType::Websocket).await;
    client.click_total().await;
    client.click_total().await;
    client.disconnect().await;
    let err = server.stop().await.unwrap_err();
    assert!(
        err.to_string().contains("2 click(s) could not be written"),
        "{err}"
    );
}

async fn stored(store: &SqliteStore) -> u64 {
    store
        .load()
        .await
        .unwrap()
        .into_iter()
        .map(|(_, total)| total)
        .sum()
}

async fn wait_until_stored(store: &SqliteStore, total: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    // Polls the database because the flush is a background task with no
    // event to wait on; the bound keeps a regression from hanging the suite.
    while stored(store).await != total {
        assert!(
            tokio::time::Instant::now() < deadline,
            "store never reached {total}; has {}",
            stored(store).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
