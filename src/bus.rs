//! The Redis connection that joins nodes in cluster mode, and the adapter
//! types every Socket.IO handle names.
//!
//! [`Bus`] is a [`socketioxide_redis`] driver of tally's own over redis-rs's
//! `ConnectionManager`: it reconnects after Redis restarts and subscribes
//! to its channels again (the adapter's bundled driver holds a plain
//! connection that never comes back). Without `--redis-url` the bus is
//! detached: publishing goes nowhere, subscriptions stay silent, and the
//! adapter behaves as socketioxide's local one, so one type serves both
//! modes and no handler is generic over the adapter.
//!
//! Two rules make a Redis outage cost freshness, never delivery:
//! - A broadcast's publish never fails. The adapter publishes before it
//!   delivers to this node's sockets and gives up at the first error, so a
//!   failed publish would also cost the members on this node their
//!   message; the bus logs the failure, notes the loss and answers `Ok`.
//! - While the connection is known to be down, publishing is skipped at
//!   once instead of waiting for a timeout per broadcast. [`Bus::probe`]
//!   (the cluster's heartbeat) keeps trying, and reports when the
//!   connection is back so that the cluster can read what it missed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind};
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use tokio::sync::mpsc;

use crate::config::redact_url as redact;
use crate::sync::{read, write};

/// The adapter of every namespace: socketioxide's Redis adapter over a
/// [`Bus`] (attached or not).
pub type Adapter = socketioxide_redis::CustomRedisAdapter<socketioxide::adapter::Emitter, Bus>;
/// The Socket.IO server handle, over [`Adapter`].
pub type SocketIo = socketioxide::SocketIo<Adapter>;
/// A connected socket (also an extractor of handlers), over [`Adapter`].
pub type SocketRef = socketioxide::extract::SocketRef<Adapter>;
/// The acknowledgement callback of an event (an extractor), over
/// [`Adapter`].
pub type AckSender = socketioxide::extract::AckSender<Adapter>;
/// A broadcast being addressed (a namespace, rooms, `.local()`), over
/// [`Adapter`].
pub type BroadcastOperators = socketioxide::operators::BroadcastOperators<Adapter>;

/// What registering a namespace returns: await it (with Redis, the
/// namespace exists once its channels are subscribed).
pub type NamespaceReady = socketioxide_redis::InitRes<Bus>;

/// How long one Redis command or connection attempt may take. Short: the
/// bus is never in the path of a click, and a broadcast that waited
/// longer would hold up a chat message on this node too.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// Messages from one channel that may wait to be read before newer ones
/// are dropped (the cluster reads again from the database after a loss).
pub const CHANNEL_BUFFER: usize = 1_024;

/// What can go wrong reaching Redis.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(#[source] redis::RedisError),
    #[error("cannot connect to Redis at {url}: {source}")]
    Connect {
        /// The URL with its password hidden.
        url: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("Redis error: {0}")]
    Redis(#[from] redis::RedisError),
}

/// What [`Bus::probe`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Redis answered, as it did last time.
    Up,
    /// Redis answered after a loss: messages sent meanwhile are gone.
    Resumed,
    /// Redis did not answer.
    Down,
}

/// The connection to Redis shared by every namespace and the cluster's
/// own channels; cheap to clone. [`Bus::default`] is detached.
#[derive(Clone, Default)]
pub struct Bus {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    conn: ConnectionManager,
    handlers: Arc<RwLock<HashMap<String, mpsc::Sender<ChanItem>>>>,
    /// Whether the last command succeeded and no disconnection was seen
    /// since.
    connected: Arc<AtomicBool>,
    /// Publishes skipped or failed while Redis was unreachable.
    dropped: AtomicU64,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("attached", &self.is_attached())
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl Bus {
    /// Connects to the Redis server at `url` (RESP3 is required for
    /// pub/sub on one multiplexed connection, so it is asked for whatever
    /// the URL says).
    pub async fn connect(url: &str) -> Result<Bus, BusError> {
        let info = url.into_connection_info().map_err(BusError::InvalidUrl)?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client =
            redis::Client::open(info.set_redis_settings(settings)).map_err(BusError::InvalidUrl)?;
        let handlers: Arc<RwLock<HashMap<String, mpsc::Sender<ChanItem>>>> = Arc::default();
        let connected = Arc::new(AtomicBool::new(true));
        let config = ConnectionManagerConfig::new()
            .set_push_sender({
                let handlers = handlers.clone();
                let connected = connected.clone();
                move |push: PushInfo| {
                    on_push(push, &handlers, &connected);
                    Ok::<(), std::convert::Infallible>(())
                }
            })
            .set_automatic_resubscription()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            // A few quick retries after a cut; beyond them the next
            // command (the heartbeat's, every interval) tries again.
            .set_number_of_retries(3)
            .set_max_delay(REDIS_TIMEOUT);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|source| BusError::Connect {
                url: redact(url),
                source,
            })?;
        Ok(Bus {
            inner: Some(Arc::new(Inner {
                conn,
                handlers,
                connected,
                dropped: AtomicU64::new(0),
            })),
        })
    }

    /// Whether this bus reaches Redis at all (cluster mode).
    pub fn is_attached(&self) -> bool {
        self.inner.is_some()
    }

    /// Whether Redis answered the last command (always false detached).
    pub fn is_connected(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|inner| inner.connected.load(Ordering::SeqCst))
    }

    /// Publishes skipped or failed because Redis was unreachable.
    pub fn dropped(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |inner| inner.dropped.load(Ordering::Relaxed))
    }

    /// Publishes `payload` on `channel`, trying even if the connection was
    /// down, and says whether Redis answered and whether it had been lost.
    /// The cluster's heartbeat goes through here, so it is also what finds
    /// a connection that came back.
    pub async fn probe(&self, channel: &str, payload: Vec<u8>) -> Probe {
        let Some(inner) = &self.inner else {
            return Probe::Down;
        };
        match inner.publish(channel, payload).await {
            Ok(_) if !inner.connected.swap(true, Ordering::SeqCst) => {
                tracing::info!("Redis is reachable again");
                Probe::Resumed
            }
            Ok(_) => Probe::Up,
            Err(err) => {
                inner.lost(&err);
                Probe::Down
            }
        }
    }
}

impl Inner {
    /// One `PUBLISH`.
    async fn publish(&self, channel: &str, payload: Vec<u8>) -> redis::RedisResult<()> {
        self.conn
            .clone()
            .publish::<_, _, redis::Value>(channel, payload)
            .await
            .map(drop)
    }

    /// Notes a failed command, logging only the first of an outage.
    fn lost(&self, err: &redis::RedisError) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        if self.connected.swap(false, Ordering::SeqCst) {
            tracing::warn!(error = %err, "Redis unreachable; nodes do not hear from each other until it is back");
        }
    }
}

/// Routes a message to its channel's subscriber and notes disconnections.
/// Runs on the connection's reader, so it never waits.
fn on_push(
    push: PushInfo,
    handlers: &RwLock<HashMap<String, mpsc::Sender<ChanItem>>>,
    connected: &AtomicBool,
) {
    match push.kind {
        PushKind::Message | PushKind::SMessage => {
            let mut data = push.data.into_iter();
            let (Some(channel), Some(message)) = (data.next(), data.next()) else {
                return;
            };
            let (Ok(channel), Ok(message)) = (
                redis::from_redis_value::<String>(channel),
                redis::from_redis_value::<Vec<u8>>(message),
            ) else {
                tracing::debug!("unreadable Redis message");
                return;
            };
            if let Some(handler) = read(handlers).get(&channel)
                && handler.try_send((channel, message)).is_err()
            {
                // A subscriber this far behind is caught up from the
                // database instead (a gap in a peer's sequence).
                tracing::warn!("a Redis channel's reader is behind; a message was dropped");
            }
        }
        PushKind::Disconnection if connected.swap(false, Ordering::SeqCst) => {
            tracing::warn!("lost the connection to Redis; reconnecting");
        }
        _ => {}
    }
}

impl Driver for Bus {
    type Error = redis::RedisError;

    async fn publish(&self, chan: String, val: Vec<u8>) -> Result<(), Self::Error> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        if !inner.connected.load(Ordering::SeqCst) {
            inner.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        // Never an error, so the adapter goes on to this node's sockets
        // (see the module's documentation).
        if let Err(err) = inner.publish(&chan, val).await {
            inner.lost(&err);
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        chan: String,
        size: usize,
    ) -> Result<MessageStream<ChanItem>, Self::Error> {
        let Some(inner) = &self.inner else {
            return Ok(MessageStream::new_empty());
        };
        let (tx, rx) = mpsc::channel(size);
        // Registered first, so no message between the subscription and the
        // registration is lost.
        write(&inner.handlers).insert(chan.clone(), tx);
        if let Err(err) = inner.conn.clone().subscribe(&chan).await {
            write(&inner.handlers).remove(&chan);
            return Err(err);
        }
        Ok(MessageStream::new(rx))
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), Self::Error> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        write(&inner.handlers).remove(&chan);
        inner.conn.clone().unsubscribe(&chan).await
    }

    async fn num_serv(&self, chan: &str) -> Result<u16, Self::Error> {
        let Some(inner) = &self.inner else {
            return Ok(1);
        };
        let (_, count): (String, u16) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(chan)
            .query_async(&mut inner.conn.clone())
            .await?;
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_detached_bus_publishes_nowhere_and_counts_itself_alone() {
        let bus = Bus::default();
        assert!(!bus.is_attached());
        assert!(!bus.is_connected());
        bus.publish("c".into(), vec![1]).await.unwrap();
        assert_eq!(bus.num_serv("c").await.unwrap(), 1);
        assert_eq!(bus.probe("c", vec![]).await, Probe::Down);
        assert_eq!(bus.dropped(), 0);
    }
}
