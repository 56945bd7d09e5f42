//! The handlers' validation, fuzzed: every client event, sent by the
//! official protocol to a real server with generated payloads (any JSON:
//! wrong types, huge and odd numbers, any Unicode, the fields the handlers
//! read with values near and past their rules), must be answered, and the
//! answer must be a success or a typed refusal `{"error": {"code",
//! "message"}}` with a code from tally's list, never silence, never a
//! panic. (`tests/hostile.rs` fuzzes the layer below: malformed packets.)

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{TempDb, TestClient, TestServer};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use strum::VariantArray;
use tally::events::ClientEvent;
use tally::refusal::Code;

/// Strings the validation rules care about, and any others.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("c".to_string()),
        Just("ada".to_string()),
        Just("x".repeat(65)),
        Just("y".repeat(2_001)),
        Just("a\u{202E}b".to_string()),
        Just("e\u{301}".to_string()),
        Just(format!("z{}", "\u{336}".repeat(9))),
        Just("00000000-0000-0000-0000-000000000000".to_string()),
        Just("eyJhbGciOiJub25lIn0.e30.".to_string()),
        "\\PC{0,24}",
        any::<String>(),
    ]
}

/// Any JSON, biased towards the fields the handlers read.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        let key = prop_oneof![
            Just("conversationId".to_string()),
            Just("content".to_string()),
            Just("token".to_string()),
            Just("since".to_string()),
            Just("typing".to_string()),
            "[a-z]{1,8}",
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(key, inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A payload for `event`: mostly an object with its own fields, or any
/// value at all.
fn payload() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => (text(), text(), json_value()).prop_map(|(room, content, extra)| {
            json!({"conversationId": room, "content": content, "since": extra})
        }),
        1 => (text(), json_value()).prop_map(|(room, typing)| json!({"conversationId": room, "typing": typing})),
        1 => text().prop_map(|token| json!({"token": token})),
        3 => json_value(),
    ]
}

/// Generated cases, each sending every event once.
const CASES: u32 = 256;

#[test]
fn every_event_with_any_payload_gets_a_success_or_a_typed_refusal() {
    // The server runs in this process: count panics in its tasks, which
    // would otherwise end only the task. (The only test of this binary.)
    let panics = common::count_panics();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = TempDb::new();
    let (server, client) = runtime.block_on(async {
        let server = TestServer::start(db.config()).await;
        let client = TestClient::named(&server.url(), "fuzz").await;
        // Member of one conversation, so member-only paths are reached too.
        client
            .emit_json("join_conversation", json!({"conversationId": "c"}))
            .await;
        (server, client)
    });
    let answered = AtomicUsize::new(0);
    let codes: BTreeSet<&str> = Code::VARIANTS.iter().map(|code| code.as_str()).collect();
    let config = ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(payloads in proptest::collection::vec(payload(), ClientEvent::ALL.len()))| {
        for (event, payload) in ClientEvent::ALL.iter().zip(payloads) {
            // Leaving the one joined conversation would leave the fuzzer
            // outside every member-only path for the rest of the run.
            if *event == ClientEvent::LeaveConversation
                && payload.get("conversationId") == Some(&json!("c"))
            {
                continue;
            }
            let ack = runtime.block_on(client.try_emit_with_ack(
                event.name(),
                rust_socketio::Payload::Text(vec![payload.clone()]),
                Duration::from_secs(5),
            ));
            let ack = ack.unwrap_or_else(|| panic!("no answer to {} {payload}", event.name()));
            answered.fetch_add(1, Ordering::SeqCst);
            if let Some(error) = ack.get("error") {
                let code = error["code"].as_str().unwrap_or_default();
                prop_assert!(codes.contains(code), "{} {payload} → unknown code {ack}", event.name());
                prop_assert!(error["message"].is_string(), "{ack}");
                prop_assert!(code != "internal", "{} {} → {}", event.name(), payload, ack);
            } else {
                prop_assert!(ack.is_object(), "{} {payload} → {ack}", event.name());
            }
        }
        prop_assert_eq!(panics.load(Ordering::SeqCst), 0);
    });
    // Every case sent every event but, at times, one `leave_conversation`.
    let answered = answered.load(Ordering::SeqCst);
    let least = CASES as usize * (ClientEvent::ALL.len() - 1);
    assert!(
        answered >= least,
        "{answered} answers, expected at least {least}"
    );
    runtime.block_on(async {
        client.disconnect().await;
        server.stop().await.unwrap();
    });
}
