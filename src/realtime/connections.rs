//! The number of connected Socket.IO sockets.
//!
//! socketioxide can list the sockets of a namespace, but only by collecting
//! a handle to each of them; the coalescer asks for the audience size after
//! every broadcast, so an atomic is the cheap answer. Each socket holds a
//! [`Tracked`] guard in its extensions, which are dropped with the socket:
//! the count goes down however a socket ends, with no connect and disconnect
//! handlers to keep in step.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Cheap to clone; every clone counts the same sockets.
#[derive(Debug, Clone, Default)]
pub struct Connections(Arc<AtomicUsize>);

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
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
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
        let second = other.track();
        assert_eq!(connections.current(), 2);
        drop(first);
        assert_eq!(other.current(), 1);
        drop(second);
        assert_eq!(connections.current(), 0);
    }
}
