//! The step every client event goes through before its handler's own
//! work: the event is noted (the connection's last activity, the metrics,
//! the Admin UI) and a token is taken from the socket's and the user's
//! rate-limit buckets. An event over its limit is answered here with
//! `rate_limited` (and `retryAfterMs`); a socket far over its limits is
//! disconnected once told.

use std::sync::Arc;

use socketioxide::extract::{AckSender, SocketRef};

use crate::events::{Ack, ClientEvent};
use crate::limits::{Limited, SocketLimits};
use crate::refusal::Refusal;
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
    let Err(limited) = limit(socket, state, user, event) else {
        return Some(ack);
    };
    state.metrics.rate_limited(event, limited.abusive);
    let refusal = Refusal::rate_limited(
        format!("too many `{}` events: slow down", event.name()),
        limited.retry_after,
    );
    // The client may not have asked for an ack; then there is nobody to tell.
    ack.send(&Ack::<()>::from(refusal)).ok();
    if limited.abusive {
        tracing::info!(sid = %socket.id, "disconnecting a socket far over its rate limits");
        socket.clone().disconnect().ok();
    }
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
fn limit(
    socket: &SocketRef,
    state: &AppState,
    user: Option<&Username>,
    event: ClientEvent,
) -> Result<(), Limited> {
    // Every socket of this namespace has its record from `prepare` until
    // it disconnects, when no more events arrive; without one the event
    // still goes through the per-user buckets.
    let connection = socket.extensions.get::<Arc<Connection>>();
    let spare;
    let buckets = match &connection {
        Some(connection) => connection.limits(),
        None => {
            spare = SocketLimits::default();
            &spare
        }
    };
    state.limits.check(buckets, user, event)
}
