//! MySQL 8 and MariaDB 10.6+ backend: `mysql://`.
//!
//! Migrated at start from `migrations/mysql/`. The design tally grew from
//! keeps its counts here, upserted with `INSERT … ON DUPLICATE KEY UPDATE`;
//! a flush is one transaction with one such statement per table (users in
//! multi-row `VALUES`, split only past `MAX_ROWS` users).

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool};
use sqlx::{ConnectOptions, QueryBuilder};

use super::{
    Applied, Batch, MAX_ROWS, Split, Store, StoreError, StoreOptions, history_from,
    insert_messages, load_from, open_server_pool, ping_on, split,
};
use crate::conversation::{ConversationId, History, HistoryQuery, Message};
use crate::counter::CounterKey;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/mysql");

/// A MySQL or MariaDB database.
#[derive(Debug, Clone)]
pub struct MySqlStore {
    pool: MySqlPool,
}

impl MySqlStore {
    /// Connects to and migrates the database at `url`.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let connect = MySqlConnectOptions::from_str(url)
            .map_err(StoreError::InvalidUrl)?
            .log_statements(tracing::log::LevelFilter::Debug);
        let pool = open_server_pool(
            url,
            connect,
            options,
            &MIGRATOR,
            "DELETE FROM flushes WHERE applied_at < NOW(6) - INTERVAL 7 DAY",
        )
        .await?;
        Ok(MySqlStore { pool })
    }
}

#[async_trait]
impl Store for MySqlStore {
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
        // Only a duplicate (node, seq) can be ignored here: both are plain
        // integers, so nothing else about this row can be refused.
        let recorded = sqlx::query("INSERT IGNORE INTO flushes (node, seq) VALUES (?, ?)")
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
                "INSERT INTO counters (name, value) VALUES ('global', ?) \
                 ON DUPLICATE KEY UPDATE value = value + VALUES(value)",
            )
            .bind(amount)
            .execute(&mut *tx)
            .await?;
        }
        for chunk in users.chunks(MAX_ROWS) {
            let mut upsert = QueryBuilder::new("INSERT INTO users (username, user_count) ");
            upsert.push_values(chunk, |mut row, (name, amount)| {
                row.push_bind(*name).push_bind(*amount);
            });
            // VALUES() rather than MySQL 8's row alias: MariaDB knows only it.
            upsert.push(" ON DUPLICATE KEY UPDATE user_count = user_count + VALUES(user_count)");
            upsert.build().execute(&mut *tx).await?;
        }
        for chunk in rooms.chunks(MAX_ROWS) {
            let mut upsert = QueryBuilder::new("INSERT INTO conversations (id, clicks) ");
            upsert.push_values(chunk, |mut row, (id, amount)| {
                row.push_bind(*id).push_bind(*amount);
            });
            upsert.push(" ON DUPLICATE KEY UPDATE clicks = clicks + VALUES(clicks)");
            upsert.build().execute(&mut *tx).await?;
        }
        // Only this node's older rows, found by the primary key: a wider
        // delete would lock rows other nodes are writing (and deadlock).
        sqlx::query("DELETE FROM flushes WHERE node = ? AND seq < ?")
            .bind(batch.node)
            .bind(batch.seq)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Applied::Now)
    }

    async fn add_messages(&self, messages: &[Message]) -> Result<(), StoreError> {
        // Not INSERT IGNORE: that would also swallow a refused value. This
        // clause changes nothing on a duplicate id.
        insert_messages(&self.pool, messages, " ON DUPLICATE KEY UPDATE id = id").await
    }

    async fn history(
        &self,
        conversation: &ConversationId,
        query: HistoryQuery,
    ) -> Result<History, StoreError> {
        history_from(&self.pool, conversation, query).await
    }

    async fn prune_messages(&self, before_ms: i64, limit: u32) -> Result<u64, StoreError> {
        let deleted = sqlx::query("DELETE FROM messages WHERE created_at < ? LIMIT ?")
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
        "mysql"
    }
}
