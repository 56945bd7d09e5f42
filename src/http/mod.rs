//! HTTP side of tally: the page, its assets, the JSON API (with the
//! backend's conversation endpoints), the health check, and the origin
//! policy in front of Socket.IO.

mod admin;
pub mod admin_ui;
mod api;
pub(crate) mod assets;
mod bearer;
mod caps;
mod conversations;
mod error;
mod origin;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

pub use caps::{Caps, admit};
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
        .route(
            "/api/conversations/{id}/messages",
            post(conversations::post),
        )
        .route("/api/admin/connections", get(admin::connections))
        .route("/api/admin/stats", get(admin::stats))
}

/// `GET /healthz` (liveness) and `GET /readyz` (readiness).
pub fn health() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// 200 while this server should get traffic: the store answered its last
/// health check and shutdown has not begun. A load balancer stops sending
/// new clients here when it turns 503, while `/healthz` still says the
/// process is alive.
async fn readyz(State(state): State<AppState>) -> Response {
    if state.draining.load(std::sync::atomic::Ordering::SeqCst) {
        let error = ApiError::Unavailable {
            code: "shutting_down",
            message: "the server is shutting down".into(),
        };
        return (error.status(), Json(error.body())).into_response();
    }
    if !state.store_health.is_up() {
        let error = store_unavailable();
        return (error.status(), Json(error.body())).into_response();
    }
    Json(json!({"status": "ready"})).into_response()
}

/// The answer while the store is down. The health check has logged why,
/// once; a probe every second does not repeat it.
fn store_unavailable() -> ApiError {
    ApiError::Unavailable {
        code: "store_unavailable",
        message: "the database is unavailable".into(),
    }
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
    ApiError::NotFound
}

/// 200 when the store answered its last health check and the last write of
/// counts succeeded, 503 otherwise. Load balancers use it to stop sending
/// clicks to a node whose database is gone. Both answers tell how many
/// clicks wait for the next flush and how many sockets are connected: during
/// an outage, `pending` is what a crash would lose. It answers from memory
/// (see [`crate::health`]), so it stays fast however busy the server is.
async fn healthz(State(state): State<AppState>) -> Response {
    let pending = state.counters.pending_clicks();
    let connections = state.connections.current();
    // Answering pings is not enough: a database that refuses writes (a full
    // disk, a lock) is unavailable too. The flusher logs its failures.
    if state.store_writable() {
        return Json(json!({
            "status": "ok",
            "store": state.store.backend(),
            "pending": pending,
            "connections": connections,
        }))
        .into_response();
    }
    let error = store_unavailable();
    let mut body = error.body();
    body["store"] = json!(state.store.backend());
    body["pending"] = json!(pending);
    body["connections"] = json!(connections);
    (error.status(), Json(body)).into_response()
}
