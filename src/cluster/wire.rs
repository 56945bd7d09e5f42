//! The two messages nodes send each other on Redis, besides the Socket.IO
//! adapter's own: a node's committed totals after each flush, and its
//! heartbeat. JSON, small, and tolerant: a field this version does not
//! know is ignored, a key that does not parse is skipped.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::conversation::ConversationId;
use crate::counter::CounterKey;
use crate::user::Username;

/// Totals as the database held them right after one of `node`'s flushes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub node: u64,
    /// One more than the node's previous totals message, so a lost one
    /// shows as a gap.
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<(String, u64)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rooms: Vec<(String, u64)>,
}

impl Totals {
    /// The message for `totals`.
    pub fn new(node: u64, seq: u64, totals: &[(CounterKey, u64)]) -> Self {
        let mut message = Totals {
            node,
            seq,
            global: None,
            users: Vec::new(),
            rooms: Vec::new(),
        };
        for (key, total) in totals {
            match key {
                CounterKey::Global => message.global = Some(*total),
                CounterKey::User(name) => message.users.push((name.to_string(), *total)),
                CounterKey::Room(room) => message.rooms.push((room.to_string(), *total)),
            }
        }
        message
    }

    /// The totals it carries (keys that do not parse are left out).
    pub fn keys(&self) -> Vec<(CounterKey, u64)> {
        let users = self.users.iter().filter_map(|(name, total)| {
            Some((CounterKey::User(Username::parse(name).ok()?), *total))
        });
        let rooms = self.rooms.iter().filter_map(|(id, total)| {
            Some((CounterKey::Room(ConversationId::parse(id).ok()?), *total))
        });
        self.global
            .map(|total| (CounterKey::Global, total))
            .into_iter()
            .chain(users)
            .chain(rooms)
            .collect()
    }
}

/// A node's "I am here", with its sockets per conversation (absolute), or
/// its goodbye.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node: u64,
    #[serde(default)]
    pub leaving: bool,
    /// The number of the node's latest totals message (0: none yet), so a
    /// node that missed some notices even when no newer totals follow.
    #[serde(default)]
    pub totals_seq: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rooms: Vec<(String, u64)>,
}

impl Heartbeat {
    /// The rooms it names (ids that do not parse are left out).
    pub fn rooms(&self) -> HashMap<ConversationId, u64> {
        self.rooms
            .iter()
            .filter_map(|(id, online)| Some((ConversationId::parse(id).ok()?, *online)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_go_there_and_back_and_bad_keys_are_skipped() {
        let ada = Username::parse("Ada").unwrap();
        let room = ConversationId::parse("r").unwrap();
        let totals = [
            (CounterKey::Global, 9),
            (CounterKey::User(ada.clone()), 4),
            (CounterKey::Room(room.clone()), 2),
        ];
        let json = serde_json::to_string(&Totals::new(1, 2, &totals)).unwrap();
        let mut back: Totals = serde_json::from_str(&json).unwrap();
        assert_eq!(back.keys(), totals);
        back.users.push(("not a name!".into(), 1));
        assert_eq!(back.keys().len(), 3);
        let heartbeat: Heartbeat =
            serde_json::from_str(r#"{"node":3,"rooms":[["r",2],["bad id!",1]],"new":1}"#).unwrap();
        assert_eq!(heartbeat.rooms(), HashMap::from([(room, 2)]));
        assert!(!heartbeat.leaving);
    }
}
