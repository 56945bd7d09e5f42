//! Presence: how many sockets are in each conversation's room now, and
//! which of those numbers changed since they were last published. Never
//! stored; published by the coalescer with the totals, as `presence`.
//!
//! In cluster mode a room's number is this node's sockets plus the other
//! nodes' (`remote`), which [`crate::cluster`] replaces as a whole from
//! the nodes' heartbeats: absolute counts, so a lost heartbeat costs
//! freshness, never a count that drifts.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::conversation::ConversationId;
use crate::sync::lock;

/// A conversation's number of connected sockets that changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Online {
    pub room: ConversationId,
    pub online: u64,
}

/// Sockets per conversation room.
#[derive(Debug, Default)]
pub struct Presence(Mutex<Rooms>);

#[derive(Debug, Default)]
struct Rooms {
    online: HashMap<ConversationId, u64>,
    /// Sockets on the other nodes of a cluster, per room.
    remote: HashMap<ConversationId, u64>,
    /// Rooms whose number changed since the last publication (a set: a
    /// mass reconnect touches thousands of rooms).
    changed: HashSet<ConversationId>,
}

impl Presence {
    /// Records a socket entering `room`; returns how many are in it now.
    pub fn enter(&self, room: &ConversationId) -> u64 {
        self.change(room, |online| *online += 1)
    }

    /// Records a socket leaving `room` (or disconnecting); returns how many
    /// are left in it.
    pub fn leave(&self, room: &ConversationId) -> u64 {
        self.change(room, |online| *online = online.saturating_sub(1))
    }

    fn change(&self, room: &ConversationId, change: impl FnOnce(&mut u64)) -> u64 {
        let mut rooms = lock(&self.0);
        let online = rooms.online.entry(room.clone()).or_default();
        change(online);
        let online = *online;
        if online == 0 {
            // An empty room keeps no entry, so rooms people left cost nothing.
            rooms.online.remove(room);
        }
        rooms.changed.insert(room.clone());
        online + rooms.remote(room)
    }

    /// Sockets in `room` now, on every node.
    pub fn online(&self, room: &ConversationId) -> u64 {
        let rooms = lock(&self.0);
        rooms.local(room) + rooms.remote(room)
    }

    /// This node's sockets in each room it has sockets in: what its
    /// heartbeat tells the others.
    pub fn local(&self) -> Vec<(ConversationId, u64)> {
        let rooms = lock(&self.0);
        rooms
            .online
            .iter()
            .map(|(room, online)| (room.clone(), *online))
            .collect()
    }

    /// Replaces the other nodes' sockets per room; rooms whose number
    /// moved are published with the next changes. Says whether any moved.
    pub fn set_remote(&self, remote: HashMap<ConversationId, u64>) -> bool {
        let mut rooms = lock(&self.0);
        let old = std::mem::take(&mut rooms.remote);
        let moved: Vec<ConversationId> = old
            .iter()
            .filter(|(room, online)| remote.get(*room) != Some(online))
            .map(|(room, _)| room.clone())
            .chain(
                remote
                    .iter()
                    .filter(|(room, online)| old.get(*room) != Some(online))
                    .map(|(room, _)| room.clone()),
            )
            .collect();
        let any = !moved.is_empty();
        rooms.changed.extend(moved);
        rooms.remote = remote;
        any
    }

    /// Conversations that have sockets in them now.
    pub fn occupied(&self) -> usize {
        lock(&self.0).online.len()
    }

    /// The rooms whose number moved since the last call, with their number.
    pub fn take_changed(&self) -> Vec<Online> {
        let mut rooms = lock(&self.0);
        let changed = std::mem::take(&mut rooms.changed);
        changed
            .into_iter()
            .map(|room| Online {
                online: rooms.local(&room) + rooms.remote(&room),
                room,
            })
            .collect()
    }
}

impl Rooms {
    fn local(&self, room: &ConversationId) -> u64 {
        self.online.get(room).copied().unwrap_or(0)
    }

    fn remote(&self, room: &ConversationId) -> u64 {
        self.remote.get(room).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_nodes_sockets_add_to_this_nodes_and_moves_are_published() {
        let presence = Presence::default();
        let room = ConversationId::parse("r").unwrap();
        let other = ConversationId::parse("o").unwrap();
        presence.enter(&room);
        presence.take_changed();
        presence.set_remote(HashMap::from([(room.clone(), 2), (other.clone(), 1)]));
        assert_eq!(presence.online(&room), 3);
        assert_eq!(presence.enter(&room), 4, "an entry answers for every node");
        let mut changed = presence.take_changed();
        changed.sort_by(|a, b| a.room.as_str().cmp(b.room.as_str()));
        assert_eq!(
            changed,
            [
                Online {
                    room: other.clone(),
                    online: 1
                },
                Online {
                    room: room.clone(),
                    online: 4
                },
            ]
        );
        presence.set_remote(HashMap::from([(room.clone(), 2)]));
        assert_eq!(
            presence.take_changed(),
            [Online {
                room: other,
                online: 0
            }],
            "a room another node left is published, unchanged ones are not"
        );
        assert_eq!(presence.local(), [(room, 2)]);
    }
}
