//! Rate limits and connection caps, attacked: a script clicking far too
//! fast, a user with many tabs, a socket that will not stop, and too many
//! connections in total and from one address.

mod common;

use common::{TempDb, TestClient, TestServer, TransportType};
use serde_json::{Value, json};
use tally::config::Limit;

fn limit(raw: &str) -> Limit {
    raw.parse().unwrap()
}

/// Clicks `times` times as fast as acks come back; returns the acks.
async fn clicks(client: &TestClient, times: usize) -> Vec<Value> {
    let mut acks = Vec::new();
    for _ in 0..times {
        acks.push(client.click().await);
    }
    acks
}

fn limited(acks: &[Value]) -> usize {
    acks.iter()
        .filter(|ack| ack["error"]["code"] == "rate_limited")
        .count()
}

#[tokio::test]
async fn clicks_over_the_limit_are_refused_with_a_retry_time_and_not_counted() {
    let db = TempDb::new();
    let mut config = db.config();
    config.limits.click = limit("2:5");
    let server = TestServer::start(config).await;
    let ada = TestClient::named(&server.url(), "ada").await;

    let acks = clicks(&ada, 20).await;
    let counted: Vec<u64> = acks
        .iter()
        .filter_map(|ack| ack["total"].as_u64())
        .collect();
    assert!(counted.len() >= 5, "the burst passes: {acks:?}");
    assert!(counted.len() < 20, "a script is held back: {acks:?}");
    assert_eq!(limited(&acks), 20 - counted.len());
    let refusal = acks.iter().find(|ack| ack.get("error").is_some()).unwrap();
    let retry = refusal["error"]["retryAfterMs"].as_u64().unwrap();
    assert!((1..=500).contains(&retry), "{refusal}");
    // Only the accepted clicks counted, globally and for the user.
    let last = *counted.last().unwrap();
    assert_eq!(last, counted.len() as u64);
    let me = reqwest::get(format!("{}/api/users/ada", server.url()))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(me["count"], counted.len());

    ada.disconnect().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_user_gets_one_budget_however_many_tabs_they_open() {
    let db = TempDb::new();
    let mut config = db.config();
    config.limits.click = limit("1:6");
    let server = TestServer::start(config).await;
    let tabs = [
        TestClient::named(&server.url(), "ada").await,
        TestClient::named(&server.url(), "ADA").await,
        TestClient::named(&server.url(), "Ada").await,
    ];
    let mut accepted = 0;
    let started = std::time::Instant::now();
    for _ in 0..4 {
        for tab in &tabs {
            if tab.click().await["total"].is_u64() {
                accepted += 1;
            }
        }
    }
    // Twelve clicks, three tabs: the user's burst of six passes, plus one
    // token per second it took — not six per tab.
    let refilled = started.elapsed().as_secs() + 1;
    assert!(
        (6..=6 + refilled).contains(&accepted),
        "{accepted} clicks accepted in {:?}",
        started.elapsed()
    );
    let bob = TestClient::named(&server.url(), "bob").await;
    assert!(
        bob.click().await["total"].is_u64(),
        "another user is not affected"
    );
    for tab in tabs {
        tab.disconnect().await;
    }
    bob.disconnect().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_socket_that_will_not_stop_is_disconnected() {
    let db = TempDb::new();
    let mut config = db.config();
    config.limits.click = limit("1:2");
    let server = TestServer::start(config).await;
    let mut script = TestClient::connect(&server.url(), TransportType::Websocket).await;
    // Fire and forget, far over the limit: 2 pass, 20 refusals are
    // tolerated (ten bursts), the next one disconnects.
    for _ in 0..40 {
        if script
            .client
            .emit("click", rust_socketio::Payload::Text(vec![]))
            .await
            .is_err()
        {
            break;
        }
    }
    script.wait_for_event("close", |_| true).await;
    let metrics = reqwest::get(format!("{}/metrics", server.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tally_abusive_disconnects_total 1"),
        "{metrics}"
    );
    let refused: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("tally_rate_limited_total{event=\"click\"} "))
        .unwrap()
        .parse()
        .unwrap();
    // The 21st refusal cut it off; events already sent were refused too.
    assert!(refused >= 21.0, "{metrics}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn conversation_events_share_the_limiter() {
    let db = TempDb::new();
    let mut config = db.config();
    config.limits.message = limit("1:2");
    config.limits.join = limit("1:3");
    let server = TestServer::start(config).await;
    let ada = TestClient::named(&server.url(), "ada").await;
    // Bob is in c0 first and watches what reaches it.
    let mut bob = TestClient::named(&server.url(), "bob").await;
    bob.emit_json("join_conversation", json!({"conversationId": "c0"}))
        .await;
    let mut joins = Vec::new();
    for i in 0..5 {
        joins.push(
            ada.emit_json(
                "join_conversation",
                json!({"conversationId": format!("c{i}")}),
            )
            .await,
        );
    }
    assert!(limited(&joins) >= 1, "{joins:?}");
    let mut messages = Vec::new();
    for i in 0..4 {
        messages.push(
            ada.emit_json(
                "message",
                json!({"conversationId": "c0", "content": format!("m{i}")}),
            )
            .await,
        );
    }
    assert!(messages[0]["messageId"].is_string());
    assert!(limited(&messages) >= 1, "{messages:?}");

    // A refused message is neither relayed nor stored: bob received, and
    // c0's history holds, exactly the acknowledged ones (bob's own message
    // is the marker: ada's were sent before it).
    let accepted: Vec<String> = (0..4)
        .filter(|i| messages[*i]["messageId"].is_string())
        .map(|i| format!("m{i}"))
        .collect();
    let marker = bob
        .emit_json(
            "message",
            json!({"conversationId": "c0", "content": "marker"}),
        )
        .await;
    let relayed: Vec<String> = bob
        .events_until("message", |m| m["messageId"] == marker["messageId"])
        .await
        .into_iter()
        .filter(|(event, m)| event == "message" && m["userId"] == "ada")
        .map(|(_, m)| m["content"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(relayed, accepted);
    // (Read by a newcomer: bob's joins are limited too.)
    let cy = TestClient::named(&server.url(), "cy").await;
    let history = cy
        .emit_json("join_conversation", json!({"conversationId": "c0"}))
        .await;
    let stored: Vec<&str> = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["userId"] == "ada")
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(stored, accepted);
    // A refused join left ada out of that conversation: where it was
    // refused she is not a member, where it was accepted she is.
    for (i, join) in joins.iter().enumerate() {
        let typing = ada
            .emit_json("typing", json!({"conversationId": format!("c{i}")}))
            .await;
        let expected = if join["error"]["code"] == "rate_limited" {
            json!("not_a_member")
        } else {
            Value::Null
        };
        assert_eq!(
            typing["error"]["code"], expected,
            "c{i}: {join} then {typing}"
        );
    }
    ada.disconnect().await;
    bob.disconnect().await;
    cy.disconnect().await;
    server.stop().await.unwrap();
}

/// The status and JSON of opening an engine.io session over polling, as a
/// client would, from this test's address (with `headers`).
async fn open_session(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request =
        reqwest::Client::new().get(format!("{url}/socket.io/?EIO=4&transport=polling"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn connections_over_a_cap_are_refused_before_engine_io_sees_them() {
    let db = TempDb::new();
    let mut config = db.config();
    config.caps.max_connections = 2;
    let server = TestServer::start(config).await;
    let first = TestClient::connect(&server.url(), TransportType::Websocket).await;
    let second = TestClient::connect(&server.url(), TransportType::Polling).await;
    let (status, body) = open_session(&server.url(), &[]).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("server_full"), "{body}");
    // The connected ones carry on (their requests carry a `sid`).
    assert_eq!(second.click_total().await, 1);
    first.disconnect().await;
    second.disconnect().await;
    server.stop().await.unwrap();
}

/// Joins the namespace on an open polling session: the server's answer to
/// the `40` connect packet (the first Socket.IO packet of the reply, which
/// may also hold an engine.io ping and the greeting events).
async fn join_namespace(url: &str, open: &str) -> String {
    let open: Value = serde_json::from_str(open.trim_start_matches('0')).unwrap();
    let session = format!(
        "{url}/socket.io/?EIO=4&transport=polling&sid={}",
        open["sid"].as_str().unwrap()
    );
    let http = reqwest::Client::new();
    let posted = http.post(&session).body("40").send().await.unwrap();
    assert_eq!(posted.status(), 200);
    let reply = tokio::time::timeout(common::WAIT, async {
        http.get(&session)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    })
    .await
    .expect("the server answers the connect packet");
    reply
        .split('\u{1e}')
        .find(|packet| packet.starts_with('4'))
        .unwrap_or_else(|| panic!("no Socket.IO packet in {reply:?}"))
        .to_string()
}

#[tokio::test]
async fn sessions_hold_their_place_from_the_moment_they_open() {
    // An engine.io session that has not joined the namespace still costs
    // the server its heartbeat and its request head: it counts against the
    // caps from the moment it opens, and its place becomes its socket's
    // when it joins.
    let db = TempDb::new();
    let mut config = db.config();
    config.caps.max_connections_per_ip = 2;
    let server = TestServer::start(config).await;
    let mut opened = Vec::new();
    for _ in 0..2 {
        let (status, body) = open_session(&server.url(), &[]).await;
        assert_eq!(status, 200, "{body}");
        opened.push(body);
    }
    let (status, body) = open_session(&server.url(), &[]).await;
    assert_eq!(status, 503, "the third is refused before it opens: {body}");
    assert!(body.contains("too_many_connections"), "{body}");
    for open in &opened {
        let answer = join_namespace(&server.url(), open).await;
        assert!(
            answer.starts_with("40{"),
            "joining does not count twice: {answer}"
        );
    }
    let (status, _) = open_session(&server.url(), &[]).await;
    assert_eq!(status, 503, "the joined sockets keep their places");
    server.stop().await.unwrap();
}

/// Opens an engine.io session over polling with `http`: the status and
/// the session's id, if it opened.
async fn open_with(http: &reqwest::Client, url: &str) -> (u16, Option<String>) {
    let response = http
        .get(format!("{url}/socket.io/?EIO=4&transport=polling"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    let sid = serde_json::from_str::<Value>(body.trim_start_matches('0'))
        .ok()
        .and_then(|open| Some(open["sid"].as_str()?.to_string()));
    (status, sid)
}

#[tokio::test]
async fn sessions_that_never_join_cannot_pile_up_and_are_closed_at_the_connect_timeout() {
    let db = TempDb::new();
    let mut config = db.config();
    config.caps.max_connections_per_ip = 20;
    // Long enough that none expires while the test opens its thousand.
    config.caps.connect_timeout = std::time::Duration::from_secs(120);
    let server = TestServer::start(config.clone()).await;
    let http = reqwest::Client::new();
    let mut held = 0;
    for _ in 0..1_000 {
        match open_with(&http, &server.url()).await {
            (200, Some(_)) => held += 1,
            (503, None) => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(held, 20, "at most the per-address cap is held at once");
    server.stop().await.unwrap();

    // At the connect timeout a session that never joined is closed (its
    // sid is no longer known) and its place is free again.
    config.caps.max_connections_per_ip = 1;
    config.caps.connect_timeout = std::time::Duration::from_secs(1);
    let server = TestServer::start(config).await;
    let url = server.url();
    let (status, sid) = open_with(&http, &url).await;
    assert_eq!(status, 200);
    let sid = sid.unwrap();
    assert_eq!(open_with(&http, &url).await.0, 503);
    tokio::time::timeout(common::WAIT, async {
        loop {
            let known = http
                .get(format!(
                    "{url}/socket.io/?EIO=4&transport=polling&sid={sid}"
                ))
                .send()
                .await
                .unwrap()
                .status()
                != 400;
            if !known && open_with(&http, &url).await.0 == 200 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("a session that never joined is closed and its place freed");
    server.stop().await.unwrap();
}

/// Polls `/metrics` until `done` holds of the sum of each of `names`, or
/// fails after [`common::WAIT`].
async fn metrics_until(url: &str, names: &[&str], done: impl Fn(&[u64]) -> bool) -> Vec<u64> {
    tokio::time::timeout(common::WAIT, async {
        loop {
            let mut values = Vec::new();
            for name in names {
                values.push(common::metric(url, name).await);
            }
            if done(&values) {
                return values;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{names:?} never reached the state the test waits for"))
}

// One worker: tokio runs the task spawned last (the disconnect handler)
// before the ones queued before it (the clicks), the order an attacker
// hopes for on a busy server.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn clicks_sent_with_the_disconnect_meet_the_same_buckets() {
    // One polling POST carries thousands of clicks and the disconnect: socketioxide handles each event in a task of its
    // own, so some clicks are handled after the disconnect; they must still
    // meet the socket's buckets, never fresh ones.
    let db = TempDb::new();
    let mut config = db.config();
    // A burst under a tenth of the clicks, so that the socket is not cut
    // off as abusive halfway (which would drop the clicks not yet read).
    config.limits.click = limit("20:400");
    let server = TestServer::start(config).await;
    let url = server.url();
    let (status, open) = open_session(&url, &[]).await;
    assert_eq!(status, 200, "{open}");
    let joined = join_namespace(&url, &open).await;
    assert!(joined.starts_with("40{"), "{joined}");
    let open: Value = serde_json::from_str(open.trim_start_matches('0')).unwrap();
    let session = format!(
        "{url}/socket.io/?EIO=4&transport=polling&sid={}",
        open["sid"].as_str().unwrap()
    );
    const CLICKS: u64 = 3_000;
    let mut body = String::new();
    for _ in 0..CLICKS {
        body.push_str("42[\"click\"]\u{1e}");
    }
    body.push_str("41");
    let started = std::time::Instant::now();
    let posted = reqwest::Client::new()
        .post(&session)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    // Every click the server read was either counted or refused.
    let [counted, refused] = metrics_until(
        &url,
        &["tally_clicks_total", "tally_rate_limited_total"],
        |values| values[0] + values[1] >= CLICKS,
    )
    .await[..] else {
        unreachable!()
    };
    let elapsed = started.elapsed().as_secs() + 1;
    assert_eq!(counted + refused, CLICKS);
    assert!(
        (1..=400 + 20 * elapsed).contains(&counted),
        "at most the burst and what refilled in {elapsed} s may count: {counted} counted"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn ipv4_clients_of_a_dual_stack_listener_are_ipv4_to_the_proxies_and_caps() {
    // On `[::]`, an IPv4 peer arrives as `::ffff:127.0.0.1`: the proxy rule
    // and the per-address caps must still see 127.0.0.1.
    let db = TempDb::new();
    let mut config = db.config();
    config.addr = "[::]:0".parse().unwrap();
    config.caps.max_connections_per_ip = 1;
    config.caps.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let server = TestServer::start(config).await;
    let url = format!("http://127.0.0.1:{}", server.addr.port());
    let a = TestClient::connect_with_headers(
        &url,
        TransportType::Websocket,
        &[("x-forwarded-for", "203.0.113.1")],
    )
    .await
    .unwrap();
    let b = TestClient::connect_with_headers(
        &url,
        TransportType::Polling,
        &[("x-forwarded-for", "203.0.113.2")],
    )
    .await
    .expect("a second client behind the proxy has its own allowance");
    let (status, body) = open_session(&url, &[("x-forwarded-for", "203.0.113.1")]).await;
    assert_eq!(status, 503, "the first client is at its cap: {body}");
    a.disconnect().await;
    b.disconnect().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn one_ipv6_network_counts_as_one_client() {
    let db = TempDb::new();
    let mut config = db.config();
    config.caps.max_connections_per_ip = 1;
    config.caps.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let server = TestServer::start(config.clone()).await;
    let url = server.url();
    let (status, _) = open_session(&url, &[("x-forwarded-for", "2001:db8:1:2::1")]).await;
    assert_eq!(status, 200);
    let (status, body) = open_session(&url, &[("x-forwarded-for", "2001:db8:1:2:ffff::9")]).await;
    assert_eq!(status, 503, "the same /64: {body}");
    let (status, _) = open_session(&url, &[("x-forwarded-for", "2001:db8:1:3::1")]).await;
    assert_eq!(status, 200, "another /64");
    server.stop().await.unwrap();
    // With `--ipv6-prefix 128`, each address on its own.
    config.caps.ipv6_prefix = 128;
    let server = TestServer::start(config).await;
    let url = server.url();
    for address in ["2001:db8:1:2::1", "2001:db8:1:2::2"] {
        let (status, _) = open_session(&url, &[("x-forwarded-for", address)]).await;
        assert_eq!(status, 200, "{address}");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn one_address_creates_names_and_conversations_only_so_fast() {
    let db = TempDb::new();
    let mut config = db.config();
    config.limits.new_name = limit("1:3");
    config.limits.new_conversation = limit("1:2");
    let server = TestServer::start(config).await;
    let url = server.url();
    // Five new names from one address: the burst of three is created.
    let mut created = Vec::new();
    let mut refusals = Vec::new();
    for i in 0..5 {
        let client = TestClient::named(&url, &format!("junk{i}")).await;
        let ack = client.click().await;
        if ack["total"].is_u64() {
            created.push(client);
        } else {
            refusals.push(ack);
            client.disconnect().await;
        }
    }
    assert_eq!(created.len(), 3, "{refusals:?}");
    for refusal in &refusals {
        assert_eq!(refusal["error"]["code"], "rate_limited", "{refusal}");
        assert!(refusal["error"]["retryAfterMs"].as_u64().unwrap() >= 1);
    }
    // A name that exists clicks on, unlimited by this.
    for _ in 0..5 {
        assert!(created[0].click().await["total"].is_u64());
    }
    let me = reqwest::get(format!("{url}/api/users/junk4"))
        .await
        .unwrap();
    assert_eq!(me.status(), 404, "the refused name was not created");

    // Conversations: a burst of two, then refused; an existing one goes on.
    let ada = &created[0];
    let mut acks = Vec::new();
    for room in ["r1", "r2", "r3"] {
        ada.emit_json("join_conversation", json!({"conversationId": room}))
            .await;
        acks.push(
            ada.emit_json("click", json!({"conversationId": room}))
                .await,
        );
    }
    assert!(acks[0]["conversation"]["total"] == 1 && acks[1]["conversation"]["total"] == 1);
    assert_eq!(acks[2]["error"]["code"], "rate_limited", "{acks:?}");
    let again = ada
        .emit_json("click", json!({"conversationId": "r1"}))
        .await;
    assert_eq!(again["conversation"]["total"], 2, "{again}");
    for client in created {
        client.disconnect().await;
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_at_the_send_timeout() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let db = TempDb::new();
    let mut config = db.config();
    config.serving.send_timeout = std::time::Duration::from_secs(1);
    config.conversations.api_key = Some(tally::config::Secret("api-key-0123456789abcdef".into()));
    let server = TestServer::start(config).await;
    let url = server.url();
    // A conversation whose join answer is large.
    let http = reqwest::Client::new();
    for i in 0..50 {
        let posted = http
            .post(format!("{url}/api/conversations/big/messages"))
            .bearer_auth("api-key-0123456789abcdef")
            .json(&json!({"userId": "seed", "content": format!("{i}{}", "é".repeat(1990))}))
            .send()
            .await
            .unwrap();
        assert_eq!(posted.status(), 201);
    }
    let ws_url = format!(
        "{}/socket.io/?EIO=4&transport=websocket",
        url.replacen("http", "ws", 1)
    );
    let (ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    let (mut sink, mut stream) = ws.split();
    sink.send(Message::text("40")).await.unwrap();
    tokio::time::timeout(common::WAIT, async {
        while let Some(Ok(message)) = stream.next().await {
            if matches!(&message, Message::Text(text) if text.starts_with("40")) {
                return;
            }
        }
    })
    .await
    .expect("the namespace answers");
    assert_eq!(common::metric(&url, "tally_sockets_connected").await, 1);
    // From here on nothing is read: the answers pile up in the kernel's
    // buffers, then in the server's.
    for i in 0..300 {
        let join = format!(r#"42{i}["join_conversation",{{"conversationId":"big"}}]"#);
        if sink.send(Message::text(join)).await.is_err() {
            break;
        }
    }
    metrics_until(
        &url,
        &["tally_send_timeouts_total", "tally_sockets_connected"],
        |values| values[0] == 1 && values[1] == 0,
    )
    .await;
    drop((sink, stream));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_session_that_leaves_the_namespace_keeps_its_place_and_may_join_again() {
    // `41` ends the namespace socket, not the engine.io session: the
    // session keeps its place, so leaving and joining again cannot be used
    // to open more sessions than the cap.
    let db = TempDb::new();
    let mut config = db.config();
    config.caps.max_connections_per_ip = 1;
    let server = TestServer::start(config).await;
    let url = server.url();
    let (status, open) = open_session(&url, &[]).await;
    assert_eq!(status, 200, "{open}");
    assert!(join_namespace(&url, &open).await.starts_with("40{"));
    let sid = serde_json::from_str::<Value>(open.trim_start_matches('0')).unwrap()["sid"]
        .as_str()
        .unwrap()
        .to_string();
    let session = format!("{url}/socket.io/?EIO=4&transport=polling&sid={sid}");
    let http = reqwest::Client::new();
    assert_eq!(
        http.post(&session)
            .body("41")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    metrics_until(&url, &["tally_sockets_connected"], |values| values[0] == 0).await;
    let (status, body) = open_session(&url, &[]).await;
    assert_eq!(
        status, 503,
        "the session still holds the address's place: {body}"
    );
    // Joining again on the same session needs no new place.
    assert!(join_namespace(&url, &open).await.starts_with("40{"));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn one_address_is_capped_and_forwarded_addresses_count_only_from_trusted_proxies() {
    let db = TempDb::new();
    let mut config = db.config();
    config.caps.max_connections_per_ip = 1;
    let server = TestServer::start(config.clone()).await;
    let first = TestClient::connect(&server.url(), TransportType::Websocket).await;
    let (status, body) = open_session(&server.url(), &[]).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("too_many_connections"), "{body}");
    // An untrusted client cannot pretend to be someone else.
    let (status, _) = open_session(&server.url(), &[("x-forwarded-for", "203.0.113.9")]).await;
    assert_eq!(status, 503);
    first.disconnect().await;
    server.stop().await.unwrap();

    // Behind a trusted proxy (here, this machine), each forwarded client
    // has its own allowance.
    config.caps.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let server = TestServer::start(config).await;
    let a = TestClient::connect_with_headers(
        &server.url(),
        TransportType::Websocket,
        &[("x-forwarded-for", "203.0.113.1")],
    )
    .await
    .unwrap();
    let (status, _) = open_session(&server.url(), &[("x-forwarded-for", "203.0.113.2")]).await;
    assert_eq!(status, 200);
    let (status, _) = open_session(&server.url(), &[("x-forwarded-for", "203.0.113.1")]).await;
    assert_eq!(status, 503);
    a.disconnect().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn api_bodies_are_limited_and_answers_carry_the_safety_headers() {
    let db = TempDb::new();
    let server = TestServer::start(db.config()).await;
    let http = reqwest::Client::new();
    let huge = format!("{{\"username\": \"{}\"}}", "a".repeat(100_000));
    let response = http
        .post(format!("{}/api/session", server.url()))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let response = http
        .get(format!("{}/api/leaderboard", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert_eq!(response.headers()["referrer-policy"], "no-referrer");
    // Every other kind of answer too: the JSON 404, the metrics and a
    // Socket.IO long-polling handshake.
    for path in [
        "/no/such/page",
        "/metrics",
        "/socket.io/?EIO=4&transport=polling",
    ] {
        let response = http
            .get(format!("{}{path}", server.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response
                .headers()
                .get("x-content-type-options")
                .map(|v| v.to_str().unwrap()),
            Some("nosniff"),
            "{path}: {:?}",
            response.headers()
        );
        assert_eq!(
            response
                .headers()
                .get("referrer-policy")
                .map(|v| v.to_str().unwrap()),
            Some("no-referrer"),
            "{path}"
        );
    }
    let page = http.get(format!("{}/", server.url())).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_that_sends_its_headers_slowly_is_cut_off_and_others_are_not() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = TempDb::new();
    let mut config = db.config();
    config.serving.header_read_timeout = std::time::Duration::from_secs(1);
    let server = TestServer::start(config).await;
    // Connected before the slow client, and quiet for longer than the
    // header timeout by the time it clicks: upgraded connections are not
    // subject to it.
    let websocket = TestClient::connect(&server.url(), TransportType::Websocket).await;

    let addr = server.url().trim_start_matches("http://").to_string();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // Half a request, and then nothing: a slowloris client trickles the rest.
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: tally\r\nX-Slow: ")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(common::WAIT, slow.read_to_end(&mut answer))
        .await
        .expect("the server closes a connection whose headers never end");
    // Closed, with or without a parting answer; never a 200.
    assert!(
        read.is_ok()
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{read:?}"
    );
    assert!(
        !String::from_utf8_lossy(&answer).contains(" 200 "),
        "{answer:?}"
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(900),
        "closed by the timeout, not at once: {:?}",
        started.elapsed()
    );

    assert_eq!(websocket.click_total().await, 1);
    // A complete request on a fresh connection is served as usual.
    let health = reqwest::get(format!("{}/healthz", server.url()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    websocket.disconnect().await;
    server.stop().await.unwrap();
}
