//! `GET /healthz` (liveness, and whether clicks can be stored) and
//! `GET /readyz` (readiness: whether this server should get new clients).
//! Both answer from memory (see [`crate::persist::health`]), so they stay
//! fast however busy the server is.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::ApiError;
use crate::refusal::Code;
use crate::state::AppState;

/// 200 while this server should get traffic: the store answered its last
/// health check and shutdown has not begun. A load balancer stops sending
/// new clients here when it turns 503, while `/healthz` still says the
/// process is alive.
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.draining() {
        return ApiError::from(Code::ShuttingDown.with("the server is shutting down"))
            .into_response();
    }
    if !state.store_health.is_up() {
        return store_unavailable().into_response();
    }
    Json(json!({"status": "ready"})).into_response()
}

/// The answer while the store is down. The health check has logged why,
/// once; a probe every second does not repeat it.
fn store_unavailable() -> ApiError {
    Code::StoreUnavailable
        .with("the database is unavailable")
        .into()
}

/// 200 when the store answered its last health check and the last write of
/// counts succeeded, 503 otherwise. Load balancers use it to stop sending
/// clicks to a node whose database is gone. Both answers tell how many
/// clicks wait for the next flush and how many sockets are connected: during
/// an outage, `pending` is what a crash would lose.
pub async fn healthz(State(state): State<AppState>) -> Response {
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
