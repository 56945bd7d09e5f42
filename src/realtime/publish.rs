//! Publishing changes to the sockets that follow them: a user's total as
//! `me` to that user's sockets, a conversation's total (`room_count`) and
//! occupancy (`presence`) to its members, the global total (`count`) and
//! the top list (`leaderboard`) to everyone.
//!
//! Every one of these goes to this node's sockets only (`.local()`): in a
//! cluster each node publishes its own view of the totals, which
//! [`crate::cluster`] keeps in step, so a client (which talks to one node)
//! never receives another node's older figure after a newer one.

use super::fanout;
use crate::bus::{BroadcastOperators, SocketIo};
use crate::counter::leaderboard::Ranked;
use crate::counter::{Changed, Changes, CounterKey};
use crate::events::{COUNT, Count, LEADERBOARD, ME, Me, PRESENCE, Presence, ROOM_COUNT, RoomCount};
use crate::sockets::user_room;
use crate::state::AppState;

/// Publishes changes: users' and conversations' first, then the global
/// total to everyone, last because to more than [`fanout::AT_ONCE`] sockets
/// it goes out in steps that take turns with other work (unless every
/// click is published by its handler, `--broadcast-interval 0`, which
/// broadcasts at once). Each payload is serialised once for all its
/// recipients, except in those steps.
pub async fn changes(io: &SocketIo, changes: &Changes, state: &AppState) {
    // The namespace is gone once the server has closed; nobody is left to tell.
    let Some(everyone) = io.of("/") else {
        return;
    };
    let started = std::time::Instant::now();
    let mut global = None;
    for change in &changes.totals {
        match &change.key {
            CounterKey::Global => global = Some(change.total),
            _ => total(&everyone, change, state).await,
        }
    }
    for online in &changes.presence {
        let presence = Presence {
            conversation_id: online.room.clone(),
            online: online.online,
        };
        addressed(state, PRESENCE, online.online as usize);
        if let Err(err) = everyone
            .clone()
            .local()
            .to(online.room.to_string())
            .emit(PRESENCE, &presence)
            .await
        {
            tracing::debug!(error = %err, room = %online.room, "presence broadcast incomplete");
        }
    }
    if let Some(total) = global {
        let count = Count { total };
        let audience = state.connections.current();
        addressed(state, COUNT, audience);
        // A handler's broadcast is not awaited step by step: shutdown does
        // not wait for handlers, and the click's frames should be queued
        // before it returns, as they always were.
        let missed = if state.broadcast_interval.is_zero() {
            fanout::emit_at_once(&everyone, audience, COUNT, &count).await
        } else {
            fanout::emit_to_all(&everyone, audience, COUNT, &count).await
        };
        if missed > 0 {
            // Closing sockets, or slow ones whose buffer is full: the next
            // update carries the newer total.
            tracing::debug!(missed, "count broadcast incomplete");
        }
    }
    state.metrics.published(changes.waited, started.elapsed());
}

/// A user's or a conversation's new total, to its room.
async fn total(everyone: &BroadcastOperators, change: &Changed, state: &AppState) {
    let sent = match &change.key {
        CounterKey::Global => return,
        CounterKey::User(user) => {
            // A user's sockets are few; they are not counted one by one.
            addressed(state, ME, 0);
            let me = Me {
                username: user.clone(),
                count: change.total,
            };
            everyone
                .clone()
                .local()
                .to(user_room(user))
                .emit(ME, &me)
                .await
        }
        CounterKey::Room(room) => {
            let count = RoomCount {
                conversation_id: room.clone(),
                total: change.total,
            };
            addressed(state, ROOM_COUNT, state.counters.online(room) as usize);
            everyone
                .clone()
                .local()
                .to(room.to_string())
                .emit(ROOM_COUNT, &count)
                .await
        }
    };
    if let Err(err) = sent {
        // A slow client whose buffer is full misses this update but will
        // get the next one, which carries the newer total.
        tracing::debug!(error = %err, key = %change.key, "broadcast incomplete");
    }
}

/// Counts a broadcast to `recipients` in the metrics and the Admin UI.
fn addressed(state: &AppState, event: &'static str, recipients: usize) {
    state.metrics.broadcast(event, recipients);
    if let Some(admin) = &state.admin {
        admin.packets_out(recipients as u64);
    }
}

/// Publishes a new top list to everyone: `audience` sockets, as counted by
/// [`crate::sockets::Connections`], in steps when there are many
/// ([`fanout`]).
pub async fn leaderboard(io: &SocketIo, top: &[Ranked], audience: usize) {
    let Some(everyone) = io.of("/") else {
        return;
    };
    let missed = fanout::emit_to_all(&everyone, audience, LEADERBOARD, top).await;
    if missed > 0 {
        tracing::debug!(missed, "leaderboard broadcast incomplete");
    }
}

/// With `--broadcast-interval 0` there is no coalescer: presence changes
/// are published at once, like counts.
pub async fn presence_now(io: &SocketIo, state: &AppState) {
    if state.broadcast_interval.is_zero() {
        changes(io, &state.counters.take_changes(), state).await;
    }
}
