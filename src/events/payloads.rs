//! Typed payloads of the Socket.IO contract: what the server sends (and
//! what client events carry where a type reads them), serialised as the
//! README documents them.
//!
//! | direction | event | payload |
//! |---|---|---|
//! | server → client | `count` | [`Count`] |
//! | server → client | `me` | [`Me`] (identified sockets only) |
//! | server → client | `leaderboard` | list of [`Ranked`](crate::counter::leaderboard::Ranked) |
//! | server → client | `session_expired` | [`SessionExpired`] |
//! | server → client | `server_shutdown` | [`ServerShutdown`] |
//! | server → client | `message` | [`Message`] (members of its conversation) |
//! | server → client | `room_count` | [`RoomCount`] (members) |
//! | server → client | `presence` | [`Presence`] (members) |
//! | server → client | `typing` | [`Typing`] (the other members) |

use std::fmt;

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::conversation::{ConversationId, Message, MessageId};
use crate::refusal::Refusal;
use crate::user::Username;

/// The global total. Totals only grow; a client keeps the largest it has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Count {
    pub total: u64,
}

/// The ack of a `click`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClickAck {
    /// The global total including this click.
    pub total: u64,
    /// The clicking user's count including this click; `null` if anonymous.
    pub you: Option<u64>,
    /// The conversation's total including this click, for a click made in
    /// one (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation: Option<RoomCount>,
}

/// A conversation's click total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomCount {
    pub conversation_id: ConversationId,
    pub total: u64,
}

/// How many sockets are in a conversation now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Presence {
    pub conversation_id: ConversationId,
    pub online: u64,
}

/// Someone in the conversation is typing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Typing {
    pub conversation_id: ConversationId,
    pub user_id: Username,
}

/// The ack of `join_conversation`: the state of the conversation and its
/// history (see [`History`](crate::conversation::History)).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Joined {
    pub conversation_id: ConversationId,
    pub total: u64,
    pub online: u64,
    pub history: Vec<Message>,
    pub more: bool,
}

/// The ack of a stored `message`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Posted {
    pub message_id: MessageId,
    pub timestamp: String,
}

/// The ack of an event that only succeeds: `{"ok": true}`.
#[derive(Debug, Serialize)]
pub struct Done {
    pub ok: bool,
}

/// A user's own count, sent to every socket of that user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Me {
    pub username: Username,
    pub count: u64,
}

/// Sent just before the server closes a socket whose token ran out.
#[derive(Debug, Clone, Serialize)]
pub struct SessionExpired {
    pub reason: &'static str,
}

/// Sent to every socket when the server begins to shut down, just before
/// it closes them.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerShutdown {
    /// Wait at least this long before reconnecting (plus up to as much
    /// again at random).
    pub reconnect_after_ms: u64,
}

/// A new token for the current session.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refresh {
    pub token: String,
}

/// The ack of a successful `refresh`.
#[derive(Debug, Serialize)]
pub struct Refreshed {
    /// The new expiry, seconds since the Unix epoch.
    pub expires_at: u64,
}

/// An ack answer: the data on success, `{"error": {...}}` on failure.
/// Clients tell them apart by the presence of the `error` key.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Ack<T> {
    Ok(T),
    Err(Refused),
}

/// A refused event's ack: `{"error": {"code", "message", "retryAfterMs"?}}`.
#[derive(Debug, Serialize)]
pub struct Refused {
    pub error: Refusal,
}

impl<T> From<Refusal> for Ack<T> {
    fn from(error: Refusal) -> Self {
        Ack::Err(Refused { error })
    }
}

impl<T> From<Result<T, Refusal>> for Ack<T> {
    fn from(result: Result<T, Refusal>) -> Self {
        match result {
            Ok(data) => Ack::Ok(data),
            Err(error) => error.into(),
        }
    }
}

/// Every argument of an incoming event, however many there are (zero
/// included). socketioxide hands a tuple-shaped type the whole argument list,
/// while any other type only sees the first argument and fails when there is
/// none; this type asks for the tuple shape so handlers can validate the
/// arguments themselves.
#[derive(Debug, Default, PartialEq)]
pub struct Args(pub Vec<Value>);

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ArgsVisitor;
        impl<'de> Visitor<'de> for ArgsVisitor {
            type Value = Args;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of event arguments")
            }

            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Args, S::Error> {
                let mut args = Vec::new();
                while let Some(arg) = seq.next_element()? {
                    args.push(arg);
                }
                Ok(Args(args))
            }
        }
        // The length is a hint the JSON deserializer ignores.
        deserializer.deserialize_tuple(usize::MAX, ArgsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ack_shapes_match_the_documented_contract() {
        let ok = serde_json::to_value(Ack::Ok(ClickAck {
            total: 3,
            you: None,
            conversation: None,
        }))
        .unwrap();
        assert_eq!(ok, json!({"total": 3, "you": null}));
        let err = serde_json::to_value(Ack::<Count>::from(
            crate::refusal::Code::BadRequest.with("nope"),
        ))
        .unwrap();
        assert_eq!(
            err,
            json!({"error": {"code": "bad_request", "message": "nope"}})
        );
    }
}
