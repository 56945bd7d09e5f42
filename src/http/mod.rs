//! HTTP side of tally: the page, its assets, the JSON API (with the
//! backend's conversation endpoints and the monitoring API), the health
//! checks, `/metrics`, and what stands in front of Socket.IO (the origin
//! policy, the early cap check, the request-head copy and the WebSocket
//! switch).

mod admin;
pub mod admin_ui;
mod admit;
mod api;
pub(crate) mod assets;
mod bearer;
mod conversations;
pub mod detach;
mod error;
mod health;
pub mod metrics;
pub mod openapi;
mod origin;
pub mod upgrades;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};

pub use admit::admit;
pub use error::ApiError;
pub use origin::{OriginPolicy, check as origin_check};

use crate::state::AppState;

/// The pages' Content-Security-Policy: everything from tally's own origin
/// (Socket.IO included), nothing inline, never framed.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// Largest request body the API reads (its requests are a few hundred
/// bytes; a chat message is at most 2,000 characters).
pub const MAX_BODY: usize = 64 * 1024;

/// Longest an HTTP request outside Socket.IO may take (long-polling holds
/// its requests open on purpose and is not limited by this), but for a
/// message post, which the message log answers within its own bounds.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The route a message is posted to.
const MESSAGES_ROUTE: &str = "/api/conversations/{id}/messages";

/// Answers `408` to a request that takes longer than [`REQUEST_TIMEOUT`],
/// except a message post: cutting one short could leave a message stored
/// that its poster was told timed out, so it is answered when the message
/// is stored or refused (at most the log's queue budget plus one write).
pub async fn time_limit(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use axum::response::IntoResponse;
    let posting = request.method() == axum::http::Method::POST
        && request
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .is_some_and(|path| path.as_str().ends_with(MESSAGES_ROUTE));
    if posting {
        // The body is read within the limit like any other (a client that
        // trickles it must not hold the connection); only waiting for the
        // message to be stored is not cut short.
        let (parts, body) = request.into_parts();
        let read = tokio::time::timeout(REQUEST_TIMEOUT, axum::body::to_bytes(body, MAX_BODY));
        let body = match read.await {
            Ok(Ok(bytes)) => axum::body::Body::from(bytes),
            Ok(Err(_)) => return ApiError::too_large().into_response(),
            Err(_) => return axum::http::StatusCode::REQUEST_TIMEOUT.into_response(),
        };
        return next
            .run(axum::extract::Request::from_parts(parts, body))
            .await;
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => axum::http::StatusCode::REQUEST_TIMEOUT.into_response(),
    }
}

/// The pages and their assets: `/`, `/c/{id}` (a conversation), `/app.js`,
/// `/chat.js`, `/app.css`. The pages refer to everything else relatively,
/// so they work under any mount path.
pub fn page() -> Router<AppState> {
    Router::new()
        .route("/", get(assets::index))
        .route("/c/{id}", get(assets::conversation))
        .route("/app.js", get(assets::script))
        .route("/chat.js", get(assets::chat_script))
        .route("/app.css", get(assets::style))
}

/// The JSON API under `/api/`.
pub fn api() -> Router<AppState> {
    Router::new()
        .route("/api/leaderboard", get(api::leaderboard))
        .route("/api/users/{username}", get(api::user))
        .route("/api/session", post(api::session))
        .route("/api/conversations/{id}", get(conversations::read))
        .route(MESSAGES_ROUTE, post(conversations::post))
        .route("/api/admin/connections", get(admin::connections))
        .route("/api/admin/stats", get(admin::stats))
        .route("/api/openapi.json", get(openapi::document))
}

/// `GET /healthz` (liveness) and `GET /readyz` (readiness).
pub fn health() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
}

/// Counts every request by matched route and status in `tally_http_requests_total`.
pub async fn track(
    State(metrics): State<crate::metrics::Metrics>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // The route's pattern, not the path: one series per route however many
    // users or conversations are asked for.
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
    let response = next.run(request).await;
    metrics.http_request(&route, response.status().as_u16());
    response
}

/// The answer to any path tally does not serve: `404 {"error": …}`.
pub async fn not_found() -> ApiError {
    ApiError::not_found()
}
