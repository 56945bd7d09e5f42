//! What this node knows of the others: when each was last heard from, its
//! sockets per conversation (from its latest heartbeat, absolute), and the
//! sequence number of its latest totals, to notice a lost message.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::conversation::ConversationId;

/// One other node.
#[derive(Debug)]
struct Peer {
    seen: Instant,
    rooms: HashMap<ConversationId, u64>,
    totals_seq: Option<u64>,
}

/// Where a node's totals message falls in its sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sequence {
    /// The next one, or the first heard from this node.
    Next,
    /// Some were skipped: messages were lost, so every total is read again.
    Gap,
    /// One already passed (repeated or reordered): harmless to merge.
    Behind,
}

/// The other nodes, by node id.
#[derive(Debug, Default)]
pub struct Peers {
    nodes: HashMap<u64, Peer>,
}

impl Peers {
    /// A heartbeat from `node`, with its sockets per room.
    pub fn heard(&mut self, node: u64, now: Instant, rooms: HashMap<ConversationId, u64>) {
        let peer = self.nodes.entry(node).or_insert_with(|| Peer {
            seen: now,
            rooms: HashMap::new(),
            totals_seq: None,
        });
        peer.seen = now;
        peer.rooms = rooms;
    }

    /// `node` said it is stopping: its sockets are gone now, not after the
    /// timeout.
    pub fn left(&mut self, node: u64) -> bool {
        self.nodes.remove(&node).is_some()
    }

    /// Forgets the nodes not heard from within `timeout`; says whether any
    /// was.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> bool {
        let before = self.nodes.len();
        self.nodes
            .retain(|_, peer| now.saturating_duration_since(peer.seen) <= timeout);
        self.nodes.len() != before
    }

    /// Notes totals message `seq` from `node`.
    pub fn totals(&mut self, node: u64, seq: u64, now: Instant) -> Sequence {
        let peer = self.nodes.entry(node).or_insert_with(|| Peer {
            seen: now,
            rooms: HashMap::new(),
            totals_seq: None,
        });
        let order = match peer.totals_seq {
            None => Sequence::Next,
            Some(last) if seq == last + 1 => Sequence::Next,
            Some(last) if seq <= last => Sequence::Behind,
            Some(_) => Sequence::Gap,
        };
        if order != Sequence::Behind {
            peer.totals_seq = Some(seq);
        }
        order
    }

    /// The other nodes' sockets per room, summed.
    pub fn remote(&self) -> HashMap<ConversationId, u64> {
        let mut rooms: HashMap<ConversationId, u64> = HashMap::new();
        for peer in self.nodes.values() {
            for (room, online) in &peer.rooms {
                *rooms.entry(room.clone()).or_default() += online;
            }
        }
        rooms.retain(|_, online| *online > 0);
        rooms
    }

    /// How many other nodes are alive.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no other node is alive.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(id: &str) -> ConversationId {
        ConversationId::parse(id).unwrap()
    }

    #[test]
    fn presence_sums_live_peers_and_a_silent_one_drops_out() {
        let mut peers = Peers::default();
        let start = Instant::now();
        peers.heard(1, start, HashMap::from([(room("a"), 2)]));
        peers.heard(2, start, HashMap::from([(room("a"), 3), (room("b"), 1)]));
        assert_eq!(peers.remote()[&room("a")], 5);
        let later = start + Duration::from_secs(2);
        peers.heard(2, later, HashMap::from([(room("a"), 1)]));
        assert!(!peers.expire(later, Duration::from_secs(3)));
        assert!(peers.expire(start + Duration::from_secs(4), Duration::from_secs(3)));
        assert_eq!(peers.remote(), HashMap::from([(room("a"), 1)]));
        assert_eq!(peers.len(), 1);
        assert!(peers.left(2));
        assert!(peers.is_empty());
    }

    #[test]
    fn a_skipped_sequence_number_is_a_gap_and_an_old_one_is_not() {
        let mut peers = Peers::default();
        let now = Instant::now();
        assert_eq!(peers.totals(7, 40, now), Sequence::Next);
        assert_eq!(peers.totals(7, 41, now), Sequence::Next);
        assert_eq!(peers.totals(7, 41, now), Sequence::Behind);
        assert_eq!(peers.totals(7, 39, now), Sequence::Behind);
        assert_eq!(peers.totals(7, 44, now), Sequence::Gap);
        assert_eq!(peers.totals(7, 45, now), Sequence::Next);
    }
}
