//! Shared test harness: the real server on port 0 and real Socket.IO clients.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use rust_socketio::Payload;
use rust_socketio::asynchronous::{Client, ClientBuilder};
use serde_json::{Value, json};
use tally::app::RunError;
use tally::store::Store;
use tally::{App, Config};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub use rust_socketio::TransportType;

/// Upper bound for anything a test waits for.
pub const WAIT: Duration = Duration::from_secs(10);

/// A database file in a temporary directory that lives as long as the value.
pub struct TempDb {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl TempDb {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tally.db");
        TempDb { _dir: dir, path }
    }

    pub fn url(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }

    /// A configuration on port 0 with short intervals so tests run fast.
    pub fn config(&self) -> Config {
        let mut config = Config::new("127.0.0.1:0".parse().unwrap(), self.url());
        config.flush_interval = Duration::from_millis(50);
        config
    }
}

/// A running server; dropping it without `stop` aborts it.
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), RunError>>>,
}

impl TestServer {
    pub async fn start(config: Config) -> Self {
        Self::started(App::build(config).await.expect("server builds")).await
    }

    pub async fn start_with_store(config: Config, store: Arc<dyn Store>) -> Self {
        Self::started(
            App::build_with_store(config, store)
                .await
                .expect("server builds"),
        )
        .await
    }

    async fn started(app: App) -> Self {
        let addr = app.local_addr();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async move {
            rx.await.ok();
        }));
        TestServer {
            addr,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Graceful shutdown; returns what the server's run returned.
    pub async fn stop(mut self) -> Result<(), RunError> {
        self.shutdown.take().unwrap().send(()).ok();
        let task = self.task.take().unwrap();
        tokio::time::timeout(WAIT, task)
            .await
            .expect("server stops in time")
            .expect("server task does not panic")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A rust_socketio client that remembers the largest `count` it has seen.
pub struct TestClient {
    pub client: Client,
    seen: watch::Receiver<Option<u64>>,
}

impl TestClient {
    pub async fn connect(url: &str, transport: TransportType) -> Self {
        let (tx, seen) = watch::channel(None);
        let tx = Arc::new(tx);
        let client = ClientBuilder::new(url)
            .namespace("/")
            .transport_type(transport)
            .reconnect(false)
            .on("count", move |payload, _| {
                let tx = tx.clone();
                async move {
                    if let Some(total) = total_of(&payload) {
                        // Totals only grow; an older total arriving late is ignored,
                        // exactly as the contract asks of clients.
                        tx.send_if_modified(|seen| {
                            let newer = seen.is_none_or(|s| total > s);
                            if newer {
                                *seen = Some(total);
                            }
                            newer
                        });
                    }
                }
                .boxed()
            })
            .connect()
            .await
            .expect("client connects");
        let mut client = TestClient { client, seen };
        // rust_socketio returns before the namespace handshake completes and
        // does not buffer emits meanwhile (the JS client does); the greeting
        // `count` proves the socket is connected.
        client.first_total().await;
        client
    }

    /// Clicks with no payload and returns the ack.
    pub async fn click(&self) -> Value {
        self.emit_with_ack("click", Payload::Text(vec![])).await
    }

    /// Clicks and returns the acked total, failing the test on an error ack.
    pub async fn click_total(&self) -> u64 {
        let ack = self.click().await;
        ack["total"]
            .as_u64()
            .unwrap_or_else(|| panic!("click ack has a total: {ack}"))
    }

    pub async fn emit_with_ack(&self, event: &str, payload: Payload) -> Value {
        let (tx, rx) = oneshot::channel();
        let tx = Arc::new(std::sync::Mutex::new(Some(tx)));
        self.client
            .emit_with_ack(event, payload, WAIT, move |payload, _| {
                if let Some(tx) = tx.lock().unwrap().take() {
                    // rust_socketio hands over an ack's argument list as one array.
                    let args = first_value(&payload);
                    let ack = match args {
                        Value::Array(mut args) if !args.is_empty() => args.swap_remove(0),
                        other => other,
                    };
                    tx.send(ack).ok();
                }
                async {}.boxed()
            })
            .await
            .expect("emit succeeds");
        tokio::time::timeout(WAIT, rx)
            .await
            .unwrap_or_else(|_| panic!("no ack for `{event}` within {WAIT:?}"))
            .expect("ack delivered")
    }

    /// The latest (largest) total received so far.
    pub fn last_total(&self) -> Option<u64> {
        *self.seen.borrow()
    }

    /// Waits until a `count` of at least `total` has arrived; returns it.
    pub async fn wait_for_total(&mut self, total: u64) -> u64 {
        let last = self.seen.clone();
        let seen =
            tokio::time::timeout(WAIT, self.seen.wait_for(|s| s.is_some_and(|s| s >= total)))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no count >= {total} within {WAIT:?}; last seen {:?}",
                        *last.borrow()
                    )
                })
                .expect("client alive");
        seen.unwrap()
    }

    /// Waits for the greeting `count` sent on connect.
    pub async fn first_total(&mut self) -> u64 {
        let seen = tokio::time::timeout(WAIT, self.seen.wait_for(Option::is_some))
            .await
            .expect("a count arrives after connecting")
            .expect("client alive");
        seen.unwrap()
    }

    pub async fn disconnect(self) {
        self.client.disconnect().await.ok();
    }
}

fn first_value(payload: &Payload) -> Value {
    match payload {
        Payload::Text(values) => values.first().cloned().unwrap_or(Value::Null),
        #[allow(deprecated)]
        Payload::String(s) => serde_json::from_str(s).unwrap_or(json!(s)),
        Payload::Binary(_) => json!("<binary>"),
    }
}

fn total_of(payload: &Payload) -> Option<u64> {
    first_value(payload)["total"].as_u64()
}

/// The global total as the database holds it.
pub async fn stored_total(db: &TempDb) -> u64 {
    let store = tally::store::SqliteStore::connect(&db.url()).await.unwrap();
    store
        .load()
        .await
        .unwrap()
        .into_iter()
        .map(|(_, total)| total)
        .sum()
}
