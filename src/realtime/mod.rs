//! Socket.IO handlers: the live side of tally.
//!
//! Owns the namespace `/`: greets each socket with the current total, turns
//! `click` events into counter increments, and publishes totals as `count`
//! broadcasts (coalesced by [`crate::counter::coalesce`], or one per click
//! when the broadcast interval is zero).

pub mod events;

use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, SocketRef, State, TryData};

use crate::counter::{Changed, CounterKey};
use crate::state::AppState;
use events::{Ack, Args, CLICK, COUNT, Count};

/// Registers the handlers of namespace `/`.
pub fn register(io: &SocketIo) {
    io.ns("/", on_connect);
}

async fn on_connect(socket: SocketRef, State(state): State<AppState>) {
    tracing::debug!(sid = %socket.id, transport = ?socket.transport_type(), "socket connected");
    let total = state.counters.global().total();
    if let Err(err) = socket.emit(COUNT, &Count { total }) {
        tracing::debug!(sid = %socket.id, error = %err, "could not greet socket");
    }
    socket.on(CLICK, on_click);
    socket.on_disconnect(async |socket: SocketRef| {
        tracing::debug!(sid = %socket.id, "socket disconnected");
    });
}

async fn on_click(
    socket: SocketRef,
    io: SocketIo,
    ack: AckSender,
    TryData(args): TryData<Args>,
    State(state): State<AppState>,
) {
    if let Err(reason) = check_click_args(args) {
        tracing::debug!(sid = %socket.id, reason, "click refused");
        // The client may not have asked for an ack; then there is nobody to tell.
        ack.send(&Ack::<Count>::error("bad_request", reason)).ok();
        return;
    }
    let total = state.counters.increment(&CounterKey::Global);
    ack.send(&Ack::Ok(Count { total })).ok();
    if state.broadcast_interval.is_zero() {
        broadcast(
            &io,
            &[Changed {
                key: CounterKey::Global,
                total,
            }],
        )
        .await;
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

/// Publishes changed totals to every connected socket. The payload is
/// serialised once for all recipients by socketioxide.
pub async fn broadcast(io: &SocketIo, changed: &[Changed]) {
    // The namespace is gone once the server has closed; nobody is left to tell.
    let Some(everyone) = io.of("/") else {
        return;
    };
    for change in changed {
        match change.key {
            CounterKey::Global => {
                let count = Count {
                    total: change.total,
                };
                if let Err(err) = everyone.clone().emit(COUNT, &count).await {
                    // A slow client whose buffer is full misses this update but
                    // will get the next one, which carries the newer total.
                    tracing::debug!(error = %err, "count broadcast incomplete");
                }
            }
        }
    }
}
