//! The Socket.IO contract, end to end: real server on port 0, real clients.

mod common;

use std::time::Duration;

use common::{TempDb, TestClient, TestServer, TransportType, WAIT};
use futures_util::{SinkExt, StreamExt};
use rust_socketio::Payload;
use serde_json::json;
use tokio_tungstenite::tungstenite::{self, Message};

#[tokio::test]
async fn connecting_sends_the_current_total_over_each_transport() {
    let db = TempDb::new();
    let server = TestServer::start(db.config()).await;
    for transport in [
        TransportType::Websocket,
        TransportType::Polling,
        TransportType::Any,
    ] {
        let mut client = TestClient::connect(&server.url(), transport).await;
        assert_eq!(client.first_total().await, 0);
        client.disconnect().await;
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn click_ack_carries_the_total_including_that_click() {
    let db = TempDb::new();
    let server = TestServer::start(db.config()).await;
    let mut client = TestClient::connect(&server.url(), TransportType::Websocket).await;
    client.first_total().await;
    assert_eq!(client.click().await, json!({"total": 1, "you": null}));
    assert_eq!(client.click().await, json!({"total": 2, "you": null}));
    // An empty object or null is accepted as "no payload".
    assert_eq!(
        client.emit_with_ack("click", json!({}).into()).await,
        json!({"total": 3, "you": null})
    );
    assert_eq!(
        client
            .emit_with_ack("click", Payload::Text(vec![json!(null)]))
            .await,
        json!({"total": 4, "you": null})
    );
    assert_eq!(client.wait_for_total(4).await, 4);
    client.disconnect().await;
    server.stop().await.unwrap();
}

/// N clients click M times each, concurrently; everyone ends on exactly N×M.
async fn clients_converge(broadcast_interval: Duration) {
    const CLIENTS: u64 = 10;
    const CLICKS: u64 = 25;
    let db = TempDb::new();
    let mut config = db.config();
    config.broadcast.interval = broadcast_interval;
    let server = TestServer::start(config).await;

    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let transport = if i % 2 == 0 {
            TransportType::Websocket
        } else {
            TransportType::Polling
        };
        let mut client = TestClient::connect(&server.url(), transport).await;
        client.first_total().await;
        clients.push(client);
    }
    let acked: Vec<Vec<u64>> =
        futures_util::future::join_all(clients.iter().map(|client| async move {
            let mut totals = Vec::new();
            for _ in 0..CLICKS {
                totals.push(client.click_total().await);
            }
            totals
        }))
        .await;

    // Every ack is a distinct total: no click was counted twice or lost.
    let mut all: Vec<u64> = acked.into_iter().flatten().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=CLIENTS * CLICKS).collect::<Vec<_>>());

    for client in &mut clients {
        assert_eq!(
            client.wait_for_total(CLIENTS * CLICKS).await,
            CLIENTS * CLICKS
        );
    }
    for client in clients {
        client.disconnect().await;
    }
    server.stop().await.unwrap();
    assert_eq!(common::stored_total(&db).await, CLIENTS * CLICKS);
}

#[tokio::test]
async fn clients_converge_with_coalesced_broadcasts() {
    clients_converge(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn clients_converge_with_a_broadcast_per_click() {
    clients_converge(Duration::ZERO).await;
}

#[tokio::test]
async fn a_zero_interval_broadcasts_every_click_on_its_own() {
    const CLICKS: u64 = 30;
    let db = TempDb::new();
    let mut config = db.config();
    config.broadcast.interval = Duration::ZERO;
    let server = TestServer::start(config).await;
    let mut watcher = raw::websocket(&server.url(), None).await.unwrap();
    raw::ws_connect(&mut watcher).await;
    let clicker = TestClient::connect(&server.url(), TransportType::Websocket).await;
    // Back-to-back clicks, far closer together than the default 10 ms
    // window: a coalescing server would merge them.
    for _ in 0..CLICKS {
        clicker.click_total().await;
    }
    let mut totals = Vec::new();
    while totals.last() != Some(&CLICKS) {
        let message = tokio::time::timeout(WAIT, watcher.next())
            .await
            .expect("the watcher hears every click in time")
            .expect("the connection stays open")
            .unwrap();
        if let Message::Text(text) = message
            && let Some(count) = text.strip_prefix(r#"42["count","#)
        {
            let count: serde_json::Value = serde_json::from_str(&count[..count.len() - 1]).unwrap();
            totals.push(count["total"].as_u64().unwrap());
        }
    }
    totals.sort_unstable();
    assert_eq!(
        totals,
        (0..=CLICKS).collect::<Vec<_>>(),
        "one broadcast per click"
    );
    clicker.disconnect().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_lone_click_is_broadcast_without_waiting_for_the_interval() {
    let db = TempDb::new();
    let mut config = db.config();
    // A long interval: if the first click after a quiet period waited for it,
    // this test would time out.
    config.broadcast.interval = Duration::from_secs(60);
    let server = TestServer::start(config).await;
    let mut watcher = TestClient::connect(&server.url(), TransportType::Websocket).await;
    let clicker = TestClient::connect(&server.url(), TransportType::Websocket).await;
    watcher.first_total().await;
    clicker.click_total().await;
    assert_eq!(watcher.wait_for_total(1).await, 1);
    watcher.disconnect().await;
    clicker.disconnect().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn garbage_clicks_are_refused_and_not_counted() {
    let db = TempDb::new();
    let server = TestServer::start(db.config()).await;
    let mut client = TestClient::connect(&server.url(), TransportType::Websocket).await;
    client.first_total().await;

    for garbage in [
        Payload::Text(vec![json!("garbage")]),
        Payload::Text(vec![json!(42)]),
        Payload::Text(vec![json!([1, 2, 3])]),
        Payload::Text(vec![json!({"count": 1_000_000})]),
        Payload::Text(vec![json!({}), json!({})]),
    ] {
        let ack = client.emit_with_ack("click", garbage.clone()).await;
        assert_eq!(ack["error"]["code"], "bad_request", "{garbage:?} → {ack}");
    }
    // Unknown events are ignored; refused clicks without an ack are fine too.
    // (Binary goes without an ack because rust_socketio sends a binary
    // emit-with-ack as a BINARY_ACK packet; the JS test covers that case.)
    client
        .client
        .emit("explode", json!({"now": true}))
        .await
        .unwrap();
    client.client.emit("click", json!("garbage")).await.unwrap();
    client
        .client
        .emit("click", Payload::Binary(vec![0xde, 0xad].into()))
        .await
        .unwrap();

    assert_eq!(client.click().await, json!({"total": 1, "you": null}));
    client.disconnect().await;
    server.stop().await.unwrap();
    assert_eq!(common::stored_total(&db).await, 1);
}

#[tokio::test]
async fn oversized_packets_close_only_the_sender() {
    let db = TempDb::new();
    let mut config = db.config();
    config.socket.max_payload = 2_000;
    let server = TestServer::start(config).await;
    let bystander = TestClient::connect(&server.url(), TransportType::Websocket).await;
    bystander.click_total().await;
    let huge = format!(r#"42["click",{{"pad":"{}"}}]"#, "x".repeat(10_000));

    // WebSocket: the server closes the connection; nothing is acknowledged
    // before that.
    let mut ws = raw::websocket(&server.url(), None).await.unwrap();
    raw::ws_connect(&mut ws).await;
    ws.send(Message::text(huge.clone())).await.unwrap();
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("the server closes the WebSocket in time")
        {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
            Some(Ok(Message::Text(text))) => {
                assert!(
                    !text.starts_with("43"),
                    "an oversized click was acked: {text}"
                )
            }
            Some(Ok(_)) => {}
        }
    }

    // Long-polling: the packet is refused with 413 and the session is gone.
    let http = reqwest::Client::new();
    let session = raw::polling_connect(&http, &server.url()).await;
    let sent = http.post(&session).body(huge).send().await.unwrap();
    assert_eq!(sent.status(), 413);
    let after = http.get(&session).send().await.unwrap();
    assert_eq!(after.status(), 400);
    assert!(
        after.text().await.unwrap().contains("Session ID unknown"),
        "the polling session was closed"
    );

    // The server is still up and the count is exact.
    assert_eq!(bystander.click().await, json!({"total": 2, "you": null}));
    bystander.disconnect().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn websocket_upgrades_from_foreign_origins_are_refused() {
    let db = TempDb::new();
    let server = TestServer::start(db.config()).await;
    // Browsers apply no CORS to WebSocket: this check is all that keeps a
    // foreign page from clicking with its visitors' browsers.
    match raw::websocket(&server.url(), Some("https://evil.example")).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        Err(other) => panic!("expected 403, got {other}"),
        Ok(_) => panic!("a foreign origin opened a WebSocket"),
    }
    let mut same = raw::websocket(&server.url(), Some(&server.url()))
        .await
        .expect("the page's own origin may connect");
    raw::ws_connect(&mut same).await;
    server.stop().await.unwrap();
}

/// Socket.IO spoken by hand, for the cases a client library hides: what the
/// server does to the connection itself.
mod raw {
    use super::*;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    pub type Ws = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    /// Opens an engine.io WebSocket (no namespace yet), sending `origin`.
    pub async fn websocket(url: &str, origin: Option<&str>) -> Result<Ws, tungstenite::Error> {
        let url = format!(
            "{}/socket.io/?EIO=4&transport=websocket",
            url.replacen("http", "ws", 1)
        );
        let mut request = url.into_client_request().unwrap();
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("origin", origin.parse().unwrap());
        }
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("the WebSocket handshake answers in time")?;
        Ok(ws)
    }

    /// Joins namespace `/` and waits for the server's connect packet.
    pub async fn ws_connect(ws: &mut Ws) {
        ws.send(Message::text("40")).await.unwrap();
        loop {
            let message = tokio::time::timeout(WAIT, ws.next())
                .await
                .expect("the namespace answers in time")
                .expect("the connection stays open")
                .unwrap();
            if let Message::Text(text) = message
                && text.starts_with("40")
            {
                return;
            }
        }
    }

    /// Opens a long-polling session in namespace `/`; returns its URL.
    pub async fn polling_connect(http: &reqwest::Client, url: &str) -> String {
        let base = format!("{url}/socket.io/?EIO=4&transport=polling");
        let open = http.get(&base).send().await.unwrap().text().await.unwrap();
        let open: serde_json::Value = serde_json::from_str(&open[1..]).unwrap();
        let session = format!("{base}&sid={}", open["sid"].as_str().unwrap());
        let joined = http.post(&session).body("40").send().await.unwrap();
        assert_eq!(joined.status(), 200);
        let greeting = http
            .get(&session)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        // Packets in one polling response are separated by U+001E; the
        // namespace's connect packet is among them (a ping may come first).
        assert!(
            greeting
                .split('\u{1e}')
                .any(|packet| packet.starts_with("40")),
            "{greeting}"
        );
        session
    }
}

#[tokio::test]
async fn foreign_origins_are_refused_unless_allowed() {
    let db = TempDb::new();
    let server = TestServer::start(db.config()).await;
    let http = reqwest::Client::new();
    let handshake = format!("{}/socket.io/?EIO=4&transport=polling", server.url());

    let foreign = http
        .get(&handshake)
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    let body: serde_json::Value = foreign.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden_origin");

    let same = http
        .get(&handshake)
        .header("Origin", server.url())
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), 200);
    let no_origin = http.get(&handshake).send().await.unwrap();
    assert_eq!(no_origin.status(), 200);
    server.stop().await.unwrap();

    let db = TempDb::new();
    let mut config = db.config();
    config.socket.allowed_origins = vec![tally::config::AllowedOrigin::Exact(
        "https://app.example".into(),
    )];
    let server = TestServer::start(config).await;
    let handshake = format!("{}/socket.io/?EIO=4&transport=polling", server.url());
    let listed = http
        .get(&handshake)
        .header("Origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    assert_eq!(
        listed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn polling_only_servers_refuse_websocket_clients() {
    let db = TempDb::new();
    let mut config = db.config();
    config.socket.transports = vec![tally::config::Transport::Polling];
    let server = TestServer::start(config).await;
    let ws = rust_socketio::asynchronous::ClientBuilder::new(server.url())
        .transport_type(TransportType::Websocket)
        .reconnect(false)
        .connect();
    assert!(tokio::time::timeout(WAIT, ws).await.unwrap().is_err());
    // The handshake offers no upgrade the server would refuse.
    let open = reqwest::get(format!(
        "{}/socket.io/?EIO=4&transport=polling",
        server.url()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(open.contains(r#""upgrades":[]"#), "{open}");
    let mut polling = TestClient::connect(&server.url(), TransportType::Polling).await;
    assert_eq!(polling.first_total().await, 0);
    assert_eq!(polling.click_total().await, 1);
    polling.disconnect().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_page_and_health_check_are_served() {
    let db = TempDb::new();
    let server = TestServer::start(db.config()).await;
    let http = reqwest::Client::new();

    let page = http.get(server.url()).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    assert!(
        html.contains(r#"src="app.js""#),
        "the page loads its script, relatively"
    );
    for asset in ["/app.js", "/app.css"] {
        let response = http
            .get(format!("{}{asset}", server.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{asset}");
    }

    let health = http
        .get(format!("{}/healthz", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let body: serde_json::Value = health.json().await.unwrap();
    assert_eq!(body["status"], "ok");

    let missing = http
        .get(format!("{}/nope", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn assets_are_compressed_and_revalidated_with_etags() {
    let db = TempDb::new();
    let server = TestServer::start(db.config()).await;
    let http = reqwest::Client::new();
    let url = format!("{}/app.js", server.url());

    let plain = http.get(&url).send().await.unwrap();
    let etag = plain.headers()["etag"].clone();
    assert_eq!(plain.headers()["cache-control"], "no-cache");
    let size = plain.bytes().await.unwrap().len();

    let gzipped = http
        .get(&url)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gzipped.headers()["content-encoding"], "gzip");
    let compressed = gzipped.bytes().await.unwrap().len();
    assert!(
        compressed < size,
        "gzip shrinks the script ({compressed} < {size})"
    );

    let revalidated = http
        .get(&url)
        .header("if-none-match", etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), 304);
    assert_eq!(revalidated.headers()["etag"], etag);
    let stale = http
        .get(&url)
        .header("if-none-match", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn older_engine_io_v3_clients_can_open_a_session() {
    // socket.io 1.x and 2.x clients speak engine.io v3 (`EIO=3`).
    let db = TempDb::new();
    let server = TestServer::start(db.config()).await;
    let v3 = reqwest::get(format!(
        "{}/socket.io/?EIO=3&transport=polling",
        server.url()
    ))
    .await
    .unwrap();
    assert_eq!(v3.status(), 200);
    assert!(
        v3.text().await.unwrap().contains("\"sid\""),
        "an engine.io v3 open packet"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn healthz_counts_connected_sockets() {
    let db = TempDb::new();
    let server = TestServer::start(db.config()).await;
    let http = reqwest::Client::new();
    let url = format!("{}/healthz", server.url());
    let connections = async || -> u64 {
        let body: serde_json::Value = http.get(&url).send().await.unwrap().json().await.unwrap();
        body["connections"]
            .as_u64()
            .expect("a number of connections")
    };
    assert_eq!(connections().await, 0);

    let mut websocket = TestClient::connect(&server.url(), TransportType::Websocket).await;
    let mut polling = TestClient::connect(&server.url(), TransportType::Polling).await;
    // The greeting is sent after the socket is counted.
    websocket.first_total().await;
    polling.first_total().await;
    assert_eq!(connections().await, 2);

    // The server learns of a close asynchronously, so poll until it has.
    for (client, left) in [(websocket, 1), (polling, 0)] {
        client.disconnect().await;
        tokio::time::timeout(WAIT, async {
            while connections().await != left {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("healthz never showed {left} connections"));
    }
    server.stop().await.unwrap();
}
