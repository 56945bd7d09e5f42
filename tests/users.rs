//! Per-user counts, unique usernames, the leaderboard, and guest sessions.

mod common;

use std::time::Duration;

use common::{TempDb, TestClient, TestServer, TransportType};
use serde_json::{Value, json};
use tally::counter::CounterKey;

fn fast(db: &TempDb) -> tally::Config {
    let mut config = db.config();
    config.broadcast.leaderboard_interval = Duration::from_millis(50);
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

#[tokio::test]
async fn the_same_name_in_any_case_is_one_user_with_an_exact_count() {
    const CLIENTS: usize = 50;
    const CLICKS: u64 = 4;
    let db = TempDb::new();
    let server = TestServer::start(fast(&db)).await;

    // "crowd", "Crowd", "cRowd", ...: 50 clients, spelling one name in 32
    // distinct ways (5 letters give 2^5 casings), so some share a spelling.
    let spellings: Vec<String> = (0..CLIENTS)
        .map(|i| {
            "crowd"
                .chars()
                .enumerate()
                .map(|(j, c)| {
                    if (i >> j) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect()
        })
        .collect();
    let clients =
        futures_util::future::join_all(spellings.iter().map(|name| connect_as(&server, name)))
            .await;
    let acks = futures_util::future::join_all(clients.iter().map(|client| async move {
        let mut yours = Vec::new();
        for _ in 0..CLICKS {
            let ack = client.click().await;
            yours.push(ack["you"].as_u64().expect("an identified click acks `you`"));
        }
        yours
    }))
    .await;
    let mut yours: Vec<u64> = acks.into_iter().flatten().collect();
    yours.sort_unstable();
    let expected = CLIENTS as u64 * CLICKS;
    assert_eq!(
        yours,
        (1..=expected).collect::<Vec<_>>(),
        "every click counted once for the one user"
    );

    for client in clients {
        client.disconnect().await;
    }
    server.stop().await.unwrap();

    let users: Vec<(String, u64)> = common::stored(&db)
        .await
        .into_iter()
        .filter_map(|(key, total)| match key {
            CounterKey::User(name) => Some((name.to_string(), total)),
            CounterKey::Global | CounterKey::Room(_) => None,
        })
        .collect();
    assert_eq!(users.len(), 1, "one row for every spelling: {users:?}");
    assert_eq!(users[0].1, expected);
    assert!(
        spellings.contains(&users[0].0),
        "stored as one of the spellings written"
    );
    assert_eq!(common::stored_total(&db).await, expected);
}

#[tokio::test]
async fn per_user_counts_survive_a_restart_and_add_up_to_the_total() {
    let db = TempDb::new();
    let server = TestServer::start(fast(&db)).await;
    let ada = connect_as(&server, "Ada").await;
    let bob = connect_as(&server, "bob").await;
    let anonymous = TestClient::connect(&server.url(), TransportType::Polling).await;
    for _ in 0..3 {
        ada.click_total().await;
    }
    for _ in 0..5 {
        bob.click_total().await;
    }
    for _ in 0..4 {
        assert_eq!(anonymous.click().await["you"], Value::Null);
    }
    for client in [ada, bob, anonymous] {
        client.disconnect().await;
    }
    server.stop().await.unwrap();

    let server = TestServer::start(fast(&db)).await;
    let mut ada = connect_as(&server, "ADA").await;
    assert_eq!(ada.first_total().await, 12, "global = 4 anonymous + 3 + 5");
    // The greeting is `count`, then `leaderboard`, then `me`.
    let board = ada.wait_for_event("leaderboard", |_| true).await;
    assert_eq!(
        board,
        json!([
            {"username": "bob", "count": 5, "rank": 1},
            {"username": "Ada", "count": 3, "rank": 2},
        ])
    );
    let me = ada.wait_for_event("me", |_| true).await;
    assert_eq!(
        me,
        json!({"username": "Ada", "count": 3}),
        "the first spelling is kept"
    );
    assert_eq!(ada.click().await, json!({"total": 13, "you": 4}));
    ada.disconnect().await;
    server.stop().await.unwrap();

    let stored = common::stored(&db).await;
    let users: u64 = stored
        .iter()
        .filter(|(k, _)| matches!(k, CounterKey::User(_)))
        .map(|(_, t)| t)
        .sum();
    assert_eq!(common::stored_total(&db).await, 13);
    assert_eq!(users, 9, "13 = 4 anonymous + 9 by users");
}

#[tokio::test]
async fn a_users_count_reaches_all_their_tabs_and_the_leaderboard_reaches_everyone() {
    let db = TempDb::new();
    let server = TestServer::start(fast(&db)).await;
    let tab1 = connect_as(&server, "carol").await;
    let mut tab2 = TestClient::connect_as(
        &server.url(),
        TransportType::Polling,
        json!({"username": "Carol"}),
    )
    .await
    .unwrap();
    let mut watcher = TestClient::connect(&server.url(), TransportType::Websocket).await;
    // Everything the anonymous watcher receives is kept, to check below that
    // no `me` was among it.
    let mut watched = watcher.events_until("leaderboard", |_| true).await;
    assert_eq!(watched.last().unwrap().1, json!([]));

    assert_eq!(tab1.click().await, json!({"total": 1, "you": 1}));
    assert_eq!(tab1.click().await, json!({"total": 2, "you": 2}));
    tab2.wait_for_event("me", |me| me["count"] == 2).await;
    watched.extend(
        watcher
            .events_until("leaderboard", |board| board[0]["count"] == 2)
            .await,
    );
    assert_eq!(
        watched.last().unwrap().1,
        json!([{"username": "carol", "count": 2, "rank": 1}])
    );
    // Anonymous sockets get no `me`: not with the greeting, not with the
    // clicks, and not later.
    assert!(
        watched.iter().all(|(event, _)| event != "me"),
        "{watched:?}"
    );
    assert!(
        watcher
            .wait_for_event_within("me", Duration::from_millis(300), |_| true)
            .await
            .is_none()
    );

    for client in [tab1, tab2, watcher] {
        client.disconnect().await;
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_http_api_ranks_users_and_validates_input() {
    let db = TempDb::new();
    let server = TestServer::start(fast(&db)).await;
    for (name, clicks) in [("ada", 2), ("bob", 5), ("carol", 2)] {
        let client = connect_as(&server, name).await;
        for _ in 0..clicks {
            client.click_total().await;
        }
        client.disconnect().await;
    }
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{}{path}", server.url())).send();

    let board: Value = get("/api/leaderboard").await.unwrap().json().await.unwrap();
    assert_eq!(
        board,
        json!([
            {"username": "bob", "count": 5, "rank": 1},
            {"username": "ada", "count": 2, "rank": 2},
            {"username": "carol", "count": 2, "rank": 2},
        ])
    );
    let top1: Value = get("/api/leaderboard?limit=1")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(top1.as_array().unwrap().len(), 1);
    for bad in ["0", "101", "ten", "-1"] {
        let response = get(&format!("/api/leaderboard?limit={bad}")).await.unwrap();
        assert_eq!(response.status(), 400, "limit={bad}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "bad_request");
    }

    let carol = get("/api/users/CAROL").await.unwrap();
    assert_eq!(carol.status(), 200);
    assert_eq!(
        carol.json::<Value>().await.unwrap(),
        json!({"username": "carol", "count": 2, "rank": 2})
    );
    assert_eq!(get("/api/users/nobody").await.unwrap().status(), 404);
    let invalid = get("/api/users/no%20spaces").await.unwrap();
    assert_eq!(invalid.status(), 422);

    // Guest sessions: a token for a valid name, a 422 naming the rule otherwise.
    let session = |body: Value| {
        http.post(format!("{}/api/session", server.url()))
            .json(&body)
            .send()
    };
    let ok = session(json!({"username": "Dora"})).await.unwrap();
    assert_eq!(ok.status(), 200);
    let issued: Value = ok.json().await.unwrap();
    assert_eq!(issued["username"], "Dora");
    let mut dora = TestClient::connect_as(
        &server.url(),
        TransportType::Websocket,
        json!({"token": issued["token"]}),
    )
    .await
    .expect("an issued token is accepted");
    assert_eq!(
        dora.wait_for_event("me", |_| true).await,
        json!({"username": "Dora", "count": 0})
    );
    dora.disconnect().await;

    let bad = session(json!({"username": "<b>dora</b>"})).await.unwrap();
    assert_eq!(bad.status(), 422);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_username");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1 to 32 characters")
    );
    let malformed = http
        .post(format!("{}/api/session", server.url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);

    server.stop().await.unwrap();
}

#[tokio::test]
async fn invalid_usernames_are_refused_at_the_handshake() {
    let db = TempDb::new();
    let server = TestServer::start(fast(&db)).await;
    for bad in [
        json!({"username": "has space"}),
        json!({"username": ""}),
        json!({"username": "x".repeat(33)}),
    ] {
        let err = TestClient::connect_as(&server.url(), TransportType::Websocket, bad.clone())
            .await
            .err()
            .unwrap_or_else(|| panic!("{bad} must be refused"));
        assert!(err.contains("invalid username"), "{err}");
    }
    server.stop().await.unwrap();
}
