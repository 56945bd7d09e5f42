//! The web page, built from `web/` by `build.rs` and embedded in the binary.
//!
//! Every asset carries a strong `ETag` (a hash of its bytes) and
//! `Cache-Control: no-cache`: browsers keep their copy and revalidate it with
//! a tiny conditional request that answers `304 Not Modified` until a new
//! release changes the file. Compression is applied by the router's layer.

use axum::extract::OriginalUri;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

/// One embedded file.
pub struct Asset {
    content_type: &'static str,
    body: &'static [u8],
    /// FNV-1a of the bytes.
    hash: u64,
}

impl Asset {
    /// A text file; its hash is computed by the compiler.
    const fn new(content_type: &'static str, body: &'static str) -> Self {
        Self::bytes(content_type, body.as_bytes())
    }

    /// Any file.
    pub const fn bytes(content_type: &'static str, body: &'static [u8]) -> Self {
        Asset {
            content_type,
            body,
            hash: fnv1a(body),
        }
    }

    pub fn respond(&self, request: &HeaderMap) -> Response {
        let etag = format!("\"{:016x}-{:x}\"", self.hash, self.body.len());
        let headers = [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::ETAG,
                HeaderValue::from_str(&etag).expect("a hex tag is a valid header value"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ];
        let fresh = request
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|tags| {
                tags.split(',')
                    .any(|tag| tag.trim() == etag || tag.trim() == "*")
            });
        if fresh {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        (headers, self.body).into_response()
    }
}

/// A 64-bit FNV-1a hash: enough to tell releases of a file apart, and a
/// `const fn`, so each tag is computed by the compiler.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

static INDEX_HTML: Asset = Asset::new(
    "text/html; charset=utf-8",
    include_str!(concat!(env!("OUT_DIR"), "/web/index.html")),
);
static APP_JS: Asset = Asset::new(
    "text/javascript; charset=utf-8",
    include_str!(concat!(env!("OUT_DIR"), "/web/app.js")),
);
static CONVERSATION_HTML: Asset = Asset::new(
    "text/html; charset=utf-8",
    include_str!(concat!(env!("OUT_DIR"), "/web/conversation.html")),
);
static CHAT_JS: Asset = Asset::new(
    "text/javascript; charset=utf-8",
    include_str!(concat!(env!("OUT_DIR"), "/web/chat.js")),
);
static APP_CSS: Asset = Asset::new(
    "text/css; charset=utf-8",
    include_str!(concat!(env!("OUT_DIR"), "/web/app.css")),
);

/// The page. It links its script, style, API and Socket.IO path relatively,
/// so it must be served from a path that ends in `/`: `/tally` redirects to
/// `/tally/` (the path as the client sent it, before any `nest` stripped the
/// mount prefix).
pub async fn index(OriginalUri(uri): OriginalUri, request: HeaderMap) -> Response {
    if !uri.path().ends_with('/') {
        let target = match uri.query() {
            Some(query) => format!("{}/?{query}", uri.path()),
            None => format!("{}/", uri.path()),
        };
        return Redirect::permanent(&target).into_response();
    }
    INDEX_HTML.respond(&request)
}

pub async fn script(request: HeaderMap) -> Response {
    APP_JS.respond(&request)
}

pub async fn style(request: HeaderMap) -> Response {
    APP_CSS.respond(&request)
}

pub async fn chat_script(request: HeaderMap) -> Response {
    CHAT_JS.respond(&request)
}

/// The conversation page at `c/{id}`; an id that breaks the rule is a 404.
pub async fn conversation(
    axum::extract::Path(id): axum::extract::Path<String>,
    request: HeaderMap,
) -> Response {
    if crate::conversation::ConversationId::parse(&id).is_err() {
        return super::ApiError::not_found().into_response();
    }
    CONVERSATION_HTML.respond(&request)
}
