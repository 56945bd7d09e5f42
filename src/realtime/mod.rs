//! Socket.IO handlers: the live side of tally.
//!
//! Owns the namespace `/`: checks each handshake ([`session`]), greets each
//! socket with the current state (`count`, `leaderboard`, and `me` for an
//! identified user), turns `click` events into counter increments, hands
//! conversation events to [`conversations`], and publishes changes: totals
//! as `count`, per-user counts as `me` to that user's room, conversations'
//! totals as `room_count` and their occupancy as `presence` to their rooms,
//! and the top list as `leaderboard`.

pub mod connections;
pub mod conversations;
pub mod detach;
pub mod events;
pub mod fanout;
pub mod limits;
pub mod session;
pub mod upgrades;

use std::sync::Arc;

use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::DisconnectReason;

use crate::conversation::ConversationId;
use crate::counter::leaderboard::Ranked;
use crate::counter::{Changed, Changes, CounterKey};
use crate::state::AppState;
use conversations::Refused;
use events::{
    Ack, Args, CLICK, COUNT, ClickAck, Count, LEADERBOARD, ME, Me, PRESENCE, Presence, REFRESH,
    ROOM_COUNT, RoomCount,
};
use session::Identity;

/// Registers the handlers of namespace `/`.
pub fn register(io: &SocketIo) {
    // `with` puts a middleware before the ones already there: authenticate,
    // then prepare, then (once the client is told) on_connect.
    io.ns("/", on_connect.with(prepare).with(session::authenticate));
}

/// The last step of the handshake, after [`session::authenticate`] and
/// before the client is told it is connected: registers the socket's event
/// handlers and its connection record. socketioxide runs the connect
/// handler in a task of its own after sending `connect`, so handlers
/// registered there could miss an event the client sends right after
/// `connect`; a middleware is awaited before.
async fn prepare(
    socket: SocketRef,
    State(state): State<AppState>,
) -> Result<(), connections::Capped> {
    // The caps were checked when the engine.io session opened, but a
    // client can open several sessions before joining the namespace with
    // any of them; counting happens here, so the caps are enforced here.
    // Extensions are dropped with the socket, and the count with them (or
    // at disconnect, see below).
    let peer = peer_addr(&socket);
    let client_ip = state.caps.client_ip(peer, &socket.req_parts().headers);
    let caps = (state.caps.max_connections, state.caps.max_per_ip);
    let connection = connections::Connection::admit(&state.connections, peer, client_ip, caps)
        .inspect_err(|capped| {
            state.metrics.connection_refused(capped.code());
            tracing::debug!(sid = %socket.id, reason = capped.code(), "connection refused at namespace connect");
        })?;
    socket.extensions.insert(Arc::new(connection));
    socket.on(CLICK, on_click);
    socket.on(REFRESH, session::on_refresh);
    conversations::register(&socket);
    socket.on_disconnect(
        async |socket: SocketRef,
               io: SocketIo,
               reason: DisconnectReason,
               State(state): State<AppState>,
               Extension(identity): Extension<Identity>| {
            state.metrics.disconnected(reason_label(reason));
            if let Some(admin) = &state.admin {
                admin.socket_disconnected(&socket, reason);
            }
            session::stop(&identity);
            // A handler still running (a durable click waiting for the
            // store) keeps the socket alive, but a closed socket must not
            // count against the caps or the pacing.
            socket.extensions.remove::<Arc<connections::Connection>>();
            conversations::disconnected(&socket, &io, &state).await;
            tracing::debug!(sid = %socket.id, "socket disconnected");
        },
    );
    Ok(())
}

/// Greets a socket that has joined the namespace with the current state.
async fn on_connect(
    socket: SocketRef,
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
) {
    tracing::debug!(sid = %socket.id, transport = ?socket.transport_type(), user = ?identity.user, "socket connected");
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

async fn on_click(
    socket: SocketRef,
    io: SocketIo,
    ack: AckSender,
    TryData(args): TryData<Args>,
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
) {
    activity(&socket, &state, CLICK);
    if let Err(refused) = limit(
        &socket,
        &state,
        identity.user.as_ref(),
        limits::Kind::Click,
        CLICK,
    ) {
        refused.answer::<ClickAck>(&socket, ack);
        return;
    }
    let room = match click_target(&socket, args) {
        Ok(room) => room,
        Err(refused) => {
            tracing::debug!(sid = %socket.id, code = refused.code, "click refused");
            // The client may not have asked for an ack; then there is nobody to tell.
            ack.send(&refused.into_ack::<ClickAck>()).ok();
            return;
        }
    };
    if state.durable && !state.store_writable() {
        // A durable click is acknowledged once stored, so while the store
        // is failing its handler would wait as long as the outage lasts; one
        // waiting handler per click adds up. The client is told at once,
        // and the click is not counted.
        ack.send(&Ack::<ClickAck>::error(
            "unavailable",
            "the database is unavailable, so this click was not counted; try again later",
        ))
        .ok();
        return;
    }
    let click = match state
        .counters
        .click_in(identity.user.as_ref(), room.as_ref())
    {
        Ok(click) => {
            state.metrics.click();
            click
        }
        Err(closed) => {
            // Shutdown has begun and the final flush may already be done:
            // the client is told this click was not counted.
            ack.send(&Ack::<ClickAck>::error("shutting_down", closed.to_string()))
                .ok();
            return;
        }
    };
    if state.durable {
        // Acknowledged only once stored: the flusher writes what is pending
        // as soon as it can, this click with the others of its moment.
        if !state.counters.stored(click.total).await {
            // Shutdown's last write failed: counted, never stored.
            ack.send(&Ack::<ClickAck>::error(
                "shutting_down",
                "the server stopped before this click could be stored",
            ))
            .ok();
            return;
        }
    }
    let conversation = room.zip(click.room).map(|(room, total)| RoomCount {
        conversation_id: room,
        total,
    });
    ack.send(&Ack::Ok(ClickAck {
        total: click.total,
        you: click.you,
        conversation: conversation.clone(),
    }))
    .ok();
    if state.broadcast_interval.is_zero() {
        let mut totals = vec![Changed {
            key: CounterKey::Global,
            total: click.total,
        }];
        if let (Some(user), Some(total)) = (identity.user, click.you) {
            totals.push(Changed {
                key: CounterKey::User(user),
                total,
            });
        }
        if let Some(room) = conversation {
            totals.push(Changed {
                key: CounterKey::Room(room.conversation_id),
                total: room.total,
            });
        }
        publish(
            &io,
            &Changes {
                totals,
                presence: Vec::new(),
                waited: None,
            },
            &state,
        )
        .await;
    }
}

/// Where a click counts: nowhere but the global total (and the user's) when
/// it carries no data — a single `{}` or `null` is accepted because some
/// client libraries always send an argument — or also in a conversation the
/// socket has joined, given as `{"conversationId"}`. Anything else is
/// refused so a client with a mistaken payload learns about it instead of
/// being counted.
fn click_target(
    socket: &SocketRef,
    args: Result<Args, socketioxide::ParserError>,
) -> Result<Option<ConversationId>, Refused> {
    let bad = |message: &str| Refused::new("bad_request", message);
    let Ok(Args(args)) = args else {
        return Err(bad("click payload could not be parsed"));
    };
    match args.as_slice() {
        [] | [Value::Null] => Ok(None),
        [Value::Object(map)] if map.is_empty() => Ok(None),
        [Value::Object(map)] if map.len() == 1 && map.contains_key("conversationId") => {
            let room = conversations::conversation_id(map)?;
            conversations::member_of(socket, &room)?;
            Ok(Some(room))
        }
        _ => Err(bad(
            r#"click takes no payload, or {"conversationId": "…"} to click in a conversation"#,
        )),
    }
}

/// Publishes changes: a user's total to that user's sockets, a
/// conversation's total and occupancy to its members, then the global total
/// to everyone, last because to more than [`fanout::AT_ONCE`] sockets it
/// goes out in steps that take turns with other work (unless every click is
/// published by its handler, `--broadcast-interval 0`, which broadcasts at
/// once). Each payload is serialised once for all its recipients, except in
/// those steps.
pub async fn publish(io: &SocketIo, changes: &Changes, state: &AppState) {
    // The namespace is gone once the server has closed; nobody is left to tell.
    let Some(everyone) = io.of("/") else {
        return;
    };
    let started = std::time::Instant::now();
    let metrics = &state.metrics;
    let addressed = |event, recipients| {
        metrics.broadcast(event, recipients);
        if let Some(admin) = &state.admin {
            admin.packets_out(recipients as u64);
        }
    };
    let mut global = None;
    for change in &changes.totals {
        let sent = match &change.key {
            CounterKey::Global => {
                global = Some(change.total);
                continue;
            }
            CounterKey::User(user) => {
                // A user's sockets are few; they are not counted one by one.
                addressed(ME, 0);
                let me = Me {
                    username: user.clone(),
                    count: change.total,
                };
                everyone
                    .clone()
                    .to(session::user_room(user))
                    .emit(ME, &me)
                    .await
            }
            CounterKey::Room(room) => {
                let count = RoomCount {
                    conversation_id: room.clone(),
                    total: change.total,
                };
                addressed(ROOM_COUNT, state.counters.online(room) as usize);
                everyone
                    .clone()
                    .to(room.to_string())
                    .emit(ROOM_COUNT, &count)
                    .await
            }
        };
        if let Err(err) = sent {
            // A slow client whose buffer is full misses this update but will
            // get the next one, which carries the newer total.
            tracing::debug!(error = %err, key = %change.key, "broadcast incomplete");
        }
    }
    for online in &changes.presence {
        let presence = Presence {
            conversation_id: online.room.clone(),
            online: online.online,
        };
        addressed(PRESENCE, online.online as usize);
        if let Err(err) = everyone
            .clone()
            .to(online.room.to_string())
            .emit(PRESENCE, &presence)
            .await
        {
            tracing::debug!(error = %err, room = %online.room, "presence broadcast incomplete");
        }
    }
    if let Some(total) = global {
        let count = Count { total };
        let audience = state.connections.current();
        addressed(COUNT, audience);
        // A handler's broadcast is not awaited step by step: shutdown does
        // not wait for handlers, and the click's frames should be queued
        // before it returns, as they always were.
        let missed = if state.broadcast_interval.is_zero() {
            fanout::emit_at_once(&everyone, audience, COUNT, &count).await
        } else {
            fanout::emit_to_all(&everyone, audience, COUNT, &count).await
        };
        if missed > 0 {
            // Closing sockets, or slow ones whose buffer is full: the next
            // update carries the newer total.
            tracing::debug!(missed, "count broadcast incomplete");
        }
    }
    metrics.published(changes.waited, started.elapsed());
}

/// Publishes a new top list to everyone: `audience` sockets, as counted by
/// [`connections::Connections`], in steps when there are many
/// ([`fanout`]).
pub async fn publish_leaderboard(io: &SocketIo, top: &[Ranked], audience: usize) {
    let Some(everyone) = io.of("/") else {
        return;
    };
    let missed = fanout::emit_to_all(&everyone, audience, LEADERBOARD, top).await;
    if missed > 0 {
        tracing::debug!(missed, "leaderboard broadcast incomplete");
    }
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

/// `/metrics`: the figures read now (sockets by transport, pending clicks,
/// occupied conversations), then every metric rendered.
pub fn render_metrics(state: &AppState, io: &SocketIo) -> String {
    let mut now = crate::metrics::State {
        pending: state.counters.pending_clicks(),
        occupied: state.counters.occupied_rooms(),
        ..Default::default()
    };
    if let Some(everyone) = io.of("/") {
        for socket in everyone.sockets() {
            match socket.transport_type() {
                socketioxide::TransportType::Websocket => now.websocket += 1,
                socketioxide::TransportType::Polling => now.polling += 1,
            }
        }
    }
    state.metrics.set_state(&now);
    state.metrics.render()
}

/// Notes an event from `socket`: its connection's last activity, and the
/// event count in the metrics.
pub fn activity(socket: &SocketRef, state: &AppState, event: &'static str) {
    state.metrics.event(event);
    if let Some(admin) = &state.admin {
        admin.event_received(socket, event);
    }
    if let Some(connection) = socket.extensions.get::<Arc<connections::Connection>>() {
        connection.touch();
    }
}

/// The peer address of the socket's opening request, when the HTTP server
/// recorded one (`tally serve` does; a host does with axum's
/// `into_make_service_with_connect_info::<SocketAddr>`).
pub(crate) fn peer_addr(socket: &SocketRef) -> Option<std::net::SocketAddr> {
    socket
        .req_parts()
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0)
}

/// Takes one token of `kind` for this socket and its user, or says why not
/// (`rate_limited`, with `retryAfterMs`).
pub fn limit(
    socket: &SocketRef,
    state: &AppState,
    user: Option<&crate::user::Username>,
    kind: limits::Kind,
    event: &'static str,
) -> Result<(), Refused> {
    // Every socket of this namespace has its record from `prepare` until
    // it disconnects, when no more events arrive; without one the event
    // still goes through the per-user buckets.
    let connection = socket.extensions.get::<Arc<connections::Connection>>();
    let spare;
    let buckets = match &connection {
        Some(connection) => connection.limits(),
        None => {
            spare = limits::SocketLimits::default();
            &spare
        }
    };
    state.limits.check(buckets, user, kind).map_err(|limited| {
        state.metrics.rate_limited(event, limited.abusive);
        let mut refused = Refused::new(
            "rate_limited",
            format!("too many `{event}` events: slow down"),
        );
        refused.retry_after_ms = Some(limited.retry_after.as_millis().max(1) as u64);
        refused.abusive = limited.abusive;
        refused
    })
}
