//! The connected Socket.IO sockets: how many, and what is known about each.
//!
//! socketioxide can list the sockets of a namespace, but only by collecting
//! a handle to each of them; the coalescer asks for the audience size after
//! every broadcast, so an atomic is the cheap answer. Each socket holds a
//! [`Connection`] in its extensions, which are dropped with the socket: the
//! count goes down however a socket ends, with no connect and disconnect
//! handlers to keep in step. The same record keeps what the monitoring API
//! shows: when the socket connected, when it last sent an event, and from
//! where.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::conversation::now_ms;

/// Cheap to clone; every clone counts the same sockets.
#[derive(Debug, Clone, Default)]
pub struct Connections(Arc<AtomicUsize>, Arc<Mutex<HashMap<IpAddr, usize>>>);

/// Counts one socket until it is dropped.
#[derive(Debug)]
pub struct Tracked(Arc<AtomicUsize>);

impl Connections {
    /// Counts a socket for as long as the returned guard lives.
    pub fn track(&self) -> Tracked {
        // Relaxed is enough: the number is a gauge read for pacing and
        // monitoring, never used to synchronise other memory.
        self.0.fetch_add(1, Ordering::Relaxed);
        Tracked(self.0.clone())
    }

    /// Sockets connected now.
    pub fn current(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Sockets connected now from `ip`.
    pub fn from_ip(&self, ip: IpAddr) -> usize {
        self.by_ip().get(&ip).copied().unwrap_or(0)
    }

    fn by_ip(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.1.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One connected socket: counted while it lives (also per client address),
/// with its monitoring data.
#[derive(Debug)]
pub struct Connection {
    _tracked: Tracked,
    connections: Connections,
    /// The client's address as the connection caps see it.
    pub client_ip: Option<IpAddr>,
    /// Milliseconds since the epoch.
    pub connected_at: i64,
    /// Milliseconds since the epoch of the last event received.
    last_activity: AtomicI64,
    /// The peer's address, when the server knows it.
    pub remote: Option<SocketAddr>,
}

impl Connection {
    /// Counts a new socket whose peer is `remote` and whose client (behind
    /// any trusted proxy) is `client_ip`.
    pub fn new(
        connections: &Connections,
        remote: Option<SocketAddr>,
        client_ip: Option<IpAddr>,
    ) -> Self {
        let now = now_ms();
        if let Some(ip) = client_ip {
            *connections.by_ip().entry(ip).or_default() += 1;
        }
        Connection {
            _tracked: connections.track(),
            connections: connections.clone(),
            client_ip,
            connected_at: now,
            last_activity: AtomicI64::new(now),
            remote,
        }
    }

    /// Notes an event received now.
    pub fn touch(&self) {
        self.last_activity.store(now_ms(), Ordering::Relaxed);
    }

    /// When the last event arrived (or the connection, if none yet).
    pub fn last_activity(&self) -> i64 {
        self.last_activity.load(Ordering::Relaxed)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let Some(ip) = self.client_ip else { return };
        let mut by_ip = self.connections.by_ip();
        if let Some(count) = by_ip.get_mut(&ip) {
            *count -= 1;
            // An address with no socket left keeps no entry.
            if *count == 0 {
                by_ip.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_counts_while_its_guard_lives() {
        let connections = Connections::default();
        let other = connections.clone();
        let first = connections.track();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let from_ip = Connection::new(&connections, None, Some(ip));
        assert_eq!(connections.from_ip(ip), 1);
        assert_eq!(connections.current(), 2);
        drop(from_ip);
        assert_eq!(connections.from_ip(ip), 0);
        let second = other.track();
        assert_eq!(connections.current(), 2);
        drop(first);
        assert_eq!(other.current(), 1);
        drop(second);
        assert_eq!(connections.current(), 0);
    }
}
