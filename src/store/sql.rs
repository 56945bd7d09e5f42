//! The SQL every backend runs, written once: a [`SqlStore`] is generic over
//! a [`Dialect`], which says only what its database spells differently.
//!
//! A flush is one transaction: record the batch's `(node, seq)` (and stop
//! if it was recorded before), add the global delta, upsert every user's
//! and every conversation's delta, forget this node's older batches,
//! commit. Users and conversations are upserted in one statement per
//! [`MAX_ROWS`] rows (PostgreSQL: one statement of arrays however many), in
//! an order every process shares, so two nodes flushing at once lock rows
//! in the same order and cannot deadlock on each other.

use std::marker::PhantomData;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use sqlx::{Database, Executor, FromRow, IntoArguments};

use super::read::{self, MessageRow, TotalRow, to_db};
use super::{Applied, Batch, MAX_MESSAGES_PER_WRITE, Store, StoreError};
use crate::conversation::{ConversationId, History, HistoryQuery, Message};
use crate::counter::{CounterKey, Delta};

/// Most rows in one multi-row `VALUES` upsert: two bound values each, well
/// under SQLite's and MySQL's limits on bound parameters. Larger flushes
/// are split into several statements of the same transaction.
pub const MAX_ROWS: usize = 10_000;

/// One table that a flush adds deltas to: the start of its insert and the
/// clause that adds to a row already there.
#[derive(Debug)]
pub struct Upsert {
    /// `INSERT INTO table (key, value) `
    pub insert: &'static str,
    /// ` ON CONFLICT … DO UPDATE SET value = value + …`, in the dialect's words.
    pub on_conflict: &'static str,
}

/// What one database says differently. The statements bind in the order
/// their names give.
pub trait Dialect: Send + Sync + 'static {
    type DB: Database;
    /// The backend's name for logs, e.g. `sqlite`.
    const NAME: &'static str;
    const MIGRATOR: &'static sqlx::migrate::Migrator;
    /// Records `(node, seq)`, affecting no row when it is there already.
    const RECORD_BATCH: &'static str;
    /// Adds `(amount)` to the global counter.
    const ADD_GLOBAL: &'static str;
    const ADD_USERS: Upsert;
    /// The expression a lowercased username is compared with, so the
    /// case-insensitive unique index is used.
    const USER_KEY: &'static str;
    const ADD_ROOMS: Upsert;
    /// Deletes this node's rows of `flushes` below a sequence number
    /// `(node, seq)`: only by the primary key, since a wider delete would
    /// lock rows other nodes are writing.
    const FORGET_OLDER_BATCHES: &'static str;
    /// Deletes the `flushes` rows of nodes gone for a week, at start.
    const FORGET_OLD_NODES: &'static str;
    /// Ends a multi-row insert of messages so that an id already stored is
    /// skipped (never a blanket "ignore", which would swallow a refused value).
    const SKIP_STORED_MESSAGES: &'static str;
    /// Deletes at most `(limit)` messages created before `(before_ms)`.
    const PRUNE_MESSAGES: &'static str;

    /// How many rows a statement changed.
    fn rows_affected(result: &<Self::DB as Database>::QueryResult) -> u64;

    /// Runs `upsert` for `rows` (key, amount) on a transaction's connection.
    fn upsert<'a>(
        connection: &'a mut <Self::DB as Database>::Connection,
        upsert: &'static Upsert,
        rows: &'a [(&'a str, i64)],
    ) -> BoxFuture<'a, Result<(), sqlx::Error>>;
}

/// A database reached through one pool, speaking dialect `D`.
pub struct SqlStore<D: Dialect> {
    pub(super) pool: sqlx::Pool<D::DB>,
    dialect: PhantomData<D>,
}

impl<D: Dialect> SqlStore<D> {
    pub(super) fn new(pool: sqlx::Pool<D::DB>) -> Self {
        SqlStore {
            pool,
            dialect: PhantomData,
        }
    }
}

impl<D: Dialect> std::fmt::Debug for SqlStore<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &D::NAME)
            .finish_non_exhaustive()
    }
}

impl<D: Dialect> Clone for SqlStore<D> {
    fn clone(&self) -> Self {
        SqlStore::new(self.pool.clone())
    }
}

/// The multi-row `VALUES` upsert, in statements of at most [`MAX_ROWS`]
/// rows: how SQLite and MySQL add to many rows at once.
pub(super) async fn upsert_values<DB>(
    connection: &mut DB::Connection,
    upsert: &Upsert,
    rows: &[(&str, i64)],
) -> Result<(), sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    for chunk in rows.chunks(MAX_ROWS) {
        let mut statement = sqlx::QueryBuilder::<DB>::new(upsert.insert);
        statement.push_values(chunk, |mut row, (key, amount)| {
            row.push_bind(*key).push_bind(*amount);
        });
        statement.push(upsert.on_conflict);
        statement.build().execute(&mut *connection).await?;
    }
    Ok(())
}

/// A batch's deltas in bindable form: the global amount, each user's name
/// and amount ordered by name regardless of case, and each conversation's
/// id and amount ordered by id (the order every process shares).
#[derive(Debug, Default)]
struct Split<'a> {
    global: Option<i64>,
    users: Vec<(&'a str, i64)>,
    rooms: Vec<(&'a str, i64)>,
}

fn split(deltas: &[Delta]) -> Result<Split<'_>, StoreError> {
    let mut split = Split::default();
    let mut users = Vec::new();
    for delta in deltas {
        let amount = to_db(delta.amount)?;
        match &delta.key {
            CounterKey::Global => split.global = Some(amount),
            CounterKey::User(name) => users.push((name, amount)),
            CounterKey::Room(room) => split.rooms.push((room.as_str(), amount)),
        }
    }
    users.sort_by(|a, b| a.0.cmp_folded(b.0));
    split.users = users
        .into_iter()
        .map(|(name, amount)| (name.as_str(), amount))
        .collect();
    split.rooms.sort();
    Ok(split)
}

#[async_trait]
impl<D: Dialect> Store for SqlStore<D>
where
    for<'c> &'c sqlx::Pool<D::DB>: Executor<'c, Database = D::DB>,
    for<'c> &'c mut <D::DB as Database>::Connection: Executor<'c, Database = D::DB>,
    <D::DB as Database>::Arguments: IntoArguments<D::DB>,
    String: for<'q> sqlx::Encode<'q, D::DB> + sqlx::Type<D::DB>,
    i64: for<'q> sqlx::Encode<'q, D::DB> + sqlx::Type<D::DB>,
    for<'r> TotalRow: FromRow<'r, <D::DB as Database>::Row>,
    for<'r> MessageRow: FromRow<'r, <D::DB as Database>::Row>,
{
    async fn load(&self) -> Result<Vec<(CounterKey, u64)>, StoreError> {
        read::load(&self.pool).await
    }

    async fn totals(&self, keys: &[CounterKey]) -> Result<Vec<(CounterKey, u64)>, StoreError> {
        read::totals(&self.pool, D::USER_KEY, keys).await
    }

    async fn add(&self, batch: &Batch) -> Result<Applied, StoreError> {
        let Split {
            global,
            users,
            rooms,
        } = split(&batch.deltas)?;
        // The first statement writes, so the transaction takes the write
        // lock at once (SQLite waits up to its busy timeout for another
        // process) instead of failing to upgrade a read snapshot later.
        let mut tx = self.pool.begin().await?;
        let recorded = sqlx::query(D::RECORD_BATCH)
            .bind(batch.node)
            .bind(batch.seq)
            .execute(&mut *tx)
            .await?;
        if D::rows_affected(&recorded) == 0 {
            tx.rollback().await?;
            return Ok(Applied::Earlier);
        }
        if let Some(amount) = global {
            sqlx::query(D::ADD_GLOBAL)
                .bind(amount)
                .execute(&mut *tx)
                .await?;
        }
        if !users.is_empty() {
            D::upsert(&mut *tx, &D::ADD_USERS, &users).await?;
        }
        if !rooms.is_empty() {
            D::upsert(&mut *tx, &D::ADD_ROOMS, &rooms).await?;
        }
        sqlx::query(D::FORGET_OLDER_BATCHES)
            .bind(batch.node)
            .bind(batch.seq)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Applied::Now)
    }

    async fn add_messages(&self, messages: &[Message]) -> Result<(), StoreError> {
        for chunk in messages.chunks(MAX_MESSAGES_PER_WRITE) {
            let mut insert = sqlx::QueryBuilder::<D::DB>::new(
                "INSERT INTO messages (id, conversation_id, username, content, created_at) ",
            );
            insert.push_values(chunk, |mut row, message| {
                row.push_bind(message.id.to_string())
                    .push_bind(message.conversation.as_str().to_string())
                    .push_bind(message.user.as_str().to_string())
                    .push_bind(message.content.as_str().to_string())
                    .push_bind(message.created_at);
            });
            insert.push(D::SKIP_STORED_MESSAGES);
            insert.build().execute(&self.pool).await?;
        }
        Ok(())
    }

    async fn history(
        &self,
        conversation: &ConversationId,
        query: HistoryQuery,
    ) -> Result<History, StoreError> {
        read::history(&self.pool, conversation, query).await
    }

    async fn prune_messages(&self, before_ms: i64, limit: u32) -> Result<u64, StoreError> {
        let deleted = sqlx::query(D::PRUNE_MESSAGES)
            .bind(before_ms)
            .bind(i64::from(limit))
            .execute(&self.pool)
            .await?;
        Ok(D::rows_affected(&deleted))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        D::NAME
    }
}
