//! Detaches Socket.IO requests from hyper's read buffer before engine.io
//! keeps them.
//!
//! engine.io stores each handshake request's head (`http::request::Parts`:
//! URI and headers) in its socket for the connection's whole life, so that
//! handlers can read them. hyper parses header values and the URI without
//! copying: they are slices of the connection's HTTP read buffer. Keeping one
//! slice keeps the whole buffer alive, so every idle WebSocket connection
//! pinned a buffer it no longer reads from (the largest single cost in the
//! heap profile in `bench/profiling.md`). Copying the few hundred bytes that
//! matter lets it go.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};

/// The path prefix of Socket.IO requests (socketioxide's default).
const SOCKET_IO_PATH: &str = "/socket.io/";

/// Gives a Socket.IO request a head that owns its bytes; other requests are
/// passed on untouched, since their heads are dropped with the request.
pub async fn own_request_head(mut request: Request) -> Request {
    if !request.uri().path().starts_with(SOCKET_IO_PATH) {
        return request;
    }
    let headers = owned_headers(request.headers());
    *request.headers_mut() = headers;
    // A URI that hyper accepted always parses again; should it not, the
    // original is kept, which costs memory and nothing else.
    if let Ok(uri) = request.uri().to_string().parse::<Uri>() {
        *request.uri_mut() = uri;
    }
    request
}

/// A copy of `headers` whose names and values are allocated anew.
fn owned_headers(headers: &HeaderMap) -> HeaderMap {
    let mut owned = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        // Standard names are static; only custom ones allocate.
        let name =
            HeaderName::from_bytes(name.as_str().as_bytes()).unwrap_or_else(|_| name.clone());
        let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        owned.append(name, copy);
    }
    owned
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    #[tokio::test]
    async fn socket_io_heads_are_copied_and_equal() {
        let request = Request::builder()
            .uri("/socket.io/?EIO=4&transport=websocket")
            .header("origin", "http://example.com")
            .header("x-custom", "a")
            .header("x-custom", "b")
            .body(Body::empty())
            .unwrap();
        let before_uri = request.uri().clone();
        let before_headers = request.headers().clone();
        let value_ptr = request.headers()["origin"].as_bytes().as_ptr();

        let request = own_request_head(request).await;

        assert_eq!(request.uri(), &before_uri);
        assert_eq!(request.headers(), &before_headers);
        assert_eq!(
            request.headers().get_all("x-custom").iter().count(),
            2,
            "repeated headers survive"
        );
        assert_ne!(
            request.headers()["origin"].as_bytes().as_ptr(),
            value_ptr,
            "the value lives in a new allocation"
        );
    }

    #[tokio::test]
    async fn other_requests_are_untouched() {
        let request = Request::builder()
            .uri("/api/leaderboard")
            .header("origin", "http://example.com")
            .body(Body::empty())
            .unwrap();
        let value_ptr = request.headers()["origin"].as_bytes().as_ptr();
        let request = own_request_head(request).await;
        assert_eq!(request.headers()["origin"].as_bytes().as_ptr(), value_ptr);
    }
}
