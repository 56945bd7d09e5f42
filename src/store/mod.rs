//! Durable storage of counts: the only module that knows SQL.
//!
//! [`Store`] is what the rest of the server sees: load every total at start,
//! add a [`Batch`] of deltas in one transaction, answer a health probe. The
//! SQL is written once (`sql.rs`: the flush's transaction and its chunked
//! upserts, `read.rs`: loading and history, `pool.rs`: connecting) for a
//! [`SqlStore`] generic over a [`Dialect`]; each backend's file holds only
//! what its SQL says differently, and its migrations live under
//! `migrations/<backend>/` — SQLite (the embedded default), PostgreSQL,
//! MySQL/MariaDB. [`connect`] picks one from the database URL's scheme.
//!
//! Every backend has the same tables with the same meaning: `counters`
//! (the global total), `users` (the design's `users(id, username UNIQUE,
//! user_count)`, unique regardless of case), `conversations` (each
//! conversation's click counter), `flushes` (which batches were applied, so
//! a retry is never counted twice) and `messages` (chat history, written by
//! [`Store::add_messages`] and read a page at a time).

mod mysql;
mod pool;
mod postgres;
mod read;
mod sql;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::redact_url as redact;
use crate::conversation::{ConversationId, History, HistoryQuery, Message};
use crate::counter::{CounterKey, Delta};

pub use mysql::{MySql, MySqlStore};
pub use postgres::{Postgres, PostgresStore};
pub use sql::{Dialect, SqlStore};
pub use sqlite::{Sqlite, SqliteStore};

/// Most messages written by one statement: five bound values each, well
/// under every backend's limit on bound parameters.
pub const MAX_MESSAGES_PER_WRITE: usize = 1_000;

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

    /// The stored totals of `keys` (a key never stored is left out): what
    /// a node of a cluster reads after its flush, to tell the others, and
    /// every second for the global total. The default reads everything and
    /// keeps what was asked for; the SQL stores read just those rows.
    async fn totals(&self, keys: &[CounterKey]) -> Result<Vec<(CounterKey, u64)>, StoreError> {
        let wanted: std::collections::HashSet<&CounterKey> = keys.iter().collect();
        Ok(self
            .load()
            .await?
            .into_iter()
            .filter(|(key, _)| wanted.contains(key))
            .collect())
    }

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
