//! `click`: one more to the global total, the clicking user's count and,
//! for a click made in a conversation the socket has joined, that
//! conversation's total. The ack carries the new totals; in durable mode
//! it waits until the click is stored.

use std::sync::Arc;

use serde_json::Value;
use socketioxide::extract::{Extension, State, TryData};

use super::payload::{Arguments, conversation_id, member_of};
use super::{guard, publish};
use crate::bus::{AckSender, SocketIo, SocketRef};
use crate::conversation::ConversationId;
use crate::counter::{Changed, Changes, Click, CounterKey};
use crate::events::{Ack, Args, ClickAck, ClientEvent, RoomCount};
use crate::limits::Creation;
use crate::refusal::{Code, Refusal};
use crate::sockets::{Connection, Identity};
use crate::state::AppState;

pub async fn on_click(
    socket: SocketRef,
    io: SocketIo,
    ack: AckSender,
    TryData(args): TryData<Args>,
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
) {
    let user = identity.user.as_ref();
    let Some(ack) = guard::enter(&socket, &state, user, ClientEvent::Click, ack) else {
        return;
    };
    let room = match click_target(&socket, args) {
        Ok(room) => room,
        Err(refusal) => {
            tracing::debug!(socket = %crate::telemetry::log_id(socket.id), code = %refusal.code, "click refused");
            ack.send(&Ack::<ClickAck>::from(refusal)).ok();
            return;
        }
    };
    if let Err(refusal) = may_create(&socket, &state, &identity, room.as_ref()) {
        ack.send(&Ack::<ClickAck>::from(refusal)).ok();
        return;
    }
    let click = match count(&state, &identity, room.as_ref()).await {
        Ok(click) => click,
        Err(refusal) => {
            ack.send(&Ack::<ClickAck>::from(refusal)).ok();
            return;
        }
    };
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
        publish_now(&io, &state, identity, &click, conversation).await;
    }
}

/// A first click creates its user's name and its conversation for good:
/// each new one takes a token from the client address's bucket.
fn may_create(
    socket: &SocketRef,
    state: &AppState,
    identity: &Identity,
    room: Option<&ConversationId>,
) -> Result<(), Refusal> {
    let new_name = identity
        .user
        .as_ref()
        .is_some_and(|user| state.counters.user_total(user).is_none());
    let new_room = room.is_some_and(|room| !state.counters.knows_room(room));
    if !new_name && !new_room {
        return Ok(());
    }
    let client = socket
        .extensions
        .get::<Arc<Connection>>()
        .and_then(|connection| connection.client_ip)
        .map(|ip| state.caps.key(ip));
    let refused = |what: &str, retry_after| {
        state.metrics.rate_limited(ClientEvent::Click, false);
        Refusal::rate_limited(
            format!("too many new {what} from this address: slow down"),
            retry_after,
        )
    };
    if new_name {
        state
            .limits
            .may_create(Creation::Name, client)
            .map_err(|retry| refused("usernames", retry))?;
    }
    if new_room {
        state
            .limits
            .may_create(Creation::Conversation, client)
            .map_err(|retry| refused("conversations", retry))?;
    }
    Ok(())
}

/// Counts the click, and in durable mode waits until it is stored.
async fn count(
    state: &AppState,
    identity: &Identity,
    room: Option<&ConversationId>,
) -> Result<Click, Refusal> {
    if state.durable && !state.store_writable() {
        // A durable click is acknowledged once stored, so while the store
        // is failing its handler would wait as long as the outage lasts; one
        // waiting handler per click adds up. The client is told at once,
        // and the click is not counted.
        return Err(Code::Unavailable
            .with("the database is unavailable, so this click was not counted; try again later"));
    }
    // Once shutdown has begun the final flush may already be done: the
    // client is told this click was not counted.
    let click = state
        .counters
        .click_in(identity.user.as_ref(), room)
        .map_err(|closed| Code::ShuttingDown.with(closed.to_string()))?;
    state.metrics.click();
    // Acknowledged only once stored: the flusher writes what is pending as
    // soon as it can, this click with the others of its moment.
    if state.durable && !state.counters.stored().reached(click.total).await {
        // Shutdown's last write failed: counted, never stored.
        return Err(Code::ShuttingDown.with("the server stopped before this click could be stored"));
    }
    Ok(click)
}

/// With `--broadcast-interval 0` there is no coalescer: the handler
/// publishes the totals its click changed.
async fn publish_now(
    io: &SocketIo,
    state: &AppState,
    identity: Identity,
    click: &Click,
    conversation: Option<RoomCount>,
) {
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
    let changes = Changes {
        totals,
        presence: Vec::new(),
        waited: None,
    };
    publish::changes(io, &changes, state).await;
}

/// Where a click counts: nowhere but the global total (and the user's) when
/// it carries no data — a single `{}` or `null` is accepted because some
/// client libraries always send an argument — or also in a conversation the
/// socket has joined, given as `{"conversationId"}`. Anything else is
/// refused so a client with a mistaken payload learns about it instead of
/// being counted.
fn click_target(socket: &SocketRef, args: Arguments) -> Result<Option<ConversationId>, Refusal> {
    let Ok(Args(args)) = args else {
        return Err(Code::BadRequest.with("click payload could not be parsed"));
    };
    match args.as_slice() {
        [] | [Value::Null] => Ok(None),
        [Value::Object(map)] if map.is_empty() => Ok(None),
        [Value::Object(map)] if map.len() == 1 && map.contains_key("conversationId") => {
            let room = conversation_id(map)?;
            member_of(socket, &room)?;
            Ok(Some(room))
        }
        _ => Err(Code::BadRequest.with(
            r#"click takes no payload, or {"conversationId": "…"} to click in a conversation"#,
        )),
    }
}
