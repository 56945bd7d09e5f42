//! Development mode's live stream to the Admin UI: sockets as the UI shows
//! them, and what happens to them. Only built while an admin is watching.
//!
//! The UI's socket shape is the Node server's, with two differences that
//! keep secrets out of it: request headers that carry credentials
//! (`authorization`, `cookie`, and any whose name says token, secret, key,
//! session, password or auth, since a host's identity hook may read its
//! own) and query parameters other than
//! Socket.IO's own are shown as `[redacted]`, and the handshake's `auth`
//! is never included (as in Node).

use serde::Serialize;
use serde_json::{Map, Value, json};
use socketioxide::socket::DisconnectReason;

use crate::bus::SocketRef;
use crate::clock::{iso_millis, now_ms};
use crate::sockets::{Identity, Memberships, Snapshot, user_room};

/// Headers whose values are credentials.
const SECRET_HEADERS: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];
/// Words in a header's name that say its value may be a credential: hosts
/// sign users in with headers of their own (`X-Auth-Token`, `X-Api-Key`,
/// `X-Session-Id`, …).
const SECRET_WORDS: [&str; 6] = ["auth", "token", "secret", "key", "session", "password"];
/// Query parameters of the Socket.IO protocol itself; others may be tokens.
const PROTOCOL_QUERY: [&str; 4] = ["EIO", "transport", "t", "sid"];
const REDACTED: &str = "[redacted]";

/// Whether a header's value is kept from the UI. Header names arrive in
/// lower case.
fn secret_header(name: &str) -> bool {
    SECRET_HEADERS.contains(&name) || SECRET_WORDS.iter().any(|word| name.contains(word))
}

/// Sends `event` with `payload` (a tuple sends several arguments) to each
/// admin socket.
pub fn send<T: Serialize + ?Sized>(admins: &[SocketRef], event: &str, payload: &T) {
    for admin in admins {
        if let Err(err) = admin.emit(event, payload) {
            tracing::debug!(error = %err, event, "not sent to an admin socket");
        }
    }
}

/// The reasons as the UI (and Node's Socket.IO) words them.
pub fn reason(reason: DisconnectReason) -> &'static str {
    match reason {
        DisconnectReason::TransportClose => "transport close",
        DisconnectReason::MultipleHttpPollingError => "multiple http polling error",
        DisconnectReason::PacketParsingError => "parse error",
        DisconnectReason::TransportError => "transport error",
        DisconnectReason::HeartbeatTimeout => "ping timeout",
        DisconnectReason::ClientNSDisconnect => "client namespace disconnect",
        DisconnectReason::ServerNSDisconnect => "server namespace disconnect",
        DisconnectReason::ClosingServer => "server shutting down",
    }
}

fn now() -> String {
    iso_millis(now_ms())
}

/// A socket of namespace `/` as the UI shows it.
pub fn serialize(socket: &SocketRef) -> Value {
    let Snapshot {
        id,
        user,
        conversations,
        transport,
        connection,
    } = Snapshot::of(socket);
    // The UI marks the room named after the socket as its private room.
    let rooms: Vec<String> = std::iter::once(id.clone()).chain(rooms(socket)).collect();
    let parts = socket.req_parts();
    let headers: Map<String, Value> = parts
        .headers
        .iter()
        .map(|(name, value)| {
            let shown = if secret_header(name.as_str()) {
                REDACTED.to_string()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (name.as_str().to_string(), Value::String(shown))
        })
        .collect();
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| {
            let shown = if PROTOCOL_QUERY.contains(&key) {
                value
            } else {
                REDACTED
            };
            (key.to_string(), shown.to_string())
        })
        .collect();
    let url = query
        .iter()
        .fold(parts.uri.path().to_string(), |url, (key, value)| {
            let separator = if url.contains('?') { '&' } else { '?' };
            format!("{url}{separator}{key}={value}")
        });
    let query: Map<String, Value> = query
        .into_iter()
        .map(|(key, value)| (key, Value::String(value)))
        .collect();
    let issued = connection.as_ref().map_or_else(now_ms, |c| c.connected_at);
    let address = connection
        .as_ref()
        .and_then(|c| c.client_ip)
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    json!({
        "id": id,
        // One client per socket: tally's sockets each have their own
        // engine.io connection.
        "clientId": id.chars().take(12).collect::<String>(),
        "transport": transport,
        "nsp": "/",
        "data": { "user": user, "conversations": conversations },
        "rooms": rooms,
        "handshake": {
            "address": address,
            "headers": headers,
            "query": query,
            "issued": issued,
            "secure": false,
            "time": iso_millis(issued),
            "url": url,
            "xdomain": parts.headers.contains_key("origin"),
        },
    })
}

/// The rooms `socket` is in. By the time its disconnect handler runs,
/// socketioxide has taken it out of every room, so tally's own records
/// (the user's room, the conversations) are read too.
fn rooms(socket: &SocketRef) -> Vec<String> {
    let mut rooms: Vec<String> = socket.rooms().iter().map(|r| r.to_string()).collect();
    if let Some(user) = socket.extensions.get::<Identity>().and_then(|i| i.user) {
        rooms.push(user_room(&user));
    }
    if let Some(memberships) = socket.extensions.get::<std::sync::Arc<Memberships>>() {
        rooms.extend(memberships.list().iter().map(|room| room.to_string()));
    }
    rooms.sort();
    rooms.dedup();
    rooms
}

pub fn socket_connected(admins: &[SocketRef], socket: &SocketRef) {
    send(admins, "socket_connected", &(serialize(socket), now()));
}

pub fn socket_disconnected(admins: &[SocketRef], socket: &SocketRef, reason: &str) {
    let id = socket.id.to_string();
    let at = now();
    // The UI drops a room once its last socket left it.
    for room in rooms(socket) {
        send(admins, "room_left", &("/", room, &id, &at));
    }
    send(admins, "socket_disconnected", &("/", &id, reason, &at));
}

pub fn event_received(admins: &[SocketRef], socket: &SocketRef, event: &str) {
    // The event's name only: its arguments are the client's to know.
    send(
        admins,
        "event_received",
        &("/", socket.id.to_string(), [event], now()),
    );
}

pub fn room(admins: &[SocketRef], event: &str, socket: &SocketRef, room: &str) {
    send(admins, event, &("/", room, socket.id.to_string(), now()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_headers_are_kept_from_the_ui() {
        for name in [
            "authorization",
            "cookie",
            "proxy-authorization",
            "x-api-key",
            "x-auth-token",
            "x-session-id",
            "x-forwarded-user-token",
        ] {
            assert!(secret_header(name), "{name}");
        }
        for name in [
            "user-agent",
            "accept-language",
            "origin",
            "host",
            "x-forwarded-for",
        ] {
            assert!(!secret_header(name), "{name}");
        }
    }
}
