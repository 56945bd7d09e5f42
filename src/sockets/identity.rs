//! Who is behind a socket: the [`Identity`] kept in its extensions from the
//! handshake on, the token session whose expiry `refresh` moves, and the
//! room every socket of one user shares.
//!
//! The handshake that decides an identity is `crate::realtime::session`'s;
//! the HTTP monitoring API and the Admin UI only read it, which is why it
//! lives here rather than beside the handlers.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::conversation::ConversationId;
use crate::user::Username;

/// What the server knows about a connected socket, kept in its extensions.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// `None` for anonymous sockets.
    pub user: Option<Username>,
    /// The token's `conversations` claim: when present, the only
    /// conversations this socket may join.
    pub conversations: Option<Arc<[ConversationId]>>,
    /// Present when the socket authenticated with a token.
    pub session: Option<TokenSession>,
}

impl Identity {
    /// A socket known by name only (open mode, or a host's identity hook),
    /// or anonymous with `None`.
    pub fn named(user: Option<Username>) -> Self {
        Identity {
            user,
            ..Identity::default()
        }
    }

    /// Whether this socket may be in conversation `room`: always, unless
    /// its token lists the conversations it may join.
    pub fn may_join(&self, room: &ConversationId) -> bool {
        self.conversations
            .as_ref()
            .is_none_or(|allowed| allowed.contains(room))
    }
}

/// A token's session: when it expires, and the signal that stops its
/// expiry timer when the socket goes first. Clones share both.
#[derive(Debug, Clone)]
pub struct TokenSession {
    /// Current expiry (seconds since the epoch); `refresh` moves it.
    expires_at: watch::Sender<u64>,
    /// Fired on disconnect so the expiry timer stops with the socket.
    closed: CancellationToken,
}

impl TokenSession {
    /// A session that expires at `expires_at` (seconds since the epoch).
    pub fn new(expires_at: u64) -> Self {
        TokenSession {
            expires_at: watch::Sender::new(expires_at),
            closed: CancellationToken::new(),
        }
    }

    /// Moves the expiry, waking the timer that waits for it.
    pub fn extend(&self, expires_at: u64) {
        self.expires_at.send_replace(expires_at);
    }

    /// The expiry as it changes.
    pub fn expiry(&self) -> watch::Receiver<u64> {
        self.expires_at.subscribe()
    }

    /// Cancelled once the socket has gone.
    pub fn closed(&self) -> CancellationToken {
        self.closed.clone()
    }

    /// The socket has gone: the expiry timer stops.
    pub fn close(&self) {
        self.closed.cancel();
    }
}

/// What every user's room name starts with; no conversation id contains
/// a `/`, so the two never meet.
pub const USER_ROOM_PREFIX: &str = "user/";

/// The room every socket of one user joins, for `me` updates. The `/` can
/// not appear in a conversation id, so no conversation shares this room.
pub fn user_room(user: &Username) -> String {
    format!("{USER_ROOM_PREFIX}{}", user.folded())
}
