//! Socket.IO handlers: the live side of tally.
//!
//! Owns the namespace `/`: checks each handshake ([`session`]), records
//! each socket (its [`Connection`] and [`Memberships`]), greets it with the
//! current state (`count`, `leaderboard`, and `me` for an identified user),
//! and registers one handler per [`ClientEvent`]: `click` ([`click`]),
//! `refresh` ([`session`]), the conversation events ([`join`], [`chat`]).
//! Every handler starts with the same [`guard`]; what they publish goes
//! out through [`publish`], a step at a time for large audiences
//! ([`fanout`]).

pub mod chat;
pub mod click;
pub mod fanout;
pub mod guard;
pub mod join;
pub mod payload;
pub mod publish;
pub mod session;

use std::sync::Arc;

use socketioxide::extract::{Extension, State};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::DisconnectReason;

use crate::bus::{NamespaceReady, SocketIo, SocketRef};
use crate::events::{COUNT, ClientEvent, Count, LEADERBOARD, ME, Me};
use crate::refusal::Refusal;
use crate::sockets::{Connection, Identity, Memberships, Place, peer_addr};
use crate::state::AppState;

pub use join::Operator;

/// Registers the handlers of namespace `/`.
pub fn register(io: &SocketIo) -> NamespaceReady {
    // `with` puts a middleware before the ones already there: authenticate,
    // then prepare, then (once the client is told) on_connect.
    io.ns("/", on_connect.with(prepare).with(session::authenticate))
}

/// The last step of the handshake, after [`session::authenticate`] and
/// before the client is told it is connected: registers the socket's event
/// handlers and its records. socketioxide runs the connect handler in a
/// task of its own after sending `connect`, so handlers registered there
/// could miss an event the client sends right after `connect`; a
/// middleware is awaited before.
async fn prepare(socket: SocketRef, State(state): State<AppState>) -> Result<(), Refusal> {
    // The session took its place under the caps when it opened (the
    // place lives in its request head's extensions); a session served
    // without tally's early check takes one here. Extensions are dropped
    // with the socket, and the count with them (or at disconnect, below).
    let peer = peer_addr(&socket);
    let client_ip = state.caps.client_ip(peer, &socket.req_parts().headers);
    let has_place = socket.req_parts().extensions.get::<Arc<Place>>().is_some();
    let connection =
        Connection::admit(&state.connections, peer, client_ip, &state.caps, has_place)
        .inspect_err(|capped| {
            let reason = capped.code().as_str();
            state.metrics.connection_refused(reason);
            tracing::debug!(socket = %crate::telemetry::log_id(socket.id), reason, "connection refused at namespace connect");
        })?;
    socket.extensions.insert(Arc::new(connection));
    socket.extensions.insert(Arc::new(Memberships::default()));
    for &event in ClientEvent::ALL {
        // One arm per event: a new variant does not compile until it has
        // its handler.
        match event {
            ClientEvent::Click => socket.on(event.name(), click::on_click),
            ClientEvent::Refresh => socket.on(event.name(), session::on_refresh),
            ClientEvent::JoinConversation => socket.on(event.name(), join::on_join),
            ClientEvent::LeaveConversation => socket.on(event.name(), join::on_leave),
            ClientEvent::Message => socket.on(event.name(), chat::on_message),
            ClientEvent::Typing => socket.on(event.name(), chat::on_typing),
        }
    }
    socket.on_disconnect(on_disconnect);
    Ok(())
}

/// Greets a socket that has joined the namespace with the current state.
async fn on_connect(
    socket: SocketRef,
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
) {
    tracing::debug!(socket = %crate::telemetry::log_id(socket.id), transport = ?socket.transport_type(), user = ?identity.user, "socket connected");
    state.metrics.connected();
    session::start(&socket, &identity);
    if let Some(admin) = &state.admin {
        admin.socket_connected(&socket);
    }
    // A reconnecting client gets the whole current state: socketioxide does
    // not replay what it missed.
    let total = state.counters.global().total();
    socket.emit(COUNT, &Count { total }).ok();
    socket.emit(LEADERBOARD, &*state.leaderboard.get()).ok();
    if let Some(user) = &identity.user {
        let username = state
            .counters
            .known_username(user)
            .unwrap_or_else(|| user.clone());
        let count = state.counters.user_total(user).unwrap_or(0);
        socket.emit(ME, &Me { username, count }).ok();
    }
}

async fn on_disconnect(
    socket: SocketRef,
    io: SocketIo,
    reason: DisconnectReason,
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
) {
    state.metrics.disconnected(reason_label(reason));
    if let Some(admin) = &state.admin {
        admin.socket_disconnected(&socket, reason);
    }
    session::stop(&identity);
    // A handler still running (a durable click waiting for the store)
    // keeps the socket alive, but a closed socket must not count against
    // the caps or the pacing. Its record stays, with its buckets, for the
    // events read before the disconnect that are still to be handled.
    if let Some(connection) = socket.extensions.get::<Arc<Connection>>() {
        connection.close();
    }
    join::disconnected(&socket, &io, &state).await;
    tracing::debug!(socket = %crate::telemetry::log_id(socket.id), "socket disconnected");
}

/// socketioxide's reason as a metric label.
fn reason_label(reason: DisconnectReason) -> &'static str {
    match reason {
        DisconnectReason::TransportClose => "transport_close",
        DisconnectReason::MultipleHttpPollingError => "multiple_http_polling_error",
        DisconnectReason::PacketParsingError => "packet_parsing_error",
        DisconnectReason::TransportError => "transport_error",
        DisconnectReason::HeartbeatTimeout => "heartbeat_timeout",
        DisconnectReason::ClientNSDisconnect => "client_disconnect",
        DisconnectReason::ServerNSDisconnect => "server_disconnect",
        DisconnectReason::ClosingServer => "closing_server",
    }
}
