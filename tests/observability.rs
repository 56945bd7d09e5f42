//! What an operator sees: `/metrics` after a known workload (values, not
//! just names, and valid for Prometheus's own `promtool`), and `/metrics` on
//! its own address.

mod common;

use std::time::Duration;

use common::{TempDb, TestClient, TestServer, TransportType, WAIT};
use serde_json::json;

/// The value of one sample line `name{labels} value`, if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

async fn scrape(url: &str) -> String {
    let response = reqwest::get(format!("{url}/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// Runs Debian's `promtool check metrics` on an exposition; fails the test
/// with its complaints.
fn promtool_check(metrics: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect(
            "promtool runs (Debian: `apt-get install prometheus`; scripts/test installs it as root)",
        );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}\n{metrics}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn metrics_count_a_known_workload_and_pass_promtool() {
    let db = TempDb::new();
    let mut config = db.config();
    config.database.flush_interval = Duration::from_millis(50);
    let server = TestServer::start(config).await;
    let url = server.url();

    let ada = TestClient::connect_as(&url, TransportType::Websocket, json!({"username": "ada"}))
        .await
        .unwrap();
    let bob = TestClient::connect(&url, TransportType::Websocket).await;
    let polling = TestClient::connect(&url, TransportType::Polling).await;
    let refused = TestClient::connect_as(
        &url,
        TransportType::Websocket,
        json!({"username": "no spaces"}),
    )
    .await;
    assert!(refused.is_err());

    for _ in 0..7 {
        ada.click_total().await;
    }
    for _ in 0..3 {
        polling.click_total().await;
    }
    // A refused click is an event received but not a click.
    let bad = ada.emit_json("click", json!("nope")).await;
    assert_eq!(bad["error"]["code"], "bad_request");
    ada.emit_json("join_conversation", json!({"conversationId": "ops"}))
        .await;
    let said = ada
        .emit_json("message", json!({"conversationId": "ops", "content": "hi"}))
        .await;
    assert!(said["messageId"].is_string());
    bob.disconnect().await;
    reqwest::get(format!("{url}/healthz")).await.unwrap();
    reqwest::get(format!("{url}/api/users/ada")).await.unwrap();

    // Wait (bounded) until the clicks are stored and bob's socket is gone.
    let deadline = tokio::time::Instant::now() + WAIT;
    let metrics = loop {
        let metrics = scrape(&url).await;
        let settled = sample(&metrics, "tally_pending_clicks") == Some(0.0)
            && sample(&metrics, "tally_sockets_connected{transport=\"websocket\"}") == Some(1.0);
        if settled {
            break metrics;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not settled:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let value = |series: &str| {
        sample(&metrics, series).unwrap_or_else(|| panic!("no sample {series} in\n{metrics}"))
    };
    assert_eq!(value("tally_clicks_total"), 10.0);
    assert_eq!(value("tally_events_received_total{event=\"click\"}"), 11.0);
    assert_eq!(value("tally_events_received_total{event=\"message\"}"), 1.0);
    assert_eq!(
        value("tally_events_received_total{event=\"join_conversation\"}"),
        1.0
    );
    assert_eq!(value("tally_messages_total"), 1.0);
    assert_eq!(value("tally_socket_connects_total"), 3.0);
    assert_eq!(
        value("tally_handshakes_refused_total{reason=\"invalid_username\"}"),
        1.0
    );
    assert_eq!(value("tally_sockets_connected{transport=\"polling\"}"), 1.0);
    assert_eq!(value("tally_conversations_occupied"), 1.0);
    // Bob's was the one disconnect, whatever its reason's label.
    let disconnects: f64 = metrics
        .lines()
        .filter(|line| line.starts_with("tally_socket_disconnects_total{reason="))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(disconnects, 1.0, "{metrics}");
    assert_eq!(
        value("tally_http_requests_total{route=\"/api/users/{username}\",status=\"200\"}"),
        1.0
    );
    assert!(value("tally_flush_duration_seconds_count") >= 1.0);
    assert!(
        value("tally_flush_batch_size_sum") >= 2.0,
        "global and ada at least"
    );
    assert!(value("tally_broadcasts_total{event=\"count\"}") >= 1.0);
    assert!(value("tally_click_to_broadcast_seconds_count") >= 1.0);
    assert_eq!(value("tally_flush_failures_total"), 0.0);
    assert!(metrics.contains("tally_build_info{version=\""));
    promtool_check(&metrics);
    dashboard_uses_only(&metrics);

    for client in [ada, polling] {
        client.disconnect().await;
    }
    server.stop().await.unwrap();
}

/// Every metric the Grafana dashboard queries exists, so it cannot drift
/// from the code.
fn dashboard_uses_only(metrics: &str) {
    let dashboard = include_str!("../deploy/grafana-dashboard.json");
    let mut queried = 0;
    for (at, _) in dashboard.match_indices("tally_") {
        let name: String = dashboard[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name == "tally_" {
            continue;
        }
        queried += 1;
        assert!(
            metrics
                .lines()
                .any(|line| line.starts_with(&format!("{name}{{"))
                    || line.starts_with(&format!("{name} "))),
            "the dashboard queries {name}, which /metrics does not have"
        );
    }
    assert!(queried > 10, "{queried} metrics in the dashboard");
}

#[tokio::test]
async fn metrics_addr_serves_metrics_apart_from_the_public_port() {
    let db = TempDb::new();
    let mut config = db.config();
    config.serving.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    let app = tally::App::build(config).await.unwrap();
    let public = format!("http://{}", app.local_addr());
    let private = format!("http://{}", app.metrics_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async {
        stopped.await.ok();
    }));
    assert!(scrape(&private).await.contains("tally_clicks_total"));
    let public_metrics = reqwest::get(format!("{public}/metrics")).await.unwrap();
    assert_eq!(public_metrics.status(), 404);
    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// A store whose writes wait while `hold` is set, so a test can look at a
/// server stopped in the middle of its shutdown.
struct HeldStore {
    inner: std::sync::Arc<dyn tally::store::Store>,
    hold: tokio::sync::watch::Sender<bool>,
    /// Told when a write of messages starts (and may be held).
    writing_messages: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl tally::store::Store for HeldStore {
    async fn load(
        &self,
    ) -> Result<Vec<(tally::counter::CounterKey, u64)>, tally::store::StoreError> {
        self.inner.load().await
    }
    async fn add(
        &self,
        batch: &tally::store::Batch,
    ) -> Result<tally::store::Applied, tally::store::StoreError> {
        self.hold.subscribe().wait_for(|held| !held).await.ok();
        self.inner.add(batch).await
    }
    async fn add_messages(
        &self,
        messages: &[tally::conversation::Message],
    ) -> Result<(), tally::store::StoreError> {
        self.writing_messages.notify_one();
        self.hold.subscribe().wait_for(|held| !held).await.ok();
        self.inner.add_messages(messages).await
    }
    async fn history(
        &self,
        conversation: &tally::conversation::ConversationId,
        query: tally::conversation::HistoryQuery,
    ) -> Result<tally::conversation::History, tally::store::StoreError> {
        self.inner.history(conversation, query).await
    }
    async fn prune_messages(
        &self,
        before_ms: i64,
        limit: u32,
    ) -> Result<u64, tally::store::StoreError> {
        self.inner.prune_messages(before_ms, limit).await
    }
    async fn ping(&self) -> Result<(), tally::store::StoreError> {
        self.inner.ping().await
    }
    fn backend(&self) -> &'static str {
        "held"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_server_is_unready_refuses_newcomers_tells_clients_and_loses_no_click() {
    let db = TempDb::new();
    let (hold, _) = tokio::sync::watch::channel(false);
    let store = std::sync::Arc::new(HeldStore {
        inner: tally::store::connect(&db.url(), &Default::default())
            .await
            .unwrap(),
        hold: hold.clone(),
        writing_messages: tokio::sync::Notify::new(),
    });
    let app = tally::App::build_with_store(db.config(), store.clone())
        .await
        .unwrap();
    let url = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        stopped.await.ok();
    }));
    let ready = reqwest::get(format!("{url}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);

    // A client clicking in a loop through the whole shutdown.
    let mut watcher =
        TestClient::connect_as(&url, TransportType::Websocket, json!({"username": "ada"}))
            .await
            .unwrap();
    watcher
        .emit_json("join_conversation", json!({"conversationId": "drain"}))
        .await;
    let clicker = TestClient::connect(&url, TransportType::Websocket).await;
    let clicking = tokio::spawn(async move {
        let mut acked = 0u64;
        loop {
            let ack = clicker
                .try_emit_with_ack("click", rust_socketio::Payload::Text(vec![]), WAIT)
                .await;
            match ack {
                Some(ack) if ack["total"].is_u64() => acked += 1,
                _ => break acked,
            }
        }
    });
    watcher.wait_for_total(20).await;

    // Writes wait from now on. A message in flight holds the shutdown at
    // its first step (storing the messages already sent) until released.
    hold.send_replace(true);
    watcher
        .client
        .emit(
            "message",
            json!({"conversationId": "drain", "content": "last words"}),
        )
        .await
        .unwrap();
    tokio::time::timeout(WAIT, store.writing_messages.notified())
        .await
        .expect("the message reaches the store");
    stop.send(()).unwrap();
    let notice = watcher.wait_for_event("server_shutdown", |_| true).await;
    assert_eq!(notice, json!({"reconnectAfterMs": 1000}));

    // Alive, not ready, and refusing newcomers while it drains.
    let ready = reqwest::get(format!("{url}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["error"]["code"], "shutting_down");
    let alive = reqwest::get(format!("{url}/healthz")).await.unwrap();
    assert_eq!(alive.status(), 200);
    let late = TestClient::connect_as(&url, TransportType::Websocket, json!({})).await;
    let refusal = late.err().expect("a newcomer is refused");
    assert!(refusal.contains("server shutting down"), "{refusal}");

    hold.send_replace(false);
    // The held message is stored and sent to its room before sockets close.
    let last = watcher
        .wait_for_event("message", |m| m["content"] == "last words")
        .await;
    assert!(last["messageId"].is_string());
    tokio::time::timeout(WAIT, server)
        .await
        .expect("the server stops once its final write is done")
        .unwrap()
        .unwrap();
    let acked = clicking.await.unwrap();
    assert!(acked >= 20);
    assert_eq!(
        common::stored_total(&db).await,
        acked,
        "every acknowledged click is stored"
    );
}

#[tokio::test]
async fn the_monitoring_api_lists_connections_and_stats_for_the_token_only() {
    const TOKEN: &str = "admin-token-0123456789";
    let db = TempDb::new();
    let mut config = db.config();
    config.admin.token = Some(tally::config::Secret(TOKEN.into()));
    config.database.flush_interval = Duration::from_millis(50);
    let server = TestServer::start(config).await;
    let url = server.url();
    let http = reqwest::Client::new();
    for token in [None, Some("wrong-token-wrong-token")] {
        for path in ["connections", "stats"] {
            let mut request = http.get(format!("{url}/api/admin/{path}"));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            assert_eq!(
                request.send().await.unwrap().status(),
                401,
                "{path} {token:?}"
            );
        }
    }

    let ada = TestClient::connect_as(&url, TransportType::Websocket, json!({"username": "ada"}))
        .await
        .unwrap();
    let anonymous = TestClient::connect(&url, TransportType::Polling).await;
    ada.emit_json("join_conversation", json!({"conversationId": "ops"}))
        .await;
    for _ in 0..5 {
        ada.click_total().await;
    }
    anonymous.click_total().await;

    let get = |path: &str| {
        let request = http
            .get(format!("{url}/api/admin/{path}"))
            .bearer_auth(TOKEN);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<serde_json::Value>().await.unwrap()
        }
    };
    let first = get("connections?limit=1").await;
    assert_eq!(first["total"], 2);
    assert_eq!(first["connections"].as_array().unwrap().len(), 1);
    let next = first["next"].as_str().expect("a second page").to_string();
    let second = get(&format!("connections?limit=1&after={next}")).await;
    assert_eq!(second["connections"].as_array().unwrap().len(), 1);
    assert_eq!(second["next"], serde_json::Value::Null);
    let all: Vec<serde_json::Value> = [first, second]
        .iter()
        .flat_map(|page| page["connections"].as_array().unwrap().clone())
        .collect();
    let ada_row = all
        .iter()
        .find(|c| c["userId"] == "ada")
        .expect("ada is listed");
    assert_eq!(ada_row["conversationIds"], json!(["ops"]));
    assert_eq!(ada_row["transport"], "websocket");
    assert!(
        ada_row["remoteAddr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{ada_row}"
    );
    assert!(ada_row["connectionTime"].as_str().unwrap().ends_with('Z'));
    assert!(
        ada_row["lastActivity"].as_str().unwrap() >= ada_row["connectionTime"].as_str().unwrap()
    );
    let anonymous_row = all.iter().find(|c| c["userId"].is_null()).unwrap();
    assert_eq!(anonymous_row["transport"], "polling");
    assert_eq!(anonymous_row["conversationIds"], json!([]));
    assert_eq!(
        http.get(format!("{url}/api/admin/connections?limit=0"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        422
    );

    // The rate is sampled once a second: wait (bounded) for a sample after
    // the clicks, and for a flush.
    let deadline = tokio::time::Instant::now() + WAIT;
    let stats = loop {
        let stats = get("stats").await;
        if stats["clicksPerSecond"]["last10s"].as_f64().unwrap() > 0.0
            && stats["lastFlushAt"].is_string()
            && stats["pending"] == 0
        {
            break stats;
        }
        assert!(tokio::time::Instant::now() < deadline, "{stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(stats["connections"], 2);
    assert_eq!(stats["users"], 1);
    assert_eq!(stats["rooms"], 1);
    assert_eq!(stats["total"], 6);
    assert!(stats["clicksPerSecond"]["last60s"].as_f64().unwrap() > 0.0);
    let body = stats.to_string();
    assert!(!body.contains(TOKEN));

    ada.disconnect().await;
    anonymous.disconnect().await;
    server.stop().await.unwrap();
}
