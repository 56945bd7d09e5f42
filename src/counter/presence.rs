//! Presence: how many sockets are in each conversation's room now, and
//! which of those numbers changed since they were last published. Never
//! stored; published by the coalescer with the totals, as `presence`.

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
        online
    }

    /// Sockets in `room` now.
    pub fn online(&self, room: &ConversationId) -> u64 {
        lock(&self.0).online.get(room).copied().unwrap_or(0)
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
                online: rooms.online.get(&room).copied().unwrap_or(0),
                room,
            })
            .collect()
    }
}
