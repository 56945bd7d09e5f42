//! Keeps the handshake's `upgrades` list true when WebSocket is switched off.
//!
//! engine.io's open packet tells a polling client which transports it may
//! upgrade to. engineioxide (0.17) always answers `["websocket"]` there, even
//! when `--transports polling` refuses WebSocket, so every official client
//! tries an upgrade that is bound to fail: one wasted request and a logged
//! error per connection. On a polling-only server this middleware rewrites
//! the list in the open packet to `[]`, as the protocol intends.

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The longest open packet expected; anything larger is passed on untouched.
const OPEN_PACKET_LIMIT: usize = 4096;

/// Middleware for a server without WebSocket: empties the `upgrades` list of
/// polling handshakes.
pub async fn no_websocket_upgrades(request: Request, next: Next) -> Response {
    // Only protocol v4 (EIO=4): v3 frames the packet with its length, and
    // its clients are rare enough to keep the harmless extra request.
    let handshake = request.uri().query().is_some_and(|query| {
        let has = |wanted: &str| query.split('&').any(|pair| pair == wanted);
        let has_sid = query.split('&').any(|pair| pair.starts_with("sid="));
        has("transport=polling") && has("EIO=4") && !has_sid
    });
    let response = next.run(request).await;
    if !handshake || !response.status().is_success() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, OPEN_PACKET_LIMIT).await else {
        // The body was consumed while reading it: answer with an error the
        // client retries, rather than an empty success it cannot parse.
        tracing::warn!("could not read a polling handshake to rewrite its upgrades");
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let text = String::from_utf8_lossy(&bytes);
    let rewritten = text.replacen(r#""upgrades":["websocket"]"#, r#""upgrades":[]"#, 1);
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(rewritten))
}
