//! Reading the arguments of the conversation events: one object, its
//! `conversationId`, and whether the socket is a member. Each failure is
//! the refusal the client's ack carries.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::bus::SocketRef;
use crate::conversation::ConversationId;
use crate::events::Args;
use crate::refusal::{Code, Refusal};
use crate::sockets::Memberships;

/// The arguments as socketioxide hands them over.
pub type Arguments = Result<Args, socketioxide::ParserError>;

/// The single object argument of a conversation event.
pub fn object(args: Arguments) -> Result<Map<String, Value>, Refusal> {
    match args {
        Ok(Args(mut args)) if args.len() == 1 => match args.pop() {
            Some(Value::Object(map)) => Ok(map),
            _ => Err(not_an_object()),
        },
        _ => Err(not_an_object()),
    }
}

fn not_an_object() -> Refusal {
    Code::InvalidPayload.with(r#"expected one object, e.g. {"conversationId": "…"}"#)
}

/// The `conversationId` field, valid.
pub fn conversation_id(payload: &Map<String, Value>) -> Result<ConversationId, Refusal> {
    match payload.get("conversationId") {
        Some(Value::String(raw)) => ConversationId::parse(raw)
            .map_err(|err| Code::InvalidConversation.with(err.to_string())),
        Some(_) => Err(Code::InvalidPayload.with("conversationId must be a string")),
        None => Err(Code::InvalidPayload.with("conversationId is missing")),
    }
}

/// The `conversationId` of an event's single object argument.
pub fn conversation_of(args: Arguments) -> Result<ConversationId, Refusal> {
    conversation_id(&object(args)?)
}

/// Refuses sockets that have not joined `room`.
pub fn member_of(socket: &SocketRef, room: &ConversationId) -> Result<(), Refusal> {
    let joined = socket
        .extensions
        .get::<Arc<Memberships>>()
        .is_some_and(|memberships| memberships.contains(room));
    if joined {
        Ok(())
    } else {
        Err(Code::NotAMember.with(format!("join conversation {room} first")))
    }
}
