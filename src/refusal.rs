//! Why tally said no: one [`Refusal`] type, with a [`Code`] from one list,
//! for every answer that refuses something.
//!
//! The same value is a socket event's ack (`{"error": {"code", "message"}}`,
//! plus `retryAfterMs` for `rate_limited`), the message of a refused
//! handshake's `connect_error`, and the body of an HTTP error answer, whose
//! status [`Code::status`] decides here and nowhere else. Codes are stable
//! and machine-readable; messages are for people and never carry internal
//! details. The README's table of codes is checked against [`Code`] by a
//! test, so neither can gain a code the other lacks.

use std::time::Duration;

use axum::http::StatusCode;
use serde::{Serialize, Serializer};

/// Every reason tally gives for refusing something.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    strum::IntoStaticStr,
    strum::VariantArray,
    strum::EnumString,
    utoipa::ToSchema,
)]
#[strum(serialize_all = "snake_case")]
#[schema(rename_all = "snake_case")]
pub enum Code {
    /// The request or event had a shape tally does not take.
    BadRequest,
    /// A field is missing, mistyped or breaks a rule.
    InvalidPayload,
    /// A conversation id that breaks the rule.
    InvalidConversation,
    /// A username that breaks the rule.
    InvalidUsername,
    /// A query parameter that is out of range or malformed.
    InvalidQuery,
    /// A message over 2,000 characters.
    TooLong,
    /// An HTTP body over the limit.
    TooLarge,
    /// No credentials, or wrong ones.
    Unauthorized,
    /// The token's `exp` has passed.
    TokenExpired,
    /// The token's `nbf` is still ahead.
    TokenNotYetValid,
    /// The Admin UI's login failed (the UI compares the message).
    InvalidCredentials,
    /// Posting or typing needs a signed-in user.
    LoginRequired,
    /// Outside the token's `conversations` claim.
    Forbidden,
    /// A browser origin outside `--allowed-origins`.
    ForbiddenOrigin,
    /// `POST /api/session` with `--guest-login` off.
    GuestLoginDisabled,
    /// The host application's identity hook refused the handshake.
    HostRefused,
    /// A `refresh` with a token for another user.
    WrongUser,
    /// An event for a conversation the socket has not joined.
    NotAMember,
    /// A `refresh` on a connection that did not authenticate with a token.
    NoSession,
    /// A `refresh` whose token allows other conversations.
    ConversationsChanged,
    /// An `Idempotency-Key` used for another request, or still in use.
    IdempotencyConflict,
    /// No such route (or one switched off).
    NotFound,
    /// A user who never clicked.
    UnknownUser,
    /// Over a rate limit; `retryAfterMs` says when to try again.
    RateLimited,
    /// A socket already in the most conversations it may join.
    TooManyConversations,
    /// `--max-connections` are connected.
    ServerFull,
    /// `--max-connections-per-ip` are connected from this address.
    TooManyConnections,
    /// The server is stopping: nothing was counted or stored.
    ShuttingDown,
    /// The database could not do this now; try again.
    Unavailable,
    /// The database did not answer its health check, or could not be read.
    StoreUnavailable,
    /// The socket closed while its event was handled.
    Disconnected,
    /// A server fault; logged, never explained.
    Internal,
}

impl Code {
    /// The code as clients see it, e.g. `rate_limited`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The HTTP status an answer with this code has. Codes only sockets
    /// give still have one, so an embedding host can map any refusal.
    pub fn status(self) -> StatusCode {
        use Code::*;
        match self {
            BadRequest | NoSession => StatusCode::BAD_REQUEST,
            Unauthorized | TokenExpired | TokenNotYetValid | InvalidCredentials | LoginRequired => {
                StatusCode::UNAUTHORIZED
            }
            Forbidden | ForbiddenOrigin | GuestLoginDisabled | HostRefused | WrongUser
            | NotAMember => StatusCode::FORBIDDEN,
            NotFound | UnknownUser => StatusCode::NOT_FOUND,
            ConversationsChanged | IdempotencyConflict => StatusCode::CONFLICT,
            Disconnected => StatusCode::GONE,
            TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            InvalidPayload | InvalidConversation | InvalidUsername | InvalidQuery | TooLong
            | TooManyConversations => StatusCode::UNPROCESSABLE_ENTITY,
            RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ServerFull | TooManyConnections | ShuttingDown | Unavailable | StoreUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// A refusal with this code and `message`.
    pub fn with(self, message: impl Into<String>) -> Refusal {
        Refusal {
            code: self,
            message: message.into(),
            retry_after_ms: None,
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A refusal: its code, a message for people, and for `rate_limited` when
/// a retry would pass. It serialises as the body of the error,
/// `{"code", "message", "retryAfterMs"?}`; its `Display` is the message,
/// which is what a refused handshake's `connect_error` carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error, utoipa::ToSchema)]
#[error("{message}")]
pub struct Refusal {
    pub code: Code,
    pub message: String,
    /// For `rate_limited`: when a retry would pass, in milliseconds.
    #[serde(rename = "retryAfterMs", skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub retry_after_ms: Option<u64>,
}

/// The body of every error answer: `{"error": {…}}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    pub error: &'a Refusal,
}

impl Refusal {
    /// A refusal of the host application's identity hook: the client gets
    /// `message` in `connect_error` (code `host_refused`), so keep it short
    /// and free of internals.
    pub fn new(message: impl Into<String>) -> Self {
        Code::HostRefused.with(message)
    }

    /// `rate_limited`, retry after `retry_after` (at least a millisecond).
    pub fn rate_limited(message: impl Into<String>, retry_after: Duration) -> Self {
        Refusal {
            retry_after_ms: Some(retry_after.as_millis().max(1) as u64),
            ..Code::RateLimited.with(message)
        }
    }

    /// The JSON an HTTP answer or an ack carries: `{"error": {…}}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(ErrorBody { error: self }).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use strum::VariantArray;

    #[test]
    fn refusals_serialise_as_the_documented_error_body() {
        assert_eq!(
            Code::NotAMember.with("join first").body(),
            json!({"error": {"code": "not_a_member", "message": "join first"}})
        );
        let limited = Refusal::rate_limited("slow down", Duration::from_micros(10));
        assert_eq!(
            limited.body(),
            json!({"error": {"code": "rate_limited", "message": "slow down", "retryAfterMs": 1}})
        );
        assert_eq!(limited.to_string(), "slow down");
        assert_eq!(Refusal::new("no").code, Code::HostRefused);
    }

    #[test]
    fn every_code_has_one_name_that_reads_back() {
        let mut names: Vec<&str> = Code::VARIANTS.iter().map(|code| code.as_str()).collect();
        for code in Code::VARIANTS {
            assert_eq!(code.as_str().parse::<Code>(), Ok(*code));
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Code::VARIANTS.len());
    }
}
