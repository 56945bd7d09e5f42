//! Cluster mode with real servers: tally nodes as child processes on the
//! machine's PostgreSQL or MariaDB (a fresh database each), one Redis and
//! one nginx of the test's own (so they can be killed), clients on every
//! node, directly and through nginx, over WebSocket and long-polling.

mod common;

use std::collections::{BTreeMap, HashSet};

use common::cluster::{self, Nginx, RedisServer, api, eventually, metric};
use common::{Backend, ChildServer, TempDb, TestClient, TransportType};
use futures_util::future::join_all;
use serde_json::{Value, json};

const ROOM: &str = "lobby";

/// What a cluster's nodes share: a fresh database on `backend` and a
/// `redis-server` of the test's own.
struct Shared {
    db: TempDb,
    redis: RedisServer,
}

impl Shared {
    /// `None` only when `TALLY_TEST_SKIP_SERVERS=1` skips `backend`.
    async fn start(backend: Backend) -> Option<Self> {
        Some(Shared {
            db: TempDb::fresh(backend).await?,
            redis: RedisServer::start(),
        })
    }

    /// One more node on them, with `extra` variables.
    fn node(&self, extra: &[(&str, &str)]) -> ChildServer {
        cluster::node(&self.db.url(), &self.redis.url(), extra)
    }
}

async fn client(url: &str, transport: TransportType, username: &str) -> TestClient {
    TestClient::connect_as(url, transport, json!({ "username": username }))
        .await
        .unwrap_or_else(|err| panic!("{username} connects to {url}: {err}"))
}

async fn join(client: &TestClient) -> Value {
    let answer = client
        .emit_json("join_conversation", json!({ "conversationId": ROOM }))
        .await;
    assert_eq!(answer["conversationId"], ROOM, "{answer}");
    answer
}

/// The leaderboard a node serves, as `name → count`.
async fn leaderboard(url: &str) -> BTreeMap<String, u64> {
    let lines = api(url, "/api/leaderboard?limit=100").await;
    lines
        .as_array()
        .unwrap_or_else(|| panic!("a list: {lines}"))
        .iter()
        .map(|line| {
            (
                line["username"].as_str().unwrap().to_string(),
                line["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Waits until the node at `url` serves `expected` as its leaderboard.
async fn leaderboard_becomes(url: &str, expected: &BTreeMap<String, u64>) {
    eventually("every node's leaderboard", || async {
        let board = leaderboard(url).await;
        if board == *expected {
            Ok(())
        } else {
            Err(format!("{url}: {board:?} vs {expected:?}"))
        }
    })
    .await;
}

/// Waits until `client` has received the messages with these ids (and no
/// other in the room twice).
async fn receive_all(client: &mut TestClient, ids: &HashSet<String>) {
    let mut seen = HashSet::new();
    while seen.len() < ids.len() {
        let message = client
            .wait_for_event("message", |m| m["conversationId"] == ROOM)
            .await;
        let id = message["messageId"].as_str().unwrap().to_string();
        assert!(ids.contains(&id), "an unknown message {message}");
        assert!(seen.insert(id), "a message arrived twice: {message}");
    }
}

/// Three nodes, clients on each (directly over both transports, and two
/// through nginx); everyone clicks at once, in and out of the conversation,
/// and says one thing there. Every client ends on the exact total, every
/// node serves the same leaderboard, presence and room total, and every
/// acknowledged message is stored once and reaches every member.
async fn three_nodes_agree(backend: Backend) {
    let Some(shared) = Shared::start(backend).await else {
        return;
    };
    let nodes: Vec<ChildServer> = (0..3).map(|_| shared.node(&[])).collect();
    let urls: Vec<&str> = nodes.iter().map(|node| node.url.as_str()).collect();
    let nginx = Nginx::start(&urls);

    let mut names = Vec::new();
    let mut clients = Vec::new();
    let mut places: Vec<(&str, TransportType)> = Vec::new();
    for url in &urls {
        places.push((url, TransportType::Websocket));
        places.push((url, TransportType::Polling));
    }
    let through = nginx.url();
    places.push((&through, TransportType::Websocket));
    places.push((&through, TransportType::Polling));
    for (k, (url, transport)) in places.into_iter().enumerate() {
        let name = format!("user{k}");
        clients.push(client(url, transport, &name).await);
        names.push(name);
    }
    for client in &clients {
        join(client).await;
    }

    // Client k clicks k + 3 times, two of them in the conversation.
    let acks = join_all(clients.iter().enumerate().map(|(k, client)| async move {
        for i in 0..k + 3 {
            let ack = if i < 2 {
                client
                    .emit_json("click", json!({ "conversationId": ROOM }))
                    .await
            } else {
                client.click().await
            };
            assert!(ack["total"].is_u64(), "acknowledged: {ack}");
        }
        (k, k as u64 + 3)
    }))
    .await;
    let total: u64 = acks.iter().map(|(_, clicks)| clicks).sum();
    let room_total = 2 * clients.len() as u64;
    let expected: BTreeMap<String, u64> = acks
        .iter()
        .map(|(k, clicks)| (names[*k].clone(), *clicks))
        .collect();

    let said = join_all(clients.iter().enumerate().map(|(k, client)| async move {
        let ack = client
            .emit_json(
                "message",
                json!({ "conversationId": ROOM, "content": format!("hello from {k}") }),
            )
            .await;
        ack["messageId"]
            .as_str()
            .unwrap_or_else(|| panic!("stored: {ack}"))
            .to_string()
    }))
    .await;
    let ids: HashSet<String> = said.into_iter().collect();
    for client in &mut clients {
        receive_all(client, &ids).await;
    }
    for client in &mut clients {
        assert_eq!(client.wait_for_total(total).await, total);
    }
    for url in &urls {
        leaderboard_becomes(url, &expected).await;
        eventually("every node's view of the conversation", || async {
            let view = api(url, &format!("/api/conversations/{ROOM}?limit=100")).await;
            let stored: Vec<&str> = view["messages"]
                .as_array()
                .map(|m| m.iter().filter_map(|m| m["messageId"].as_str()).collect())
                .unwrap_or_default();
            let once = stored.len() == ids.len() && stored.iter().all(|id| ids.contains(*id));
            if view["online"] == clients.len() && view["total"] == room_total && once {
                Ok(())
            } else {
                Err(format!("{url}: {view}"))
            }
        })
        .await;
    }
    // The join answer counts every node's members too.
    let late = client(urls[0], TransportType::Websocket, "late").await;
    assert_eq!(join(&late).await["online"], clients.len() + 1);
    for url in &urls {
        assert_eq!(metric(url, "tally_cluster_peers").await, Some(2.0), "{url}");
        assert_eq!(
            metric(url, "tally_redis_connected").await,
            Some(1.0),
            "{url}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_on_postgres_agree_on_every_total_and_message() {
    three_nodes_agree(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_on_mariadb_agree_on_every_total_and_message() {
    three_nodes_agree(Backend::MySql).await;
}

/// The global total in the database.
async fn stored_total(db: &TempDb) -> u64 {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&db.url()).await.unwrap();
    let value: i64 = sqlx::query_scalar("SELECT value FROM counters WHERE name = 'global'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    value as u64
}

/// Clicks `n` times, each acknowledged.
async fn clicks(client: &TestClient, n: usize) {
    for _ in 0..n {
        client.click_total().await;
    }
}

/// Redis is killed with SIGKILL while both nodes count: clicks and
/// same-node chat go on, the global total keeps moving across nodes (read
/// from the database); after Redis comes back empty, every client
/// converges on the exact total and the database holds exactly the
/// acknowledged clicks.
#[tokio::test(flavor = "multi_thread")]
async fn a_redis_outage_costs_freshness_and_never_a_click() {
    let Some(mut shared) = Shared::start(Backend::Postgres).await else {
        return;
    };
    let a = shared.node(&[]);
    let b = shared.node(&[]);
    let mut on_a = client(&a.url, TransportType::Websocket, "ada").await;
    let mut also_on_a = client(&a.url, TransportType::Polling, "amy").await;
    let mut on_b = client(&b.url, TransportType::Websocket, "bob").await;
    for client in [&on_a, &also_on_a, &on_b] {
        join(client).await;
    }
    clicks(&on_a, 20).await;
    clicks(&on_b, 20).await;

    let mut reloads_before = Vec::new();
    for url in [&a.url, &b.url] {
        reloads_before.push(
            metric(url, "tally_cluster_reloads_total")
                .await
                .unwrap_or(0.0),
        );
    }
    shared.redis.kill();
    for url in [&a.url, &b.url] {
        eventually("the nodes notice Redis is gone", || async {
            match metric(url, "tally_redis_connected").await {
                Some(0.0) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }
    // Counting goes on on both nodes.
    tokio::join!(clicks(&on_a, 100), clicks(&on_b, 100));
    let during = 240;
    // Same-node chat goes on.
    let said = on_a
        .emit_json(
            "message",
            json!({ "conversationId": ROOM, "content": "still here" }),
        )
        .await;
    let id = said["messageId"]
        .as_str()
        .expect("stored during the outage");
    also_on_a
        .wait_for_event("message", |m| m["messageId"] == id)
        .await;
    // The global total crosses nodes through the database meanwhile.
    assert_eq!(on_b.wait_for_total(during).await, during);
    assert_eq!(on_a.wait_for_total(during).await, during);

    shared.redis.restart();
    for (url, before) in [&a.url, &b.url].into_iter().zip(reloads_before) {
        eventually(
            "the nodes are back on Redis and read every total again",
            || async {
                let connected = metric(url, "tally_redis_connected").await;
                let reloads = metric(url, "tally_cluster_reloads_total")
                    .await
                    .unwrap_or(0.0);
                if connected == Some(1.0) && reloads > before {
                    Ok(())
                } else {
                    Err(format!(
                        "{connected:?}, {reloads} reloads (before: {before})"
                    ))
                }
            },
        )
        .await;
    }
    clicks(&on_b, 10).await;
    let total = during + 10;
    for client in [&mut on_a, &mut also_on_a, &mut on_b] {
        assert_eq!(client.wait_for_total(total).await, total);
    }
    // Write-behind: the database holds every acknowledged click once the
    // last flush is in, and never more.
    eventually("every click stored, none twice", || async {
        match stored_total(&shared.db).await {
            stored if stored == total => Ok(()),
            stored => {
                assert!(stored < total, "{stored} stored of {total} clicks");
                Err(format!("{stored} stored"))
            }
        }
    })
    .await;
    let expected = BTreeMap::from([("ada".to_string(), 120), ("bob".to_string(), 130)]);
    for url in [&a.url, &b.url] {
        leaderboard_becomes(url, &expected).await;
    }
    let view = api(&a.url, &format!("/api/conversations/{ROOM}")).await;
    assert_eq!(view["messages"].as_array().map(Vec::len), Some(1), "{view}");
    drop((on_a, also_on_a, on_b));
}

/// One of three nodes is stopped with SIGTERM while its clients click:
/// nothing it acknowledged is lost, and its clients, reconnecting through
/// nginx, land on another node with the exact total.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_stopped_with_sigterm_hands_its_clients_over_through_nginx() {
    let Some(shared) = Shared::start(Backend::Postgres).await else {
        return;
    };
    // No flush but the final one: what the other nodes learn of the
    // stopped node's clicks, they learn from its shutdown.
    let mut nodes: Vec<ChildServer> = (0..3)
        .map(|_| shared.node(&[("TALLY_FLUSH_INTERVAL", "1h")]))
        .collect();
    let urls: Vec<String> = nodes.iter().map(|node| node.url.clone()).collect();
    let nginx = Nginx::start(&urls.iter().map(String::as_str).collect::<Vec<_>>());
    // nginx hashes the client's address, so every client of this test
    // reaches the same node: the one to stop.
    let mut through = client(&nginx.url(), TransportType::Polling, "carol").await;
    let mut acknowledged = 0;
    for _ in 0..50 {
        acknowledged = through.click_total().await;
    }
    let mut serving = None;
    for (i, url) in urls.iter().enumerate() {
        if metric(url, "tally_sockets_connected{transport=\"polling\"}").await == Some(1.0) {
            serving = Some(i);
        }
    }
    let serving = serving.expect("one node holds the polling client");
    let alive = &urls[(serving + 1) % urls.len()];
    let mut watcher = client(alive, TransportType::Websocket, "watcher").await;
    assert!(nodes[serving].terminate().success(), "a clean stop");
    through.wait_for_event("server_shutdown", |_| true).await;
    drop(through);

    // The final flush's totals reach the other nodes: the global total, and
    // carol's own count (which only the published totals carry).
    assert_eq!(watcher.wait_for_total(acknowledged).await, acknowledged);
    eventually(
        "the stopped node's clicks are in the leaderboard",
        || async {
            let board = leaderboard(alive).await;
            if board.get("carol") == Some(&50) {
                Ok(())
            } else {
                Err(format!("{board:?}"))
            }
        },
    )
    .await;
    // carol comes back through nginx, which passes her to a live node.
    let mut again = client(&nginx.url(), TransportType::Polling, "carol").await;
    assert_eq!(again.wait_for_total(acknowledged).await, acknowledged);
    assert_eq!(
        again.click_total().await,
        acknowledged + 1,
        "nothing the stopped node acknowledged is lost"
    );
}

/// A node in durable mode is killed with SIGKILL: the clicks it
/// acknowledged reach the other node anyway (they were stored first), and
/// its sockets leave the other node's presence within the peer timeout.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_node_loses_no_durable_click_and_leaves_presence() {
    let Some(shared) = Shared::start(Backend::Postgres).await else {
        return;
    };
    let a = shared.node(&[]);
    let mut b = shared.node(&[("TALLY_FLUSH_INTERVAL", "0")]);
    let mut on_a = client(&a.url, TransportType::Websocket, "ada").await;
    let on_b = client(&b.url, TransportType::Websocket, "bob").await;
    join(&on_a).await;
    join(&on_b).await;
    on_a.wait_for_event("presence", |p| {
        p["conversationId"] == ROOM && p["online"] == 2
    })
    .await;
    let mut acknowledged = 0;
    for _ in 0..30 {
        acknowledged = on_b.click_total().await;
    }
    b.kill();
    on_a.wait_for_event("presence", |p| {
        p["conversationId"] == ROOM && p["online"] == 1
    })
    .await;
    assert_eq!(on_a.wait_for_total(acknowledged).await, acknowledged);
    let view = api(&a.url, &format!("/api/conversations/{ROOM}")).await;
    assert_eq!(view["online"], 1, "{view}");
    assert_eq!(metric(&a.url, "tally_cluster_peers").await, Some(0.0));
}

/// The systemd units parse, name real settings and an executable binary.
#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists());
    let Some(analyze) = analyze else {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing where CI runs: the unit files go unchecked"
        );
        eprintln!("systemd-analyze is not installed here: the unit files are not checked");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let mut units = Vec::new();
    for (unit, name) in [
        ("tally.service", "tally.service"),
        ("tally@.service", "tally@2.service"),
    ] {
        let text = std::fs::read_to_string(deploy.join(unit)).unwrap();
        // The unit names where an operator installs the binary; here it is
        // the one just built.
        let text = text.replace("/usr/local/bin/tally", env!("CARGO_BIN_EXE_tally"));
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        units.push(path);
    }
    let output = std::process::Command::new(analyze)
        .arg("verify")
        .args(&units)
        .output()
        .unwrap();
    let complaints = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify: {complaints}"
    );
}

/// The Admin UI connected to one node lists every node's `server_stats`.
#[tokio::test(flavor = "multi_thread")]
async fn the_admin_ui_on_one_node_hears_every_node() {
    use futures_util::FutureExt;
    use rust_socketio::asynchronous::ClientBuilder;
    let Some(shared) = Shared::start(Backend::Postgres).await else {
        return;
    };
    let admin = [("TALLY_ADMIN", "true"), ("TALLY_ADMIN_NO_AUTH", "true")];
    let a = shared.node(&admin);
    let b = shared.node(&admin);
    let (tx, mut stats) = tokio::sync::mpsc::unbounded_channel();
    let ui = ClientBuilder::new(a.url.clone())
        .namespace("/admin")
        .reconnect(false)
        .on("server_stats", move |payload, _| {
            if let rust_socketio::Payload::Text(values) = payload {
                for value in values {
                    tx.send(value["serverId"].as_str().unwrap_or_default().to_string())
                        .ok();
                }
            }
            async {}.boxed()
        })
        .connect()
        .await
        .expect("the Admin UI connects");
    let mut servers = HashSet::new();
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while servers.len() < 2 {
        let id = tokio::time::timeout_at(deadline, stats.recv())
            .await
            .unwrap_or_else(|_| panic!("server_stats of two nodes; heard {servers:?}"))
            .expect("the UI stays connected");
        servers.insert(id);
    }
    assert!(servers.iter().all(|id| !id.is_empty()), "{servers:?}");
    ui.disconnect().await.ok();
    drop(b);
}
