//! Reading, the same on every backend: the totals at start, a page of a
//! conversation's history, and the conversions between the database's
//! signed integers and text and tally's values.

use sqlx::{Executor, FromRow, IntoArguments};

use super::StoreError;
use crate::conversation::{Content, ConversationId, History, HistoryQuery, Message, MessageId};
use crate::counter::CounterKey;
use crate::user::Username;

/// A stored message as its columns.
#[derive(Debug, FromRow)]
pub(super) struct MessageRow {
    id: String,
    conversation_id: String,
    username: String,
    content: String,
    created_at: i64,
}

/// One stored total: a counter's name (or a user's, or a conversation's
/// id) and its value.
#[derive(Debug, FromRow)]
pub(super) struct TotalRow {
    name: String,
    value: i64,
}

/// How a stored name becomes a counter's key.
type KeyParser = fn(&str) -> Result<CounterKey, StoreError>;

/// Every stored total. Rows are streamed and converted one by one: holding
/// a million driver rows at once would cost several times the memory of
/// the totals themselves, and the allocator keeps much of it after they
/// are freed.
pub(super) async fn load<DB>(pool: &sqlx::Pool<DB>) -> Result<Vec<(CounterKey, u64)>, StoreError>
where
    DB: sqlx::Database,
    for<'r> TotalRow: FromRow<'r, DB::Row>,
    for<'c> &'c sqlx::Pool<DB>: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
{
    use futures_util::TryStreamExt;
    // Each table's rows, read as (name, value), and how a name becomes a key.
    let tables: [(&str, KeyParser); 3] = [
        ("SELECT name, value FROM counters", parse_counter),
        (
            "SELECT username AS name, user_count AS value FROM users",
            parse_user,
        ),
        (
            "SELECT id AS name, clicks AS value FROM conversations",
            parse_room,
        ),
    ];
    let mut totals = Vec::new();
    for (select, key) in tables {
        let mut rows = sqlx::query_as::<_, TotalRow>(select).fetch(pool);
        while let Some(TotalRow { name, value }) = rows.try_next().await? {
            totals.push((key(&name)?, from_db(&name, value)?));
        }
    }
    Ok(totals)
}

/// Most keys named by one `IN (…)` list when reading some totals.
const KEYS_PER_READ: usize = 1_000;

/// The stored totals of `keys` (a key with no row is left out).
/// `user_column` is how the dialect matches a lowercased username with its
/// case-insensitive index.
pub(super) async fn totals<DB>(
    pool: &sqlx::Pool<DB>,
    user_column: &str,
    keys: &[CounterKey],
) -> Result<Vec<(CounterKey, u64)>, StoreError>
where
    DB: sqlx::Database,
    for<'r> TotalRow: FromRow<'r, DB::Row>,
    for<'c> &'c sqlx::Pool<DB>: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    String: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let mut users = Vec::new();
    let mut rooms = Vec::new();
    let mut global = false;
    for key in keys {
        match key {
            CounterKey::Global => global = true,
            CounterKey::User(name) => users.push(name.folded()),
            CounterKey::Room(room) => rooms.push(room.as_str().to_string()),
        }
    }
    let mut totals = Vec::new();
    if global {
        let select = "SELECT name, value FROM counters WHERE name = 'global'";
        for TotalRow { name, value } in sqlx::query_as::<_, TotalRow>(select)
            .fetch_all(pool)
            .await?
        {
            totals.push((parse_counter(&name)?, from_db(&name, value)?));
        }
    }
    let user_select =
        format!("SELECT username AS name, user_count AS value FROM users WHERE {user_column} IN (");
    let lists: [(&str, Vec<String>, KeyParser); 2] = [
        (&user_select, users, parse_user),
        (
            "SELECT id AS name, clicks AS value FROM conversations WHERE id IN (",
            rooms,
            parse_room,
        ),
    ];
    for (select, names, key) in lists {
        for chunk in names.chunks(KEYS_PER_READ) {
            let mut query = sqlx::QueryBuilder::<DB>::new(select);
            let mut list = query.separated(", ");
            for name in chunk {
                list.push_bind(name.clone());
            }
            query.push(")");
            let rows: Vec<TotalRow> = query.build_query_as().fetch_all(pool).await?;
            for TotalRow { name, value } in rows {
                totals.push((key(&name)?, from_db(&name, value)?));
            }
        }
    }
    Ok(totals)
}

/// A page of history. One more row than the limit is read to learn whether
/// some were left out.
pub(super) async fn history<DB>(
    pool: &sqlx::Pool<DB>,
    conversation: &ConversationId,
    query: HistoryQuery,
) -> Result<History, StoreError>
where
    DB: sqlx::Database,
    for<'c> &'c sqlx::Pool<DB>: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    String: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'r> MessageRow: FromRow<'r, DB::Row>,
{
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX - 1);
    let mut select = sqlx::QueryBuilder::<DB>::new(
        "SELECT id, conversation_id, username, content, created_at FROM messages \
         WHERE conversation_id = ",
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
fn parse_message(row: MessageRow) -> Result<Message, StoreError> {
    let corrupt = |what: &str| StoreError::CorruptMessage {
        id: row.id.clone(),
        what: what.to_string(),
    };
    Ok(Message {
        id: MessageId::parse(&row.id).map_err(|_| corrupt("id"))?,
        conversation: ConversationId::parse(&row.conversation_id)
            .map_err(|_| corrupt("conversation"))?,
        user: Username::parse(&row.username).map_err(|_| corrupt("username"))?,
        content: Content::parse(&row.content).map_err(|_| corrupt("content"))?,
        created_at: row.created_at,
    })
}

/// The counter a row of the `counters` table refers to.
fn parse_counter(name: &str) -> Result<CounterKey, StoreError> {
    match name {
        "global" => Ok(CounterKey::Global),
        other => Err(StoreError::UnknownCounter(other.to_string())),
    }
}

/// The counter of a row of the `users` table.
fn parse_user(name: &str) -> Result<CounterKey, StoreError> {
    Username::parse(name)
        .map(CounterKey::User)
        .map_err(|_| StoreError::UnknownCounter(format!("user {name:?}")))
}

/// The counter of a row of the `conversations` table.
fn parse_room(id: &str) -> Result<CounterKey, StoreError> {
    ConversationId::parse(id)
        .map(CounterKey::Room)
        .map_err(|_| StoreError::UnknownCounter(format!("conversation {id:?}")))
}

/// A count as the database stores it.
pub(super) fn to_db(value: u64) -> Result<i64, StoreError> {
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
    fn counter_names_are_known() {
        assert_eq!(parse_counter("global").unwrap(), CounterKey::Global);
        assert!(parse_counter("nope").is_err());
        assert!(parse_room("a/b").is_err());
    }
}
