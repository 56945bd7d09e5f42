//! MySQL 8 and MariaDB 10.6+ backend: `mysql://`.
//!
//! Migrated at start from `migrations/mysql/`. The design tally grew from
//! keeps its counts here. What its SQL says differently: `?` placeholders,
//! `INSERT … ON DUPLICATE KEY UPDATE … VALUES()` (MySQL 8's row alias is
//! unknown to MariaDB), `INSERT IGNORE` for the batch record, and a plain
//! `DELETE … LIMIT`.

use std::str::FromStr;

use futures_util::future::BoxFuture;
use sqlx::ConnectOptions;
use sqlx::mysql::MySqlConnectOptions;

use super::pool::{open_server_pool, prepare};
use super::sql::{Dialect, SqlStore, Upsert, upsert_values};
use super::{StoreError, StoreOptions};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/mysql");

/// MySQL's and MariaDB's dialect.
#[derive(Debug)]
pub struct MySql;

/// A MySQL or MariaDB database.
pub type MySqlStore = SqlStore<MySql>;

impl Dialect for MySql {
    type DB = sqlx::MySql;
    const NAME: &'static str = "mysql";
    const MIGRATOR: &'static sqlx::migrate::Migrator = &MIGRATOR;
    // Only a duplicate (node, seq) can be ignored here: both are plain
    // integers, so nothing else about this row can be refused.
    const RECORD_BATCH: &'static str = "INSERT IGNORE INTO flushes (node, seq) VALUES (?, ?)";
    const ADD_GLOBAL: &'static str = "INSERT INTO counters (name, value) VALUES ('global', ?) \
         ON DUPLICATE KEY UPDATE value = value + VALUES(value)";
    const ADD_USERS: Upsert = Upsert {
        insert: "INSERT INTO users (username, user_count) ",
        on_conflict: " ON DUPLICATE KEY UPDATE user_count = user_count + VALUES(user_count)",
    };
    /// The column compares without case (`ascii_general_ci`).
    const USER_KEY: &'static str = "username";
    const ADD_ROOMS: Upsert = Upsert {
        insert: "INSERT INTO conversations (id, clicks) ",
        on_conflict: " ON DUPLICATE KEY UPDATE clicks = clicks + VALUES(clicks)",
    };
    const FORGET_OLDER_BATCHES: &'static str = "DELETE FROM flushes WHERE node = ? AND seq < ?";
    const FORGET_OLD_NODES: &'static str =
        "DELETE FROM flushes WHERE applied_at < NOW(6) - INTERVAL 7 DAY";
    // Not INSERT IGNORE: that would also swallow a refused value. This
    // clause changes nothing on a duplicate id.
    const SKIP_STORED_MESSAGES: &'static str = " ON DUPLICATE KEY UPDATE id = id";
    const PRUNE_MESSAGES: &'static str = "DELETE FROM messages WHERE created_at < ? LIMIT ?";

    fn rows_affected(result: &sqlx::mysql::MySqlQueryResult) -> u64 {
        result.rows_affected()
    }

    fn upsert<'a>(
        connection: &'a mut sqlx::MySqlConnection,
        upsert: &'static Upsert,
        rows: &'a [(&'a str, i64)],
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(upsert_values::<sqlx::MySql>(connection, upsert, rows))
    }
}

impl MySqlStore {
    /// Connects to and migrates the database at `url`.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let connect = MySqlConnectOptions::from_str(url)
            .map_err(StoreError::InvalidUrl)?
            .log_statements(tracing::log::LevelFilter::Debug);
        let pool = open_server_pool(url, connect, options).await?;
        prepare::<MySql>(&pool).await?;
        Ok(SqlStore::new(pool))
    }
}
