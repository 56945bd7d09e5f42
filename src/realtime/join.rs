//! Membership of conversations: `join_conversation`, `leave_conversation`,
//! the operator's moves from the Admin UI, and leaving everything at
//! disconnect.
//!
//! A conversation is the Socket.IO room named by its id. Joining answers
//! with the conversation's state and history; presence (sockets in the
//! room) is counted by [`crate::counter::Counters`] and published with the
//! totals. Every refusal is an ack `{"error": {"code", "message"}}`; none
//! disconnects the socket or counts anything.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;
use socketioxide::extract::{Extension, State, TryData};

use super::payload::{Arguments, conversation_id, conversation_of, object};
use super::{guard, publish};
use crate::admin::Conversations;
use crate::bus::{AckSender, SocketIo, SocketRef};
use crate::conversation::{ConversationId, HistoryQuery, MessageId};
use crate::events::{Ack, Args, ClientEvent, Done, Joined};
use crate::refusal::{Code, Refusal};
use crate::sockets::{Identity, Memberships};
use crate::state::AppState;

/// About how many bytes of history a join answer carries at most (with
/// `more: true` when that left messages out): answers are queued whole for
/// a socket, so their size bounds what a socket that stops reading holds,
/// 128 answers at most. 50 messages of 2,000 two-byte characters would
/// otherwise be 200 KB an answer.
pub const JOIN_ANSWER_BYTES: usize = 64 * 1024;

pub async fn on_join(
    socket: SocketRef,
    io: SocketIo,
    ack: AckSender,
    TryData(args): TryData<Args>,
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
) {
    let user = identity.user.as_ref();
    let event = ClientEvent::JoinConversation;
    let Some(ack) = guard::enter(&socket, &state, user, event, ack) else {
        return;
    };
    let answer = join(&socket, &io, &state, &identity, args).await;
    ack.send(&Ack::from(answer)).ok();
}

async fn join(
    socket: &SocketRef,
    io: &SocketIo,
    state: &AppState,
    identity: &Identity,
    args: Arguments,
) -> Result<Joined, Refusal> {
    let payload = object(args)?;
    let room = conversation_id(&payload)?;
    let since = match payload.get("since") {
        None | Some(Value::Null) => None,
        Some(Value::String(raw)) => {
            Some(MessageId::parse(raw).map_err(|err| Code::InvalidPayload.with(err.to_string()))?)
        }
        Some(_) => return Err(Code::InvalidPayload.with("since must be a messageId string")),
    };
    if !identity.may_join(&room) {
        return Err(Code::Forbidden.with(format!("this session may not join conversation {room}")));
    }
    let memberships =
        memberships(socket).ok_or_else(|| Code::Internal.with("no membership record"))?;
    // Joined before the history is read: a message stored in between
    // arrives live and may be in the history too (clients keep one copy per
    // messageId), but none falls in a gap between the two.
    let entered = memberships.enter(socket, &state.counters, &room)?;
    if entered {
        if let Some(admin) = &state.admin {
            admin.room_joined(socket, room.as_str());
        }
        publish::presence_now(io, state).await;
    }
    let query = HistoryQuery {
        since,
        limit: state.history_size,
    };
    let history = match state.store.history(&room, query).await {
        Ok(history) => history.fit(JOIN_ANSWER_BYTES, since.is_none()),
        Err(err) => {
            tracing::warn!(error = %err, %room, "reading history failed");
            // A refused join leaves nothing behind: a socket this request
            // made a member leaves again (one that was a member before
            // stays one).
            if entered {
                leave(socket, io, state, &memberships, &room).await;
            }
            return Err(Code::Unavailable.with("the history could not be read; try joining again"));
        }
    };
    Ok(Joined {
        total: state.counters.room_total(&room),
        online: state.counters.online(&room),
        conversation_id: room,
        history: history.messages,
        more: history.more,
    })
}

pub async fn on_leave(
    socket: SocketRef,
    io: SocketIo,
    ack: AckSender,
    TryData(args): TryData<Args>,
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
) {
    let user = identity.user.as_ref();
    let event = ClientEvent::LeaveConversation;
    let Some(ack) = guard::enter(&socket, &state, user, event, ack) else {
        return;
    };
    let answer = match conversation_of(args) {
        Ok(room) => {
            // Leaving a conversation one is not in is not an error.
            if let Some(memberships) = memberships(&socket) {
                leave(&socket, &io, &state, &memberships, &room).await;
            }
            Ok(Done { ok: true })
        }
        Err(refusal) => Err(refusal),
    };
    ack.send(&Ack::from(answer)).ok();
}

/// Takes the socket out of `room`, telling the Admin UI and publishing the
/// new presence; `true` if it was in it.
async fn leave(
    socket: &SocketRef,
    io: &SocketIo,
    state: &AppState,
    memberships: &Memberships,
    room: &ConversationId,
) -> bool {
    if !memberships.exit(socket, &state.counters, room) {
        return false;
    }
    if let Some(admin) = &state.admin {
        admin.room_left(socket, room.as_str());
    }
    publish::presence_now(io, state).await;
    true
}

fn memberships(socket: &SocketRef) -> Option<Arc<Memberships>> {
    socket.extensions.get::<Arc<Memberships>>()
}

/// Tells every conversation of a disconnected socket that it left.
pub async fn disconnected(socket: &SocketRef, io: &SocketIo, state: &AppState) {
    let Some(memberships) = memberships(socket) else {
        return;
    };
    memberships.close(&state.counters);
    publish::presence_now(io, state).await;
}

/// The Admin UI's `join` and `leave` commands on conversations, for
/// [`crate::admin::AdminContext`].
pub struct Operator(pub AppState);

impl Conversations for Operator {
    fn move_socket<'a>(
        &'a self,
        socket: &'a SocketRef,
        io: &'a SocketIo,
        room: &'a ConversationId,
        join: bool,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(move_by_operator(socket, io, &self.0, room, join))
    }
}

/// Moves `socket` into or out of conversation `room` on an operator's
/// command, as its own join or leave would: membership, presence, the
/// room, and the token's `conversations` claim (a socket is never put in a
/// conversation its session may not join). The client is not told; it
/// receives the room's traffic from now on (or no longer). `true` if
/// something changed. The Admin UI's stream is told by the caller.
async fn move_by_operator(
    socket: &SocketRef,
    io: &SocketIo,
    state: &AppState,
    room: &ConversationId,
    join: bool,
) -> bool {
    let Some(memberships) = memberships(socket) else {
        return false;
    };
    let allowed = socket
        .extensions
        .get::<Identity>()
        .is_some_and(|identity| identity.may_join(room));
    if join && !allowed {
        return false;
    }
    let moved = if join {
        memberships
            .enter(socket, &state.counters, room)
            .unwrap_or(false)
    } else {
        memberships.exit(socket, &state.counters, room)
    };
    if moved {
        publish::presence_now(io, state).await;
    }
    moved
}
