//! Chat in a conversation: `message` (stored, then sent to the room and
//! acknowledged), `typing` (relayed to the other members, never stored),
//! and the broadcast of stored messages that the message log's writer
//! calls after each commit.

use serde_json::Value;
use socketioxide::extract::{Extension, State, TryData};

use super::guard;
use super::payload::{Arguments, conversation_id, conversation_of, member_of, object};
use crate::bus::{AckSender, BroadcastOperators, SocketIo, SocketRef};
use crate::conversation::{Content, ConversationId, Draft, Message};
use crate::events::{Ack, Args, ClientEvent, Done, MESSAGE, Posted, TYPING, Typing};
use crate::refusal::{Code, Refusal};
use crate::sockets::Identity;
use crate::state::AppState;
use crate::user::Username;

pub async fn on_message(
    socket: SocketRef,
    ack: AckSender,
    TryData(args): TryData<Args>,
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
) {
    let user = identity.user.as_ref();
    let Some(ack) = guard::enter(&socket, &state, user, ClientEvent::Message, ack) else {
        return;
    };
    let answer = post(&socket, &state, &identity, args).await;
    if let Err(refusal) = &answer {
        tracing::debug!(socket = %crate::telemetry::log_id(socket.id), code = %refusal.code, "message refused");
    }
    ack.send(&Ack::from(answer)).ok();
}

async fn post(
    socket: &SocketRef,
    state: &AppState,
    identity: &Identity,
    args: Arguments,
) -> Result<Posted, Refusal> {
    let payload = object(args)?;
    let room = conversation_id(&payload)?;
    let user = signed_in(
        identity,
        "sign in to post messages (anonymous connections may only read)",
    )?;
    member_of(socket, &room)?;
    let content = match payload.get("content") {
        Some(Value::String(raw)) => Content::parse(raw)?,
        Some(_) => return Err(Code::InvalidPayload.with("content must be a string")),
        None => return Err(Code::InvalidPayload.with("content is missing")),
    };
    // The message log's writer sends it to its room (see [`broadcast`])
    // before this returns.
    let draft = Draft {
        conversation: room,
        user,
        content,
    };
    let message = state.messages.append(draft).await?;
    Ok(Posted {
        message_id: message.id,
        timestamp: message.timestamp(),
    })
}

/// The socket's user, or `login_required` saying why one is needed.
fn signed_in(identity: &Identity, why: &str) -> Result<Username, Refusal> {
    identity
        .user
        .clone()
        .ok_or_else(|| Code::LoginRequired.with(why))
}

/// A conversation's members: on every node in a cluster (through the
/// Redis adapter), else this node's, without encoding the packet for an
/// adapter that sends it nowhere.
fn members(everyone: BroadcastOperators, clustered: bool) -> BroadcastOperators {
    if clustered {
        everyone
    } else {
        everyone.local()
    }
}

/// Sends stored messages to their rooms (on every node when `clustered`),
/// in order. Called by the message log's writer after each commit.
pub async fn broadcast(io: &SocketIo, messages: &[Message], clustered: bool) {
    let Some(everyone) = io.of("/") else {
        return;
    };
    for message in messages {
        if let Err(err) = members(everyone.clone(), clustered)
            .to(message.conversation.to_string())
            .emit(MESSAGE, message)
            .await
        {
            // Stored, so a member that missed it gets it in its next catch-up.
            tracing::debug!(error = %err, "message broadcast incomplete");
        }
    }
}

pub async fn on_typing(
    socket: SocketRef,
    ack: AckSender,
    TryData(args): TryData<Args>,
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
) {
    let user = identity.user.as_ref();
    let Some(ack) = guard::enter(&socket, &state, user, ClientEvent::Typing, ack) else {
        return;
    };
    let typing = (|| -> Result<(ConversationId, Username), Refusal> {
        let room = conversation_of(args)?;
        let user = signed_in(&identity, "sign in to be seen typing")?;
        member_of(&socket, &room)?;
        Ok((room, user))
    })();
    let answer = match typing {
        Ok((room, user)) => {
            let typing = Typing {
                conversation_id: room,
                user_id: user,
            };
            // Volatile: a member whose buffer is full simply misses it.
            members(socket.broadcast(), state.cluster.is_some())
                .to(typing.conversation_id.to_string())
                .emit(TYPING, &typing)
                .await
                .ok();
            Ok(Done { ok: true })
        }
        Err(refusal) => Err(refusal),
    };
    ack.send(&Ack::from(answer)).ok();
}
