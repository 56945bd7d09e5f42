//! The shared application state handed to every handler: [`AppState`], one
//! cheap-to-clone bundle of handles.
//!
//! It depends only on the modules below it (counters, the store and its
//! tasks' handles, the socket records, the Admin UI, metrics, limits); the
//! handlers that use it (`crate::realtime`, `crate::http`) sit above.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::admin::Admin;
use crate::auth::Auth;
use crate::cluster::Cluster;
use crate::counter::Counters;
use crate::counter::leaderboard::LiveLeaderboard;
use crate::counter::rate::Rate;
use crate::idempotency::Keys;
use crate::identity::DynIdentityProvider;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::persist::health::StoreHealth;
use crate::persist::message_log::MessageLog;
use crate::sockets::{Caps, Connections};
use crate::store::Store;

/// Cheap to clone: every field is a handle or a copyable value.
#[derive(Clone)]
pub struct AppState {
    pub counters: Arc<Counters>,
    pub store: Arc<dyn Store>,
    /// Whether the store answered its last health check.
    pub store_health: Arc<StoreHealth>,
    /// The live top list, as last published.
    pub leaderboard: Arc<LiveLeaderboard>,
    pub auth: Arc<Auth>,
    /// The host application's identity hook, which replaces tally's own
    /// handshake rule when set.
    pub(crate) identity: Option<Arc<dyn DynIdentityProvider>>,
    /// Sockets connected now.
    pub connections: Connections,
    /// Zero means "broadcast after every click" instead of coalescing.
    pub broadcast_interval: Duration,
    /// Durable mode (`--flush-interval 0`): a click is acknowledged once
    /// it is stored.
    pub durable: bool,
    /// Where chat messages are stored before they are sent.
    pub messages: MessageLog,
    /// The backend API's `Idempotency-Key`s.
    pub idempotency: Arc<Keys>,
    /// This instance's Prometheus metrics.
    pub metrics: Metrics,
    /// Set when shutdown begins: `/readyz` answers 503 and handshakes are
    /// refused.
    pub draining: Arc<AtomicBool>,
    /// Most messages in one page of history.
    pub history_size: usize,
    /// The key of `/api/conversations/…`; `None` turns those endpoints off.
    pub(crate) api_key: Option<Arc<str>>,
    /// The token of `/api/admin/…`; `None` turns those endpoints off.
    pub(crate) admin_token: Option<Arc<str>>,
    /// The rate limits of client events, with the per-user buckets.
    pub limits: Arc<Limits>,
    /// Caps on connections (0: none) and whose `X-Forwarded-For` to trust.
    pub caps: Arc<Caps>,
    /// Clicks per second, sampled once a second.
    pub rate: Arc<Rate>,
    /// The Admin UI's server side, with `--admin`.
    pub admin: Option<Admin>,
    /// This node's part in a cluster, with `--redis-url`.
    pub cluster: Option<Cluster>,
}

impl AppState {
    /// Whether the store answered its last health check and the last write
    /// of counts succeeded: what `/healthz` reports, and what durable clicks
    /// need.
    pub fn store_writable(&self) -> bool {
        self.store_health.is_up() && !self.counters.flushes().failing()
    }

    /// Whether shutdown has begun.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
