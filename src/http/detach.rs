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
//!
//! The stored head includes the request's extensions, and axum's router puts
//! a clone of the URI there as `OriginalUri` (so pages can find their prefix
//! under a host's `nest`). That clone is a slice of the same buffer, so it
//! gets an owned copy as well; without it every idle connection kept its 8
//! KiB read buffer again (`bench/profiling.md`, "Memory per connection").

use axum::extract::{OriginalUri, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};

/// The path prefix of Socket.IO requests (socketioxide's default).
const SOCKET_IO_PATH: &str = "/socket.io/";

/// Whether a Socket.IO request opens a session: it carries no `sid`. The
/// requests that do (polls, posts, the upgrade of a polling session) belong
/// to a session that exists, and engine.io drops their heads with them.
pub fn opens_session(uri: &Uri) -> bool {
    !uri.query()
        .is_some_and(|query| query.split('&').any(|pair| pair.starts_with("sid=")))
}

/// Gives a request that opens a Socket.IO session a head that owns its
/// bytes; other requests, whose heads are dropped with them, are passed on
/// untouched, so a long-polling client's every poll costs no copy.
pub async fn own_request_head(mut request: Request) -> Request {
    if !request.uri().path().starts_with(SOCKET_IO_PATH) || !opens_session(request.uri()) {
        return request;
    }
    let headers = owned_headers(request.headers());
    *request.headers_mut() = headers;
    if let Some(uri) = owned_uri(request.uri()) {
        *request.uri_mut() = uri;
    }
    let original = request
        .extensions()
        .get::<OriginalUri>()
        .and_then(|OriginalUri(uri)| owned_uri(uri));
    if let Some(uri) = original {
        request.extensions_mut().insert(OriginalUri(uri));
    }
    request
}

/// A copy of `uri` that owns its bytes. A URI that hyper accepted always
/// parses again; should it not, the caller keeps the original, which costs
/// memory and nothing else.
fn owned_uri(uri: &Uri) -> Option<Uri> {
    uri.to_string().parse().ok()
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
        let mut request = Request::builder()
            .uri("/socket.io/?EIO=4&transport=websocket")
            .header("origin", "http://example.com")
            .header("x-custom", "a")
            .header("x-custom", "b")
            .body(Body::empty())
            .unwrap();
        let before_uri = request.uri().clone();
        let before_headers = request.headers().clone();
        let value_ptr = request.headers()["origin"].as_bytes().as_ptr();
        // What axum's router adds before any middleware runs: a clone of the
        // URI sharing its bytes.
        request
            .extensions_mut()
            .insert(OriginalUri(before_uri.clone()));
        let query_ptr = before_uri.query().unwrap().as_ptr();

        let request = own_request_head(request).await;

        assert_eq!(request.uri(), &before_uri);
        let OriginalUri(original) = request.extensions().get::<OriginalUri>().unwrap();
        assert_eq!(original, &before_uri);
        assert_ne!(
            original.query().unwrap().as_ptr(),
            query_ptr,
            "the original URI lives in a new allocation"
        );
        assert_ne!(request.uri().query().unwrap().as_ptr(), query_ptr);
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
    async fn requests_that_open_no_session_are_untouched() {
        // A poll of a session that exists, and a request that is not
        // Socket.IO at all: their heads are dropped with them.
        for uri in [
            "/socket.io/?EIO=4&transport=polling&sid=abc",
            "/api/leaderboard",
        ] {
            let request = Request::builder()
                .uri(uri)
                .header("origin", "http://example.com")
                .body(Body::empty())
                .unwrap();
            let value_ptr = request.headers()["origin"].as_bytes().as_ptr();
            let request = own_request_head(request).await;
            assert_eq!(
                request.headers()["origin"].as_bytes().as_ptr(),
                value_ptr,
                "{uri}"
            );
        }
        let opens = |uri: &str| opens_session(&uri.parse().unwrap());
        assert!(opens("/socket.io/?EIO=4&transport=websocket"));
        assert!(!opens("/socket.io/?EIO=4&sid=x&transport=websocket"));
    }
}
