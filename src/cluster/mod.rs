//! Cluster mode (`--redis-url`): several nodes on one database, one
//! service.
//!
//! Rooms cross nodes through socketioxide's Redis adapter (over
//! [`crate::bus`]). Everything else nodes learn from each other is here,
//! on two channels of the same Redis:
//!
//! - **Totals.** The database is the only record of counts; Redis holds
//!   none. After each flush a node reads back the totals of the keys it
//!   wrote and publishes them (`wire::Totals`, numbered per node); every
//!   node raises its counters with [`Counters::merge`] (stored value plus
//!   its own unflushed clicks, never lower). A node that sees a gap in a
//!   peer's numbers (in its totals, or in the last number its heartbeat
//!   names), or whose Redis connection comes back, reads every total
//!   again; the global total is also read every second, so it keeps
//!   moving while Redis is down. Each node publishes `count`, `me` and
//!   `room_count` to its own sockets only, so a client, which talks to one
//!   node, never sees a total go back.
//! - **Heartbeats.** Every `--heartbeat-interval` a node sends its
//!   sockets per conversation (absolute counts); presence is this node's
//!   plus the live peers'. A node silent for `--peer-timeout` drops out,
//!   and a node that stops cleanly says goodbye.

mod peers;
mod wire;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use socketioxide_redis::drivers::Driver;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use peers::{Peers, Sequence};

use crate::bus::{Bus, BusError, CHANNEL_BUFFER, Probe};
use crate::config::ClusterConfig;
use crate::counter::{CounterKey, Counters};
use crate::metrics::{ClusterState, Metrics};
use crate::store::Store;
use crate::sync::lock;

/// How often the global total is read from the database, whatever Redis
/// does.
const GLOBAL_READ_EVERY: Duration = Duration::from_secs(1);

/// Shortest time between two reloads of every total: gaps during an
/// outage come in bursts, and one reload after the burst covers them all.
const RELOAD_SPACING: Duration = Duration::from_millis(500);

/// This node's part in a cluster; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    bus: Bus,
    /// Random per process, like the flusher's batch id.
    node: u64,
    totals_channel: String,
    heartbeat_channel: String,
    adapter_prefix: String,
    heartbeat_interval: Duration,
    peer_timeout: Duration,
    peers: Mutex<Peers>,
    /// The number of this node's next totals message.
    next_seq: AtomicU64,
    /// The last number whose message was sent (or given up on): what the
    /// heartbeat announces. Raised only once the publish is done, so a
    /// heartbeat cannot overtake the message it names.
    spent_seq: AtomicU64,
    /// Asks the reloader for a read of every total.
    reload: Notify,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.inner.node)
            .field("bus", &self.inner.bus)
            .finish_non_exhaustive()
    }
}

/// The cluster's background tasks.
pub struct Tasks {
    stop: CancellationToken,
    /// Ends by itself once the flusher has ended (its queue closes), after
    /// publishing the final flush's totals.
    publisher: JoinHandle<()>,
    others: Vec<JoinHandle<()>>,
}

impl Cluster {
    /// Connects to Redis when `--redis-url` is given; `None` runs alone.
    pub async fn connect(config: &ClusterConfig) -> Result<Option<Cluster>, BusError> {
        let Some(url) = &config.redis_url else {
            return Ok(None);
        };
        let bus = Bus::connect(&url.0).await?;
        let prefix = &config.redis_prefix;
        let node = crate::node::random_id();
        tracing::info!(
            node = format!("{node:016x}"),
            "cluster mode: Redis connected"
        );
        Ok(Some(Cluster {
            inner: Arc::new(Inner {
                bus,
                node,
                totals_channel: format!("{prefix}:totals"),
                heartbeat_channel: format!("{prefix}:heartbeat"),
                adapter_prefix: format!("{prefix}:socket.io"),
                heartbeat_interval: config.heartbeat_interval,
                peer_timeout: config.peer_timeout,
                peers: Mutex::new(Peers::default()),
                next_seq: AtomicU64::new(1),
                spent_seq: AtomicU64::new(0),
                reload: Notify::new(),
            }),
        }))
    }

    /// The Redis connection, for the Socket.IO adapter.
    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    /// The prefix of the Socket.IO adapter's channels.
    pub fn adapter_prefix(&self) -> &str {
        &self.inner.adapter_prefix
    }

    /// The figures `/metrics` shows.
    pub fn state(&self) -> ClusterState {
        ClusterState {
            peers: lock(&self.inner.peers).len(),
            connected: self.inner.bus.is_connected(),
            dropped: self.inner.bus.dropped(),
        }
    }

    /// Spawns the listener, the heartbeat, the global read, the reloader
    /// and the publisher of committed totals (fed by the flusher through
    /// `committed`).
    pub fn start(
        &self,
        counters: Arc<Counters>,
        store: Arc<dyn Store>,
        metrics: Metrics,
        committed: mpsc::UnboundedReceiver<Vec<CounterKey>>,
    ) -> Tasks {
        let stop = CancellationToken::new();
        let others = vec![
            tokio::spawn(listen(self.clone(), counters.clone(), stop.clone())),
            tokio::spawn(heartbeat(self.clone(), counters.clone(), stop.clone())),
            tokio::spawn(read_global(counters.clone(), store.clone(), stop.clone())),
            tokio::spawn(reload(
                self.clone(),
                counters.clone(),
                store.clone(),
                metrics,
                stop.clone(),
            )),
        ];
        let publisher = tokio::spawn(publish_committed(self.clone(), counters, store, committed));
        Tasks {
            stop,
            publisher,
            others,
        }
    }

    /// Publishes `totals` (just read back from the database) to the other
    /// nodes. The number advances even when Redis is unreachable, so the
    /// others see the gap and read again.
    async fn publish_totals(&self, totals: &[(CounterKey, u64)]) {
        let seq = self.inner.next_seq.fetch_add(1, Ordering::SeqCst);
        let message = wire::Totals::new(self.inner.node, seq, totals);
        let payload = serde_json::to_vec(&message).expect("totals serialise");
        // The bus never fails a publish (see its documentation).
        let _ = self
            .inner
            .bus
            .publish(self.inner.totals_channel.clone(), payload)
            .await;
        self.inner.spent_seq.fetch_max(seq, Ordering::SeqCst);
    }

    /// Spends a number without a message (the totals could not be read
    /// back): the others see the gap in the next heartbeat.
    fn skip_totals(&self) {
        let seq = self.inner.next_seq.fetch_add(1, Ordering::SeqCst);
        self.inner.spent_seq.fetch_max(seq, Ordering::SeqCst);
    }

    /// This node's heartbeat: its sockets per room, or its goodbye.
    fn heartbeat_payload(&self, counters: &Counters, leaving: bool) -> Vec<u8> {
        let rooms = if leaving {
            Vec::new()
        } else {
            counters
                .local_presence()
                .into_iter()
                .map(|(room, online)| (room.to_string(), online))
                .collect()
        };
        let message = wire::Heartbeat {
            node: self.inner.node,
            leaving,
            totals_seq: self.inner.spent_seq.load(Ordering::SeqCst),
            rooms,
        };
        serde_json::to_vec(&message).expect("heartbeats serialise")
    }

    /// Applies the peers' presence to the counters.
    fn refresh_presence(&self, counters: &Counters) {
        let remote = lock(&self.inner.peers).remote();
        counters.set_remote_presence(remote);
    }

    fn request_reload(&self, why: &'static str) {
        tracing::debug!(why, "reading every total again");
        self.inner.reload.notify_one();
    }
}

impl Tasks {
    /// Stops listening and beating, waits for the publisher to send the
    /// final flush's totals, and tells the other nodes this one is leaving
    /// (its sockets are closed by now), all within `within`. Call after the
    /// final flush.
    pub async fn stop(self, cluster: &Cluster, counters: &Counters, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        // The heartbeat stops first, so none follows the goodbye; a task
        // stuck on a database that stopped answering is cut short.
        self.stop.cancel();
        for mut task in self.others {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
        let mut publisher = self.publisher;
        if tokio::time::timeout_at(deadline, &mut publisher)
            .await
            .is_err()
        {
            publisher.abort();
            // The goodbye then names a number no message carried, and the
            // others read every total from the database.
            cluster.skip_totals();
            tracing::warn!(
                "the final totals were not published; the other nodes read them from the database"
            );
        }
        // Last, so the final totals cannot make the others count this node
        // alive again.
        let goodbye = cluster.heartbeat_payload(counters, true);
        let farewell = cluster
            .inner
            .bus
            .probe(&cluster.inner.heartbeat_channel, goodbye);
        if tokio::time::timeout_at(deadline, farewell).await.is_err() {
            tracing::debug!(
                "the goodbye was not sent; the others drop this node after their timeout"
            );
        }
    }
}

/// Reads what the other nodes send and applies it.
async fn listen(cluster: Cluster, counters: Arc<Counters>, stop: CancellationToken) {
    let inner = &cluster.inner;
    let subscribed = futures_util::future::try_join(
        inner
            .bus
            .subscribe(inner.totals_channel.clone(), CHANNEL_BUFFER),
        inner
            .bus
            .subscribe(inner.heartbeat_channel.clone(), CHANNEL_BUFFER),
    )
    .await;
    let (totals, heartbeats) = match subscribed {
        Ok(streams) => streams,
        Err(err) => {
            tracing::error!(error = %err, "cannot subscribe to the cluster's channels; this node hears no other");
            return;
        }
    };
    // What the others published between loading the counts and now is
    // not in these channels; one read of every total covers it.
    cluster.request_reload("subscribed");
    let mut messages = futures_util::stream::select(totals, heartbeats);
    loop {
        let (channel, payload) = tokio::select! {
            () = stop.cancelled() => return,
            message = messages.next() => match message {
                Some(message) => message,
                None => return,
            },
        };
        if channel == inner.totals_channel {
            let Ok(message) = serde_json::from_slice::<wire::Totals>(&payload) else {
                tracing::debug!("unreadable totals message");
                continue;
            };
            if message.node == inner.node {
                continue;
            }
            let order = lock(&inner.peers).totals(message.node, message.seq);
            counters.merge(&message.keys());
            if order == Sequence::Gap {
                cluster.request_reload("a peer's totals were lost");
            }
        } else {
            let Ok(message) = serde_json::from_slice::<wire::Heartbeat>(&payload) else {
                tracing::debug!("unreadable heartbeat");
                continue;
            };
            if message.node == inner.node {
                continue;
            }
            let order = {
                let mut peers = lock(&inner.peers);
                if message.leaving {
                    peers.left(message.node, message.totals_seq)
                } else {
                    let rooms = message.rooms();
                    peers.heard(message.node, Instant::now(), rooms, message.totals_seq)
                }
            };
            if order == Sequence::Gap {
                cluster.request_reload("a peer's totals were lost");
            }
            cluster.refresh_presence(&counters);
        }
    }
}

/// Sends this node's heartbeat, notices Redis coming back, and drops the
/// peers gone silent.
async fn heartbeat(cluster: Cluster, counters: Arc<Counters>, stop: CancellationToken) {
    let inner = &cluster.inner;
    let mut ticker = tokio::time::interval(inner.heartbeat_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let payload = cluster.heartbeat_payload(&counters, false);
        if inner.bus.probe(&inner.heartbeat_channel, payload).await == Probe::Resumed {
            cluster.request_reload("Redis is back");
        }
        let expired = lock(&inner.peers).expire(Instant::now(), inner.peer_timeout);
        if expired {
            tracing::info!("a node went silent; its sockets leave presence");
            cluster.refresh_presence(&counters);
        }
    }
}

/// Reads the global total every second, so it moves on every node even
/// while no news crosses Redis.
async fn read_global(counters: Arc<Counters>, store: Arc<dyn Store>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(GLOBAL_READ_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match store.totals(&[CounterKey::Global]).await {
            Ok(totals) => {
                counters.merge(&totals);
            }
            Err(err) => tracing::debug!(error = %err, "could not read the global total"),
        }
    }
}

/// Reads every total again when asked (a gap, Redis coming back, start),
/// at most once per [`RELOAD_SPACING`]; requests during a reload make one
/// more after it.
async fn reload(
    cluster: Cluster,
    counters: Arc<Counters>,
    store: Arc<dyn Store>,
    metrics: Metrics,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = cluster.inner.reload.notified() => {}
        }
        match store.load().await {
            Ok(totals) => {
                let moved = counters.merge(&totals);
                metrics.cluster_reloaded();
                tracing::info!(moved, "read every total from the database");
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not read the totals again; retrying");
                cluster.inner.reload.notify_one();
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RELOAD_SPACING) => {}
        }
    }
}

/// After each flush: reads back the totals of the keys it wrote, raises
/// this node's counters to them and tells the other nodes. Batches that
/// queued meanwhile are read together.
async fn publish_committed(
    cluster: Cluster,
    counters: Arc<Counters>,
    store: Arc<dyn Store>,
    mut committed: mpsc::UnboundedReceiver<Vec<CounterKey>>,
) {
    while let Some(keys) = committed.recv().await {
        let mut keys: HashSet<CounterKey> = keys.into_iter().collect();
        while let Ok(more) = committed.try_recv() {
            keys.extend(more);
        }
        let keys: Vec<CounterKey> = keys.into_iter().collect();
        match store.totals(&keys).await {
            Ok(totals) => {
                counters.merge(&totals);
                cluster.publish_totals(&totals).await;
            }
            Err(err) => {
                // The others see the gap in this node's next heartbeat and
                // read everything.
                cluster.skip_totals();
                tracing::debug!(error = %err, "could not read back the committed totals");
            }
        }
    }
}
