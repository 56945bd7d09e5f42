//! Conversations: what a conversation id and a chat message are, and the
//! rules they follow.
//!
//! A conversation is a Socket.IO room with its own click counter (kept by
//! [`crate::counter`]) and a history of messages (kept by [`crate::store`]).
//! This module owns the values that cross those boundaries:
//! [`ConversationId`], [`Content`] (a validated message body), [`Draft`] (a
//! message on its way to the store), [`Message`] (a stored message in the
//! original design's schema) and the pages of history. The writer that
//! stores messages before anyone hears of them is
//! [`crate::persist::message_log`].

use std::fmt;
use std::sync::Arc;

use serde::{Serialize, Serializer};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;
use uuid::Uuid;

use crate::clock::iso_millis;
use crate::refusal::{Code, Refusal};
use crate::user::Username;

/// The rule for conversation ids, in words, for error messages and docs.
pub const CONVERSATION_RULE: &str =
    "a conversation id is 1 to 64 characters of A-Z, a-z, 0-9, `_`, `-`, `.` and `:`";

/// Longest conversation id, in bytes (every allowed character is ASCII).
pub const MAX_CONVERSATION_LEN: usize = 64;

/// Longest message, in characters (Unicode scalar values) after trimming.
pub const MAX_CONTENT_CHARS: usize = 2_000;

/// A valid conversation id. Case-sensitive: `Team` and `team` are two
/// conversations. One shared allocation, cheap to clone into rooms and maps.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConversationId(Arc<str>);

impl utoipa::PartialSchema for ConversationId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::schema::string_schema(r"^[A-Za-z0-9_.:-]{1,64}$", None)
    }
}

impl utoipa::ToSchema for ConversationId {}

/// Why a conversation id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid conversation id: {CONVERSATION_RULE}")]
pub struct InvalidConversation;

impl ConversationId {
    pub fn parse(raw: &str) -> Result<Self, InvalidConversation> {
        let valid = (1..=MAX_CONVERSATION_LEN).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
        if !valid {
            return Err(InvalidConversation);
        }
        Ok(ConversationId(raw.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for ConversationId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// A message body that passed the rules: at most 2,000 characters as sent,
/// line breaks as `\n` (a `\r\n` or lone `\r` from a client becomes
/// `\n`), in Unicode's composed form (NFC), trimmed, 1 to 2,000 characters, no control characters except
/// newline and tab, none of the [`invisible`] characters that make a text
/// show other than it reads, and at most [`MAX_COMBINING_MARKS`] combining
/// marks on one character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content(String);

/// Why a message body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidContent {
    #[error("a message cannot be empty")]
    Empty,
    #[error("a message is at most {MAX_CONTENT_CHARS} characters")]
    TooLong,
    #[error("a message cannot contain control characters other than newline and tab")]
    ControlCharacter,
    #[error(
        "a message cannot contain direction overrides, invisible characters or line separators"
    )]
    Invisible,
    #[error("a message allows at most {MAX_COMBINING_MARKS} combining marks on one character")]
    TooManyMarks,
}

/// Combining marks allowed on one character: enough for every script's
/// accents and vowel signs and an emoji's variation selector and keycap,
/// too few for text stacked to cover the lines around it.
pub const MAX_COMBINING_MARKS: usize = 6;

/// Characters refused in a message because they make it show other than it
/// reads: the bidirectional embeddings, overrides, isolates and marks (a
/// name ending `\u{202E}exe.txt` shows as `txt.exe`), the zero-width space,
/// word joiner and byte-order mark, and the line and paragraph separators,
/// which some clients break lines at and others do not. The zero-width
/// joiner and non-joiner stay: emoji sequences and several scripts need
/// them.
pub fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'
            | '\u{200E}'
            | '\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

impl From<InvalidContent> for Refusal {
    /// What a client is told about a body that breaks the rules.
    fn from(err: InvalidContent) -> Self {
        let code = match err {
            InvalidContent::TooLong => Code::TooLong,
            InvalidContent::Empty
            | InvalidContent::ControlCharacter
            | InvalidContent::Invisible
            | InvalidContent::TooManyMarks => Code::InvalidPayload,
        };
        code.with(err.to_string())
    }
}

impl Content {
    pub fn parse(raw: &str) -> Result<Self, InvalidContent> {
        // The limit holds for the text as sent, too, so that what a client
        // may send is one plain rule (the API document's `maxLength`), and
        // a megabyte costs no more to refuse than 2,001 characters.
        if raw.chars().take(MAX_CONTENT_CHARS + 1).count() > MAX_CONTENT_CHARS {
            return Err(InvalidContent::TooLong);
        }
        let normalised;
        let raw = if raw.contains('\r') {
            normalised = raw.replace("\r\n", "\n").replace('\r', "\n");
            normalised.as_str()
        } else {
            raw
        };
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(InvalidContent::Empty);
        }
        // Counting stops one past the limit, so a megabyte of text costs no
        // more to refuse than 2,001 characters.
        if trimmed.chars().take(MAX_CONTENT_CHARS + 1).count() > MAX_CONTENT_CHARS {
            return Err(InvalidContent::TooLong);
        }
        if trimmed
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Err(InvalidContent::ControlCharacter);
        }
        if trimmed.chars().any(invisible) {
            return Err(InvalidContent::Invisible);
        }
        // Composing changes no character class checked above; it can make
        // a text longer (a few characters decompose), so the length is
        // checked again on the composed form, which is what is stored.
        let composed: String = trimmed.nfc().collect();
        let mut marks = 0;
        for c in composed.chars() {
            // A joiner between marks does not end their stack (renderers
            // still pile them on one base), so only another character does.
            marks = match c {
                _ if is_combining_mark(c) => marks + 1,
                '\u{200C}' | '\u{200D}' => marks,
                _ => 0,
            };
            if marks > MAX_COMBINING_MARKS {
                return Err(InvalidContent::TooManyMarks);
            }
        }
        if composed.chars().count() > MAX_CONTENT_CHARS {
            return Err(InvalidContent::TooLong);
        }
        Ok(Content(composed))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A time-ordered message id (UUIDv7): ids made later compare greater, in
/// their text form too, so "newer than this id" is a plain comparison in
/// every database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(Uuid);

impl utoipa::PartialSchema for MessageId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::schema::string_schema(
            "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
            Some("uuid"),
        )
    }
}

impl utoipa::ToSchema for MessageId {}

/// Why a message id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid message id: expected a message's `messageId` (a UUID)")]
pub struct InvalidMessageId;

impl MessageId {
    /// A new id for a message made now. uuid keeps ids made in the same
    /// millisecond by this process in order, so one node's messages are
    /// ordered exactly; several nodes' are ordered by their clocks.
    pub fn now() -> Self {
        MessageId(Uuid::now_v7())
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidMessageId> {
        Uuid::try_parse(raw)
            .map(MessageId)
            .map_err(|_| InvalidMessageId)
    }

    /// Milliseconds since the Unix epoch at which the id was made.
    pub fn unix_ms(&self) -> i64 {
        let (secs, nanos) = self
            .0
            .get_timestamp()
            .map(|ts| ts.to_unix())
            .unwrap_or_default();
        // A UUIDv7 has 48 bits of milliseconds: this cannot overflow.
        (secs * 1000 + u64::from(nanos / 1_000_000)) as i64
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Lower-case hyphenated: the form stored, compared and sent.
        write!(f, "{}", self.0.hyphenated())
    }
}

impl Serialize for MessageId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A stored chat message, serialised in the original design's schema:
/// `{"type": "message", "conversationId", "userId", "content", "timestamp",
/// "messageId"}`, where `userId` is the author's username and `timestamp` is
/// ISO 8601 UTC with milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: MessageId,
    pub conversation: ConversationId,
    pub user: Username,
    pub content: Content,
    /// Milliseconds since the Unix epoch, UTC.
    pub created_at: i64,
}

impl Message {
    /// A new message, stamped now.
    pub fn new(conversation: ConversationId, user: Username, content: Content) -> Self {
        let id = MessageId::now();
        Message {
            created_at: id.unix_ms(),
            id,
            conversation,
            user,
            content,
        }
    }

    /// `created_at` as ISO 8601 UTC with milliseconds.
    pub fn timestamp(&self) -> String {
        iso_millis(self.created_at)
    }
}

/// The only `type` a message has on the wire.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
enum MessageType {
    Message,
}

/// A message as clients receive it: the serialised form, and (so the two
/// cannot differ) the schema the OpenAPI document gives it.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Message)]
pub struct MessageJson<'a> {
    #[serde(rename = "type")]
    kind: MessageType,
    conversation_id: &'a ConversationId,
    /// The author's username.
    user_id: &'a Username,
    content: &'a str,
    /// ISO 8601 UTC with milliseconds.
    #[schema(format = DateTime)]
    timestamp: String,
    message_id: &'a MessageId,
}

impl utoipa::PartialSchema for Message {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <MessageJson<'static> as utoipa::PartialSchema>::schema()
    }
}

impl utoipa::ToSchema for Message {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        <MessageJson<'static> as utoipa::ToSchema>::schemas(schemas);
    }
}

impl Serialize for Message {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        MessageJson {
            kind: MessageType::Message,
            conversation_id: &self.conversation,
            user_id: &self.user,
            content: self.content.as_str(),
            timestamp: self.timestamp(),
            message_id: &self.id,
        }
        .serialize(serializer)
    }
}

/// A message before it is stored: the message log's writer gives it its
/// id and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub conversation: ConversationId,
    pub user: Username,
    pub content: Content,
}

/// A page of a conversation's history, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct History {
    pub messages: Vec<Message>,
    /// Whether messages in the asked range were left out: older ones before
    /// the page when no `since` was given, newer ones after it otherwise.
    pub more: bool,
}

impl History {
    /// The page cut to about `budget` bytes of JSON (always at least one
    /// message): a socket's answer is queued whole, and a client that does
    /// not read holds what is queued for it, so its size is bounded, not
    /// only its count. The messages left out are those `more` already
    /// stands for: the oldest of a latest page (`latest`), the newest of a
    /// page after `since`, so a client that pages on misses none.
    pub fn fit(mut self, budget: usize, latest: bool) -> History {
        // A message's fields, quotes and commas around its content.
        const OVERHEAD: usize = 200;
        let mut kept = 0;
        let mut bytes = 0;
        let order: Box<dyn Iterator<Item = &Message>> = if latest {
            Box::new(self.messages.iter().rev())
        } else {
            Box::new(self.messages.iter())
        };
        for message in order {
            bytes += message.content.as_str().len() + OVERHEAD;
            if bytes > budget && kept > 0 {
                break;
            }
            kept += 1;
        }
        let dropped = self.messages.len() - kept;
        if dropped > 0 {
            if latest {
                self.messages.drain(..dropped);
            } else {
                self.messages.truncate(kept);
            }
            self.more = true;
        }
        self
    }
}

/// Which part of a conversation's history to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only messages newer than this one, oldest first (a reconnecting
    /// client's catch-up; ask again from the last one while `more`). Without
    /// it, the latest messages.
    pub since: Option<MessageId>,
    /// Most messages in the page.
    pub limit: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_ids_follow_the_rule() {
        for good in ["a", "coach:ada", "Team-1.2_x", &"x".repeat(64)] {
            assert!(ConversationId::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "é", "a/b", "@ada", &"x".repeat(65), "a\n"] {
            assert!(ConversationId::parse(bad).is_err(), "{bad:?}");
        }
        assert_ne!(
            ConversationId::parse("Team").unwrap(),
            ConversationId::parse("team").unwrap(),
            "ids are case-sensitive"
        );
    }

    #[test]
    fn content_is_trimmed_and_checked() {
        assert_eq!(Content::parse("  hi \n").unwrap().as_str(), "hi");
        // A page over its byte budget keeps the messages nearest its
        // reader's position and says there is more.
        let page = |n: usize| History {
            messages: (0..n)
                .map(|i| {
                    Message::new(
                        ConversationId::parse("c").unwrap(),
                        Username::parse("ada").unwrap(),
                        Content::parse(&format!("{i}{}", "x".repeat(999))).unwrap(),
                    )
                })
                .collect(),
            more: false,
        };
        let latest = page(10).fit(3_600, true);
        assert!(latest.more);
        let firsts: Vec<_> = latest
            .messages
            .iter()
            .map(|m| &m.content.as_str()[..1])
            .collect();
        assert_eq!(firsts, ["7", "8", "9"]);
        let after = page(10).fit(3_600, false);
        let firsts: Vec<_> = after
            .messages
            .iter()
            .map(|m| &m.content.as_str()[..1])
            .collect();
        assert_eq!((firsts, after.more), (vec!["0", "1", "2"], true));
        assert_eq!(page(2).fit(1, true).messages.len(), 1, "at least one");
        assert!(!page(2).fit(1 << 20, true).more);
        // Each class of character that shows a text other than it reads.
        for refused in [
            "evil\u{202E}exe.txt",
            "a\u{202A}b",
            "a\u{2066}b\u{2069}",
            "a\u{200F}b",
            "zero\u{200B}width",
            "joined\u{2060}word",
            "\u{FEFF}bom",
            "line\u{2028}separator",
            "para\u{2029}graph",
        ] {
            assert_eq!(
                Content::parse(refused),
                Err(InvalidContent::Invisible),
                "{refused:?}"
            );
        }
        // NFC: a decomposed é is stored composed.
        assert_eq!(Content::parse("e\u{301}").unwrap().as_str(), "\u{e9}");
        // Marks: Vietnamese and emoji sequences pass, a stack does not.
        for kept in [
            "Tiếng Việt",
            "👨\u{200D}👩\u{200D}👧",
            "1\u{FE0F}\u{20E3}",
            "👍🏽",
            "🏳\u{FE0F}\u{200D}🌈",
            "می\u{200C}خواهم",
        ] {
            assert_eq!(Content::parse(kept).unwrap().as_str(), kept, "{kept:?}");
        }
        assert_eq!(
            Content::parse(&format!("z{}", "\u{301}".repeat(MAX_COMBINING_MARKS))).map(|_| ()),
            Ok(())
        );
        assert_eq!(
            Content::parse(&format!("z{}", "\u{336}".repeat(MAX_COMBINING_MARKS + 1))),
            Err(InvalidContent::TooManyMarks)
        );
        // Joiners between the marks do not reset the count.
        let joined = format!("z{}", "\u{336}\u{336}\u{336}\u{200D}".repeat(3));
        assert_eq!(Content::parse(&joined), Err(InvalidContent::TooManyMarks));
        assert_eq!(
            Content::parse("a\n\tb").unwrap().as_str(),
            "a\n\tb",
            "newline and tab are kept inside"
        );
        assert_eq!(Content::parse(" \n\t "), Err(InvalidContent::Empty));
        assert_eq!(
            Content::parse("a\r\nb\rc").unwrap().as_str(),
            "a\nb\nc",
            "Windows and old Mac line breaks become newlines"
        );
        assert_eq!(
            Content::parse(&"é".repeat(2000))
                .unwrap()
                .as_str()
                .chars()
                .count(),
            2000,
            "the limit counts characters, not bytes"
        );
        assert_eq!(
            Content::parse(&"x".repeat(2001)),
            Err(InvalidContent::TooLong)
        );
        assert_eq!(
            Content::parse("bell\u{7}"),
            Err(InvalidContent::ControlCharacter)
        );
        assert_eq!(
            Content::parse("a\u{0}b"),
            Err(InvalidContent::ControlCharacter)
        );
    }

    #[test]
    fn message_ids_are_time_ordered_in_text_too() {
        let ids: Vec<MessageId> = (0..1000).map(|_| MessageId::now()).collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1]);
            assert!(pair[0].to_string() < pair[1].to_string());
        }
        let parsed = MessageId::parse(&ids[0].to_string()).unwrap();
        assert_eq!(parsed, ids[0]);
        assert!(MessageId::parse("nope").is_err());
    }

    #[test]
    fn messages_serialise_in_the_design_schema() {
        let message = Message {
            id: MessageId::parse("01936a4e-7b2c-7000-8000-000000000001").unwrap(),
            conversation: ConversationId::parse("coach:ada").unwrap(),
            user: Username::parse("ada").unwrap(),
            content: Content::parse("<b>hi</b>").unwrap(),
            created_at: 1_732_550_284_123,
        };
        assert_eq!(
            serde_json::to_value(&message).unwrap(),
            serde_json::json!({
                "type": "message",
                "conversationId": "coach:ada",
                "userId": "ada",
                "content": "<b>hi</b>",
                "timestamp": "2024-11-25T15:58:04.123Z",
                "messageId": "01936a4e-7b2c-7000-8000-000000000001",
            })
        );
        let now = Message::new(
            message.conversation.clone(),
            message.user.clone(),
            message.content.clone(),
        );
        assert!((now.created_at - crate::clock::now_ms()).abs() < 5_000);
        assert!(now.timestamp().ends_with('Z') && now.timestamp().len() == 24);
    }
}
