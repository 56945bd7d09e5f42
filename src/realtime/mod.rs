//! Socket.IO handlers: the live side of tally.
//!
//! Owns the namespace `/`: checks each handshake ([`session`]), greets each
//! socket with the current state (`count`, `leaderboard`, and `me` for an
//! identified user), turns `click` events into counter increments, and
//! publishes changes: totals as `count`, per-user counts as `me` to that
//! user's room, and the top list as `leaderboard`.

pub mod connections;
pub mod detach;
pub mod events;
pub mod session;
pub mod upgrades;

use std::sync::Arc;

use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;

use crate::counter::leaderboard::Ranked;
use crate::counter::{Changed, CounterKey};
use crate::state::AppState;
use events::{Ack, Args, CLICK, COUNT, ClickAck, Count, LEADERBOARD, ME, Me, REFRESH};
use session::Identity;

/// Registers the handlers of namespace `/`.
pub fn register(io: &SocketIo) {
    io.ns("/", on_connect.with(session::authenticate));
}

async fn on_connect(
    socket: SocketRef,
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
) {
    tracing::debug!(sid = %socket.id, transport = ?socket.transport_type(), user = ?identity.user, "socket connected");
    session::start(&socket, &identity);
    // Extensions are dropped with the socket, and the guard with them.
    socket
        .extensions
        .insert(Arc::new(state.connections.track()));

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

    socket.on(CLICK, on_click);
    socket.on(REFRESH, session::on_refresh);
    socket.on_disconnect(
        async |socket: SocketRef, Extension(identity): Extension<Identity>| {
            session::stop(&identity);
            tracing::debug!(sid = %socket.id, "socket disconnected");
        },
    );
}

async fn on_click(
    socket: SocketRef,
    io: SocketIo,
    ack: AckSender,
    TryData(args): TryData<Args>,
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
) {
    if let Err(reason) = check_click_args(args) {
        tracing::debug!(sid = %socket.id, reason, "click refused");
        // The client may not have asked for an ack; then there is nobody to tell.
        ack.send(&Ack::<ClickAck>::error("bad_request", reason))
            .ok();
        return;
    }
    let click = match state.counters.click(identity.user.as_ref()) {
        Ok(click) => click,
        Err(closed) => {
            // Shutdown has begun and the final flush may already be done:
            // the client is told this click was not counted.
            ack.send(&Ack::<ClickAck>::error("shutting_down", closed.to_string()))
                .ok();
            return;
        }
    };
    ack.send(&Ack::Ok(ClickAck {
        total: click.total,
        you: click.you,
    }))
    .ok();
    if state.broadcast_interval.is_zero() {
        let mut changed = vec![Changed {
            key: CounterKey::Global,
            total: click.total,
        }];
        if let (Some(user), Some(total)) = (identity.user, click.you) {
            changed.push(Changed {
                key: CounterKey::User(user),
                total,
            });
        }
        publish(&io, &changed).await;
    }
}

/// A click carries no data. A single `{}` or `null` is accepted because some
/// client libraries always send an argument; anything else is refused so a
/// client with a mistaken payload learns about it instead of being counted.
fn check_click_args(args: Result<Args, socketioxide::ParserError>) -> Result<(), &'static str> {
    let Ok(Args(args)) = args else {
        return Err("click payload could not be parsed");
    };
    match args.as_slice() {
        [] | [Value::Null] => Ok(()),
        [Value::Object(map)] if map.is_empty() => Ok(()),
        _ => Err("click takes no payload"),
    }
}

/// Publishes changed totals: the global one to everyone, a user's to that
/// user's sockets. Each payload is serialised once for all its recipients.
pub async fn publish(io: &SocketIo, changed: &[Changed]) {
    // The namespace is gone once the server has closed; nobody is left to tell.
    let Some(everyone) = io.of("/") else {
        return;
    };
    for change in changed {
        let sent = match &change.key {
            CounterKey::Global => {
                let count = Count {
                    total: change.total,
                };
                everyone.clone().emit(COUNT, &count).await
            }
            CounterKey::User(user) => {
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
        };
        if let Err(err) = sent {
            // A slow client whose buffer is full misses this update but will
            // get the next one, which carries the newer total.
            tracing::debug!(error = %err, key = %change.key, "broadcast incomplete");
        }
    }
}

/// Publishes a new top list to everyone.
pub async fn publish_leaderboard(io: &SocketIo, top: &[Ranked]) {
    let Some(everyone) = io.of("/") else {
        return;
    };
    if let Err(err) = everyone.emit(LEADERBOARD, top).await {
        tracing::debug!(error = %err, "leaderboard broadcast incomplete");
    }
}
