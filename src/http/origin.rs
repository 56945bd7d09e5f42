//! Which browser origins may open Socket.IO connections.
//!
//! Browsers do not apply CORS to WebSocket upgrades, so without this check any
//! web site could open a socket to tally from its visitors' browsers and click
//! on their behalf. Requests without an `Origin` header come from non-browser
//! clients and are allowed: the header is what browsers cannot forge.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::ApiError;
use crate::config::AllowedOrigin;
use crate::refusal::Code;

/// The `--allowed-origins` policy.
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    any: bool,
    exact: Vec<String>,
}

impl OriginPolicy {
    pub fn new(allowed: &[AllowedOrigin]) -> Self {
        let mut policy = OriginPolicy {
            any: false,
            exact: Vec::new(),
        };
        for origin in allowed {
            match origin {
                AllowedOrigin::Any => policy.any = true,
                AllowedOrigin::Exact(origin) => policy.exact.push(origin.clone()),
            }
        }
        policy
    }

    /// Whether a request with these headers may reach Socket.IO.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let origin = origin.to_ascii_lowercase();
        if self.any || self.exact.contains(&origin) {
            return true;
        }
        // Same origin: the page tally serves itself. The scheme is not
        // compared because a TLS-terminating proxy changes it.
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let origin_host = origin.split_once("://").map(|(_, rest)| rest);
        matches!((host, origin_host), (Some(host), Some(origin_host)) if host.eq_ignore_ascii_case(origin_host))
    }

    /// CORS headers for cross-origin long-polling from the allowed origins.
    /// `None` when only the page's own origin is allowed, which needs no CORS.
    pub fn cors(&self) -> Option<CorsLayer> {
        let allow_origin = if self.any {
            AllowOrigin::any()
        } else if self.exact.is_empty() {
            return None;
        } else {
            let origins: Vec<HeaderValue> = self
                .exact
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect();
            AllowOrigin::list(origins)
        };
        Some(
            CorsLayer::new()
                .allow_origin(allow_origin)
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([header::CONTENT_TYPE]),
        )
    }
}

/// Middleware refusing requests from origins outside the policy; it wraps the
/// Socket.IO routes only.
pub async fn check(
    axum::extract::State(policy): axum::extract::State<OriginPolicy>,
    request: Request,
    next: Next,
) -> Response {
    if !policy.allows(request.headers()) {
        tracing::debug!(origin = ?request.headers().get(header::ORIGIN), "socket.io request from a foreign origin refused");
        return ApiError::from(Code::ForbiddenOrigin.with("origin not allowed")).into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, host.parse().unwrap());
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, origin.parse().unwrap());
        }
        headers
    }

    #[test]
    fn same_origin_only_by_default() {
        let policy = OriginPolicy::new(&[]);
        assert!(policy.allows(&headers(None, "tally.example:3000")));
        assert!(policy.allows(&headers(
            Some("http://tally.example:3000"),
            "tally.example:3000"
        )));
        assert!(!policy.allows(&headers(Some("https://evil.example"), "tally.example:3000")));
        assert!(!policy.allows(&headers(
            Some("http://tally.example:3001"),
            "tally.example:3000"
        )));
        assert!(policy.cors().is_none());
    }

    #[test]
    fn listed_and_wildcard_origins() {
        let listed = OriginPolicy::new(&[AllowedOrigin::Exact("https://app.example".into())]);
        assert!(listed.allows(&headers(Some("https://APP.example"), "api.example")));
        assert!(!listed.allows(&headers(Some("https://other.example"), "api.example")));
        let any = OriginPolicy::new(&[AllowedOrigin::Any]);
        assert!(any.allows(&headers(Some("https://other.example"), "api.example")));
    }
}
