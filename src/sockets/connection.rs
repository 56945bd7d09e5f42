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
use std::time::Instant;

use super::caps::{Capped, Caps};
use super::opening::Opening;
use crate::clock::now_ms;
use crate::limits::SocketLimits;
use crate::sync::lock;

/// Cheap to clone; every clone counts the same sockets.
#[derive(Debug, Clone, Default)]
pub struct Connections {
    /// Sockets connected now.
    total: Arc<AtomicUsize>,
    /// The places held under the caps.
    places: Arc<Mutex<Places>>,
}

/// What the caps are checked against, under one lock.
#[derive(Debug, Default)]
struct Places {
    /// Sockets connected now per client address key ([`Caps::key`]); an
    /// address with none keeps no entry.
    by_ip: HashMap<IpAddr, usize>,
    /// Sessions opened that have not joined the namespace yet.
    opening: Opening,
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

    /// Sockets connected now whose address key is `key`.
    pub fn from_ip(&self, key: IpAddr) -> usize {
        self.places().by_ip.get(&key).copied().unwrap_or(0)
    }

    /// The early check, before engine.io opens a session for `client_ip`:
    /// which cap the session would pass, if any; when none, the session
    /// holds a place from now on, until it joins the namespace (where
    /// [`Connection::admit`] turns the place into its socket's) or until
    /// `--connect-timeout`.
    pub fn open_session(&self, client_ip: Option<IpAddr>, caps: &Caps) -> Result<(), Capped> {
        if !caps.any() {
            return Ok(());
        }
        let key = client_ip.map(|ip| caps.key(ip));
        let now = Instant::now();
        let mut places = self.places();
        let (current, from_ip) = places.held(self.current(), key, now);
        if let Some(capped) = caps.over(current, from_ip) {
            return Err(capped);
        }
        places.opening.open(key, now + caps.connect_timeout);
        Ok(())
    }

    fn places(&self) -> MutexGuard<'_, Places> {
        lock(&self.places)
    }
}

impl Places {
    /// Places held in all (`connected` sockets and the sessions opening)
    /// and by `key`.
    fn held(&mut self, connected: usize, key: Option<IpAddr>, now: Instant) -> (usize, usize) {
        let from_ip = key.and_then(|key| self.by_ip.get(&key).copied());
        (
            connected + self.opening.total(now),
            from_ip.unwrap_or(0) + self.opening.of(key, now),
        )
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
    /// The client's address key, as counted.
    key: Option<IpAddr>,
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
        let key = client_ip.map(|ip| caps.key(ip));
        // Every admitted socket is counted under this lock, so what it reads
        // cannot change until the count is taken.
        let mut places = connections.places();
        let instant = Instant::now();
        // The session's own place, taken when it opened, becomes the
        // socket's: it is given up first so as not to count twice.
        places.opening.join(key, instant);
        let (current, from_ip) = places.held(connections.current(), key, instant);
        if let Some(capped) = caps.over(current, from_ip) {
            return Err(capped);
        }
        if let Some(key) = key {
            *places.by_ip.entry(key).or_default() += 1;
        }
        let tracked = connections.track();
        drop(places);
        Ok(Connection {
            seat: Mutex::new(Some(Seat {
                _tracked: tracked,
                connections: connections.clone(),
                key,
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
        let Some(key) = self.key else { return };
        let mut places = self.connections.places();
        if let Some(count) = places.by_ip.get_mut(&key) {
            *count -= 1;
            // An address with no socket left keeps no entry.
            if *count == 0 {
                places.by_ip.remove(&key);
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
        assert_eq!(connections.places().by_ip.get(&c), None);
        assert!(Connection::admit(&connections, None, Some(c), &capped_at(0, 0)).is_ok());
    }
}
