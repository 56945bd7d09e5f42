//! What this node knows of the others: when each was last heard from and
//! its sockets per conversation (from its latest heartbeat, absolute), and
//! the number of each node's latest totals message, to notice a lost one.
//! The numbers outlive a node's silence: a node cut off for longer than the
//! peer timeout comes back with a gap, which must still be noticed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::conversation::ConversationId;

/// One other node, alive.
#[derive(Debug)]
struct Peer {
    seen: Instant,
    rooms: HashMap<ConversationId, u64>,
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
    /// The number of the latest totals message of every node ever heard
    /// (eight bytes each; nodes are few).
    totals_seq: HashMap<u64, u64>,
}

impl Peers {
    /// A heartbeat from `node`, with its sockets per room and the number
    /// of its latest totals message; says whether that number shows
    /// totals this node never received (then every total is read again).
    pub fn heard(
        &mut self,
        node: u64,
        now: Instant,
        rooms: HashMap<ConversationId, u64>,
        totals_seq: u64,
    ) -> Sequence {
        self.nodes.insert(node, Peer { seen: now, rooms });
        match self.totals_seq.get(&node) {
            Some(&last) if totals_seq > last => {
                self.totals_seq.insert(node, totals_seq);
                Sequence::Gap
            }
            Some(_) => Sequence::Behind,
            // First heard: its earlier totals are in what this node loaded
            // or reloaded after subscribing.
            None => {
                self.totals_seq.insert(node, totals_seq);
                Sequence::Next
            }
        }
    }

    /// `node` said it is stopping, naming its last totals message: its
    /// sockets are gone now, not after the timeout; a gap says its final
    /// totals were lost.
    pub fn left(&mut self, node: u64, totals_seq: u64) -> Sequence {
        self.nodes.remove(&node);
        match self.totals_seq.insert(node, totals_seq) {
            Some(last) if totals_seq > last => Sequence::Gap,
            Some(last) => {
                self.totals_seq.insert(node, last);
                Sequence::Behind
            }
            None if totals_seq > 0 => Sequence::Gap,
            None => Sequence::Next,
        }
    }

    /// Forgets the nodes not heard from within `timeout`; says whether any
    /// was.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> bool {
        let before = self.nodes.len();
        self.nodes
            .retain(|_, peer| now.saturating_duration_since(peer.seen) <= timeout);
        self.nodes.len() != before
    }

    /// Notes totals message `seq` from `node` (which does not make it
    /// alive: only heartbeats do).
    pub fn totals(&mut self, node: u64, seq: u64) -> Sequence {
        let last = self.totals_seq.get(&node).copied();
        let order = match last {
            None => Sequence::Next,
            Some(last) if seq == last + 1 => Sequence::Next,
            Some(last) if seq <= last => Sequence::Behind,
            Some(_) => Sequence::Gap,
        };
        if order != Sequence::Behind {
            self.totals_seq.insert(node, seq);
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
        peers.heard(1, start, HashMap::from([(room("a"), 2)]), 0);
        peers.heard(2, start, HashMap::from([(room("a"), 3), (room("b"), 1)]), 0);
        assert_eq!(peers.remote()[&room("a")], 5);
        let later = start + Duration::from_secs(2);
        peers.heard(2, later, HashMap::from([(room("a"), 1)]), 0);
        assert!(!peers.expire(later, Duration::from_secs(3)));
        assert!(peers.expire(start + Duration::from_secs(4), Duration::from_secs(3)));
        assert_eq!(peers.remote(), HashMap::from([(room("a"), 1)]));
        assert_eq!(peers.len(), 1);
        assert_eq!(peers.left(2, 0), Sequence::Behind);
        assert!(peers.is_empty());
    }

    #[test]
    fn a_skipped_sequence_number_is_a_gap_and_an_old_one_is_not() {
        let mut peers = Peers::default();
        assert_eq!(peers.totals(7, 40), Sequence::Next);
        assert_eq!(peers.totals(7, 41), Sequence::Next);
        assert_eq!(peers.totals(7, 41), Sequence::Behind);
        assert_eq!(peers.totals(7, 39), Sequence::Behind);
        assert_eq!(peers.totals(7, 44), Sequence::Gap);
        assert_eq!(peers.totals(7, 45), Sequence::Next);
        assert!(peers.is_empty(), "totals do not make a node alive");
    }

    #[test]
    fn a_heartbeat_naming_totals_never_received_is_a_gap_even_after_a_long_silence() {
        let mut peers = Peers::default();
        let start = Instant::now();
        assert_eq!(peers.heard(3, start, HashMap::new(), 5), Sequence::Next);
        assert_eq!(peers.totals(3, 6), Sequence::Next);
        assert_eq!(peers.heard(3, start, HashMap::new(), 6), Sequence::Behind);
        // Silent past the timeout: gone from presence, not from the numbers.
        assert!(peers.expire(start + Duration::from_secs(10), Duration::from_secs(3)));
        let back = start + Duration::from_secs(11);
        assert_eq!(peers.heard(3, back, HashMap::new(), 9), Sequence::Gap);
        assert_eq!(peers.totals(3, 10), Sequence::Next);
        assert_eq!(
            peers.left(3, 11),
            Sequence::Gap,
            "its final totals were lost"
        );
    }
}
