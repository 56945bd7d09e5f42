//! Counts survive restarts and store outages, and outages refuse what they
//! cannot do without leaving anything half done.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use async_trait::async_trait;
use common::{TempDb, TestClient, TestServer, TransportType, WAIT};
use serde_json::json;
use tally::counter::CounterKey;
use tally::store::{Applied, Batch, SqliteStore, Store, StoreError};

#[tokio::test]
async fn counts_survive_a_graceful_restart() {
    const CLICKS: u64 = 37;
    let db = TempDb::new();
    let mut config = db.config();
    // Nothing is flushed while running: only the shutdown flush can save the clicks.
    config.database.flush_interval = Duration::from_secs(3600);

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
/// the database were unreachable. It reports every write attempt, so tests
/// wait for the flusher's work instead of sleeping.
struct FlakyStore {
    inner: SqliteStore,
    down: AtomicBool,
    /// Writes fail while pings still answer, like a full disk.
    refuse_writes: AtomicBool,
    /// Pings never answer, like a database behind a dropped network link.
    hang: AtomicBool,
    /// Reads of message history fail.
    refuse_reads: AtomicBool,
    /// (failed writes, clicks stored so far in the global counter).
    attempts: watch::Sender<(u32, u64)>,
}

impl FlakyStore {
    async fn new(db: &TempDb, down: bool) -> Arc<Self> {
        Arc::new(FlakyStore {
            inner: SqliteStore::connect(&db.url(), &Default::default())
                .await
                .unwrap(),
            down: AtomicBool::new(down),
            refuse_writes: AtomicBool::new(false),
            hang: AtomicBool::new(false),
            refuse_reads: AtomicBool::new(false),
            attempts: watch::Sender::new((0, 0)),
        })
    }

    /// Waits until `done` holds for (failed writes, clicks stored).
    async fn until(&self, what: &str, done: impl Fn(u32, u64) -> bool) {
        let mut attempts = self.attempts.subscribe();
        tokio::time::timeout(
            WAIT,
            attempts.wait_for(|&(failed, stored)| done(failed, stored)),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "timed out waiting for {what}: {:?}",
                *self.attempts.borrow()
            )
        })
        .unwrap();
    }
}

#[async_trait]
impl Store for FlakyStore {
    async fn load(&self) -> Result<Vec<(CounterKey, u64)>, StoreError> {
        self.inner.load().await
    }

    async fn add(&self, batch: &Batch) -> Result<Applied, StoreError> {
        if self.down.load(Ordering::SeqCst) || self.refuse_writes.load(Ordering::SeqCst) {
            self.attempts.send_modify(|(failed, _)| *failed += 1);
            return Err(StoreError::Database(sqlx::Error::PoolTimedOut));
        }
        let applied = self.inner.add(batch).await?;
        let clicks: u64 = batch
            .deltas
            .iter()
            .filter(|d| d.key == CounterKey::Global)
            .map(|d| d.amount)
            .sum();
        self.attempts.send_modify(|(_, stored)| *stored += clicks);
        Ok(applied)
    }

    async fn add_messages(
        &self,
        messages: &[tally::conversation::Message],
    ) -> Result<(), StoreError> {
        self.inner.add_messages(messages).await
    }
    async fn history(
        &self,
        conversation: &tally::conversation::ConversationId,
        query: tally::conversation::HistoryQuery,
    ) -> Result<tally::conversation::History, StoreError> {
        if self.refuse_reads.load(Ordering::SeqCst) {
            return Err(StoreError::Database(sqlx::Error::PoolTimedOut));
        }
        self.inner.history(conversation, query).await
    }
    async fn prune_messages(&self, before_ms: i64, limit: u32) -> Result<u64, StoreError> {
        self.inner.prune_messages(before_ms, limit).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Database(sqlx::Error::PoolTimedOut));
        }
        self.inner.ping().await
    }

    fn backend(&self) -> &'static str {
        "flaky-sqlite"
    }
}

/// The test configuration, with health checks frequent enough that a test
/// sees an outage at once.
fn checked_often(db: &TempDb) -> tally::Config {
    let mut config = db.config();
    config.database.health_check_interval = Duration::from_millis(20);
    config
}

#[tokio::test]
async fn clicks_made_while_the_store_is_down_are_written_once_it_is_back() {
    let db = TempDb::new();
    let store = FlakyStore::new(&db, false).await;
    let server = TestServer::start_with_store(checked_often(&db), store.clone()).await;
    let http = reqwest::Client::new();
    let health = format!("{}/healthz", server.url());
    let ready = format!("{}/readyz", server.url());
    let client = TestClient::connect(&server.url(), TransportType::Polling).await;

    for _ in 0..5 {
        client.click_total().await;
    }
    store
        .until("5 clicks stored", |_, stored| stored == 5)
        .await;
    assert_eq!(health_of(&http, &health).await.0, 200);

    store.down.store(true, Ordering::SeqCst);
    // The next health check finds the store down; both probes say so.
    until_status(&http, &health, 503).await;
    let (status, body) = health_of(&http, &ready).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (503, &"store_unavailable".into())
    );
    for _ in 0..7 {
        client.click_total().await;
    }
    // Two failed flushes of those clicks: each must hand its batch back, so
    // all 7 are still pending afterwards, not lost with the failed write.
    store
        .until("two failed flushes", |failed, _| failed >= 2)
        .await;
    let (status, body) = health_of(&http, &health).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "store_unavailable");
    assert_eq!(body["pending"], 7, "the failed batches were handed back");

    store.down.store(false, Ordering::SeqCst);
    store
        .until("all 12 clicks stored", |_, stored| stored == 12)
        .await;
    let body = until_status(&http, &health, 200).await;
    assert_eq!(body["pending"], 0);
    assert_eq!(health_of(&http, &ready).await.0, 200);

    client.disconnect().await;
    server.stop().await.unwrap();
    assert_eq!(common::stored_total(&db).await, 12);
}

#[tokio::test]
async fn a_database_that_answers_but_refuses_writes_is_unhealthy() {
    let db = TempDb::new();
    let store = FlakyStore::new(&db, false).await;
    store.refuse_writes.store(true, Ordering::SeqCst);
    let server = TestServer::start_with_store(db.config(), store.clone()).await;
    let http = reqwest::Client::new();
    let health = format!("{}/healthz", server.url());
    let client = TestClient::connect(&server.url(), TransportType::Websocket).await;
    client.click_total().await;
    store.until("a failed flush", |failed, _| failed >= 1).await;
    let (status, body) = health_of(&http, &health).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["pending"], 1);

    store.refuse_writes.store(false, Ordering::SeqCst);
    store
        .until("the click stored", |_, stored| stored == 1)
        .await;
    // The flusher marks writes healthy just after the store returns.
    until_status(&http, &health, 200).await;
    client.disconnect().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_database_that_never_answers_is_unhealthy_after_the_timeout() {
    let db = TempDb::new();
    let store = FlakyStore::new(&db, false).await;
    let mut config = checked_often(&db);
    config.database.timeout = Duration::from_millis(100);
    let server = TestServer::start_with_store(config, store.clone()).await;
    let http = reqwest::Client::new();
    let health = format!("{}/healthz", server.url());
    assert_eq!(health_of(&http, &health).await.0, 200);

    store.hang.store(true, Ordering::SeqCst);
    // The probe itself answers at once whatever the database does: the
    // hanging check is the health check's, bounded by the timeout.
    let body = until_status(&http, &health, 503).await;
    assert_eq!(body["error"]["code"], "store_unavailable");
    store.hang.store(false, Ordering::SeqCst);
    until_status(&http, &health, 200).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_reports_clicks_it_could_not_store() {
    let db = TempDb::new();
    let store = FlakyStore::new(&db, true).await;
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

/// A health endpoint's status and body.
async fn health_of(http: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let response = http.get(url).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Asks `url` until it answers `status` (the health check runs on its own
/// schedule) and returns that answer's body.
async fn until_status(http: &reqwest::Client, url: &str, status: u16) -> serde_json::Value {
    tokio::time::timeout(WAIT, async {
        loop {
            let (now, body) = health_of(http, url).await;
            if now == status {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{url} never answered {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_durable_mode_a_click_is_stored_before_it_is_acknowledged() {
    let db = TempDb::new();
    let mut config = db.config();
    config.database.flush_interval = Duration::ZERO;
    let server = TestServer::start(config).await;
    let clients = [
        TestClient::named(&server.url(), "ada").await,
        TestClient::connect(&server.url(), TransportType::Polling).await,
    ];
    // A separate connection to the database, as another process would read it.
    let reader = SqliteStore::connect(&db.url(), &Default::default())
        .await
        .unwrap();
    for round in 0..30 {
        let client = &clients[round % 2];
        let acked = client.click_total().await;
        let stored = reader
            .load()
            .await
            .unwrap()
            .into_iter()
            .find(|(key, _)| *key == CounterKey::Global)
            .map_or(0, |(_, total)| total);
        assert!(
            stored >= acked,
            "click {acked} acknowledged, {stored} stored"
        );
    }
    for client in clients {
        client.disconnect().await;
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn in_durable_mode_a_failing_store_refuses_clicks_and_frees_closed_sockets() {
    let db = TempDb::new();
    let store = FlakyStore::new(&db, false).await;
    let mut config = db.config();
    config.database.flush_interval = Duration::ZERO;
    let server = TestServer::start_with_store(config, store.clone()).await;
    let http = reqwest::Client::new();
    let health = format!("{}/healthz", server.url());
    let ada = TestClient::connect(&server.url(), TransportType::Websocket).await;
    let bob = TestClient::connect(&server.url(), TransportType::Websocket).await;
    assert_eq!(ada.click_total().await, 1);

    // Writes fail while pings answer: bob's click is counted and waits to
    // be stored, and its failed write marks the store failing.
    store.refuse_writes.store(true, Ordering::SeqCst);
    bob.client
        .emit("click", rust_socketio::Payload::Text(vec![]))
        .await
        .unwrap();
    let body = until_status(&http, &health, 503).await;
    assert_eq!(body["pending"], 1, "{body}");

    // From now on a click is refused at once, and not counted.
    let ack = ada.click().await;
    assert_eq!(ack["error"]["code"], "unavailable", "{ack}");

    // bob leaves while his click still waits: he no longer counts as
    // connected, though the click's handler still holds his socket.
    bob.disconnect().await;
    tokio::time::timeout(WAIT, async {
        while health_of(&http, &health).await.1["connections"] != 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the closed socket stops counting");

    // Back: bob's click is stored, and clicks are taken again.
    store.refuse_writes.store(false, Ordering::SeqCst);
    store
        .until("bob's click stored", |_, stored| stored == 2)
        .await;
    until_status(&http, &health, 200).await;
    assert_eq!(ada.click_total().await, 3);
    ada.disconnect().await;
    server.stop().await.unwrap();
    assert_eq!(common::stored_total(&db).await, 3);
}

#[tokio::test]
async fn a_join_whose_history_cannot_be_read_leaves_no_membership() {
    let db = TempDb::new();
    let store = FlakyStore::new(&db, false).await;
    let server = TestServer::start_with_store(db.config(), store.clone()).await;
    let ada = TestClient::named(&server.url(), "ada").await;
    let join = json!({"conversationId": "c"});
    let post = json!({"conversationId": "c", "content": "hello"});

    store.refuse_reads.store(true, Ordering::SeqCst);
    let ack = ada.emit_json("join_conversation", join.clone()).await;
    assert_eq!(ack["error"]["code"], "unavailable", "{ack}");
    // Refused means not joined: ada may not post there.
    let ack = ada.emit_json("message", post.clone()).await;
    assert_eq!(ack["error"]["code"], "not_a_member", "{ack}");

    store.refuse_reads.store(false, Ordering::SeqCst);
    let ack = ada.emit_json("join_conversation", join.clone()).await;
    assert_eq!(
        (&ack["conversationId"], &ack["online"]),
        (&json!("c"), &json!(1)),
        "{ack}"
    );
    // A member whose repeated join fails stays a member.
    store.refuse_reads.store(true, Ordering::SeqCst);
    let ack = ada.emit_json("join_conversation", join).await;
    assert_eq!(ack["error"]["code"], "unavailable", "{ack}");
    let ack = ada.emit_json("message", post).await;
    assert!(ack["messageId"].is_string(), "{ack}");
    ada.disconnect().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_durable_mode_sigkill_during_a_flood_loses_no_acknowledged_click() {
    let db = TempDb::new();
    let url = db.url();
    let mut server = common::ChildServer::start(
        &[
            "--addr",
            "127.0.0.1:0",
            "--database-url",
            &url,
            "--flush-interval",
            "0",
        ],
        &[],
    );
    let (acked_tx, mut acked) = tokio::sync::mpsc::unbounded_channel();
    let mut clickers = Vec::new();
    for i in 0..4 {
        let client = if i % 2 == 0 {
            TestClient::named(&server.url, &format!("u{i}")).await
        } else {
            TestClient::connect(&server.url, TransportType::Websocket).await
        };
        let acked_tx = acked_tx.clone();
        clickers.push(tokio::spawn(async move {
            loop {
                let ack = client
                    .try_emit_with_ack(
                        "click",
                        rust_socketio::Payload::Text(vec![]),
                        Duration::from_secs(2),
                    )
                    .await;
                match ack.and_then(|ack| ack["total"].as_u64()) {
                    Some(total) => acked_tx.send(total).ok(),
                    None => break,
                };
            }
        }));
    }
    drop(acked_tx);
    let mut totals = Vec::new();
    while totals.len() < 300 {
        totals.push(
            tokio::time::timeout(WAIT, acked.recv())
                .await
                .expect("clicks are acknowledged")
                .unwrap(),
        );
    }
    server.kill();
    for clicker in clickers {
        clicker.await.unwrap();
    }
    while let Ok(total) = acked.try_recv() {
        totals.push(total);
    }
    let highest = *totals.iter().max().unwrap();
    let stored = common::stored_total(&db).await;
    assert!(
        stored >= highest,
        "the last acknowledged click made the total {highest}; {stored} survived SIGKILL"
    );
    // Each clicker waits for an ack before its next click, so at most one
    // click per clicker can be stored without its ack arriving; more would
    // mean a batch applied twice.
    assert!(
        stored <= highest + 4,
        "{stored} stored, but the highest total acknowledged was {highest}"
    );
}
