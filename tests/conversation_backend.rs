//! The backend's side of conversations: the HTTP endpoints a bot or an AI
//! assistant uses with `--api-key`, the signed message webhook (against a
//! local receiver that fails, then recovers), and that an acknowledged
//! message survives SIGKILL.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use common::{ChildServer, TempDb, TestClient, TestServer, WAIT};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tally::config::Secret;
use tokio::sync::mpsc;

const KEY: &str = "test-api-key-0123456789";

fn api(server: &TestServer, path: &str) -> String {
    format!("{}/api/conversations/{path}", server.url())
}

#[tokio::test]
async fn without_an_api_key_the_backend_endpoints_do_not_exist() {
    let db = TempDb::new();
    let server = TestServer::start(db.config()).await;
    let http = reqwest::Client::new();
    let read = http
        .get(api(&server, "c"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 404);
    let post = http
        .post(api(&server, "c/messages"))
        .bearer_auth(KEY)
        .json(&json!({"userId": "bot", "content": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 404);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_backend_posts_and_reads_with_the_right_key_only() {
    let db = TempDb::new();
    let mut config = db.config();
    config.conversations.api_key = Some(Secret(KEY.into()));
    let server = TestServer::start(config).await;
    let mut ada = TestClient::named(&server.url(), "ada").await;
    ada.emit_json("join_conversation", json!({"conversationId": "coach:ada"}))
        .await;
    let http = reqwest::Client::new();
    let body = json!({"userId": "coach", "content": "How was your run?"});

    for auth in [None, Some("wrong-key-wrong-key"), Some("")] {
        let mut request = http.post(api(&server, "coach:ada/messages")).json(&body);
        if let Some(key) = auth {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "key {auth:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "unauthorized");
        let read = http.get(api(&server, "coach:ada")).send().await.unwrap();
        assert_eq!(read.status(), 401);
    }

    let response = http
        .post(api(&server, "coach:ada/messages"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let posted: Value = response.json().await.unwrap();
    assert_eq!(posted["type"], "message");
    assert_eq!(posted["userId"], "coach");
    assert_eq!(posted["conversationId"], "coach:ada");
    let live = ada
        .wait_for_event("message", |m| m["messageId"] == posted["messageId"])
        .await;
    assert_eq!(
        live, posted,
        "the room receives what the backend was answered"
    );

    let reply = ada
        .emit_json(
            "message",
            json!({"conversationId": "coach:ada", "content": "Great, 10k!"}),
        )
        .await;
    let read: Value = http
        .get(api(&server, "coach:ada"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["conversationId"], "coach:ada");
    assert_eq!(read["online"], 1);
    assert_eq!(read["total"], 0);
    assert_eq!(read["more"], false);
    let ids: Vec<&Value> = read["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["messageId"])
        .collect();
    assert_eq!(ids, [&posted["messageId"], &reply["messageId"]]);
    let since: Value = http
        .get(format!(
            "{}?since={}&limit=1",
            api(&server, "coach:ada"),
            posted["messageId"].as_str().unwrap()
        ))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(since["messages"][0]["content"], "Great, 10k!");

    // Invalid input: 422 with the reason's code.
    let cases = [
        (
            "coach:ada/messages",
            json!({"userId": "coach", "content": ""}),
            "invalid_payload",
        ),
        (
            "coach:ada/messages",
            json!({"userId": "coach", "content": "x".repeat(2001)}),
            "too_long",
        ),
        (
            "coach:ada/messages",
            json!({"userId": "not a name", "content": "hi"}),
            "invalid_username",
        ),
        (
            "coach:ada/messages",
            json!({"content": "hi"}),
            "invalid_payload",
        ),
        (
            "bad%20id/messages",
            json!({"userId": "coach", "content": "hi"}),
            "invalid_conversation",
        ),
    ];
    for (path, body, code) in cases {
        let response = http
            .post(api(&server, path))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "{path} {body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], code, "{path} {body}");
    }
    // More than `--history-size` reads `--history-size`; 0 and more than
    // a million are refused.
    let many = http
        .get(format!("{}?limit=51", api(&server, "coach:ada")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(many.status(), 200);
    let many: Value = many.json().await.unwrap();
    assert!(many["messages"].as_array().unwrap().len() <= 50);
    for limit in [0, 1_000_001] {
        let refused = http
            .get(format!("{}?limit={limit}", api(&server, "coach:ada")))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 422, "limit {limit}");
    }

    ada.disconnect().await;
    server.stop().await.unwrap();
}

/// One delivery as the receiver saw it.
struct Delivery {
    signature: String,
    body: Bytes,
}

/// A webhook receiver on port 0 that answers 500 to its first `failures`
/// requests and 200 after that, and reports every request it got.
async fn receiver(failures: usize) -> (String, mpsc::UnboundedReceiver<(StatusCode, Delivery)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let seen = Arc::new(AtomicUsize::new(0));
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            let seen = seen.clone();
            async move {
                let status = if seen.fetch_add(1, Ordering::SeqCst) < failures {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                };
                let signature = headers
                    .get("x-tally-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                tx.send((status, Delivery { signature, body })).ok();
                status
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn every_stored_message_reaches_the_webhook_signed_even_after_failures() {
    let (url, mut deliveries) = receiver(2).await;
    let db = TempDb::new();
    let mut config = db.config();
    config.conversations.message_webhook = Some(url.parse().unwrap());
    config.conversations.webhook_secret = Some(Secret("webhook-secret".into()));
    config.conversations.api_key = Some(Secret(KEY.into()));
    let server = TestServer::start(config).await;
    let ada = TestClient::named(&server.url(), "ada").await;
    ada.emit_json("join_conversation", json!({"conversationId": "c"}))
        .await;
    let ack = ada
        .emit_json(
            "message",
            json!({"conversationId": "c", "content": "deliver me"}),
        )
        .await;

    // Two refusals, then the same signed body accepted.
    let mut bodies = Vec::new();
    for expected in [500, 500, 200] {
        let (status, delivery) = tokio::time::timeout(WAIT, deliveries.recv())
            .await
            .expect("the webhook is called again after a failure")
            .unwrap();
        assert_eq!(status.as_u16(), expected);
        assert_eq!(
            delivery.signature,
            sign("webhook-secret", &delivery.body),
            "signed over the raw body"
        );
        bodies.push(delivery.body);
    }
    assert!(bodies.windows(2).all(|pair| pair[0] == pair[1]));
    let delivered: Value = serde_json::from_slice(&bodies[0]).unwrap();
    assert_eq!(delivered["messageId"], ack["messageId"]);
    assert_eq!(delivered["content"], "deliver me");
    assert_eq!(delivered["type"], "message");

    // A message the backend posts over HTTP is delivered too (the bot sees
    // its own messages and is expected to skip them by userId).
    reqwest::Client::new()
        .post(format!("{}/api/conversations/c/messages", server.url()))
        .bearer_auth(KEY)
        .json(&json!({"userId": "bot", "content": "from the bot"}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let (_, delivery) = tokio::time::timeout(WAIT, deliveries.recv())
        .await
        .unwrap()
        .unwrap();
    let delivered: Value = serde_json::from_slice(&delivery.body).unwrap();
    assert_eq!(delivered["userId"], "bot");

    ada.disconnect().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_redirecting_webhook_is_not_followed() {
    // `/old` redirects the first delivery to `/hook` (a followed 301 would
    // arrive there as a GET without the message) and accepts the second.
    // Deliveries go one at a time, so when the second reaches `/old`, the
    // first is done with: nothing in between means it was not followed.
    let (tx, mut requests) = mpsc::unbounded_channel::<(String, String)>();
    let seen = Arc::new(AtomicUsize::new(0));
    let old = {
        let tx = tx.clone();
        move |method: axum::http::Method| {
            let tx = tx.clone();
            let seen = seen.clone();
            async move {
                tx.send(("/old".into(), method.to_string())).ok();
                if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                    (StatusCode::MOVED_PERMANENTLY, [("location", "/hook")]).into_response()
                } else {
                    StatusCode::OK.into_response()
                }
            }
        }
    };
    let hook = move |method: axum::http::Method| {
        let tx = tx.clone();
        async move {
            tx.send(("/hook".into(), method.to_string())).ok();
            StatusCode::OK
        }
    };
    let app = Router::new()
        .route("/old", axum::routing::any(old))
        .route("/hook", axum::routing::any(hook));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/old", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let db = TempDb::new();
    let mut config = db.config();
    config.conversations.message_webhook = Some(url.parse().unwrap());
    config.conversations.webhook_secret = Some(Secret("webhook-secret".into()));
    let server = TestServer::start(config).await;
    let ada = TestClient::named(&server.url(), "ada").await;
    ada.emit_json("join_conversation", json!({"conversationId": "c"}))
        .await;
    for content in ["first", "second"] {
        ada.emit_json(
            "message",
            json!({"conversationId": "c", "content": content}),
        )
        .await;
    }
    let mut seen = Vec::new();
    for _ in 0..2 {
        let request = tokio::time::timeout(WAIT, requests.recv())
            .await
            .expect("the webhook is called")
            .unwrap();
        seen.push(request);
    }
    assert_eq!(
        seen,
        [
            ("/old".to_string(), "POST".to_string()),
            ("/old".to_string(), "POST".to_string())
        ],
        "the redirect was neither followed nor retried"
    );

    ada.disconnect().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_webhook_that_never_answers_does_not_slow_the_chat() {
    // A receiver that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", silent.local_addr().unwrap());
    let _held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let db = TempDb::new();
    let mut config = db.config();
    config.conversations.message_webhook = Some(url.parse().unwrap());
    config.conversations.webhook_secret = Some(Secret("s".into()));
    let server = TestServer::start(config).await;
    let mut ada = TestClient::named(&server.url(), "ada").await;
    ada.emit_json("join_conversation", json!({"conversationId": "c"}))
        .await;
    // Every message is acknowledged and delivered to the room while the
    // webhook's first delivery hangs (its timeout is 10 s, longer than the
    // whole test's wait for these acks).
    for i in 0..20 {
        let ack = ada
            .emit_json(
                "message",
                json!({"conversationId": "c", "content": format!("m{i}")}),
            )
            .await;
        ada.wait_for_event("message", |m| m["messageId"] == ack["messageId"])
            .await;
    }
    ada.disconnect().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_acknowledged_message_survives_sigkill() {
    let db = TempDb::new();
    let url = db.url();
    let mut server = ChildServer::start(&["--addr", "127.0.0.1:0", "--database-url", &url], &[]);
    let poster = TestClient::named(&server.url, "ada").await;
    poster
        .emit_json("join_conversation", json!({"conversationId": "crash"}))
        .await;
    let (acked_tx, mut acked) = mpsc::unbounded_channel();
    let posting = tokio::spawn(async move {
        for i in 0.. {
            let ack = poster
                .try_emit_with_ack(
                    "message",
                    rust_socketio::Payload::Text(vec![
                        json!({"conversationId": "crash", "content": format!("m{i}")}),
                    ]),
                    Duration::from_secs(2),
                )
                .await;
            match ack.and_then(|ack| ack["messageId"].as_str().map(str::to_string)) {
                Some(id) => acked_tx.send(id).ok(),
                None => break,
            };
        }
    });
    // Kill mid-stream, once a good number of messages were acknowledged.
    let mut ids = Vec::new();
    while ids.len() < 100 {
        ids.push(
            tokio::time::timeout(WAIT, acked.recv())
                .await
                .expect("messages are acknowledged")
                .unwrap(),
        );
    }
    server.kill();
    posting.await.unwrap();
    while let Ok(id) = acked.try_recv() {
        ids.push(id);
    }

    let server = ChildServer::start(&["--addr", "127.0.0.1:0", "--database-url", &url], &[]);
    let reader = TestClient::named(&server.url, "bob").await;
    let mut stored = Vec::new();
    // The nil UUID is older than every message: read from the start.
    let mut since = json!("00000000-0000-0000-0000-000000000000");
    loop {
        let ack = reader
            .emit_json(
                "join_conversation",
                json!({"conversationId": "crash", "since": since}),
            )
            .await;
        let page = ack["history"].as_array().unwrap();
        stored.extend(
            page.iter()
                .map(|m| m["messageId"].as_str().unwrap().to_string()),
        );
        if ack["more"] == false {
            break;
        }
        since = page.last().unwrap()["messageId"].clone();
    }
    for id in &ids {
        assert!(stored.contains(id), "acknowledged message {id} was lost");
    }
    // Stored once each, and at most the one message in flight at the kill
    // stored without its ack.
    let unique: std::collections::HashSet<_> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "a message was stored twice");
    assert!(
        stored.len() <= ids.len() + 1,
        "{} stored, {} acknowledged",
        stored.len(),
        ids.len()
    );
    reader.disconnect().await;
}

#[tokio::test]
async fn retention_deletes_old_messages_and_keeps_the_rest() {
    use tally::conversation::{Content, ConversationId, Message};
    let db = TempDb::new();
    let message = |content: &str, age_ms: i64| {
        let mut message = Message::new(
            ConversationId::parse("c").unwrap(),
            tally::user::Username::parse("ada").unwrap(),
            Content::parse(content).unwrap(),
        );
        message.created_at -= age_ms;
        message
    };
    // More old messages than one pruning round deletes.
    let old: Vec<Message> = (0..2_500)
        .map(|i| message(&format!("old {i}"), 7_200_000))
        .collect();
    let store = tally::store::connect(&db.url(), &Default::default())
        .await
        .unwrap();
    for chunk in old.chunks(1_000) {
        store.add_messages(chunk).await.unwrap();
    }
    store
        .add_messages(&[message("recent", 60_000)])
        .await
        .unwrap();
    drop(store);

    let mut config = db.config();
    config.conversations.message_retention = Some(Duration::from_secs(3600));
    config.conversations.api_key = Some(Secret(KEY.into()));
    let server = TestServer::start(config).await;
    let read = || async {
        reqwest::Client::new()
            .get(format!(
                "{}?since=00000000-0000-0000-0000-000000000000",
                api(&server, "c")
            ))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    // Pruning runs in the background at start; wait (bounded) until it is done.
    let deadline = tokio::time::Instant::now() + WAIT;
    let remaining = loop {
        let page = read().await;
        if page["messages"].as_array().unwrap().len() == 1 {
            break page;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "old messages still there after {WAIT:?}: {}",
            page["messages"].as_array().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(remaining["messages"][0]["content"], "recent");
    assert_eq!(remaining["more"], false);
    server.stop().await.unwrap();
}

/// A store whose message writes each take `delay`, and whose writes number
/// `commit_then_hang` commit and then do not answer for a minute (so the
/// writer's timeout fires although the messages are stored).
struct SlowStore {
    inner: Arc<dyn tally::store::Store>,
    delay: Duration,
    writes: AtomicUsize,
    commit_then_hang: Option<usize>,
}

impl SlowStore {
    fn new(inner: Arc<dyn tally::store::Store>, delay: Duration, hang: Option<usize>) -> Self {
        SlowStore {
            inner,
            delay,
            writes: AtomicUsize::new(0),
            commit_then_hang: hang,
        }
    }
}

#[async_trait::async_trait]
impl tally::store::Store for SlowStore {
    async fn load(
        &self,
    ) -> Result<Vec<(tally::counter::CounterKey, u64)>, tally::store::StoreError> {
        self.inner.load().await
    }
    async fn add(
        &self,
        batch: &tally::store::Batch,
    ) -> Result<tally::store::Applied, tally::store::StoreError> {
        self.inner.add(batch).await
    }
    async fn add_messages(
        &self,
        messages: &[tally::conversation::Message],
    ) -> Result<(), tally::store::StoreError> {
        let write = self.writes.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.inner.add_messages(messages).await?;
        if self.commit_then_hang == Some(write) {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        Ok(())
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
        "slow"
    }
}

/// Every message of `conversation`, oldest first, as the API reads them.
async fn all_messages(http: &reqwest::Client, url: &str, conversation: &str) -> Vec<Value> {
    let mut messages = Vec::new();
    let mut since = "00000000-0000-0000-0000-000000000000".to_string();
    loop {
        let page: Value = http
            .get(format!(
                "{url}/api/conversations/{conversation}?since={since}"
            ))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let list = page["messages"].as_array().unwrap().clone();
        if let Some(last) = list.last() {
            since = last["messageId"].as_str().unwrap().to_string();
        }
        messages.extend(list);
        if page["more"] != true {
            return messages;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_retried_with_its_idempotency_key_is_stored_once() {
    let db = TempDb::new();
    let mut config = db.config();
    config.conversations.api_key = Some(Secret(KEY.into()));
    // Writes time out after 6 × this: the second write below commits and
    // then does not answer, so its poster is told `unavailable` although
    // the message is stored.
    config.database.timeout = Duration::from_millis(200);
    let inner = tally::store::connect(&db.url(), &Default::default())
        .await
        .unwrap();
    let store = Arc::new(SlowStore::new(inner, Duration::ZERO, Some(1)));
    let server = TestServer::start_with_store(config, store).await;
    let url = server.url();
    let mut member = TestClient::named(&url, "ada").await;
    member
        .emit_json("join_conversation", json!({"conversationId": "bots"}))
        .await;
    let http = reqwest::Client::new();
    let post = |key: &'static str, content: &'static str| {
        http.post(format!("{url}/api/conversations/bots/messages"))
            .bearer_auth(KEY)
            .header("idempotency-key", key)
            .json(&json!({"userId": "coach", "content": content}))
            .send()
    };

    // Stored at once: a retry gets the same answer and stores nothing.
    let first = post("key-1", "hello").await.unwrap();
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let again = post("key-1", "hello").await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    // The same key with another body is refused.
    let other = post("key-1", "something else").await.unwrap();
    assert_eq!(other.status(), 409);
    let other: Value = other.json().await.unwrap();
    assert_eq!(other["error"]["code"], "idempotency_conflict");

    // In doubt: the write commits but the database does not answer in time.
    let doubt = post("key-2", "are you there?").await.unwrap();
    assert_eq!(doubt.status(), 503);
    let retried = post("key-2", "are you there?").await.unwrap();
    assert_eq!(retried.status(), 201, "the retry stores (or finds) it");
    let retried: Value = retried.json().await.unwrap();

    let stored = all_messages(&http, &url, "bots").await;
    let contents: Vec<_> = stored.iter().map(|m| m["content"].clone()).collect();
    assert_eq!(
        contents,
        [json!("hello"), json!("are you there?")],
        "each once"
    );
    assert_eq!(stored[1]["messageId"], retried["messageId"]);
    // The member heard each once: the first, then the retried one.
    for expected in [&first, &retried] {
        let heard = member
            .wait_for_event("message", |m| m["content"].is_string())
            .await;
        assert_eq!(heard["messageId"], expected["messageId"]);
    }
    member.disconnect().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_steady_posting_refuses_new_messages_ends_and_keeps_every_acked_one() {
    let db = TempDb::new();
    let mut config = db.config();
    config.conversations.api_key = Some(Secret(KEY.into()));
    config.serving.shutdown_timeout = Duration::from_secs(2);
    let inner = tally::store::connect(&db.url(), &Default::default())
        .await
        .unwrap();
    // Each write takes a while, so the queue never runs dry while posters
    // keep posting: the writer must still see shutdown.
    let store = Arc::new(SlowStore::new(inner, Duration::from_millis(30), None));
    let server = TestServer::start_with_store(config, store).await;
    let url = server.url();
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let shutting_down = Arc::new(AtomicUsize::new(0));
    let mut posters = Vec::new();
    for poster in 0..8 {
        let (url, acked, shutting_down) = (url.clone(), acked.clone(), shutting_down.clone());
        posters.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            for i in 0.. {
                let content = format!("api-{poster}-{i}");
                let Ok(response) = http
                    .post(format!("{url}/api/conversations/drain/messages"))
                    .bearer_auth(KEY)
                    .json(&json!({"userId": "bot", "content": content}))
                    .send()
                    .await
                else {
                    return; // The server stopped listening.
                };
                let status = response.status();
                let body: Value = response.json().await.unwrap_or_default();
                match status.as_u16() {
                    201 => acked.lock().unwrap().push(content),
                    503 if body["error"]["code"] == "shutting_down" => {
                        shutting_down.fetch_add(1, Ordering::SeqCst);
                    }
                    other => panic!("unexpected {other}: {body}"),
                }
            }
        }));
    }
    let socket = TestClient::named(&url, "ada").await;
    socket
        .emit_json("join_conversation", json!({"conversationId": "drain"}))
        .await;
    let socket_acked = acked.clone();
    posters.push(tokio::spawn(async move {
        for i in 0.. {
            let content = format!("socket-{i}");
            let ack = socket
                .try_emit_with_ack(
                    "message",
                    rust_socketio::Payload::Text(vec![
                        json!({"conversationId": "drain", "content": content}),
                    ]),
                    Duration::from_secs(5),
                )
                .await;
            match ack {
                Some(ack) if ack["messageId"].is_string() => {
                    socket_acked.lock().unwrap().push(content);
                }
                // Refused (shutting down) or closed: the socket is done.
                _ => return,
            }
        }
    }));
    // Stop once messages are flowing.
    tokio::time::timeout(WAIT, async {
        while acked.lock().unwrap().len() < 100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("messages are acknowledged");
    server.stop().await.expect("a clean shutdown");
    for poster in posters {
        poster.await.unwrap();
    }
    assert!(
        shutting_down.load(Ordering::SeqCst) > 0,
        "posts during shutdown are refused `shutting_down`"
    );

    // Every acknowledged message is stored once; nothing else is.
    let acked = acked.lock().unwrap().clone();
    let stored = {
        let store = tally::store::connect(&db.url(), &Default::default())
            .await
            .unwrap();
        let history = store
            .history(
                &tally::conversation::ConversationId::parse("drain").unwrap(),
                tally::conversation::HistoryQuery {
                    since: None,
                    limit: 100_000,
                },
            )
            .await
            .unwrap();
        history
            .messages
            .iter()
            .map(|m| m.content.as_str().to_string())
            .collect::<Vec<_>>()
    };
    let mut unique = stored.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), stored.len(), "a message was stored twice");
    for content in &acked {
        assert!(stored.contains(content), "acknowledged {content} was lost");
    }
    assert_eq!(
        stored.len(),
        acked.len(),
        "only acknowledged messages are stored"
    );
}
