//! PostgreSQL backend, for deployments: `postgres://` or `postgresql://`.
//!
//! Migrated at start from `migrations/postgres/`. What its SQL says
//! differently: `$n` placeholders, table-qualified `excluded` arithmetic, a
//! conflict target on `lower(username)`, and every user's (and every
//! conversation's) delta in one `INSERT … SELECT FROM UNNEST(…)`, so a flush
//! costs the same few round trips however many users clicked.

use std::str::FromStr;

use futures_util::future::BoxFuture;
use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;

use super::pool::{open_server_pool, prepare};
use super::sql::{Dialect, SqlStore, Upsert};
use super::{StoreError, StoreOptions};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// PostgreSQL's dialect.
#[derive(Debug)]
pub struct Postgres;

/// A PostgreSQL database.
pub type PostgresStore = SqlStore<Postgres>;

impl Dialect for Postgres {
    type DB = sqlx::Postgres;
    const NAME: &'static str = "postgres";
    const MIGRATOR: &'static sqlx::migrate::Migrator = &MIGRATOR;
    const RECORD_BATCH: &'static str =
        "INSERT INTO flushes (node, seq) VALUES ($1, $2) ON CONFLICT DO NOTHING";
    const ADD_GLOBAL: &'static str = "INSERT INTO counters (name, value) VALUES ('global', $1) \
         ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value, \
         updated_at = now()";
    const ADD_USERS: Upsert = Upsert {
        insert: "INSERT INTO users (username, user_count) ",
        on_conflict: " ON CONFLICT ((lower(username))) DO UPDATE SET \
             user_count = users.user_count + excluded.user_count, updated_at = now()",
    };
    /// The index is on `lower(username)`.
    const USER_KEY: &'static str = "lower(username)";
    const ADD_ROOMS: Upsert = Upsert {
        insert: "INSERT INTO conversations (id, clicks) ",
        on_conflict: " ON CONFLICT (id) DO UPDATE SET \
             clicks = conversations.clicks + excluded.clicks, updated_at = now()",
    };
    const FORGET_OLDER_BATCHES: &'static str = "DELETE FROM flushes WHERE node = $1 AND seq < $2";
    const FORGET_OLD_NODES: &'static str =
        "DELETE FROM flushes WHERE applied_at < now() - interval '7 days'";
    const SKIP_STORED_MESSAGES: &'static str = " ON CONFLICT (id) DO NOTHING";
    const PRUNE_MESSAGES: &'static str = "DELETE FROM messages WHERE id IN \
         (SELECT id FROM messages WHERE created_at < $1 LIMIT $2)";

    fn rows_affected(result: &sqlx::postgres::PgQueryResult) -> u64 {
        result.rows_affected()
    }

    /// One statement of two arrays, however many rows.
    fn upsert<'a>(
        connection: &'a mut sqlx::PgConnection,
        upsert: &'static Upsert,
        rows: &'a [(&'a str, i64)],
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            let (keys, amounts): (Vec<&str>, Vec<i64>) = rows.iter().copied().unzip();
            let statement = format!(
                "{}SELECT * FROM UNNEST($1::text[], $2::bigint[]){}",
                upsert.insert, upsert.on_conflict
            );
            // Built from the dialect's constant fragments only; the rows
            // are bound.
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .bind(keys)
                .bind(amounts)
                .execute(connection)
                .await?;
            Ok(())
        })
    }
}

impl PostgresStore {
    /// Connects to and migrates the database at `url`.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let connect = PgConnectOptions::from_str(url)
            .map_err(StoreError::InvalidUrl)?
            // Statements are logged at debug level only: a flush is routine.
            .log_statements(tracing::log::LevelFilter::Debug);
        let pool = open_server_pool(url, connect, options).await?;
        prepare::<Postgres>(&pool).await?;
        Ok(SqlStore::new(pool))
    }
}
