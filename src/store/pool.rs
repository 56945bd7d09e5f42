//! Opening a backend's pool: one connection tried first (so an error says
//! why), then the pool, the migrations, and forgetting the batches of nodes
//! that went away.

use std::time::Duration;

use super::{Dialect, StoreError, StoreOptions, redact};

/// Opens and closes one connection, bounded by `timeout`, before a pool is
/// built: a pool only says it timed out, this says why (refused, unknown
/// host, bad password, no such database).
pub(super) async fn reach<O>(url: &str, connect: &O, timeout: Duration) -> Result<(), StoreError>
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

/// Connects a pool to a database server (PostgreSQL, MySQL) after
/// [`reach`] has tried one connection.
pub(super) async fn open_server_pool<DB: sqlx::Database>(
    url: &str,
    connect: <DB::Connection as sqlx::Connection>::Options,
    options: &StoreOptions,
) -> Result<sqlx::Pool<DB>, StoreError> {
    reach(url, &connect, options.timeout).await?;
    sqlx::pool::PoolOptions::<DB>::new()
        .max_connections(options.pool_size)
        .acquire_timeout(options.timeout)
        .connect_with(connect)
        .await
        .map_err(|err| connect_error(url, err))
}

/// Migrates a freshly opened pool and deletes the `flushes` rows of nodes
/// that went away: no live node retries a batch that old, and start-up is
/// outside any flush's transaction.
pub(super) async fn prepare<D: Dialect>(pool: &sqlx::Pool<D::DB>) -> Result<(), StoreError>
where
    <D::DB as sqlx::Database>::Connection: sqlx::migrate::Migrate,
    for<'c> &'c sqlx::Pool<D::DB>: sqlx::Executor<'c, Database = D::DB>,
    <D::DB as sqlx::Database>::Arguments: sqlx::IntoArguments<D::DB>,
{
    D::MIGRATOR.run(pool).await?;
    sqlx::query(D::FORGET_OLD_NODES).execute(pool).await?;
    Ok(())
}

/// A failed first connection, naming the server without its password.
pub(super) fn connect_error(url: &str, source: sqlx::Error) -> StoreError {
    StoreError::Connect {
        url: redact(url),
        source,
    }
}
