//! Conversation events of namespace `/`: `join_conversation`,
//! `leave_conversation`, `message` and `typing`, and the membership every
//! socket keeps.
//!
//! A conversation is the Socket.IO room named by its id. Joining answers
//! with the conversation's state and history; a message is stored (see
//! [`crate::conversation::log`]) before it is sent to the room and
//! acknowledged. Presence (sockets in the room) is counted by
//! [`crate::counter::Counters`] and published by the coalescer with the
//! totals. Every refusal is an ack `{"error": {"code", "message"}}`; none
//! disconnects the socket or counts anything.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};

use super::events::{
    Ack, Args, Done, JOIN_CONVERSATION, Joined, LEAVE_CONVERSATION, MESSAGE, Posted, TYPING, Typing,
};
use super::limits::Kind;
use super::session::Identity;
use crate::conversation::log::{AppendError, Draft};
use crate::conversation::{
    Content, ConversationId, HistoryQuery, InvalidContent, Message, MessageId,
};
use crate::counter::Counters;
use crate::state::AppState;

/// Most conversations one socket may be in at once.
pub const MAX_CONVERSATIONS_PER_SOCKET: usize = 100;

/// The conversations a socket is in, kept in its extensions so that a
/// disconnect can tell each of them it left.
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
    fn lock(&self) -> std::sync::MutexGuard<'_, Rooms> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn contains(&self, room: &ConversationId) -> bool {
        self.lock().rooms.contains(room)
    }

    /// The conversations the socket is in now.
    pub fn list(&self) -> Vec<ConversationId> {
        self.lock().rooms.iter().cloned().collect()
    }

    /// Puts the socket in `room`; `Ok(true)` if it was not in it already.
    fn enter(
        &self,
        socket: &SocketRef,
        counters: &Counters,
        room: &ConversationId,
    ) -> Result<bool, Refused> {
        let mut joined = self.lock();
        if joined.closed || !socket.connected() {
            return Err(Refused::new("disconnected", "the connection is closing"));
        }
        if joined.rooms.contains(room) {
            return Ok(false);
        }
        if joined.rooms.len() >= MAX_CONVERSATIONS_PER_SOCKET {
            return Err(Refused::new(
                "too_many_conversations",
                format!(
                    "a connection can be in at most {MAX_CONVERSATIONS_PER_SOCKET} conversations"
                ),
            ));
        }
        joined.rooms.insert(room.clone());
        socket.join(room.to_string());
        counters.enter(room);
        Ok(true)
    }

    /// Takes the socket out of `room`; `true` if it was in it.
    fn exit(&self, socket: &SocketRef, counters: &Counters, room: &ConversationId) -> bool {
        let mut joined = self.lock();
        if !joined.rooms.remove(room) {
            return false;
        }
        socket.leave(room.to_string());
        counters.leave(room);
        true
    }

    /// The socket is gone: every room loses it, and no join follows.
    fn close(&self, counters: &Counters) {
        let mut joined = self.lock();
        joined.closed = true;
        for room in joined.rooms.drain() {
            counters.leave(&room);
        }
    }
}

/// A refused event: the ack's `code` and `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: &'static str,
    pub message: String,
    /// For `rate_limited`: when a retry would pass, in milliseconds.
    pub retry_after_ms: Option<u64>,
    /// The socket is to be disconnected once told (rate-limit abuse).
    pub abusive: bool,
}

impl Refused {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Refused {
            code,
            message: message.into(),
            retry_after_ms: None,
            abusive: false,
        }
    }

    pub fn into_ack<T>(self) -> Ack<T> {
        match Ack::error(self.code, self.message) {
            Ack::Err(mut error) => {
                error.error.retry_after_ms = self.retry_after_ms;
                Ack::Err(error)
            }
            ok => ok,
        }
    }

    /// Sends this refusal as the ack, then disconnects an abusive socket.
    pub fn answer<T: serde::Serialize>(self, socket: &SocketRef, ack: AckSender) {
        let abusive = self.abusive;
        ack.send(&self.into_ack::<T>()).ok();
        if abusive {
            tracing::info!(sid = %socket.id, "disconnecting a socket far over its rate limits");
            socket.clone().disconnect().ok();
        }
    }
}

/// Registers the conversation events on a new socket.
pub fn register(socket: &SocketRef) {
    socket.extensions.insert(Arc::new(Memberships::default()));
    socket.on(JOIN_CONVERSATION, on_join);
    socket.on(LEAVE_CONVERSATION, on_leave);
    socket.on(MESSAGE, on_message);
    socket.on(TYPING, on_typing);
}

/// Tells every conversation of a disconnected socket that it left.
pub async fn disconnected(socket: &SocketRef, io: &SocketIo, state: &AppState) {
    let Some(memberships) = socket.extensions.get::<Arc<Memberships>>() else {
        return;
    };
    memberships.close(&state.counters);
    publish_presence_now(io, state).await;
}

/// The single object argument of a conversation event.
pub fn object(
    args: Result<Args, socketioxide::ParserError>,
) -> Result<Map<String, Value>, Refused> {
    match args {
        Ok(Args(mut args)) if args.len() == 1 => match args.pop() {
            Some(Value::Object(map)) => Ok(map),
            _ => Err(not_an_object()),
        },
        _ => Err(not_an_object()),
    }
}

fn not_an_object() -> Refused {
    Refused::new(
        "invalid_payload",
        r#"expected one object, e.g. {"conversationId": "…"}"#,
    )
}

/// The `conversationId` field, valid.
pub fn conversation_id(payload: &Map<String, Value>) -> Result<ConversationId, Refused> {
    match payload.get("conversationId") {
        Some(Value::String(raw)) => ConversationId::parse(raw)
            .map_err(|err| Refused::new("invalid_conversation", err.to_string())),
        Some(_) => Err(Refused::new(
            "invalid_payload",
            "conversationId must be a string",
        )),
        None => Err(Refused::new("invalid_payload", "conversationId is missing")),
    }
}

/// Refuses sockets that have not joined `room`.
pub fn member_of(socket: &SocketRef, room: &ConversationId) -> Result<(), Refused> {
    let joined = socket
        .extensions
        .get::<Arc<Memberships>>()
        .is_some_and(|memberships| memberships.contains(room));
    if joined {
        Ok(())
    } else {
        Err(Refused::new(
            "not_a_member",
            format!("join conversation {room} first"),
        ))
    }
}

async fn on_join(
    socket: SocketRef,
    io: SocketIo,
    ack: AckSender,
    TryData(args): TryData<Args>,
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
) {
    super::activity(&socket, &state, JOIN_CONVERSATION);
    if let Err(refused) = super::limit(
        &socket,
        &state,
        identity.user.as_ref(),
        Kind::Join,
        JOIN_CONVERSATION,
    ) {
        return refused.answer::<Joined>(&socket, ack);
    }
    let answer = match join(&socket, &io, &state, &identity, args).await {
        Ok(joined) => Ack::Ok(joined),
        Err(refused) => refused.into_ack(),
    };
    ack.send(&answer).ok();
}

async fn join(
    socket: &SocketRef,
    io: &SocketIo,
    state: &AppState,
    identity: &Identity,
    args: Result<Args, socketioxide::ParserError>,
) -> Result<Joined, Refused> {
    let payload = object(args)?;
    let room = conversation_id(&payload)?;
    let since = match payload.get("since") {
        None | Some(Value::Null) => None,
        Some(Value::String(raw)) => Some(
            MessageId::parse(raw)
                .map_err(|err| Refused::new("invalid_payload", err.to_string()))?,
        ),
        Some(_) => {
            return Err(Refused::new(
                "invalid_payload",
                "since must be a messageId string",
            ));
        }
    };
    if let Some(allowed) = &identity.conversations
        && !allowed.contains(&room)
    {
        return Err(Refused::new(
            "forbidden",
            format!("this session may not join conversation {room}"),
        ));
    }
    let memberships = socket
        .extensions
        .get::<Arc<Memberships>>()
        .ok_or_else(|| Refused::new("internal", "no membership record"))?;
    // Joined before the history is read: a message stored in between
    // arrives live and may be in the history too (clients keep one copy per
    // messageId), but none falls in a gap between the two.
    let entered = memberships.enter(socket, &state.counters, &room)?;
    if entered {
        if let Some(admin) = &state.admin {
            admin.room_joined(socket, room.as_str());
        }
        publish_presence_now(io, state).await;
    }
    let query = HistoryQuery {
        since,
        limit: state.history_size,
    };
    let history = match state.store.history(&room, query).await {
        Ok(history) => history,
        Err(err) => {
            tracing::warn!(error = %err, %room, "reading history failed");
            // A refused join leaves nothing behind: a socket this request
            // made a member leaves again (one that was a member before
            // stays one).
            if entered && memberships.exit(socket, &state.counters, &room) {
                if let Some(admin) = &state.admin {
                    admin.room_left(socket, room.as_str());
                }
                publish_presence_now(io, state).await;
            }
            return Err(Refused::new(
                "unavailable",
                "the history could not be read; try joining again",
            ));
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

async fn on_leave(
    socket: SocketRef,
    io: SocketIo,
    ack: AckSender,
    TryData(args): TryData<Args>,
    State(state): State<AppState>,
) {
    super::activity(&socket, &state, LEAVE_CONVERSATION);
    let answer = match object(args).and_then(|payload| conversation_id(&payload)) {
        Ok(room) => {
            let left = socket
                .extensions
                .get::<Arc<Memberships>>()
                .is_some_and(|memberships| memberships.exit(&socket, &state.counters, &room));
            // Leaving a conversation one is not in is not an error.
            if left {
                if let Some(admin) = &state.admin {
                    admin.room_left(&socket, room.as_str());
                }
                publish_presence_now(&io, &state).await;
            }
            Ack::Ok(Done { ok: true })
        }
        Err(refused) => refused.into_ack(),
    };
    ack.send(&answer).ok();
}

async fn on_message(
    socket: SocketRef,
    ack: AckSender,
    TryData(args): TryData<Args>,
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
) {
    super::activity(&socket, &state, MESSAGE);
    if let Err(refused) = super::limit(
        &socket,
        &state,
        identity.user.as_ref(),
        Kind::Message,
        MESSAGE,
    ) {
        return refused.answer::<Posted>(&socket, ack);
    }
    let answer = match post(&socket, &state, &identity, args).await {
        Ok(posted) => Ack::Ok(posted),
        Err(refused) => {
            tracing::debug!(sid = %socket.id, code = refused.code, "message refused");
            refused.into_ack()
        }
    };
    ack.send(&answer).ok();
}

async fn post(
    socket: &SocketRef,
    state: &AppState,
    identity: &Identity,
    args: Result<Args, socketioxide::ParserError>,
) -> Result<Posted, Refused> {
    let payload = object(args)?;
    let room = conversation_id(&payload)?;
    let Some(user) = identity.user.clone() else {
        return Err(Refused::new(
            "login_required",
            "sign in to post messages (anonymous connections may only read)",
        ));
    };
    member_of(socket, &room)?;
    let content = match payload.get("content") {
        Some(Value::String(raw)) => content(raw)?,
        Some(_) => return Err(Refused::new("invalid_payload", "content must be a string")),
        None => return Err(Refused::new("invalid_payload", "content is missing")),
    };
    let message = deliver(
        state,
        Draft {
            conversation: room,
            user,
            content,
        },
    )
    .await?;
    Ok(Posted {
        message_id: message.id,
        timestamp: message.timestamp(),
    })
}

/// A message body under the rules, or the refusal the client gets.
pub fn content(raw: &str) -> Result<Content, Refused> {
    Content::parse(raw).map_err(|err| match err {
        InvalidContent::TooLong => Refused::new("too_long", err.to_string()),
        InvalidContent::Empty | InvalidContent::ControlCharacter => {
            Refused::new("invalid_payload", err.to_string())
        }
    })
}

/// Stores a message; the message log's writer sends it to its room (see
/// [`broadcast`]) before this returns. Shared by sockets and the backend's
/// HTTP endpoint.
pub async fn deliver(state: &AppState, draft: Draft) -> Result<Message, Refused> {
    state.messages.append(draft).await.map_err(|err| match err {
        AppendError::Closed => Refused::new("shutting_down", err.to_string()),
        AppendError::Store => Refused::new("unavailable", err.to_string()),
    })
}

/// Sends stored messages to their rooms, in order. Called by the message
/// log's writer after each commit.
pub async fn broadcast(io: &SocketIo, messages: &[Message]) {
    let Some(everyone) = io.of("/") else {
        return;
    };
    for message in messages {
        if let Err(err) = everyone
            .clone()
            .to(message.conversation.to_string())
            .emit(MESSAGE, message)
            .await
        {
            // Stored, so a member that missed it gets it in its next catch-up.
            tracing::debug!(error = %err, "message broadcast incomplete");
        }
    }
}

async fn on_typing(
    socket: SocketRef,
    ack: AckSender,
    TryData(args): TryData<Args>,
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
) {
    super::activity(&socket, &state, TYPING);
    if let Err(refused) = super::limit(
        &socket,
        &state,
        identity.user.as_ref(),
        Kind::Typing,
        TYPING,
    ) {
        return refused.answer::<Done>(&socket, ack);
    }
    let answer = (|| {
        let payload = object(args)?;
        let room = conversation_id(&payload)?;
        let Some(user) = identity.user.clone() else {
            return Err(Refused::new("login_required", "sign in to be seen typing"));
        };
        member_of(&socket, &room)?;
        Ok((room, user))
    })();
    match answer {
        Ok((room, user)) => {
            let typing = Typing {
                conversation_id: room,
                user_id: user,
            };
            // Volatile: a member whose buffer is full simply misses it.
            socket
                .to(typing.conversation_id.to_string())
                .emit(TYPING, &typing)
                .await
                .ok();
            ack.send(&Ack::Ok(Done { ok: true })).ok();
        }
        Err(refused) => {
            ack.send(&refused.into_ack::<Done>()).ok();
        }
    }
}

/// Moves `socket` into or out of conversation `room` on an operator's
/// command (the Admin UI's `join` and `leave`), as its own join or leave
/// would: membership, presence, the room, and the token's `conversations`
/// claim (a socket is never put in a conversation its session may not
/// join). The client is not told; it receives the room's traffic from now
/// on (or no longer). `true` if something changed.
pub async fn move_by_operator(
    socket: &SocketRef,
    io: &SocketIo,
    state: &AppState,
    room: &ConversationId,
    join: bool,
) -> bool {
    let Some(memberships) = socket.extensions.get::<Arc<Memberships>>() else {
        return false;
    };
    let allowed = socket.extensions.get::<Identity>().is_some_and(|identity| {
        identity
            .conversations
            .as_ref()
            .is_none_or(|allowed| allowed.contains(room))
    });
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
        publish_presence_now(io, state).await;
    }
    moved
}

/// With `--broadcast-interval 0` there is no coalescer: presence changes
/// are published at once, like counts.
async fn publish_presence_now(io: &SocketIo, state: &AppState) {
    if state.broadcast_interval.is_zero() {
        super::publish(io, &state.counters.take_changes(), state).await;
    }
}
