//! Conversations over Socket.IO: joining and leaving, room counters, chat
//! messages with history and catch-up, presence, typing, refusals, the
//! `conversations` claim, and that a room's events stay in that room.

mod common;

use std::time::Duration;

use common::{TempDb, TestClient, TestServer, TransportType};
use serde_json::{Value, json};
use tally::config::Secret;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn config(db: &TempDb) -> tally::Config {
    let mut config = db.config();
    config.auth.jwt_secret = Some(Secret(SECRET.into()));
    config
}

async fn connect_as(server: &TestServer, username: &str) -> TestClient {
    TestClient::connect_as(
        &server.url(),
        TransportType::Websocket,
        json!({ "username": username }),
    )
    .await
    .unwrap_or_else(|err| panic!("{username} connects: {err}"))
}

async fn join(client: &TestClient, id: &str) -> Value {
    let ack = client
        .emit_json("join_conversation", json!({ "conversationId": id }))
        .await;
    assert!(ack.get("error").is_none(), "join {id}: {ack}");
    ack
}

async fn say(client: &TestClient, id: &str, content: &str) -> Value {
    let ack = client
        .emit_json(
            "message",
            json!({ "conversationId": id, "content": content }),
        )
        .await;
    assert!(ack.get("error").is_none(), "message to {id}: {ack}");
    ack
}

fn code(ack: &Value) -> &str {
    ack["error"]["code"].as_str().unwrap_or("<no error>")
}

#[tokio::test]
async fn members_talk_see_presence_and_share_a_counter() {
    let db = TempDb::new();
    let server = TestServer::start(config(&db)).await;
    let mut ada = connect_as(&server, "ada").await;
    let mut bob = connect_as(&server, "bob").await;

    let joined = join(&ada, "lobby").await;
    assert_eq!(joined["conversationId"], "lobby");
    assert_eq!(joined["total"], 0);
    assert_eq!(joined["online"], 1);
    assert_eq!(joined["history"], json!([]));
    assert_eq!(joined["more"], false);

    let joined = join(&bob, "lobby").await;
    assert_eq!(joined["online"], 2);
    ada.wait_for_event("presence", |p| p["online"] == 2).await;

    // A message: stored, acknowledged, and sent to every member in the
    // design's schema.
    let ack = say(&ada, "lobby", "  hello <b>bob</b>\n").await;
    let id = ack["messageId"].as_str().unwrap().to_string();
    let timestamp = ack["timestamp"].as_str().unwrap().to_string();
    assert!(
        timestamp.ends_with('Z') && timestamp.len() == 24,
        "{timestamp}"
    );
    let received = bob
        .wait_for_event("message", |m| m["messageId"] == id.as_str())
        .await;
    assert_eq!(
        received,
        json!({
            "type": "message",
            "conversationId": "lobby",
            "userId": "ada",
            "content": "hello <b>bob</b>",
            "timestamp": timestamp,
            "messageId": id,
        }),
        "trimmed, HTML left as text for the client to show as text"
    );
    ada.wait_for_event("message", |m| m["messageId"] == id.as_str())
        .await;

    // Typing reaches the others, not the typist.
    let ack = bob
        .emit_json("typing", json!({ "conversationId": "lobby" }))
        .await;
    assert_eq!(ack, json!({ "ok": true }));
    let typing = ada.wait_for_event("typing", |_| true).await;
    assert_eq!(
        typing,
        json!({ "conversationId": "lobby", "userId": "bob" })
    );

    // A click in the conversation moves the global total, the user's count
    // and the room's, and the room hears its new total.
    let before = ada.click_total().await;
    let ack = bob
        .emit_json("click", json!({ "conversationId": "lobby" }))
        .await;
    assert_eq!(ack["total"], before + 1);
    assert_eq!(ack["you"], 1);
    assert_eq!(
        ack["conversation"],
        json!({ "conversationId": "lobby", "total": 1 })
    );
    ada.wait_for_event("room_count", |c| c["total"] == 1).await;
    assert_eq!(
        join(&ada, "lobby").await["total"],
        1,
        "joining twice is fine"
    );

    // Leaving: presence drops; leaving again is not an error.
    let left = bob
        .emit_json("leave_conversation", json!({ "conversationId": "lobby" }))
        .await;
    assert_eq!(left, json!({ "ok": true }));
    ada.wait_for_event("presence", |p| p["online"] == 1).await;
    let again = bob
        .emit_json("leave_conversation", json!({ "conversationId": "lobby" }))
        .await;
    assert_eq!(again, json!({ "ok": true }));
    let refused = bob
        .emit_json(
            "message",
            json!({ "conversationId": "lobby", "content": "hi" }),
        )
        .await;
    assert_eq!(code(&refused), "not_a_member");

    // A disconnect is a leave too.
    join(&bob, "lobby").await;
    ada.wait_for_event("presence", |p| p["online"] == 2).await;
    bob.disconnect().await;
    ada.wait_for_event("presence", |p| p["online"] == 1).await;

    ada.disconnect().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn nothing_of_one_conversation_reaches_another() {
    let db = TempDb::new();
    let server = TestServer::start(config(&db)).await;
    let mut ada = connect_as(&server, "ada").await;
    let ann = connect_as(&server, "ann").await;
    let mut bob = connect_as(&server, "bob").await;
    join(&ada, "room-a").await;
    join(&ann, "room-a").await;
    join(&bob, "room-b").await;

    say(&ada, "room-a", "for room a only").await;
    ada.emit_json("typing", json!({ "conversationId": "room-a" }))
        .await;
    ada.emit_json("click", json!({ "conversationId": "room-a" }))
        .await;
    ann.emit_json("leave_conversation", json!({ "conversationId": "room-a" }))
        .await;
    // Room A's throttled updates have gone out once Ada has them; had Bob
    // been sent a copy, it would have gone out with hers.
    ada.wait_for_event("room_count", |c| c["total"] == 1).await;
    ada.wait_for_event("presence", |p| p["online"] == 1).await;
    // Bob's own message is the marker: everything room A caused was sent
    // before it, so it would have arrived before it.
    let marker = say(&bob, "room-b", "marker").await;
    let seen = bob
        .events_until("message", |m| m["messageId"] == marker["messageId"])
        .await;
    for (event, payload) in &seen {
        assert_ne!(
            payload["conversationId"], "room-a",
            "bob in room-b received {event} {payload}"
        );
    }
    // A click in a conversation still moves the global total, which
    // everyone sees (`count` 1; bob's greeting said 0).
    assert!(
        seen.iter()
            .any(|(event, payload)| event == "count" && payload["total"] == 1),
        "{seen:?}"
    );

    for client in [ada, ann, bob] {
        client.disconnect().await;
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn every_bad_event_is_refused_with_its_code_and_counts_nothing() {
    let db = TempDb::new();
    let server = TestServer::start(config(&db)).await;
    let ada = connect_as(&server, "ada").await;
    let anonymous = TestClient::connect(&server.url(), TransportType::Websocket).await;
    join(&ada, "c").await;
    join(&anonymous, "c").await;
    let before = ada.click_total().await;

    let long = "x".repeat(2001);
    let cases: Vec<(&TestClient, &str, Value, &str)> = vec![
        (&ada, "join_conversation", json!({}), "invalid_payload"),
        (&ada, "join_conversation", json!("c"), "invalid_payload"),
        (
            &ada,
            "join_conversation",
            json!({ "conversationId": 7 }),
            "invalid_payload",
        ),
        (
            &ada,
            "join_conversation",
            json!({ "conversationId": "" }),
            "invalid_conversation",
        ),
        (
            &ada,
            "join_conversation",
            json!({ "conversationId": "a b" }),
            "invalid_conversation",
        ),
        (
            &ada,
            "join_conversation",
            json!({ "conversationId": "x".repeat(65) }),
            "invalid_conversation",
        ),
        (
            &ada,
            "join_conversation",
            json!({ "conversationId": "c", "since": "nope" }),
            "invalid_payload",
        ),
        (
            &ada,
            "leave_conversation",
            json!({ "conversationId": "a/b" }),
            "invalid_conversation",
        ),
        (
            &ada,
            "message",
            json!({ "conversationId": "c" }),
            "invalid_payload",
        ),
        (
            &ada,
            "message",
            json!({ "conversationId": "c", "content": "" }),
            "invalid_payload",
        ),
        (
            &ada,
            "message",
            json!({ "conversationId": "c", "content": " \n\t " }),
            "invalid_payload",
        ),
        (
            &ada,
            "message",
            json!({ "conversationId": "c", "content": long }),
            "too_long",
        ),
        (
            &ada,
            "message",
            json!({ "conversationId": "c", "content": "bell\u{7}" }),
            "invalid_payload",
        ),
        (
            &ada,
            "message",
            json!({ "conversationId": "c", "content": "report\u{202E}exe.txt" }),
            "invalid_payload",
        ),
        (
            &ada,
            "message",
            json!({ "conversationId": "c", "content": format!("z{}", "\u{336}".repeat(40)) }),
            "invalid_payload",
        ),
        (
            &ada,
            "message",
            json!({ "conversationId": "c", "content": 42 }),
            "invalid_payload",
        ),
        (
            &ada,
            "message",
            json!({ "content": "hi" }),
            "invalid_payload",
        ),
        (
            &ada,
            "message",
            json!({ "conversationId": "elsewhere", "content": "hi" }),
            "not_a_member",
        ),
        (
            &ada,
            "message",
            json!({ "conversationId": "bad id", "content": "hi" }),
            "invalid_conversation",
        ),
        (
            &anonymous,
            "message",
            json!({ "conversationId": "c", "content": "hi" }),
            "login_required",
        ),
        (
            &anonymous,
            "typing",
            json!({ "conversationId": "c" }),
            "login_required",
        ),
        (
            &ada,
            "typing",
            json!({ "conversationId": "elsewhere" }),
            "not_a_member",
        ),
        (
            &ada,
            "click",
            json!({ "conversationId": "elsewhere" }),
            "not_a_member",
        ),
        (
            &ada,
            "click",
            json!({ "conversationId": "bad id" }),
            "invalid_conversation",
        ),
        (
            &ada,
            "click",
            json!({ "conversationId": "c", "extra": 1 }),
            "bad_request",
        ),
    ];
    for (client, event, payload, expected) in &cases {
        let ack = client.emit_json(event, payload.clone()).await;
        assert_eq!(code(&ack), *expected, "{event} {payload} → {ack}");
        assert!(ack["error"]["message"].is_string());
    }
    // Nothing was counted or stored, and both sockets are still connected.
    assert_eq!(ada.click_total().await, before + 1);
    assert_eq!(anonymous.click_total().await, before + 2);
    let joined = join(&anonymous, "c").await;
    assert_eq!(
        joined["history"],
        json!([]),
        "no refused message was stored"
    );
    assert_eq!(joined["total"], 0);

    ada.disconnect().await;
    anonymous.disconnect().await;
    server.stop().await.unwrap();
}

fn token(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn the_conversations_claim_limits_what_a_token_may_join() {
    let db = TempDb::new();
    let server = TestServer::start(config(&db)).await;
    let exp = tally::clock::unix_now() + 600;
    let limited = TestClient::connect_as(
        &server.url(),
        TransportType::Websocket,
        json!({ "token": token(json!({ "sub": "ada", "exp": exp, "conversations": ["coach:ada"] })) }),
    )
    .await
    .unwrap();
    join(&limited, "coach:ada").await;
    let refused = limited
        .emit_json(
            "join_conversation",
            json!({ "conversationId": "coach:bob" }),
        )
        .await;
    assert_eq!(code(&refused), "forbidden");

    let unlimited = TestClient::connect_as(
        &server.url(),
        TransportType::Websocket,
        json!({ "token": token(json!({ "sub": "bob", "exp": exp })) }),
    )
    .await
    .unwrap();
    join(&unlimited, "coach:bob").await;
    join(&unlimited, "anything").await;

    let broken = TestClient::connect_as(
        &server.url(),
        TransportType::Websocket,
        json!({ "token": token(json!({ "sub": "eve", "exp": exp, "conversations": ["not valid"] })) }),
    )
    .await;
    assert!(broken.is_err(), "a token with a malformed claim is refused");

    // A refresh may extend the session, not change its conversations.
    let same = token(json!({ "sub": "ada", "exp": exp + 60, "conversations": ["coach:ada"] }));
    let ack = limited.emit_json("refresh", json!({ "token": same })).await;
    assert_eq!(ack["expires_at"], exp + 60, "{ack}");
    let wider = token(json!({ "sub": "ada", "exp": exp + 60 }));
    let ack = limited
        .emit_json("refresh", json!({ "token": wider }))
        .await;
    assert_eq!(code(&ack), "conversations_changed");

    limited.disconnect().await;
    unlimited.disconnect().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_reconnecting_client_catches_up_on_exactly_what_it_missed() {
    let db = TempDb::new();
    let mut config = config(&db);
    config.conversations.history_size = 3;
    let server = TestServer::start(config).await;
    let ada = connect_as(&server, "ada").await;
    join(&ada, "c").await;
    let first = say(&ada, "c", "seen before the drop").await;

    // Seven messages while the other client is away.
    let mut missed = Vec::new();
    for i in 0..7 {
        missed.push(say(&ada, "c", &format!("missed {i}")).await["messageId"].clone());
    }

    let back = connect_as(&server, "bob").await;
    let mut since = first["messageId"].clone();
    let mut caught_up = Vec::new();
    let mut pages = 0;
    loop {
        let ack = back
            .emit_json(
                "join_conversation",
                json!({ "conversationId": "c", "since": since }),
            )
            .await;
        let history = ack["history"].as_array().unwrap().clone();
        assert!(history.len() <= 3, "at most --history-size per page");
        pages += 1;
        caught_up.extend(history.iter().map(|m| m["messageId"].clone()));
        if ack["more"] == false {
            break;
        }
        since = history.last().unwrap()["messageId"].clone();
    }
    assert_eq!(caught_up, missed, "every missed message once, in order");
    assert_eq!(pages, 3);

    // Without `since`: the latest page, oldest first, and `more`.
    let latest = join(&back, "c").await;
    let latest: Vec<Value> = latest["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["messageId"].clone())
        .collect();
    assert_eq!(latest, missed[4..]);

    ada.disconnect().await;
    back.disconnect().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn room_totals_and_history_survive_a_restart_exactly() {
    let db = TempDb::new();
    let server = TestServer::start(config(&db)).await;
    let ada = connect_as(&server, "ada").await;
    join(&ada, "keep").await;
    for _ in 0..5 {
        ada.emit_json("click", json!({ "conversationId": "keep" }))
            .await;
    }
    let said = say(&ada, "keep", "remember me").await;
    ada.disconnect().await;
    server.stop().await.unwrap();

    let server = TestServer::start(config(&db)).await;
    let bob = connect_as(&server, "bob").await;
    let joined = join(&bob, "keep").await;
    assert_eq!(joined["total"], 5);
    assert_eq!(joined["history"][0]["messageId"], said["messageId"]);
    assert_eq!(joined["history"][0]["content"], "remember me");
    bob.disconnect().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn with_broadcast_interval_zero_presence_and_room_counts_are_sent_at_once() {
    let db = TempDb::new();
    let mut config = config(&db);
    config.broadcast.interval = Duration::ZERO;
    let server = TestServer::start(config).await;
    let mut ada = connect_as(&server, "ada").await;
    let bob = connect_as(&server, "bob").await;
    join(&ada, "z").await;
    join(&bob, "z").await;
    ada.wait_for_event("presence", |p| p["online"] == 2).await;
    bob.emit_json("click", json!({ "conversationId": "z" }))
        .await;
    ada.wait_for_event("room_count", |c| c["total"] == 1).await;
    ada.disconnect().await;
    bob.disconnect().await;
    server.stop().await.unwrap();
}
