//! PostgreSQL backend, for deployments: `postgres://` or `postgresql://`.
//!
//! Migrated at start from `migrations/postgres/`. A flush is one transaction
//! of one statement per table: the global counter's upsert, and every user's
//! upsert in a single `INSERT … SELECT FROM UNNEST(…)`, so a flush costs the
//! same few round trips however many users clicked.

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPool};

use super::{
    Applied, Batch, Split, Store, StoreError, StoreOptions, history_from, insert_messages,
    load_from, open_server_pool, ping_on, split,
};
use crate::conversation::{ConversationId, History, HistoryQuery, Message};
use crate::counter::CounterKey;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// A PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to and migrates the database at `url`.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let connect = PgConnectOptions::from_str(url)
            .map_err(StoreError::InvalidUrl)?
            // Statements are logged at debug level only: a flush is routine.
            .log_statements(tracing::log::LevelFilter::Debug);
        let pool = open_server_pool(
            url,
            connect,
            options,
            &MIGRATOR,
            "DELETE FROM flushes WHERE applied_at < now() - interval '7 days'",
        )
        .await?;
        Ok(PostgresStore { pool })
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn load(&self) -> Result<Vec<(CounterKey, u64)>, StoreError> {
        load_from(&self.pool).await
    }

    async fn add(&self, batch: &Batch) -> Result<Applied, StoreError> {
        let Split {
            global,
            users,
            rooms,
        } = split(&batch.deltas)?;
        let mut tx = self.pool.begin().await?;
        let recorded =
            sqlx::query("INSERT INTO flushes (node, seq) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(batch.node)
                .bind(batch.seq)
                .execute(&mut *tx)
                .await?;
        if recorded.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(Applied::Earlier);
        }
        if let Some(amount) = global {
            sqlx::query(
                "INSERT INTO counters (name, value) VALUES ('global', $1) \
                 ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value, \
                 updated_at = now()",
            )
            .bind(amount)
            .execute(&mut *tx)
            .await?;
        }
        if !users.is_empty() {
            let (names, amounts): (Vec<&str>, Vec<i64>) = users.into_iter().unzip();
            sqlx::query(
                "INSERT INTO users (username, user_count) \
                 SELECT * FROM UNNEST($1::text[], $2::bigint[]) \
                 ON CONFLICT ((lower(username))) DO UPDATE SET \
                 user_count = users.user_count + excluded.user_count, updated_at = now()",
            )
            .bind(names)
            .bind(amounts)
            .execute(&mut *tx)
            .await?;
        }
        if !rooms.is_empty() {
            let (ids, amounts): (Vec<&str>, Vec<i64>) = rooms.into_iter().unzip();
            sqlx::query(
                "INSERT INTO conversations (id, clicks) \
                 SELECT * FROM UNNEST($1::text[], $2::bigint[]) \
                 ON CONFLICT (id) DO UPDATE SET \
                 clicks = conversations.clicks + excluded.clicks, updated_at = now()",
            )
            .bind(ids)
            .bind(amounts)
            .execute(&mut *tx)
            .await?;
        }
        // Only this node's older rows, found by the primary key: a wider
        // delete would lock rows other nodes are writing.
        sqlx::query("DELETE FROM flushes WHERE node = $1 AND seq < $2")
            .bind(batch.node)
            .bind(batch.seq)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Applied::Now)
    }

    async fn add_messages(&self, messages: &[Message]) -> Result<(), StoreError> {
        insert_messages(&self.pool, messages, " ON CONFLICT (id) DO NOTHING").await
    }

    async fn history(
        &self,
        conversation: &ConversationId,
        query: HistoryQuery,
    ) -> Result<History, StoreError> {
        history_from(&self.pool, conversation, query).await
    }

    async fn prune_messages(&self, before_ms: i64, limit: u32) -> Result<u64, StoreError> {
        let deleted = sqlx::query(
            "DELETE FROM messages WHERE id IN \
             (SELECT id FROM messages WHERE created_at < $1 LIMIT $2)",
        )
        .bind(before_ms)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?;
        Ok(deleted.rows_affected())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        ping_on(&self.pool).await
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}
