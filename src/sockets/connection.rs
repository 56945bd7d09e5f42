//! The connected Socket.IO sockets: how many, and what is known about each.
//!
//! socketioxide can list the sockets of a namespace, but only by collecting
//! a handle to each of them; the coalescer asks for the audience size after
//! every broadcast, so an atomic is the cheap answer. Each socket holds a
//! [`Connection`] in its extensions, which are dropped with the socket (and
//! the record is taken out at disconnect, since an event handler still
//! running keeps the socket alive): the count goes down however a socket
//! ends. The caps ([`super::Caps`]) are checked and the socket counted in
//! one step ([`Connection::admit`]) when it joins the namespace. The same record
//! keeps what the monitoring API shows (when the socket connected, when it
//! last sent an event, and from where) and the socket's rate-limit
//! buckets.
//!
//! At disconnect the socket gives up its place ([`Connection::close`]) but
//! keeps its record: socketioxide runs each event handler as a task of its
//! own, so events read before the disconnect (one polling POST can carry
//! thousands of them and the `41` that ends the socket) may still be
//! handled after it, and they must meet the same buckets as the others.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::caps::{Capped, Caps};
use crate::clock::now_ms;
use crate::limits::SocketLimits;
use crate::sync::lock;

/// Cheap to clone; every clone counts the same sockets.
#[derive(Debug, Clone, Default)]
pub struct Connections {
    /// Sockets connected now.
    total: Arc<AtomicUsize>,
    /// Sockets connected now per client address; an address with none
    /// keeps no entry.
    by_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// Counts one socket until it is dropped.
#[derive(Debug)]
pub struct Tracked(Arc<AtomicUsize>);

impl Connections {
    /// Counts a socket for as long as the returned guard lives.
    pub fn track(&self) -> Tracked {
        // Relaxed is enough: the number is a gauge read for pacing and
        // monitoring, never used to synchronise other memory.
        self.total.fetch_add(1, Ordering::Relaxed);
        Tracked(self.total.clone())
    }

    /// Sockets connected now.
    pub fn current(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Sockets connected now from `ip`.
    pub fn from_ip(&self, ip: IpAddr) -> usize {
        self.by_ip().get(&ip).copied().unwrap_or(0)
    }

    /// Which cap one more socket from `client_ip` would pass now, if any:
    /// the early check, before engine.io opens a session (the count is
    /// taken later, by [`Connection::admit`], which checks again).
    pub fn capped(&self, client_ip: Option<IpAddr>, caps: &Caps) -> Option<Capped> {
        let from_ip = client_ip.map_or(0, |ip| self.from_ip(ip));
        caps.over(self.current(), from_ip)
    }

    fn by_ip(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        lock(&self.by_ip)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket's place under the caps: counted in all and per client address
/// until it is dropped.
#[derive(Debug)]
struct Seat {
    _tracked: Tracked,
    connections: Connections,
    client_ip: Option<IpAddr>,
}

/// One connected socket: counted while it holds its place (also per client
/// address), with its monitoring data and its rate-limit buckets.
#[derive(Debug)]
pub struct Connection {
    /// `None` once the socket disconnected.
    seat: Mutex<Option<Seat>>,
    /// The client's address as the connection caps see it.
    pub client_ip: Option<IpAddr>,
    /// Milliseconds since the epoch.
    pub connected_at: i64,
    /// Milliseconds since the epoch of the last event received.
    last_activity: AtomicI64,
    /// The peer's address, when the server knows it.
    pub remote: Option<SocketAddr>,
    /// The socket's rate-limit buckets, made on its first limited event so
    /// that idle sockets carry none; made once, however many events race
    /// to be first.
    limits: OnceLock<Box<SocketLimits>>,
}

impl Connection {
    /// Counts a new socket whose peer is `remote` and whose client (behind
    /// any trusted proxy) is `client_ip`, unless that would pass one of
    /// `caps`. The check and the count are one step, so sockets joining
    /// together cannot all pass a cap that has room for only some of them.
    pub fn admit(
        connections: &Connections,
        remote: Option<SocketAddr>,
        client_ip: Option<IpAddr>,
        caps: &Caps,
    ) -> Result<Self, Capped> {
        let now = now_ms();
        // Every admitted socket is counted under this lock, so what it reads
        // cannot change until the count is taken.
        let mut by_ip = connections.by_ip();
        let from_ip = client_ip.and_then(|ip| by_ip.get(&ip).copied());
        if let Some(capped) = caps.over(connections.current(), from_ip.unwrap_or(0)) {
            return Err(capped);
        }
        if let Some(ip) = client_ip {
            *by_ip.entry(ip).or_default() += 1;
        }
        let tracked = connections.track();
        drop(by_ip);
        Ok(Connection {
            seat: Mutex::new(Some(Seat {
                _tracked: tracked,
                connections: connections.clone(),
                client_ip,
            })),
            client_ip,
            connected_at: now,
            last_activity: AtomicI64::new(now),
            remote,
            limits: OnceLock::new(),
        })
    }

    /// Gives up the socket's place under the caps, at disconnect; the
    /// record and its buckets stay for events still being handled.
    pub fn close(&self) {
        let seat = lock(&self.seat).take();
        drop(seat);
    }

    /// Whether the socket still holds its place (it has not disconnected).
    pub fn is_open(&self) -> bool {
        lock(&self.seat).is_some()
    }

    /// The socket's rate-limit buckets.
    pub fn limits(&self) -> &SocketLimits {
        self.limits.get_or_init(Box::default)
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

impl Drop for Seat {
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

    fn capped_at(max_connections: usize, max_per_ip: usize) -> Caps {
        Caps {
            max_connections,
            max_per_ip,
            ..Caps::default()
        }
    }

    #[test]
    fn a_socket_counts_while_its_guard_lives() {
        let connections = Connections::default();
        let other = connections.clone();
        let first = connections.track();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let from_ip = Connection::admit(&connections, None, Some(ip), &capped_at(0, 0)).unwrap();
        assert_eq!(connections.from_ip(ip), 1);
        assert_eq!(connections.current(), 2);
        from_ip.close();
        assert_eq!(connections.from_ip(ip), 0);
        assert!(!from_ip.is_open());
        assert_eq!(connections.current(), 1);
        drop(from_ip);
        let second = other.track();
        assert_eq!(connections.current(), 2);
        drop(first);
        assert_eq!(other.current(), 1);
        drop(second);
        assert_eq!(connections.current(), 0);
    }

    #[test]
    fn admission_stops_at_each_cap_and_frees_a_place_on_drop() {
        let connections = Connections::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let caps = capped_at(3, 2);
        let admit = |ip| Connection::admit(&connections, None, Some(ip), &caps);
        let first = admit(a).unwrap();
        let _second = admit(a).unwrap();
        assert_eq!(admit(a).unwrap_err(), Capped::TooManyFromIp);
        let _third = admit(b).unwrap();
        assert_eq!(admit(b).unwrap_err(), Capped::ServerFull);
        assert_eq!((connections.current(), connections.from_ip(a)), (3, 2));
        drop(first);
        assert_eq!(connections.current(), 2);
        let _again = admit(a).unwrap();
        // A refused address keeps no entry; with no cap anything goes.
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        assert_eq!(
            Connection::admit(&connections, None, Some(c), &capped_at(1, 0)).unwrap_err(),
            Capped::ServerFull
        );
        assert_eq!(connections.by_ip().get(&c), None);
        assert!(Connection::admit(&connections, None, Some(c), &capped_at(0, 0)).is_ok());
    }
}
