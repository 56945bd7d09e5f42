//! The step every client event goes through before its handler's own
//! work: the event is noted (the connection's last activity, the metrics,
//! the Admin UI) and a token is taken from the socket's and the user's
//! rate-limit buckets. An event over its limit is answered here with
//! `rate_limited` (and `retryAfterMs`); a socket far over its limits is
//! disconnected once told.

use std::sync::Arc;

use crate::bus::{AckSender, SocketRef};
use crate::events::{Ack, ClientEvent};
use crate::refusal::{Code, Refusal};
use crate::sockets::Connection;
use crate::state::AppState;
use crate::user::Username;

/// Notes `event` from `socket` and takes its token. Gives the ack back when
/// the handler may go on; answers it with the refusal and gives `None`
/// when the event is over its limit.
pub fn enter(
    socket: &SocketRef,
    state: &AppState,
    user: Option<&Username>,
    event: ClientEvent,
    ack: AckSender,
) -> Option<AckSender> {
    activity(socket, state, event);
    let Err(refusal) = limit(socket, state, user, event) else {
        return Some(ack);
    };
    // The client may not have asked for an ack; then there is nobody to tell.
    ack.send(&Ack::<()>::from(refusal)).ok();
    None
}

/// Notes an event from `socket`: its connection's last activity, the event
/// count in the metrics, and the Admin UI's stream.
fn activity(socket: &SocketRef, state: &AppState, event: ClientEvent) {
    state.metrics.event(event);
    if let Some(admin) = &state.admin {
        admin.event_received(socket, event);
    }
    if let Some(connection) = socket.extensions.get::<Arc<Connection>>() {
        connection.touch();
    }
}

/// Takes one token for `event` from this socket's buckets and its user's.
/// A socket without its record is refused: every socket of this namespace
/// gets one in `prepare` and keeps it (closed, with its buckets) after it
/// disconnects, so a missing record is a fault, and an event must never
/// pass unlimited because of one.
fn limit(
    socket: &SocketRef,
    state: &AppState,
    user: Option<&Username>,
    event: ClientEvent,
) -> Result<(), Refusal> {
    let Some(connection) = socket.extensions.get::<Arc<Connection>>() else {
        tracing::warn!(socket = %crate::telemetry::log_id(socket.id), event = event.name(), "an event from a socket without its record");
        return Err(Code::Disconnected.with("the connection is closing"));
    };
    state
        .limits
        .check(connection.limits(), user, event)
        .map_err(|limited| {
            state.metrics.rate_limited(event, limited.abusive);
            if limited.abusive {
                tracing::info!(socket = %crate::telemetry::log_id(socket.id), "disconnecting a socket far over its rate limits");
                socket.clone().disconnect().ok();
            }
            Refusal::rate_limited(
                format!("too many `{}` events: slow down", event.name()),
                limited.retry_after,
            )
        })
}
