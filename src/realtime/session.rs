//! Who is behind a socket: the handshake check, token expiry and refresh.
//!
//! The handshake runs as a socketioxide connect middleware, before the socket
//! joins the namespace, so a refused client never reaches a handler and
//! nothing it sends is counted. Sockets that authenticated with a token are
//! disconnected when it expires, after a `session_expired` event, unless the
//! client sent `refresh` with a newer token for the same user in time.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use socketioxide::extract::{AckSender, SocketRef, State, TryData};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::events::{Ack, Refresh, Refreshed, SESSION_EXPIRED, SessionExpired};
use crate::auth::{AuthError, AuthMode, time_until};
use crate::conversation::ConversationId;
use crate::identity::{HandshakeRequest, Refusal};
use crate::state::AppState;
use crate::user::Username;

/// The `auth` object of the handshake: a token, or (open mode) a username.
#[derive(Debug, Default, Deserialize)]
pub struct Handshake {
    token: Option<String>,
    username: Option<String>,
}

/// What the server knows about a connected socket, kept in its extensions.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `None` for anonymous sockets.
    pub user: Option<Username>,
    /// The token's `conversations` claim: when present, the only
    /// conversations this socket may join.
    pub conversations: Option<Arc<[ConversationId]>>,
    /// Present when the socket authenticated with a token.
    session: Option<TokenSession>,
}

#[derive(Debug, Clone)]
struct TokenSession {
    /// Current expiry (seconds since the epoch); `refresh` moves it.
    expires_at: watch::Sender<u64>,
    /// Fired on disconnect so the expiry timer stops with the socket.
    closed: CancellationToken,
}

/// What every user's room name starts with; no conversation id contains
/// a `/`, so the two never meet.
pub const USER_ROOM_PREFIX: &str = "user/";

/// The room every socket of one user joins, for `me` updates. The `/` can
/// not appear in a conversation id, so no conversation shares this room.
pub fn user_room(user: &Username) -> String {
    format!("{USER_ROOM_PREFIX}{}", user.folded())
}

/// Why a handshake was refused; the text is what the client receives in
/// `connect_error`.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// tally's own rule refused it.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The host's identity provider refused it.
    #[error(transparent)]
    Host(#[from] Refusal),
    /// The server is shutting down and takes no new connection.
    #[error("server shutting down")]
    ShuttingDown,
}

impl HandshakeError {
    /// The reason as a metric label.
    pub fn label(&self) -> &'static str {
        match self {
            HandshakeError::Auth(AuthError::Missing | AuthError::Invalid) => "unauthorized",
            HandshakeError::Auth(AuthError::Expired) => "token_expired",
            HandshakeError::Auth(AuthError::NotYetValid) => "token_not_yet_valid",
            HandshakeError::Auth(AuthError::InvalidUsername) => "invalid_username",
            HandshakeError::Host(_) => "host_refused",
            HandshakeError::ShuttingDown => "shutting_down",
        }
    }
}

/// Connect middleware: accepts or refuses the handshake, by the host's
/// identity provider when one is installed, by tally's rule otherwise.
pub async fn authenticate(
    socket: SocketRef,
    State(state): State<AppState>,
    TryData(auth): TryData<Value>,
) -> Result<(), HandshakeError> {
    let draining = state.draining.load(std::sync::atomic::Ordering::SeqCst);
    let result = match &state.identity {
        _ if draining => Err(HandshakeError::ShuttingDown),
        Some(provider) => {
            let parts = socket.req_parts();
            let request = HandshakeRequest {
                headers: parts.headers.clone(),
                uri: parts.uri.clone(),
                auth: auth.ok().filter(|auth| !auth.is_null()),
            };
            provider
                .identify_boxed(request)
                .await
                .map(|user| Identity {
                    user,
                    conversations: None,
                    session: None,
                })
                .map_err(HandshakeError::from)
        }
        None => {
            // socketioxide hands over `null` when the client sent no `auth`.
            let handshake = match auth {
                Ok(Value::Null) => Some(Handshake::default()),
                Ok(auth) => serde_json::from_value(auth).ok(),
                Err(_) => None,
            };
            identify(&state, handshake).map_err(HandshakeError::from)
        }
    };
    match &result {
        Ok(identity) => {
            socket.extensions.insert(identity.clone());
        }
        Err(reason) => {
            state.metrics.handshake_refused(reason.label());
            tracing::debug!(sid = %socket.id, %reason, "handshake refused");
        }
    }
    result.map(|_| ())
}

fn identify(state: &AppState, handshake: Option<Handshake>) -> Result<Identity, AuthError> {
    // A handshake whose `auth` is not an object is refused in both modes: the
    // client meant to say something and would otherwise be counted anonymously.
    let handshake = handshake.ok_or(AuthError::Invalid)?;
    if let Some(token) = handshake.token {
        let session = state.auth.tokens.verify(&token)?;
        return Ok(Identity {
            user: Some(session.username),
            conversations: session.conversations,
            session: Some(TokenSession {
                expires_at: watch::Sender::new(session.expires_at),
                closed: CancellationToken::new(),
            }),
        });
    }
    match (state.auth.mode, handshake.username) {
        (AuthMode::Token, _) => Err(AuthError::Missing),
        (AuthMode::Open, Some(name)) => Ok(Identity {
            user: Some(Username::parse(&name).map_err(|_| AuthError::InvalidUsername)?),
            conversations: None,
            session: None,
        }),
        (AuthMode::Open, None) => Ok(Identity {
            user: None,
            conversations: None,
            session: None,
        }),
    }
}

/// Starts the per-socket work an identity needs: the user's room, and the
/// expiry timer of a token session.
pub fn start(socket: &SocketRef, identity: &Identity) {
    if let Some(user) = &identity.user {
        socket.join(user_room(user));
        // A socket that closed before this connect handler ran has had its
        // rooms cleared already; nothing would take it out of this one.
        // (One that closes after the check is cleared as usual.)
        if !socket.connected() {
            socket.leave(user_room(user));
        }
    }
    if let Some(session) = &identity.session {
        tokio::spawn(expire(
            socket.clone(),
            session.expires_at.subscribe(),
            session.closed.clone(),
        ));
    }
}

/// Stops the expiry timer of a disconnected socket.
pub fn stop(identity: &Identity) {
    if let Some(session) = &identity.session {
        session.closed.cancel();
    }
}

async fn expire(
    socket: SocketRef,
    mut expires_at: watch::Receiver<u64>,
    closed: CancellationToken,
) {
    loop {
        let deadline = *expires_at.borrow_and_update();
        tokio::select! {
            () = closed.cancelled() => return,
            changed = expires_at.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(time_until(deadline)) => {
                tracing::debug!(sid = %socket.id, "session expired");
                socket.emit(SESSION_EXPIRED, &SessionExpired { reason: "token expired" }).ok();
                socket.disconnect().ok();
                return;
            }
        }
    }
}

/// `refresh`: replaces the token of the current session with a newer one for
/// the same user.
pub async fn on_refresh(
    socket: SocketRef,
    ack: AckSender,
    State(state): State<AppState>,
    TryData(refresh): TryData<Refresh>,
) {
    super::activity(&socket, &state, super::events::REFRESH);
    let user = socket
        .extensions
        .get::<Identity>()
        .and_then(|identity| identity.user);
    if let Err(refused) = super::limit(
        &socket,
        &state,
        user.as_ref(),
        super::limits::Kind::Refresh,
        super::events::REFRESH,
    ) {
        return refused.answer::<Refreshed>(&socket, ack);
    }
    // `Data` would skip the handler on a bad payload and leave the client's
    // ack unanswered; every refused event gets an error ack instead.
    let answer = match refresh {
        Ok(refresh) => refresh_session(&socket, &state, &refresh.token),
        Err(_) => Ack::error("bad_request", r#"refresh takes {"token": "<JWT>"}"#),
    };
    ack.send(&answer).ok();
}

fn refresh_session(socket: &SocketRef, state: &AppState, token: &str) -> Ack<Refreshed> {
    let Some(identity) = socket.extensions.get::<Identity>() else {
        return Ack::error("unauthorized", "no session");
    };
    let (Some(user), Some(session)) = (identity.user, identity.session) else {
        return Ack::error(
            "no_session",
            "this connection did not authenticate with a token",
        );
    };
    match state.auth.tokens.verify(token) {
        // The conversations a socket may be in are fixed when it connects:
        // a token that changes them needs a new connection.
        Ok(fresh) if fresh.username == user && fresh.conversations != identity.conversations => {
            Ack::error(
                "conversations_changed",
                "the new token allows other conversations: reconnect with it",
            )
        }
        Ok(fresh) if fresh.username == user => {
            session.expires_at.send_replace(fresh.expires_at);
            Ack::Ok(Refreshed {
                expires_at: fresh.expires_at,
            })
        }
        Ok(_) => Ack::error("wrong_user", "the new token is for another user"),
        Err(AuthError::Expired) => Ack::error("token_expired", "token expired"),
        Err(reason) => Ack::error("unauthorized", reason.to_string()),
    }
}
