//! Shared test harness: the real server on port 0 and real Socket.IO clients.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::net::SocketAddr;

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use rust_socketio::Payload;
use rust_socketio::asynchronous::{Client, ClientBuilder};
use serde_json::{Value, json};
use tally::app::RunError;
use tally::counter::CounterKey;
use tally::store::Store;
use tally::{App, Config};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub use rust_socketio::TransportType;

pub mod cluster;

/// Upper bound for anything a test waits for.
pub const WAIT: Duration = Duration::from_secs(10);

/// A database backend the tests can run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

impl Backend {
    /// The variable naming a server where the tests may create databases
    /// (`.ci/run` sets both); SQLite needs none.
    pub fn server_variable(self) -> Option<&'static str> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres => Some("TALLY_TEST_POSTGRES_URL"),
            Backend::MySql => Some("TALLY_TEST_MYSQL_URL"),
        }
    }
}

/// A fresh, empty database that lives as long as the value: a file in a
/// temporary directory, or a database created on the test server and
/// dropped again.
pub struct TempDb {
    url: String,
    _dir: Option<tempfile::TempDir>,
    /// For a server database: the admin URL and the database's name.
    server: Option<(String, String)>,
}

impl TempDb {
    /// A SQLite database file.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("tally.db").display());
        TempDb {
            url,
            _dir: Some(dir),
            server: None,
        }
    }

    /// A fresh database on `backend`. With no server configured for it the
    /// test fails, unless `TALLY_TEST_SKIP_SERVERS=1` asks to skip such
    /// backends (then `None`, said on stderr). A configured server that
    /// cannot be reached fails the test.
    pub async fn fresh(backend: Backend) -> Option<Self> {
        let Some(variable) = backend.server_variable() else {
            return Some(Self::new());
        };
        let Ok(admin) = std::env::var(variable) else {
            assert!(
                std::env::var("TALLY_TEST_SKIP_SERVERS").is_ok_and(|skip| skip == "1"),
                "{variable} is not set: name a {backend:?} server where tests may create \
                 databases (e.g. postgres://postgres@127.0.0.1:5432/test, \
                 mysql://root@127.0.0.1:3306/test), or set TALLY_TEST_SKIP_SERVERS=1 to \
                 skip the {backend:?} store tests on purpose"
            );
            eprintln!(
                "SKIPPED on {backend:?}: {variable} is not set and TALLY_TEST_SKIP_SERVERS=1"
            );
            return None;
        };
        let name = format!("tally_test_{:016x}", random_u64());
        server_sql(backend, &admin, &format!("CREATE DATABASE {name}")).await;
        let url = match admin.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => panic!("{variable} must end in /DATABASE: {admin}"),
        };
        Some(TempDb {
            url,
            _dir: None,
            server: Some((admin, name)),
        })
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// A configuration on port 0 with short intervals so tests run fast,
    /// and without rate limits or connection caps: most tests click and
    /// connect as fast as they can on purpose; the tests of the limits set
    /// them.
    pub fn config(&self) -> Config {
        let mut config = Config::new("127.0.0.1:0".parse().unwrap(), self.url());
        config.database.flush_interval = Duration::from_millis(50);
        // Every event limit at once: a new one is off here too.
        config.limits = tally::config::EventLimits::NONE;
        config.caps.max_connections_per_ip = 0;
        config
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let Some((admin, name)) = self.server.take() else {
            return;
        };
        let backend = if admin.starts_with("mysql") {
            Backend::MySql
        } else {
            Backend::Postgres
        };
        // Drop runs outside async code: a thread with its own runtime drops
        // the database (forcing out connections a failed test left open).
        let statement = match backend {
            Backend::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            _ => format!("DROP DATABASE IF EXISTS {name}"),
        };
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(server_sql(backend, &admin, &statement));
        })
        .join()
        .ok();
    }
}

/// Runs one administrative statement on a test database server.
async fn server_sql(backend: Backend, admin: &str, statement: &str) {
    use sqlx::Connection;
    let result = match backend {
        Backend::Postgres => match sqlx::PgConnection::connect(admin).await {
            Ok(mut conn) => sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_string()))
                .execute(&mut conn)
                .await
                .map(drop),
            Err(err) => Err(err),
        },
        Backend::MySql => match sqlx::MySqlConnection::connect(admin).await {
            Ok(mut conn) => sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_string()))
                .execute(&mut conn)
                .await
                .map(drop),
            Err(err) => Err(err),
        },
        Backend::Sqlite => unreachable!("SQLite needs no server"),
    };
    if let Err(err) = result {
        panic!("{backend:?} test server at {admin}: `{statement}` failed: {err}");
    }
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).unwrap();
    u64::from_le_bytes(bytes)
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

/// A rust_socketio client that remembers the largest `count` it has seen
/// and queues every other event for the test to inspect.
pub struct TestClient {
    pub client: Client,
    seen: watch::Receiver<Option<u64>>,
    events: mpsc::UnboundedReceiver<(String, Value)>,
}

impl TestClient {
    /// Connects anonymously and waits until the socket is in the namespace.
    pub async fn connect(url: &str, transport: TransportType) -> Self {
        Self::connect_with(url, transport, None, &[])
            .await
            .unwrap_or_else(|err| panic!("connection refused: {err}"))
    }

    /// Connects over WebSocket as `username` (open mode's bare name).
    pub async fn named(url: &str, username: &str) -> Self {
        Self::connect_as(
            url,
            TransportType::Websocket,
            json!({ "username": username }),
        )
        .await
        .unwrap_or_else(|err| panic!("{username} connects: {err}"))
    }

    /// Connects with an `auth` payload; `Err` carries the `connect_error` text.
    pub async fn connect_as(
        url: &str,
        transport: TransportType,
        auth: Value,
    ) -> Result<Self, String> {
        Self::connect_with(url, transport, Some(auth), &[]).await
    }

    /// Connects sending these headers with the opening request (a host's
    /// cookie, say); `Err` carries the `connect_error` text.
    pub async fn connect_with_headers(
        url: &str,
        transport: TransportType,
        headers: &[(&str, &str)],
    ) -> Result<Self, String> {
        Self::connect_with(url, transport, None, headers).await
    }

    async fn connect_with(
        url: &str,
        transport: TransportType,
        auth: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Result<Self, String> {
        let (tx, seen) = watch::channel(None);
        let tx = Arc::new(tx);
        let (events_tx, events) = mpsc::unbounded_channel();
        let (error_tx, mut errors) = mpsc::unbounded_channel();
        let mut builder = ClientBuilder::new(url)
            .namespace("/")
            .transport_type(transport)
            .reconnect(false)
            .on("count", move |payload, _| {
                let tx = tx.clone();
                async move {
                    if let Some(total) = first_value(&payload)["total"].as_u64() {
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
            .on("error", move |payload, _| {
                let text = match first_value(&payload) {
                    Value::String(text) => text,
                    other => other.to_string(),
                };
                error_tx.send(text).ok();
                async {}.boxed()
            })
            .on("close", {
                let events_tx = events_tx.clone();
                move |_, _| {
                    events_tx.send(("close".to_string(), Value::Null)).ok();
                    async {}.boxed()
                }
            })
            .on_any(move |event, payload, _| {
                events_tx
                    .send((event.as_str().to_string(), first_value(&payload)))
                    .ok();
                async {}.boxed()
            });
        if let Some(auth) = auth {
            builder = builder.auth(auth);
        }
        for (name, value) in headers {
            builder = builder.opening_header(*name, *value);
        }
        let client = builder.connect().await.expect("engine.io connection opens");
        let mut client = TestClient {
            client,
            seen,
            events,
        };
        // rust_socketio returns before the namespace handshake completes and
        // does not buffer emits meanwhile (the JS client does); the greeting
        // `count` proves the socket is connected, a `connect_error` that it
        // was refused.
        tokio::select! {
            _ = client.first_total() => Ok(client),
            err = errors.recv() => {
                client.client.disconnect().await.ok();
                Err(err.unwrap_or_default())
            }
        }
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
        self.try_emit_with_ack(event, payload, WAIT)
            .await
            .unwrap_or_else(|| panic!("no ack for `{event}` within {WAIT:?}"))
    }

    /// Emits and waits for the ack at most `limit`; `None` if it does not
    /// come (the server is gone, say).
    pub async fn try_emit_with_ack(
        &self,
        event: &str,
        payload: Payload,
        limit: Duration,
    ) -> Option<Value> {
        let (tx, rx) = oneshot::channel();
        let tx = Arc::new(std::sync::Mutex::new(Some(tx)));
        self.client
            .emit_with_ack(event, payload, limit, move |payload, _| {
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
            .ok()?;
        tokio::time::timeout(limit, rx).await.ok()?.ok()
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

    /// Waits for an event named `name` whose payload satisfies `matches`,
    /// skipping other events; returns its payload.
    pub async fn wait_for_event(&mut self, name: &str, matches: impl Fn(&Value) -> bool) -> Value {
        self.wait_for_event_within(name, WAIT, matches)
            .await
            .unwrap_or_else(|| panic!("no matching `{name}` within {WAIT:?}"))
    }

    /// Like [`TestClient::wait_for_event`], but `None` after `limit`.
    pub async fn wait_for_event_within(
        &mut self,
        name: &str,
        limit: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let (event, payload) = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .ok()??;
            if event == name && matches(&payload) {
                return Some(payload);
            }
        }
    }

    /// Every event received up to and including the first `name` whose
    /// payload satisfies `matches`. Events on one connection arrive in the
    /// order they were sent, so what came before a marker event is known to
    /// be everything sent before it.
    pub async fn events_until(
        &mut self,
        name: &str,
        matches: impl Fn(&Value) -> bool,
    ) -> Vec<(String, Value)> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            let (event, payload) = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("no matching `{name}` within {WAIT:?}; saw {seen:?}"))
                .expect("client alive");
            let done = event == name && matches(&payload);
            seen.push((event, payload));
            if done {
                return seen;
            }
        }
    }

    /// Emits `event` with one JSON argument and returns the ack.
    pub async fn emit_json(&self, event: &str, payload: Value) -> Value {
        self.emit_with_ack(event, Payload::Text(vec![payload]))
            .await
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

/// The sum of every sample of `name` (all its label sets) in the server's
/// `/metrics`.
pub async fn metric(url: &str, name: &str) -> u64 {
    let metrics = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .filter(|line| {
            line.starts_with(&format!("{name} ")) || line.starts_with(&format!("{name}{{"))
        })
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The global total as the database holds it.
pub async fn stored_total(db: &TempDb) -> u64 {
    stored(db)
        .await
        .into_iter()
        .find(|(key, _)| *key == CounterKey::Global)
        .map_or(0, |(_, total)| total)
}

/// Every stored counter.
pub async fn stored(db: &TempDb) -> Vec<(CounterKey, u64)> {
    let store = tally::store::connect(&db.url(), &Default::default())
        .await
        .unwrap();
    store.load().await.unwrap()
}

/// Rate limits and connection caps off, as environment variables.
pub const NO_LIMITS: [(&str, &str); 8] = [
    ("TALLY_CLICK_LIMIT", "0"),
    ("TALLY_NEW_NAME_LIMIT", "0"),
    ("TALLY_NEW_CONVERSATION_LIMIT", "0"),
    ("TALLY_MESSAGE_LIMIT", "0"),
    ("TALLY_TYPING_LIMIT", "0"),
    ("TALLY_JOIN_LIMIT", "0"),
    ("TALLY_REFRESH_LIMIT", "0"),
    ("TALLY_MAX_CONNECTIONS_PER_IP", "0"),
];

/// The `tally` binary run as an operator runs it: a child process in its own
/// temporary directory (so a default `sqlite://tally.db` lands there), with
/// none of the caller's `TALLY_*` variables, and a bound on every wait.
pub struct ChildServer {
    child: std::process::Child,
    pub url: String,
    pub dir: tempfile::TempDir,
    /// Log lines after the one that named the address.
    pub log: std::sync::mpsc::Receiver<String>,
}

impl ChildServer {
    /// Starts `tally` with `args` and `envs` on top of a clean environment
    /// and waits until it logs `listening on http://…`.
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Self {
        use std::io::{BufRead, BufReader};
        let dir = tempfile::tempdir().unwrap();
        let mut child = clean_command(dir.path())
            .args(args)
            // No limits unless a test asks (its flags win over these).
            .envs(NO_LIMITS.iter().copied())
            .envs(envs.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("the tally binary starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, log) = std::sync::mpsc::channel();
        // Read the log on a thread so every wait on it can time out.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let url = loop {
            let line = log
                .recv_timeout(WAIT)
                .expect("the server logs its address in time");
            if let Some((_, rest)) = line.split_once("listening on ") {
                // The URL ends at a space or, in JSON logs, at the quote.
                let url = rest.split(|c: char| c == '"' || c.is_whitespace()).next();
                break url.unwrap_or_default().to_string();
            }
        };
        ChildServer {
            child,
            url,
            dir,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL, as a crash would: no shutdown code
    /// runs.
    pub fn kill(&mut self) {
        self.child.kill().expect("the server can be killed");
        self.child.wait().ok();
    }

    /// Sends SIGTERM and waits (bounded) for the exit status. The temporary
    /// directory stays until the value is dropped.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        wait_bounded(&mut self.child)
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// `tally` with a clean environment (no `TALLY_*`, no `RUST_LOG`), run in `dir`.
pub fn clean_command(dir: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tally"));
    command.current_dir(dir).env("NO_COLOR", "1");
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("TALLY_") || name == "RUST_LOG" {
            command.env_remove(name.as_ref());
        }
    }
    command
}

/// Runs `tally` with `args` to completion in a temporary directory; fails
/// the test instead of hanging if it does not exit within `WAIT` (a
/// regression that accepts a bad option would start a server and wait).
pub fn run_to_exit(args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let mut child = clean_command(dir.path())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        use std::io::Read;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        stdout.read_to_end(&mut out).ok();
        stderr.read_to_end(&mut err).ok();
        tx.send((out, err)).ok();
    });
    let status = wait_bounded(&mut child);
    let (stdout, stderr) = rx.recv_timeout(WAIT).expect("output is complete");
    std::process::Output {
        status,
        stdout,
        stderr,
    }
}

/// Waits for `child` to exit, at most `WAIT`. std offers no exit event to
/// wait on with a timeout, so this polls `try_wait`.
fn wait_bounded(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().ok();
            panic!("tally did not exit within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Counts every panic in this process from now on, however it ends: the
/// server runs in the test's process, where a panic in one of its tasks ends
/// only that task. For a test binary with a single test, so that no other
/// test's panics are counted.
pub fn count_panics() -> Arc<std::sync::atomic::AtomicUsize> {
    let panics = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new({
        let panics = panics.clone();
        move |info| {
            panics.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            default_hook(info);
        }
    }));
    panics
}
