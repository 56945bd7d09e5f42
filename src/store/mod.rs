//! Durable storage of counts: the only module that knows SQL.
//!
//! [`Store`] is what the rest of the server sees: load every total at start,
//! add a [`Batch`] of deltas in one transaction, answer a health probe. Each
//! backend lives in its own file with its own migrations under
//! `migrations/<backend>/` — SQLite (the embedded default), PostgreSQL,
//! MySQL/MariaDB — and [`connect`] picks one from the database URL's scheme.
//!
//! Every backend has the same tables with the same meaning: `counters`
//! (the global total), `users` (the design's `users(id, username UNIQUE,
//! user_count)`, unique regardless of case), `conversations` (each
//! conversation's click counter), `flushes` (which batches were applied, so
//! a retry is never counted twice) and `messages` (chat history, written by
//! [`Store::add_messages`] and read a page at a time).

mod mysql;
mod postgres;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::conversation::{Content, ConversationId, History, HistoryQuery, Message, MessageId};
use crate::counter::{CounterKey, Delta};
use crate::user::Username;

pub use mysql::MySqlStore;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Most user rows in one multi-row `VALUES` upsert: two bound values each,
/// well under SQLite's and MySQL's limits on bound parameters. Larger
/// flushes are split into several statements of the same transaction.
const MAX_ROWS: usize = 10_000;

/// What can go wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "unsupported database URL `{url}`: expected sqlite://PATH (or sqlite::memory:), \
         postgres://… (or postgresql://…) or mysql://…"
    )]
    UnsupportedUrl { url: String },
    #[error("invalid database URL: {0}")]
    InvalidUrl(#[source] sqlx::Error),
    #[error("cannot connect to the database at {url}: {source}")]
    Connect {
        /// The URL with its password hidden.
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored value for `{key}` is out of range: {value}")]
    Corrupt { key: String, value: i64 },
    #[error("unknown counter `{0}` in the database")]
    UnknownCounter(String),
    #[error("count too large for the database: {0}")]
    Overflow(u64),
    #[error("stored message {id} has an invalid {what}")]
    CorruptMessage { id: String, what: String },
}

/// One flush: deltas to add, and the identity that makes retrying it safe.
///
/// `node` is random per process and `seq` grows by one per batch, so
/// `(node, seq)` names this batch in the whole database, whichever process
/// wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub node: i64,
    pub seq: i64,
    pub deltas: Vec<Delta>,
}

/// What [`Store::add`] did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The deltas were added now.
    Now,
    /// An earlier attempt at this `(node, seq)` had committed (its answer
    /// was lost); nothing was added again.
    Earlier,
}

/// Connection settings shared by every backend.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Most connections open at once (SQLite in memory always uses one).
    pub pool_size: u32,
    /// How long connecting, or waiting for a free connection (for SQLite: a
    /// lock), may take before the operation fails.
    pub timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            pool_size: 5,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Durable home of the counts — the global total in `counters`, per-user
/// counts in `users`, conversations' counts in `conversations`, applied
/// batches in `flushes` — and of chat messages, in `messages`.
///
/// Implementations must make [`Store::add`] atomic (all deltas or none),
/// additive (`value = value + delta`, so several server nodes can share one
/// database) and idempotent per `(node, seq)`: the batch's identity is
/// recorded in the same transaction, and a batch already recorded is not
/// added again. The write-behind task retries a failed batch verbatim, so a
/// commit whose answer was lost is never counted twice.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Every stored total.
    async fn load(&self) -> Result<Vec<(CounterKey, u64)>, StoreError>;

    /// Adds the batch's deltas in one transaction, unless it was applied
    /// before.
    async fn add(&self, batch: &Batch) -> Result<Applied, StoreError>;

    /// Stores messages — at most [`MAX_MESSAGES_PER_WRITE`] — in one
    /// statement, so one commit for all of them: all or none. A message whose id is already stored is skipped, so a
    /// retried write never duplicates one.
    async fn add_messages(&self, messages: &[Message]) -> Result<(), StoreError>;

    /// A page of a conversation's history, oldest first (see
    /// [`HistoryQuery`]).
    async fn history(
        &self,
        conversation: &ConversationId,
        query: HistoryQuery,
    ) -> Result<History, StoreError>;

    /// Deletes at most `limit` messages created before `before_ms`
    /// (milliseconds since the epoch); returns how many. Callers delete in
    /// rounds, so no single statement holds locks for long.
    async fn prune_messages(&self, before_ms: i64, limit: u32) -> Result<u64, StoreError>;

    /// Answers when the database does; used by `/healthz`.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The backend's name for logs, e.g. `sqlite`.
    fn backend(&self) -> &'static str;
}

/// Opens the store named by `url`, creating (SQLite) and migrating it as
/// needed. The scheme picks the backend.
pub async fn connect(url: &str, options: &StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    let scheme = url.split(':').next().unwrap_or_default();
    Ok(match scheme {
        "sqlite" => Arc::new(SqliteStore::connect(url, options).await?),
        "postgres" | "postgresql" => Arc::new(PostgresStore::connect(url, options).await?),
        "mysql" | "mariadb" => Arc::new(MySqlStore::connect(url, options).await?),
        _ => return Err(StoreError::UnsupportedUrl { url: redact(url) }),
    })
}

/// Opens and closes one connection, bounded by `timeout`, before a pool is
/// built: a pool only says it timed out, this says why (refused, unknown
/// host, bad password, no such database).
async fn reach<O>(url: &str, connect: &O, timeout: Duration) -> Result<(), StoreError>
where
    O: sqlx::ConnectOptions,
    O::Connection: Sized,
{
    use sqlx::Connection;
    match tokio::time::timeout(timeout, connect.connect()).await {
        Ok(Ok(connection)) => {
            connection.close().await.ok();
            Ok(())
        }
        Ok(Err(err)) => Err(connect_error(url, err)),
        Err(_) => Err(connect_error(
            url,
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {timeout:?} (--database-timeout)"),
            )),
        )),
    }
}

/// Connects a pool to a database server, migrates it, and deletes the
/// `flushes` rows of nodes that went away (`prune_old_flushes`): no live
/// node retries a batch that old, and start-up is outside any flush's
/// transaction. Shared by the PostgreSQL and MySQL backends.
async fn open_server_pool<DB>(
    url: &str,
    connect: <DB::Connection as sqlx::Connection>::Options,
    options: &StoreOptions,
    migrator: &sqlx::migrate::Migrator,
    prune_old_flushes: &'static str,
) -> Result<sqlx::Pool<DB>, StoreError>
where
    DB: sqlx::Database,
    DB::Connection: sqlx::migrate::Migrate,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    reach(url, &connect, options.timeout).await?;
    let pool = sqlx::pool::PoolOptions::<DB>::new()
        .max_connections(options.pool_size)
        .acquire_timeout(options.timeout)
        .connect_with(connect)
        .await
        .map_err(|err| connect_error(url, err))?;
    migrator.run(&pool).await?;
    sqlx::query(prune_old_flushes).execute(&pool).await?;
    Ok(pool)
}

/// A failed first connection, naming the server without its password.
fn connect_error(url: &str, source: sqlx::Error) -> StoreError {
    StoreError::Connect {
        url: redact(url),
        source,
    }
}

/// A batch's deltas in bindable form: the global amount, each user's name
/// and amount ordered by name regardless of case, and each conversation's
/// id and amount ordered by id. The order is the same in every process, so
/// two nodes flushing at once lock rows in the same order and cannot
/// deadlock on each other.
#[derive(Debug, Default)]
struct Split<'a> {
    global: Option<i64>,
    users: Vec<(&'a str, i64)>,
    rooms: Vec<(&'a str, i64)>,
}

fn split(deltas: &[Delta]) -> Result<Split<'_>, StoreError> {
    let mut global = None;
    let mut users = Vec::new();
    let mut rooms = Vec::new();
    for delta in deltas {
        let amount = to_db(delta.amount)?;
        match &delta.key {
            CounterKey::Global => global = Some(amount),
            CounterKey::User(name) => users.push((name, amount)),
            CounterKey::Room(room) => rooms.push((room.as_str(), amount)),
        }
    }
    users.sort_by(|a, b| a.0.cmp_folded(b.0));
    rooms.sort();
    Ok(Split {
        global,
        users: users
            .into_iter()
            .map(|(name, amount)| (name.as_str(), amount))
            .collect(),
        rooms,
    })
}

/// Every stored total, read the same way from any backend's pool. Rows are
/// streamed and converted one by one: holding a million driver rows at once
/// would cost several times the memory of the totals themselves, and the
/// allocator keeps much of it after they are freed.
async fn load_from<DB>(pool: &sqlx::Pool<DB>) -> Result<Vec<(CounterKey, u64)>, StoreError>
where
    DB: sqlx::Database,
    for<'r> (String, i64): sqlx::FromRow<'r, DB::Row>,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    use futures_util::TryStreamExt;
    let mut totals = Vec::new();
    let mut counters =
        sqlx::query_as::<_, (String, i64)>("SELECT name, value FROM counters").fetch(pool);
    while let Some((name, value)) = counters.try_next().await? {
        totals.push((parse_key(&name)?, from_db(&name, value)?));
    }
    drop(counters);
    let mut users =
        sqlx::query_as::<_, (String, i64)>("SELECT username, user_count FROM users").fetch(pool);
    while let Some((name, count)) = users.try_next().await? {
        totals.push((parse_username(&name)?, from_db(&name, count)?));
    }
    drop(users);
    let mut rooms =
        sqlx::query_as::<_, (String, i64)>("SELECT id, clicks FROM conversations").fetch(pool);
    while let Some((id, clicks)) = rooms.try_next().await? {
        let room = ConversationId::parse(&id)
            .map_err(|_| StoreError::UnknownCounter(format!("conversation {id:?}")))?;
        totals.push((CounterKey::Room(room), from_db(&id, clicks)?));
    }
    Ok(totals)
}

/// A stored message as its columns: id, conversation, username, content,
/// created_at.
type MessageRow = (String, String, String, String, i64);

/// Most messages written by one statement: five bound values each, well
/// under every backend's limit on bound parameters.
pub const MAX_MESSAGES_PER_WRITE: usize = 1_000;

/// Inserts messages in one multi-row statement; `on_conflict` is the
/// backend's way of skipping an id already stored.
async fn insert_messages<DB>(
    pool: &sqlx::Pool<DB>,
    messages: &[Message],
    on_conflict: &str,
) -> Result<(), StoreError>
where
    DB: sqlx::Database,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    String: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    for chunk in messages.chunks(MAX_MESSAGES_PER_WRITE) {
        let mut insert = sqlx::QueryBuilder::<DB>::new(
            "INSERT INTO messages (id, conversation_id, username, content, created_at) ",
        );
        insert.push_values(chunk, |mut row, message| {
            row.push_bind(message.id.to_string())
                .push_bind(message.conversation.as_str().to_string())
                .push_bind(message.user.as_str().to_string())
                .push_bind(message.content.as_str().to_string())
                .push_bind(message.created_at);
        });
        insert.push(on_conflict);
        insert.build().execute(pool).await?;
    }
    Ok(())
}

/// A page of history, read the same way from any backend's pool. One more
/// row than the limit is read to learn whether some were left out.
async fn history_from<DB>(
    pool: &sqlx::Pool<DB>,
    conversation: &ConversationId,
    query: HistoryQuery,
) -> Result<History, StoreError>
where
    DB: sqlx::Database,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    String: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'r> MessageRow: sqlx::FromRow<'r, DB::Row>,
{
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX - 1);
    let mut select = sqlx::QueryBuilder::<DB>::new(
        "SELECT id, conversation_id, username, content, created_at FROM messages          WHERE conversation_id = ",
    );
    select.push_bind(conversation.as_str().to_string());
    match query.since {
        // Catch-up reads forward from the last message the client has.
        Some(since) => {
            select.push(" AND id > ");
            select.push_bind(since.to_string());
            select.push(" ORDER BY id ASC LIMIT ");
        }
        // The latest page reads backwards from the newest message.
        None => {
            select.push(" ORDER BY id DESC LIMIT ");
        }
    }
    select.push_bind(limit + 1);
    let rows: Vec<MessageRow> = select.build_query_as().fetch_all(pool).await?;
    let more = rows.len() > query.limit;
    // A row that breaks today's rules (edited by hand, say) is skipped with
    // a warning rather than making the whole conversation unreadable.
    let mut messages: Vec<Message> = rows
        .into_iter()
        .take(query.limit)
        .filter_map(|row| {
            parse_message(row)
                .inspect_err(|err| tracing::warn!(error = %err, "skipping a stored message"))
                .ok()
        })
        .collect();
    if query.since.is_none() {
        messages.reverse();
    }
    Ok(History { messages, more })
}

/// A stored message back from its columns.
fn parse_message(
    (id, conversation, user, content, created_at): MessageRow,
) -> Result<Message, StoreError> {
    let corrupt = |what: &str| StoreError::CorruptMessage {
        id: id.clone(),
        what: what.to_string(),
    };
    Ok(Message {
        id: MessageId::parse(&id).map_err(|_| corrupt("id"))?,
        conversation: ConversationId::parse(&conversation).map_err(|_| corrupt("conversation"))?,
        user: Username::parse(&user).map_err(|_| corrupt("username"))?,
        content: Content::parse(&content).map_err(|_| corrupt("content"))?,
        created_at,
    })
}

/// Answers when the database does.
async fn ping_on<DB>(pool: &sqlx::Pool<DB>) -> Result<(), StoreError>
where
    DB: sqlx::Database,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

/// Hides a password in a URL before it reaches a log or an error message.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***{}", &url[..scheme_end], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// The counter a row of the `counters` table refers to.
fn parse_key(name: &str) -> Result<CounterKey, StoreError> {
    match name {
        "global" => Ok(CounterKey::Global),
        other => Err(StoreError::UnknownCounter(other.to_string())),
    }
}

/// The counter of a row of the `users` table.
fn parse_username(name: &str) -> Result<CounterKey, StoreError> {
    Username::parse(name)
        .map(CounterKey::User)
        .map_err(|_| StoreError::UnknownCounter(format!("user {name:?}")))
}

fn to_db(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Overflow(value))
}

fn from_db(key: &str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt {
        key: key.to_string(),
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://user:secret@db:5432/tally"),
            "postgres://***@db:5432/tally"
        );
        assert_eq!(redact("sqlite://tally.db"), "sqlite://tally.db");
    }

    #[test]
    fn counter_names_are_known() {
        assert_eq!(parse_key("global").unwrap(), CounterKey::Global);
        assert!(parse_key("nope").is_err());
    }

    #[tokio::test]
    async fn unknown_schemes_are_refused_with_a_clear_error() {
        let err = connect("mongodb://localhost", &StoreOptions::default())
            .await
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("unsupported database URL"),
            "{err}"
        );
    }
}
