//! The server half of the official Socket.IO Admin UI
//! (`@socket.io/admin-ui`), whose own server exists only for Node: the
//! namespace `/admin` that the UI connects to, its logins, the
//! `server_stats` it draws the dashboard from, and, in development mode, the
//! live stream of sockets, rooms and events and the commands that act on
//! them. The UI's files are served by `crate::http::admin_ui`.
//!
//! Owns: [`Admin`], the handle the rest of tally tells about connections
//! and events (each call is an atomic add in aggregated mode, and does
//! nothing more while no admin is watching).

mod feed;
pub mod namespace;
pub mod sessions;
pub mod stats;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socketioxide::socket::DisconnectReason;

pub use crate::config::AdminMode;
pub use namespace::{AdminContext, Conversations};
use sessions::Sessions;
use stats::{Aggregated, NamespaceStats, ServerStats};

use crate::bus::{NamespaceReady, SocketIo, SocketRef};
use crate::clock::now_ms;
use crate::events::ClientEvent;
use crate::server::bytes::ByteCounts;
use crate::sync::lock;

/// The namespace the UI connects to.
pub const NAMESPACE: &str = "/admin";

/// How often `server_stats` is sent; the UI marks a server unhealthy after
/// 10 s without one.
pub const STATS_EVERY: Duration = Duration::from_secs(2);

/// The Admin UI's settings, from `--admin-*`.
#[derive(Debug, Clone)]
pub struct AdminOptions {
    pub mode: AdminMode,
    pub readonly: bool,
    /// `None` with `--admin-no-auth`.
    pub credentials: Option<Credentials>,
    pub session_ttl: Duration,
    /// Cluster mode: `server_stats` crosses nodes.
    pub clustered: bool,
}

/// The one admin account.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    /// A bcrypt hash.
    pub password_hash: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The Admin UI's server side. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Admin(Arc<Inner>);

/// Client addresses whose login allowance is tracked before the ones that
/// are back to a full allowance are dropped.
const LOGIN_ADDRESSES_KEPT: usize = 10_000;

/// How long an address that gave wrong credentials counts as guessing.
const GUESSED_FOR: std::time::Duration = std::time::Duration::from_secs(600);

#[derive(Debug)]
struct Inner {
    options: AdminOptions,
    sessions: Sessions,
    /// Password checks a client address may ask for: each costs bcrypt's
    /// deliberate work, which a stream of guesses would otherwise turn into
    /// CPU taken from the clicks. Per address (key), so one guesser cannot
    /// lock the operator out; with two server-wide ceilings above it, one
    /// shared by the addresses that guessed wrong lately and one by all the
    /// others, so that a few guessing addresses spend only their own.
    logins_per_ip: governor::DefaultKeyedRateLimiter<std::net::IpAddr>,
    logins_guessing: governor::DefaultDirectRateLimiter,
    logins_fresh: governor::DefaultDirectRateLimiter,
    /// When each address last gave wrong credentials.
    guessed: Mutex<std::collections::HashMap<std::net::IpAddr, Instant>>,
    events: Aggregated,
    bytes: ByteCounts,
    started: Instant,
    hostname: String,
    /// Admin sockets connected: with none, development mode's stream is
    /// not even built.
    watching: AtomicUsize,
    /// The server's Socket.IO, until shutdown lets go of it: socketioxide
    /// keeps tally's state (and so this) inside it, and the cycle would keep
    /// both alive for ever.
    io: Mutex<Option<SocketIo>>,
}

impl Admin {
    pub fn new(options: AdminOptions) -> Self {
        let quota = |rate: u32, burst: u32| {
            governor::Quota::per_second(std::num::NonZeroU32::new(rate).expect("non-zero"))
                .allow_burst(std::num::NonZeroU32::new(burst).expect("non-zero"))
        };
        Admin(Arc::new(Inner {
            sessions: Sessions::new(options.session_ttl),
            options,
            logins_per_ip: governor::RateLimiter::keyed(quota(1, 5)),
            logins_guessing: governor::RateLimiter::direct(quota(8, 20)),
            logins_fresh: governor::RateLimiter::direct(quota(8, 20)),
            guessed: Mutex::default(),
            events: Aggregated::default(),
            bytes: ByteCounts::default(),
            started: Instant::now(),
            hostname: hostname(),
            watching: AtomicUsize::new(0),
            io: Mutex::new(None),
        }))
    }

    /// Where [`crate::serve()`] adds up the bytes of each connection.
    pub fn byte_counts(&self) -> ByteCounts {
        self.0.bytes.clone()
    }

    /// Registers the namespace `/admin` on `io`, whose builder was given
    /// this admin's [`AdminContext`] as a state.
    pub fn register(&self, io: &SocketIo) -> NamespaceReady {
        *self.io_slot() = Some(io.clone());
        namespace::register(io)
    }

    /// Lets go of the server's Socket.IO, at shutdown.
    pub fn detach(&self) {
        self.io_slot().take();
    }

    fn io_slot(&self) -> std::sync::MutexGuard<'_, Option<SocketIo>> {
        lock(&self.0.io)
    }

    fn io(&self) -> Option<SocketIo> {
        self.io_slot().clone()
    }

    /// Whether a password from the address key `client` may be checked
    /// now: 1 a second per address after a burst of 5, and at most 8 a
    /// second (burst 20) from the addresses that guessed wrong within
    /// [`GUESSED_FOR`], and as many again from all the others.
    fn may_try_login(&self, client: Option<std::net::IpAddr>) -> bool {
        // Each address that tries keeps a small entry; addresses whose
        // allowance is back to full are forgotten, so a guesser rotating
        // through many addresses does not grow this for ever.
        if self.0.logins_per_ip.len() > LOGIN_ADDRESSES_KEPT {
            self.0.logins_per_ip.retain_recent();
        }
        let address_ok = client.is_none_or(|ip| self.0.logins_per_ip.check_key(&ip).is_ok());
        let guessing = client.is_none_or(|ip| {
            lock(&self.0.guessed)
                .get(&ip)
                .is_some_and(|at| at.elapsed() < GUESSED_FOR)
        });
        let ceiling = if guessing {
            &self.0.logins_guessing
        } else {
            &self.0.logins_fresh
        };
        address_ok && ceiling.check().is_ok()
    }

    /// Notes how a login from `client` ended.
    fn login_ended(&self, client: Option<std::net::IpAddr>, succeeded: bool) {
        let Some(ip) = client else { return };
        let mut guessed = lock(&self.0.guessed);
        if succeeded {
            guessed.remove(&ip);
            return;
        }
        if guessed.len() >= LOGIN_ADDRESSES_KEPT {
            guessed.retain(|_, at| at.elapsed() < GUESSED_FOR);
        }
        guessed.insert(ip, Instant::now());
    }

    fn development(&self) -> bool {
        self.0.options.mode == AdminMode::Development
    }

    /// The admin sockets to stream to, when in development mode and
    /// someone is watching.
    fn audience(&self) -> Option<Vec<SocketRef>> {
        if !self.development() || self.0.watching.load(Ordering::Relaxed) == 0 {
            return None;
        }
        Some(self.io()?.of(NAMESPACE)?.sockets())
    }

    /// A socket joined namespace `/`.
    pub fn socket_connected(&self, socket: &SocketRef) {
        self.0.events.connection();
        if let Some(admins) = self.audience() {
            feed::socket_connected(&admins, socket);
        }
    }

    /// A socket of namespace `/` is gone.
    pub fn socket_disconnected(&self, socket: &SocketRef, reason: DisconnectReason) {
        let reason = feed::reason(reason);
        self.0.events.disconnection(reason);
        if let Some(admins) = self.audience() {
            feed::socket_disconnected(&admins, socket, reason);
        }
    }

    /// A socket of namespace `/` sent `event`.
    pub fn event_received(&self, socket: &SocketRef, event: ClientEvent) {
        self.0.events.packet_in();
        if let Some(admins) = self.audience() {
            feed::event_received(&admins, socket, event.name());
        }
    }

    /// A broadcast went out to `recipients` sockets.
    pub fn packets_out(&self, recipients: u64) {
        self.0.events.packets_out(recipients);
    }

    /// A socket of namespace `/` joined `room`.
    pub fn room_joined(&self, socket: &SocketRef, room: &str) {
        if let Some(admins) = self.audience() {
            feed::room(&admins, "room_joined", socket, room);
        }
    }

    /// A socket of namespace `/` left `room`.
    pub fn room_left(&self, socket: &SocketRef, room: &str) {
        if let Some(admins) = self.audience() {
            feed::room(&admins, "room_left", socket, room);
        }
    }

    /// Sends `server_stats` to every admin socket (every [`STATS_EVERY`]).
    /// In a cluster it goes to the admin sockets of every node, so the UI
    /// connected to any node lists them all.
    pub async fn publish_stats(&self) {
        let Some(io) = self.io() else { return };
        if !self.0.options.clustered && self.0.watching.load(Ordering::Relaxed) == 0 {
            // Nobody to tell: the events are dropped, as the UI keeps only
            // what it receives.
            self.0.events.take(0);
            self.0.bytes.take();
            return;
        }
        let Some(admins) = io.of(NAMESPACE) else {
            return;
        };
        let now = now_ms();
        let mut events = self.0.events.take(now);
        let (bytes_in, bytes_out) = self.0.bytes.take();
        events.extend(stats::bytes(now, bytes_in, bytes_out));
        let stats = self.stats(&io, events);
        if self.0.options.clustered {
            if let Err(err) = admins.emit("server_stats", &stats).await {
                tracing::debug!(error = %err, "server_stats incomplete");
            }
        } else {
            feed::send(&admins.sockets(), "server_stats", &stats);
        }
    }

    /// The current `server_stats`, with `events`.
    fn stats(&self, io: &SocketIo, events: Vec<stats::AggregatedEvent>) -> ServerStats {
        let sockets = io.of("/").map(|ns| ns.sockets()).unwrap_or_default();
        let polling = sockets
            .iter()
            .filter(|socket| socket.transport_type() == socketioxide::TransportType::Polling)
            .count();
        let admins = self.0.watching.load(Ordering::Relaxed);
        ServerStats {
            server_id: format!("{}#{}", self.0.hostname, std::process::id()),
            hostname: self.0.hostname.clone(),
            pid: std::process::id(),
            uptime: self.0.started.elapsed().as_secs_f64(),
            clients_count: sockets.len() + admins,
            polling_clients_count: polling,
            aggregated_events: events,
            namespaces: vec![
                NamespaceStats {
                    name: "/",
                    sockets_count: sockets.len(),
                },
                NamespaceStats {
                    name: NAMESPACE,
                    sockets_count: admins,
                },
            ],
        }
    }
}

/// This machine's name, as the UI's Servers page shows it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "tally".to_string())
}
