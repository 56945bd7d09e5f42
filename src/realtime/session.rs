//! Who is behind a socket: the handshake check, token expiry and refresh.
//!
//! The handshake runs as a socketioxide connect middleware, before the socket
//! joins the namespace, so a refused client never reaches a handler and
//! nothing it sends is counted. Sockets that authenticated with a token are
//! disconnected when it expires, after a `session_expired` event, unless the
//! client sent `refresh` with a newer token for the same user in time.

use serde::Deserialize;
use serde_json::Value;
use socketioxide::extract::{State, TryData};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::guard;
use crate::auth::{AuthError, AuthMode};
use crate::bus::{AckSender, SocketRef};
use crate::clock::time_until;
use crate::events::{Ack, ClientEvent, Refresh, Refreshed, SESSION_EXPIRED, SessionExpired};
use crate::identity::HandshakeRequest;
use crate::refusal::{Code, Refusal};
use crate::sockets::{Identity, TokenSession, user_room};
use crate::state::AppState;
use crate::user::Username;

/// The `auth` object of the handshake: a token, or (open mode) a username.
#[derive(Debug, Default, Deserialize)]
pub struct Handshake {
    token: Option<String>,
    username: Option<String>,
}

/// Connect middleware: accepts or refuses the handshake, by the host's
/// identity provider when one is installed, by tally's rule otherwise.
pub async fn authenticate(
    socket: SocketRef,
    State(state): State<AppState>,
    TryData(auth): TryData<Value>,
) -> Result<(), Refusal> {
    let result = match &state.identity {
        _ if state.draining() => Err(Code::ShuttingDown.with("server shutting down")),
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
                .map(Identity::named)
                // Whatever code the host chose, the metrics count a
                // refusal by the host as one.
                .map_err(|refusal| Refusal {
                    code: Code::HostRefused,
                    ..refusal
                })
        }
        None => {
            // socketioxide hands over `null` when the client sent no `auth`.
            let handshake = match auth {
                Ok(Value::Null) => Some(Handshake::default()),
                Ok(auth) => serde_json::from_value(auth).ok(),
                Err(_) => None,
            };
            identify(&state, handshake).map_err(Refusal::from)
        }
    };
    match &result {
        Ok(identity) => {
            socket.extensions.insert(identity.clone());
        }
        Err(reason) => {
            state.metrics.handshake_refused(reason.code.as_str());
            tracing::debug!(socket = %crate::telemetry::log_id(socket.id), %reason, "handshake refused");
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
            session: Some(TokenSession::new(session.expires_at)),
        });
    }
    match (state.auth.mode, handshake.username) {
        (AuthMode::Token, _) => Err(AuthError::Missing),
        (AuthMode::Open, Some(name)) => Ok(Identity::named(Some(
            Username::parse(&name).map_err(|_| AuthError::InvalidUsername)?,
        ))),
        (AuthMode::Open, None) => Ok(Identity::named(None)),
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
        tokio::spawn(expire(socket.clone(), session.expiry(), session.closed()));
    }
}

/// Stops the expiry timer of a disconnected socket.
pub fn stop(identity: &Identity) {
    if let Some(session) = &identity.session {
        session.close();
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
                tracing::debug!(socket = %crate::telemetry::log_id(socket.id), "session expired");
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
    let user = socket
        .extensions
        .get::<Identity>()
        .and_then(|identity| identity.user);
    let Some(ack) = guard::enter(&socket, &state, user.as_ref(), ClientEvent::Refresh, ack) else {
        return;
    };
    // `Data` would skip the handler on a bad payload and leave the client's
    // ack unanswered; every refused event gets an error ack instead.
    let answer = match refresh {
        Ok(refresh) => refresh_session(&socket, &state, &refresh.token),
        Err(_) => Err(Code::BadRequest.with(r#"refresh takes {"token": "<JWT>"}"#)),
    };
    ack.send(&Ack::from(answer)).ok();
}

fn refresh_session(
    socket: &SocketRef,
    state: &AppState,
    token: &str,
) -> Result<Refreshed, Refusal> {
    let Some(identity) = socket.extensions.get::<Identity>() else {
        return Err(Code::Unauthorized.with("no session"));
    };
    let (Some(user), Some(session)) = (identity.user, identity.session) else {
        return Err(Code::NoSession.with("this connection did not authenticate with a token"));
    };
    match state.auth.tokens.verify(token) {
        // The conversations a socket may be in are fixed when it connects:
        // a token that changes them needs a new connection.
        Ok(fresh) if fresh.username == user && fresh.conversations != identity.conversations => {
            Err(Code::ConversationsChanged
                .with("the new token allows other conversations: reconnect with it"))
        }
        Ok(fresh) if fresh.username == user => {
            session.extend(fresh.expires_at);
            Ok(Refreshed {
                expires_at: fresh.expires_at,
            })
        }
        Ok(_) => Err(Code::WrongUser.with("the new token is for another user")),
        Err(AuthError::Expired) => Err(Code::TokenExpired.with("token expired")),
        // A `refresh` that fails for any other reason is `unauthorized`,
        // as it has always been (a handshake says more).
        Err(reason) => Err(Code::Unauthorized.with(reason.to_string())),
    }
}
