//! Durable storage of counts: the only module that knows SQL.
//!
//! [`Store`] is what the rest of the server sees: load every total at start,
//! add a batch of deltas in one transaction, answer a health probe. Each
//! backend lives in its own file with its own migrations under
//! `migrations/<backend>/`; [`connect`] picks one from the database URL.

mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use crate::counter::{CounterKey, Delta};
use crate::user::Username;

pub use sqlite::SqliteStore;

/// What can go wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL `{url}`: expected sqlite://PATH (or sqlite::memory:)")]
    UnsupportedUrl { url: String },
    #[error("invalid database URL: {0}")]
    InvalidUrl(#[source] sqlx::Error),
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
}

/// Durable home of the counts: the global total in `counters`, per-user
/// counts in `users`.
///
/// Implementations must make [`Store::add`] atomic (all deltas or none) and
/// additive (`value = value + delta`), because the write-behind task retries a
/// failed batch and several server nodes may share one database.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Every stored total.
    async fn load(&self) -> Result<Vec<(CounterKey, u64)>, StoreError>;

    /// Adds each delta to its counter in one transaction.
    async fn add(&self, deltas: &[Delta]) -> Result<(), StoreError>;

    /// Answers when the database does; used by `/healthz`.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The backend's name for logs, e.g. `sqlite`.
    fn backend(&self) -> &'static str;
}

/// Opens the store named by `url`, creating and migrating it as needed.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        return Ok(Arc::new(SqliteStore::connect(url).await?));
    }
    Err(StoreError::UnsupportedUrl { url: redact(url) })
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

/// The name under which a row of the `counters` table is stored.
fn key_name(key: &CounterKey) -> String {
    key.to_string()
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
    fn key_names_round_trip() {
        assert_eq!(
            parse_key(&key_name(&CounterKey::Global)).unwrap(),
            CounterKey::Global
        );
        assert!(parse_key("nope").is_err());
    }

    #[tokio::test]
    async fn unknown_schemes_are_refused_with_a_clear_error() {
        let err = connect("mongodb://localhost").await.err().unwrap();
        assert!(
            err.to_string().contains("unsupported database URL"),
            "{err}"
        );
    }
}
