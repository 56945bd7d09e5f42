//! The connected Socket.IO sockets: how many, and what is known about each.
//!
//! socketioxide can list the sockets of a namespace, but only by collecting
//! a handle to each of them; the coalescer asks for the audience size after
//! every broadcast, so an atomic is the cheap answer. Each socket holds a
//! [`Connection`] in its extensions, which are dropped with the socket: the
//! count goes down however a socket ends. The same record keeps what the
//! monitoring API shows (when the socket connected, when it last sent an
//! event, and from where) and the socket's rate-limit buckets.
//!
//! The caps count engine.io sessions, not sockets ([`super::places`]): a
//! socket joining the namespace finds its session's [`Place`] and is not
//! counted again; only a socket whose session has none (served by a host
//! without tally's early check) takes a place of its own, in the same
//! step as it is counted ([`Connection::admit`]).
//!
//! At disconnect the socket gives up its count ([`Connection::close`]) but
//! keeps its record: socketioxide runs each event handler as a task of its
//! own, so events read before the disconnect (one polling POST can carry
//! thousands of them and the `41` that ends the socket) may still be
//! handled after it, and they must meet the same buckets as the others.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::caps::{Capped, Caps};
use super::places::{Place, Places};
use crate::clock::now_ms;
use crate::limits::SocketLimits;
use crate::sync::lock;

/// Cheap to clone; every clone counts the same sockets.
#[derive(Debug, Clone, Default)]
pub struct Connections {
    /// Sockets connected now.
    total: Arc<AtomicUsize>,
    /// The places held under the caps, one per engine.io session.
    places: Places,
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

    /// Places held now by the address key `key` (sessions open from it).
    pub fn from_ip(&self, key: IpAddr) -> usize {
        self.places.of(key)
    }

    /// The early check, before engine.io opens a session for `client_ip`:
    /// the session's place, `None` when no cap is set, or which cap it
    /// would pass.
    pub fn open_session(
        &self,
        client_ip: Option<IpAddr>,
        caps: &Caps,
    ) -> Result<Option<Place>, Capped> {
        if !caps.any() {
            return Ok(None);
        }
        self.places
            .take(client_ip.map(|ip| caps.key(ip)), caps)
            .map(Some)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a connected socket holds until it disconnects: its count, and a
/// place of its own when its session brought none.
#[derive(Debug)]
struct Seat {
    _tracked: Tracked,
    _place: Option<Place>,
}

/// One connected socket: counted while it is connected, with its
/// monitoring data and its rate-limit buckets.
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
    /// any trusted proxy) is `client_ip`. A socket whose session holds a
    /// place (`has_place`) is already counted under `caps`; one whose
    /// session has none takes a place now, unless that would pass a cap.
    pub fn admit(
        connections: &Connections,
        remote: Option<SocketAddr>,
        client_ip: Option<IpAddr>,
        caps: &Caps,
        has_place: bool,
    ) -> Result<Self, Capped> {
        let place = if has_place {
            None
        } else {
            connections.open_session(client_ip, caps)?
        };
        let now = now_ms();
        Ok(Connection {
            seat: Mutex::new(Some(Seat {
                _tracked: connections.track(),
                _place: place,
            })),
            client_ip,
            connected_at: now,
            last_activity: AtomicI64::new(now),
            remote,
            limits: OnceLock::new(),
        })
    }

    /// Gives up the socket's count (and any place of its own), at
    /// disconnect; the record and its buckets stay for events still being
    /// handled.
    pub fn close(&self) {
        let seat = lock(&self.seat).take();
        drop(seat);
    }

    /// Whether the socket is still connected.
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
    fn a_socket_counts_until_it_closes_and_its_session_keeps_its_place() {
        let connections = Connections::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let caps = capped_at(0, 1);
        // The session's place, taken by the early check.
        let place = connections.open_session(Some(ip), &caps).unwrap();
        assert!(place.is_some());
        let socket = Connection::admit(&connections, None, Some(ip), &caps, true).unwrap();
        assert_eq!((connections.current(), connections.from_ip(ip)), (1, 1));
        socket.close();
        assert!(!socket.is_open());
        assert_eq!(connections.current(), 0);
        // The session lives on after `41`: its place too, so another
        // session from the address is refused, and joining again is not.
        assert_eq!(
            connections.open_session(Some(ip), &caps).unwrap_err(),
            Capped::TooManyFromIp
        );
        let again = Connection::admit(&connections, None, Some(ip), &caps, true).unwrap();
        drop(again);
        drop(place);
        assert_eq!(connections.from_ip(ip), 0);
    }

    #[test]
    fn a_socket_whose_session_has_no_place_takes_one() {
        let connections = Connections::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let caps = capped_at(2, 1);
        let first = Connection::admit(&connections, None, Some(a), &caps, false).unwrap();
        assert_eq!(
            Connection::admit(&connections, None, Some(a), &caps, false).unwrap_err(),
            Capped::TooManyFromIp
        );
        first.close();
        assert!(Connection::admit(&connections, None, Some(a), &caps, false).is_ok());
        // With no cap there is nothing to count against.
        assert!(
            connections
                .open_session(Some(a), &capped_at(0, 0))
                .unwrap()
                .is_none()
        );
    }
}
