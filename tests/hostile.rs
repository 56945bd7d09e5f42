//! Hostile input, generated: truncated packets, wrong types, huge numbers,
//! deep JSON, binary attachments, unknown namespaces and invalid UTF-8,
//! thrown at a real server over WebSocket and long-polling. The server must
//! not panic, must count nothing (no generated frame is a well-formed
//! click), and must keep serving a well-behaved client.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{TempDb, TestClient, TestServer, TransportType, WAIT};
use futures_util::{SinkExt, StreamExt};
use proptest::prelude::*;
use tokio_tungstenite::tungstenite::Message;

/// One hostile frame.
#[derive(Debug, Clone)]
enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

/// Engine.IO packet types, valid and not, and Socket.IO ones after `4`.
fn prefix() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("4".to_string()),
        Just("42".to_string()),
        Just("43".to_string()),
        Just("40".to_string()),
        Just("41".to_string()),
        Just("44".to_string()),
        Just("45".to_string()),
        Just("451-".to_string()),
        Just("46".to_string()),
        Just("42/admin,".to_string()),
        Just("40/nowhere,".to_string()),
        Just("2".to_string()),
        Just("3".to_string()),
        Just("5".to_string()),
        Just("6".to_string()),
        Just("9".to_string()),
        Just("".to_string()),
        "[0-9]{1,3}".prop_map(|s| s),
    ]
}

/// Bodies: broken JSON, wrong types, huge numbers, deep nesting, events
/// that are not `click` with any payload, and `click` with payloads the
/// contract refuses.
fn body() -> impl Strategy<Value = String> {
    let event = prop_oneof![
        Just("\"message\"".to_string()),
        Just("\"join_conversation\"".to_string()),
        Just("\"typing\"".to_string()),
        Just("\"refresh\"".to_string()),
        Just("\"leave_conversation\"".to_string()),
        Just("\"nope\"".to_string()),
        Just("12".to_string()),
        Just("null".to_string()),
    ];
    let value = prop_oneof![
        Just("1e309".to_string()),
        Just("-99999999999999999999999999".to_string()),
        Just("\"\\ud800\"".to_string()),
        Just("{\"conversationId\": [1, 2]}".to_string()),
        Just("{\"conversationId\": \"a\", \"content\": {\"x\": 1}}".to_string()),
        Just("{\"token\": 5}".to_string()),
        (1usize..2_000).prop_map(|depth| format!("{}{}", "[".repeat(depth), "]".repeat(depth))),
        (1usize..2_000).prop_map(|depth| "{\"a\":".repeat(depth)),
        ".{0,40}",
    ];
    prop_oneof![
        (event, value.clone()).prop_map(|(event, value)| format!("[{event},{value}]")),
        value
            .clone()
            .prop_map(|value| format!("[\"click\",{value},{value}]")),
        Just("[\"click\",\"not an object\"]".to_string()),
        Just("[\"click\"".to_string()),
        Just("{\"_placeholder\":true,\"num\":0}]".to_string()),
        value,
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        8 => (prefix(), body()).prop_map(|(prefix, body)| Frame::Text(format!("{prefix}{body}"))),
        1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Frame::Binary),
    ]
}

/// A case: frames for a WebSocket and bytes (possibly not UTF-8) for a
/// polling POST.
fn case() -> impl Strategy<Value = (Vec<Frame>, Vec<u8>)> {
    (
        proptest::collection::vec(frame(), 1..12),
        prop_oneof![
            (prefix(), body()).prop_map(|(p, b)| format!("{p}{b}").into_bytes()),
            proptest::collection::vec(any::<u8>(), 0..64),
        ],
    )
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// An engine.io WebSocket joined to namespace `/`.
async fn joined_websocket(url: &str) -> Ws {
    let ws_url = format!(
        "{}/socket.io/?EIO=4&transport=websocket",
        url.replacen("http", "ws", 1)
    );
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(ws_url))
        .await
        .expect("the WebSocket handshake answers in time")
        .expect("the WebSocket opens");
    ws.send(Message::text("40")).await.unwrap();
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("the namespace answers in time")
            .expect("open")
            .unwrap();
        if matches!(&message, Message::Text(text) if text.starts_with("40")) {
            return ws;
        }
    }
}

/// A polling session's URL, joined to namespace `/`.
async fn polling_session(http: &reqwest::Client, url: &str) -> String {
    let base = format!("{url}/socket.io/?EIO=4&transport=polling");
    let open = http.get(&base).send().await.unwrap().text().await.unwrap();
    let open: serde_json::Value = serde_json::from_str(&open[1..]).unwrap();
    let session = format!("{base}&sid={}", open["sid"].as_str().unwrap());
    http.post(&session).body("40").send().await.unwrap();
    session
}

#[test]
fn generated_garbage_never_crashes_counts_or_disturbs_others() {
    // The server runs in this process, where a panic in one of its tasks
    // ends only that task: count every panic, so that one in a handler
    // fails the test even though the server goes on serving. (This is the
    // only test of this binary, so no other test's panics are counted.)
    let panics = common::count_panics();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = TempDb::new();
    let (server, bystander) = runtime.block_on(async {
        let server = TestServer::start(db.config()).await;
        let bystander = TestClient::connect(&server.url(), TransportType::Websocket).await;
        (server, bystander)
    });
    let url = server.url();
    let http = reqwest::Client::new();
    let config = ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |((frames, polling_body) in case())| {
        runtime.block_on(async {
            let mut ws = joined_websocket(&url).await;
            for frame in &frames {
                let message = match frame {
                    Frame::Text(text) => Message::text(text.clone()),
                    Frame::Binary(bytes) => Message::binary(bytes.clone()),
                };
                // The server may close the connection on garbage: fine.
                if ws.send(message).await.is_err() {
                    break;
                }
            }
            ws.close(None).await.ok();
            let session = polling_session(&http, &url).await;
            let answer = http.post(&session).body(polling_body.clone()).send().await.unwrap();
            // Garbage is refused or ignored, never a server error.
            assert!(answer.status().as_u16() < 500, "{}", answer.status());
        });
        // Nothing counted, and the bystander is still served.
        let counted = runtime.block_on(common::metric(&url, "tally_clicks_total"));
        prop_assert_eq!(counted, 0);
        let healthy = runtime.block_on(async {
            reqwest::get(format!("{url}/healthz")).await.unwrap().status().as_u16()
        });
        prop_assert_eq!(healthy, 200);
    });
    runtime.block_on(async {
        let total = tokio::time::timeout(Duration::from_secs(10), bystander.click_total())
            .await
            .expect("the bystander is still answered");
        assert_eq!(total, 1, "the only click counted is the bystander's");
        bystander.disconnect().await;
        server.stop().await.unwrap();
    });
    assert_eq!(
        panics.load(Ordering::SeqCst),
        0,
        "something panicked (above)"
    );
}
