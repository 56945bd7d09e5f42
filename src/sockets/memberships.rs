//! The conversations one socket is in: [`Memberships`], kept in its
//! extensions so that a disconnect can tell each of them it left, and so
//! that the monitoring API and the Admin UI can list them.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

use crate::bus::SocketRef;
use crate::conversation::ConversationId;
use crate::counter::Counters;
use crate::refusal::{Code, Refusal};
use crate::sync::lock;

/// Most conversations one socket may be in at once.
pub const MAX_CONVERSATIONS_PER_SOCKET: usize = 100;

/// The conversations a socket is in.
///
/// Joining, leaving and disconnecting each change three things — this set,
/// the socket's Socket.IO rooms and the room's presence count — and they do
/// it together under this one lock, so handlers racing on one socket (each
/// event runs in its own task, the disconnect handler too) cannot leave a
/// count that no socket accounts for. After the disconnect nothing joins.
#[derive(Debug, Default)]
pub struct Memberships(Mutex<Rooms>);

#[derive(Debug, Default)]
struct Rooms {
    rooms: HashSet<ConversationId>,
    /// Set by the disconnect: later joins are refused.
    closed: bool,
}

impl Memberships {
    fn rooms(&self) -> MutexGuard<'_, Rooms> {
        lock(&self.0)
    }

    pub fn contains(&self, room: &ConversationId) -> bool {
        self.rooms().rooms.contains(room)
    }

    /// The conversations the socket is in now, in order.
    pub fn list(&self) -> Vec<ConversationId> {
        let mut rooms: Vec<ConversationId> = self.rooms().rooms.iter().cloned().collect();
        rooms.sort();
        rooms
    }

    /// Puts the socket in `room`; `Ok(true)` if it was not in it already.
    pub fn enter(
        &self,
        socket: &SocketRef,
        counters: &Counters,
        room: &ConversationId,
    ) -> Result<bool, Refusal> {
        let mut joined = self.rooms();
        if joined.closed || !socket.connected() {
            return Err(Code::Disconnected.with("the connection is closing"));
        }
        if joined.rooms.contains(room) {
            return Ok(false);
        }
        if joined.rooms.len() >= MAX_CONVERSATIONS_PER_SOCKET {
            return Err(Code::TooManyConversations.with(format!(
                "a connection can be in at most {MAX_CONVERSATIONS_PER_SOCKET} conversations"
            )));
        }
        joined.rooms.insert(room.clone());
        socket.join(room.to_string());
        counters.enter(room);
        Ok(true)
    }

    /// Takes the socket out of `room`; `true` if it was in it.
    pub fn exit(&self, socket: &SocketRef, counters: &Counters, room: &ConversationId) -> bool {
        let mut joined = self.rooms();
        if !joined.rooms.remove(room) {
            return false;
        }
        socket.leave(room.to_string());
        counters.leave(room);
        true
    }

    /// The socket is gone: every room loses it, and no join follows.
    pub fn close(&self, counters: &Counters) {
        let mut joined = self.rooms();
        joined.closed = true;
        for room in joined.rooms.drain() {
            counters.leave(&room);
        }
    }
}
