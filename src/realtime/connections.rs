//! The number of connected Socket.IO sockets.
//!
//! socketioxide can list the sockets of a namespace, but only by collecting
//! a handle to each of them; the coalescer asks for the audience size after
//! every broadcast, so an atomic kept by the connect and disconnect handlers
//! is the cheap answer. Connection monitoring reads the same number.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Cheap to clone; every clone counts the same sockets.
#[derive(Debug, Clone, Default)]
pub struct Connections(Arc<AtomicUsize>);

impl Connections {
    /// Counts a socket that has finished its handshake.
    pub fn opened(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a socket gone; never goes below zero.
    pub fn closed(&self) {
        // A relaxed update is enough: the number is a gauge read for pacing
        // and monitoring, never used to synchronise other memory.
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .ok();
    }

    /// Sockets connected now.
    pub fn current(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_count_and_it_never_underflows() {
        let connections = Connections::default();
        let other = connections.clone();
        connections.opened();
        other.opened();
        assert_eq!(connections.current(), 2);
        other.closed();
        other.closed();
        other.closed();
        assert_eq!(connections.current(), 0);
    }
}
