//! The Socket.IO contract of namespace `/`: every event's name, and the
//! table of client events.
//!
//! [`ClientEvent`] is the one list of what clients may send. Each entry
//! says its name (also its metric label, `event="…"`) and, in
//! [`ClientEvent::limit`], which `--*-limit` option limits it; the per-event
//! rate limits, the metrics registered up front and the handlers' guard are
//! all built from it. Adding an event is a variant here (the compiler then
//! asks for its limit) and its handler, registered in `crate::realtime`; a
//! test sends every event of the list to a real server and fails on one
//! without a handler, another fails when the README's contract misses it.
//!
//! | event | payload | ack | limited by |
//! |---|---|---|---|
//! | `click` | none (or `{}`), or `{"conversationId"}` | [`ClickAck`] | `--click-limit` |
//! | `refresh` | [`Refresh`] | [`Refreshed`] | `--refresh-limit` |
//! | `join_conversation` | `{"conversationId", "since"?}` | [`Joined`] | `--join-limit` |
//! | `leave_conversation` | `{"conversationId"}` | [`Done`] | nothing: it only undoes a limited join |
//! | `message` | `{"conversationId", "content"}` | [`Posted`] | `--message-limit` |
//! | `typing` | `{"conversationId"}` | [`Done`] (if asked) | `--typing-limit` |
//!
//! Every refused event's ack is `{"error": {"code", "message"}}`
//! ([`crate::refusal::Refusal`]). What the server sends is in [`payloads`],
//! named by the constants below.

pub mod payloads;

pub use payloads::*;

use crate::config::{EventLimits, Limit};

/// Every event a client may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum ClientEvent {
    Click,
    Refresh,
    JoinConversation,
    LeaveConversation,
    Message,
    Typing,
}

impl ClientEvent {
    /// Every client event, in declaration order.
    pub const ALL: &'static [ClientEvent] = <Self as strum::VariantArray>::VARIANTS;

    /// The event's name on the wire, and its metric label.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// Its place in [`ClientEvent::ALL`], for tables indexed by event.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The option that limits this event, or `None` for an event that is
    /// never limited.
    pub fn limit(self, limits: &EventLimits) -> Option<Limit> {
        match self {
            ClientEvent::Click => Some(limits.click),
            ClientEvent::Refresh => Some(limits.refresh),
            ClientEvent::JoinConversation => Some(limits.join),
            // Leaving only undoes a join, which is limited; refusing it
            // would keep a socket in a room it asked to leave.
            ClientEvent::LeaveConversation => None,
            ClientEvent::Message => Some(limits.message),
            ClientEvent::Typing => Some(limits.typing),
        }
    }
}

pub const COUNT: &str = "count";
pub const ME: &str = "me";
pub const LEADERBOARD: &str = "leaderboard";
pub const SESSION_EXPIRED: &str = "session_expired";
pub const SERVER_SHUTDOWN: &str = "server_shutdown";
pub const MESSAGE: &str = "message";
pub const TYPING: &str = "typing";
pub const ROOM_COUNT: &str = "room_count";
pub const PRESENCE: &str = "presence";

/// The broadcasts whose metrics are registered up front: the ones sent
/// after every coalesced change.
pub const BROADCASTS: [&str; 4] = [COUNT, ME, ROOM_COUNT, PRESENCE];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_indexed_in_order_and_names_are_snake_case() {
        for (i, event) in ClientEvent::ALL.iter().enumerate() {
            assert_eq!(event.index(), i);
        }
        assert_eq!(ClientEvent::JoinConversation.name(), "join_conversation");
        assert_eq!(ClientEvent::Message.name(), MESSAGE);
        assert_eq!(ClientEvent::Typing.name(), TYPING);
    }
}
