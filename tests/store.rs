//! One store suite, the same cases on every backend: SQLite always, and
//! PostgreSQL and MySQL/MariaDB on the servers named by
//! `TALLY_TEST_POSTGRES_URL` and `TALLY_TEST_MYSQL_URL` (each test creates
//! its own database there and drops it).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use common::{Backend, TempDb, TestClient, TestServer, TransportType, WAIT};
use serde_json::json;
use tally::conversation::{Content, ConversationId, HistoryQuery, Message, MessageId};
use tally::counter::{CounterKey, Counters, Delta};
use tally::persist::flush::Flusher;
use tally::store::{self, Applied, Batch, Store, StoreError};
use tally::user::Username;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Runs each case once per backend, as `case::sqlite`, `case::postgres`,
/// `case::mysql`.
macro_rules! on_every_backend {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() { super::$case(Backend::Sqlite).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() { super::$case(Backend::Postgres).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mysql() { super::$case(Backend::MySql).await }
        }
    )*};
}

on_every_backend!(
    batches_add_up_and_survive_reopening,
    names_are_one_user_regardless_of_case,
    a_failed_batch_changes_nothing,
    a_batch_is_applied_once_however_often_it_is_sent,
    a_flush_that_committed_but_failed_is_not_counted_twice,
    two_servers_on_one_database_sum_exactly,
    a_restart_loads_exactly_what_was_counted,
    rows_that_break_the_username_rule_are_refused_on_load,
    a_large_flush_is_one_transaction,
    conversation_counters_add_up_in_the_same_flush,
    history_is_paged_from_the_latest_or_after_an_id,
    messages_are_stored_once_exactly_as_written_and_pruned_by_age,
);

async fn open(db: &TempDb) -> Arc<dyn Store> {
    store::connect(&db.url(), &Default::default())
        .await
        .unwrap()
}

fn user(name: &str) -> CounterKey {
    CounterKey::User(Username::parse(name).unwrap())
}

fn batch(seq: i64, deltas: &[(CounterKey, u64)]) -> Batch {
    Batch {
        node: 7,
        seq,
        deltas: deltas
            .iter()
            .map(|(key, amount)| Delta {
                key: key.clone(),
                amount: *amount,
            })
            .collect(),
    }
}

/// Loaded totals as sorted `(name, total)`, with `<global>` for the total.
async fn totals(store: &dyn Store) -> Vec<(String, u64)> {
    let mut totals: Vec<(String, u64)> = store
        .load()
        .await
        .unwrap()
        .into_iter()
        .map(|(key, total)| match key {
            CounterKey::Global => ("<global>".to_string(), total),
            CounterKey::User(name) => (name.as_str().to_string(), total),
            CounterKey::Room(id) => (format!("#{id}"), total),
        })
        .collect();
    totals.sort();
    totals
}

fn expect(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
    pairs.iter().map(|(n, t)| (n.to_string(), *t)).collect()
}

async fn batches_add_up_and_survive_reopening(backend: Backend) {
    let Some(db) = TempDb::fresh(backend).await else {
        return;
    };
    let store = open(&db).await;
    assert!(store.load().await.unwrap().is_empty());
    store.ping().await.unwrap();
    let applied = store
        .add(&batch(1, &[(CounterKey::Global, 3), (user("ada"), 3)]))
        .await
        .unwrap();
    assert_eq!(applied, Applied::Now);
    store
        .add(&batch(
            2,
            &[(CounterKey::Global, 4), (user("ada"), 1), (user("bob"), 3)],
        ))
        .await
        .unwrap();
    drop(store);
    let store = open(&db).await;
    assert_eq!(
        totals(store.as_ref()).await,
        expect(&[("<global>", 7), ("ada", 4), ("bob", 3)])
    );
}

async fn names_are_one_user_regardless_of_case(backend: Backend) {
    let Some(db) = TempDb::fresh(backend).await else {
        return;
    };
    let store = open(&db).await;
    store
        .add(&batch(
            1,
            &[(CounterKey::Global, 3), (user("Ada"), 2), (user("bob"), 1)],
        ))
        .await
        .unwrap();
    store
        .add(&batch(2, &[(CounterKey::Global, 3), (user("ADA"), 3)]))
        .await
        .unwrap();
    assert_eq!(
        totals(store.as_ref()).await,
        expect(&[("<global>", 6), ("Ada", 5), ("bob", 1)]),
        "one user, under the spelling first written"
    );
}

async fn a_failed_batch_changes_nothing(backend: Backend) {
    let Some(db) = TempDb::fresh(backend).await else {
        return;
    };
    let store = open(&db).await;
    store
        .add(&batch(1, &[(CounterKey::Global, 1), (user("ada"), 1)]))
        .await
        .unwrap();
    // Take the users table away, so the batch fails after its first
    // statements succeeded.
    sql(&db, "ALTER TABLE users RENAME TO users_away").await;
    let failing = batch(2, &[(CounterKey::Global, 5), (user("ada"), 5)]);
    assert!(store.add(&failing).await.is_err());
    sql(&db, "ALTER TABLE users_away RENAME TO users").await;
    assert_eq!(
        totals(store.as_ref()).await,
        expect(&[("<global>", 1), ("ada", 1)]),
        "nothing of the failed batch was kept"
    );
    // Not even its (node, seq): the retry is applied, not taken as done.
    assert_eq!(store.add(&failing).await.unwrap(), Applied::Now);
    assert_eq!(
        totals(store.as_ref()).await,
        expect(&[("<global>", 6), ("ada", 6)])
    );
}

async fn a_batch_is_applied_once_however_often_it_is_sent(backend: Backend) {
    let Some(db) = TempDb::fresh(backend).await else {
        return;
    };
    let store = open(&db).await;
    let first = batch(1, &[(CounterKey::Global, 2), (user("ada"), 2)]);
    assert_eq!(store.add(&first).await.unwrap(), Applied::Now);
    assert_eq!(store.add(&first).await.unwrap(), Applied::Earlier);
    // Another node's batch with the same sequence number is its own batch.
    let other_node = Batch {
        node: 8,
        ..first.clone()
    };
    assert_eq!(store.add(&other_node).await.unwrap(), Applied::Now);
    assert_eq!(
        totals(store.as_ref()).await,
        expect(&[("<global>", 4), ("ada", 4)])
    );
}

/// A store whose first write commits and then reports a failure, as when a
/// connection is cut after COMMIT was sent.
struct CommitsThenFails {
    inner: Arc<dyn Store>,
    failed_once: AtomicBool,
}

#[async_trait]
impl Store for CommitsThenFails {
    async fn load(&self) -> Result<Vec<(CounterKey, u64)>, StoreError> {
        self.inner.load().await
    }
    async fn add(&self, batch: &Batch) -> Result<Applied, StoreError> {
        let applied = self.inner.add(batch).await?;
        if !self.failed_once.swap(true, Ordering::SeqCst) {
            return Err(StoreError::Database(sqlx::Error::PoolTimedOut));
        }
        Ok(applied)
    }
    async fn add_messages(
        &self,
        messages: &[tally::conversation::Message],
    ) -> Result<(), StoreError> {
        self.inner.add_messages(messages).await
    }
    async fn history(
        &self,
        conversation: &tally::conversation::ConversationId,
        query: tally::conversation::HistoryQuery,
    ) -> Result<tally::conversation::History, StoreError> {
        self.inner.history(conversation, query).await
    }
    async fn prune_messages(&self, before_ms: i64, limit: u32) -> Result<u64, StoreError> {
        self.inner.prune_messages(before_ms, limit).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    fn backend(&self) -> &'static str {
        "commits-then-fails"
    }
}

async fn a_flush_that_committed_but_failed_is_not_counted_twice(backend: Backend) {
    let Some(db) = TempDb::fresh(backend).await else {
        return;
    };
    let store = Arc::new(CommitsThenFails {
        inner: open(&db).await,
        failed_once: AtomicBool::new(false),
    });
    let counters = Arc::new(Counters::from_totals([]));
    let mut flusher = Flusher::new(counters.clone(), store.clone(), WAIT);
    let ada = Username::parse("ada").unwrap();
    for _ in 0..3 {
        counters.click(Some(&ada)).unwrap();
    }
    assert!(flusher.flush().await.is_err(), "the answer was lost");
    assert_eq!(
        counters.pending_clicks(),
        3,
        "still pending as far as we know"
    );
    counters.click(None).unwrap();
    // The retry sends the same batch first (found applied), then the new click.
    assert_eq!(flusher.flush().await.unwrap(), 3 + 1);
    assert_eq!(counters.pending_clicks(), 0);
    assert_eq!(
        totals(store.inner.as_ref()).await,
        expect(&[("<global>", 4), ("ada", 3)])
    );
}

async fn two_servers_on_one_database_sum_exactly(backend: Backend) {
    const CLICKS: u64 = 40;
    let Some(db) = TempDb::fresh(backend).await else {
        return;
    };
    let a = TestServer::start(db.config()).await;
    let b = TestServer::start(db.config()).await;
    let clickers = [(&a, "ada"), (&b, "ada"), (&a, "bob"), (&b, "carol")];
    let mut clients = Vec::new();
    for (server, name) in clickers {
        clients.push(
            TestClient::connect_as(
                &server.url(),
                TransportType::Websocket,
                json!({ "username": name }),
            )
            .await
            .unwrap(),
        );
    }
    // Every client clicks at once, so both servers flush concurrently.
    futures_util::future::join_all(clients.iter().map(|client| async move {
        for _ in 0..CLICKS {
            client.click_total().await;
        }
    }))
    .await;
    for client in clients {
        client.disconnect().await;
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    let store = open(&db).await;
    assert_eq!(
        totals(store.as_ref()).await,
        expect(&[
            ("<global>", 4 * CLICKS),
            ("ada", 2 * CLICKS),
            ("bob", CLICKS),
            ("carol", CLICKS)
        ])
    );
}

async fn a_restart_loads_exactly_what_was_counted(backend: Backend) {
    let Some(db) = TempDb::fresh(backend).await else {
        return;
    };
    let mut config = db.config();
    // Only the shutdown flush can save these clicks.
    config.database.flush_interval = std::time::Duration::from_secs(3600);
    let server = TestServer::start(config.clone()).await;
    let client = TestClient::connect_as(
        &server.url(),
        TransportType::Websocket,
        json!({"username": "ada"}),
    )
    .await
    .unwrap();
    for _ in 0..25 {
        client.click_total().await;
    }
    client.disconnect().await;
    server.stop().await.unwrap();

    let server = TestServer::start(config).await;
    let mut client = TestClient::connect_as(
        &server.url(),
        TransportType::Websocket,
        json!({"username": "ADA"}),
    )
    .await
    .unwrap();
    assert_eq!(client.first_total().await, 25);
    assert_eq!(client.click().await, json!({"total": 26, "you": 26}));
    client.disconnect().await;
    server.stop().await.unwrap();
}

async fn rows_that_break_the_username_rule_are_refused_on_load(backend: Backend) {
    let Some(db) = TempDb::fresh(backend).await else {
        return;
    };
    let store = open(&db).await;
    store
        .add(&batch(1, &[(CounterKey::Global, 1), (user("ada"), 1)]))
        .await
        .unwrap();
    // Written behind tally's back: a space breaks the rule in every backend
    // (and non-ASCII names cannot even be stored in MySQL's ASCII column).
    sql(
        &db,
        "INSERT INTO users (username, user_count) VALUES ('not valid', 1)",
    )
    .await;
    let err = store.load().await.unwrap_err();
    assert!(err.to_string().contains("not valid"), "{err}");
}

async fn a_large_flush_is_one_transaction(backend: Backend) {
    // More users than fit one multi-row statement on SQLite and MySQL.
    const USERS: usize = 25_000;
    let Some(db) = TempDb::fresh(backend).await else {
        return;
    };
    let store = open(&db).await;
    let mut deltas = vec![(CounterKey::Global, USERS as u64)];
    deltas.extend((0..USERS).map(|i| (user(&format!("u{i}")), 1)));
    store.add(&batch(1, &deltas)).await.unwrap();
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.len(), USERS + 1);
    assert!(loaded.contains(&(CounterKey::Global, USERS as u64)));
}

/// Runs one statement on the test's database, behind tally's back.
async fn sql(db: &TempDb, statement: &str) {
    use sqlx::Connection;
    let url = db.url();
    let statement = sqlx::AssertSqlSafe(statement.to_string());
    let result = if url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(statement).execute(&mut conn).await.map(drop)
    } else if url.starts_with("mysql") {
        let mut conn = sqlx::MySqlConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(statement).execute(&mut conn).await.map(drop)
    } else {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(statement).execute(&mut conn).await.map(drop)
    };
    result.unwrap();
}

/// The real thing: a TCP proxy between tally and the database server that
/// lets the first COMMIT through, swallows the server's answer and cuts the
/// connection. The flush did commit; tally only sees an error and retries.
mod cut_after_commit {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        cut(Backend::Postgres).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mysql() {
        cut(Backend::MySql).await
    }
}

async fn cut(backend: Backend) {
    let Some(db) = TempDb::fresh(backend).await else {
        return;
    };
    let real = db.url();
    let (scheme_user, rest) = real.split_once('@').expect("a server URL has a host");
    let (host_port, path) = rest.split_once('/').unwrap();
    let upstream = host_port.to_string();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    // In plain text, so the proxy can see the COMMIT.
    let plain = match backend {
        Backend::Postgres => "sslmode=disable",
        _ => "ssl-mode=disabled",
    };
    let proxied = format!(
        "{scheme_user}@{}/{path}?{plain}",
        listener.local_addr().unwrap()
    );
    let cut = Cut::default();
    tokio::spawn({
        let cut = cut.clone();
        async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(&upstream).await.unwrap();
                tokio::spawn(relay(client, server, cut.clone()));
            }
        }
    });

    let store = store::connect(&proxied, &Default::default()).await.unwrap();
    // Armed only now: migrations commit too (and their text says "commit").
    cut.armed.store(true, Ordering::SeqCst);
    let counters = Arc::new(Counters::from_totals([]));
    let mut flusher = Flusher::new(counters.clone(), store.clone(), WAIT);
    for _ in 0..5 {
        counters
            .click(Some(&Username::parse("ada").unwrap()))
            .unwrap();
    }
    let first = flusher.flush().await;
    assert!(cut.done.load(Ordering::SeqCst), "the proxy cut a COMMIT");
    assert!(
        first.is_err(),
        "the cut connection reports an error: {first:?}"
    );
    // The retry goes through a fresh connection and finds the batch applied.
    tokio::time::timeout(WAIT, async { while flusher.flush().await.is_err() {} })
        .await
        .expect("the retry succeeds in time");
    assert_eq!(counters.pending_clicks(), 0);
    assert_eq!(
        totals(open(&db).await.as_ref()).await,
        expect(&[("<global>", 5), ("ada", 5)]),
        "committed once, counted once"
    );
}

/// The proxy's switch: `armed` once the test wants a cut, `done` after it.
#[derive(Clone, Default)]
struct Cut {
    armed: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
}

/// Copies bytes both ways. The first time the client sends COMMIT while the
/// cut is armed, the server's next answer is read and thrown away and both
/// sides are closed.
async fn relay(mut client: TcpStream, mut server: TcpStream, cut: Cut) {
    let (mut from_client, mut to_client) = (vec![0u8; 65536], vec![0u8; 65536]);
    let mut commit_sent = false;
    loop {
        tokio::select! {
            read = client.read(&mut from_client) => {
                let Ok(n @ 1..) = read else { return };
                let chunk = &from_client[..n];
                if cut.armed.load(Ordering::SeqCst)
                    && !cut.done.load(Ordering::SeqCst)
                    && chunk.windows(6).any(|w| w.eq_ignore_ascii_case(b"COMMIT"))
                {
                    commit_sent = true;
                }
                if server.write_all(chunk).await.is_err() { return }
            }
            read = server.read(&mut to_client) => {
                let Ok(n @ 1..) = read else { return };
                if commit_sent && !cut.done.swap(true, Ordering::SeqCst) {
                    // The commit happened; its answer never arrives.
                    return;
                }
                if client.write_all(&to_client[..n]).await.is_err() { return }
            }
        }
    }
}

fn room(id: &str) -> CounterKey {
    CounterKey::Room(ConversationId::parse(id).unwrap())
}

async fn conversation_counters_add_up_in_the_same_flush(backend: Backend) {
    let Some(db) = TempDb::fresh(backend).await else {
        return;
    };
    let store = open(&db).await;
    store
        .add(&batch(
            1,
            &[
                (CounterKey::Global, 3),
                (user("ada"), 2),
                (room("Team"), 2),
                (room("team"), 1),
            ],
        ))
        .await
        .unwrap();
    store
        .add(&batch(2, &[(CounterKey::Global, 1), (room("Team"), 1)]))
        .await
        .unwrap();
    drop(store);
    let store = open(&db).await;
    assert_eq!(
        totals(store.as_ref()).await,
        expect(&[("#Team", 3), ("#team", 1), ("<global>", 4), ("ada", 2)]),
        "conversation ids are case-sensitive"
    );
}

fn message(conversation: &str, user: &str, content: &str) -> Message {
    Message::new(
        ConversationId::parse(conversation).unwrap(),
        Username::parse(user).unwrap(),
        Content::parse(content).unwrap(),
    )
}

async fn history_is_paged_from_the_latest_or_after_an_id(backend: Backend) {
    let Some(db) = TempDb::fresh(backend).await else {
        return;
    };
    let store = open(&db).await;
    let c1 = ConversationId::parse("c1").unwrap();
    let written: Vec<Message> = (0..5)
        .map(|i| message("c1", "ada", &format!("m{i}")))
        .collect();
    // Two commits, and a message of another conversation in between.
    store.add_messages(&written[..2]).await.unwrap();
    store
        .add_messages(&[message("c2", "bob", "elsewhere")])
        .await
        .unwrap();
    store.add_messages(&written[2..]).await.unwrap();
    let page = |since: Option<MessageId>, limit: usize| {
        let store = store.clone();
        let c1 = c1.clone();
        async move {
            let history = store
                .history(&c1, HistoryQuery { since, limit })
                .await
                .unwrap();
            let contents: Vec<String> = history
                .messages
                .iter()
                .map(|m| m.content.as_str().to_string())
                .collect();
            (contents, history.more)
        }
    };
    assert_eq!(
        page(None, 3).await,
        (vec!["m2".into(), "m3".into(), "m4".into()], true),
        "the latest, oldest first"
    );
    assert!(!page(None, 5).await.1, "all five fit in the page");
    assert_eq!(
        page(Some(written[1].id), 2).await,
        (vec!["m2".into(), "m3".into()], true),
        "catch-up reads forward from the id"
    );
    assert_eq!(
        page(Some(written[3].id), 2).await,
        (vec!["m4".into()], false)
    );
    assert_eq!(page(Some(written[4].id), 2).await, (vec![], false));
    let empty = store
        .history(
            &ConversationId::parse("C1").unwrap(),
            HistoryQuery {
                since: None,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert!(empty.messages.is_empty(), "ids are case-sensitive");
}

async fn messages_are_stored_once_exactly_as_written_and_pruned_by_age(backend: Backend) {
    let Some(db) = TempDb::fresh(backend).await else {
        return;
    };
    let store = open(&db).await;
    let mut old = message("c", "ada", "old news");
    old.created_at -= 3_600_000;
    let mut older = message("c", "ada", "older news");
    older.created_at -= 7_200_000;
    let mut oldest = message("c", "ada", "oldest news");
    oldest.created_at -= 10_800_000;
    let text = "<b>bold?</b> 'quotes' \"double\" \\ emoji 🎉 and\nnew\tlines";
    let fresh = message("c", "Bob", text);
    store
        .add_messages(&[old.clone(), fresh.clone()])
        .await
        .unwrap();
    // A retried write of the same messages stores nothing twice.
    store
        .add_messages(&[old.clone(), fresh.clone()])
        .await
        .unwrap();
    let all = || async {
        store
            .history(
                &ConversationId::parse("c").unwrap(),
                HistoryQuery {
                    since: None,
                    limit: 10,
                },
            )
            .await
            .unwrap()
            .messages
    };
    assert_eq!(all().await, [old.clone(), fresh.clone()]);
    store
        .add_messages(&[older.clone(), oldest.clone()])
        .await
        .unwrap();
    // Pruned in rounds of at most `limit`, only what is older than the cutoff.
    let cutoff = fresh.created_at - 60_000;
    assert_eq!(store.prune_messages(cutoff, 2).await.unwrap(), 2);
    assert_eq!(store.prune_messages(cutoff, 2).await.unwrap(), 1);
    assert_eq!(store.prune_messages(cutoff, 2).await.unwrap(), 0);
    assert_eq!(all().await, [fresh]);
}
