//! The early check of the connection caps: a request that would open a new
//! engine.io session (one without a `sid`) over `--max-connections` or
//! `--max-connections-per-ip` is answered `503` with a JSON reason before
//! engine.io spends any memory on it; one that passes is given a place
//! under the caps in its extensions, which engine.io keeps for the
//! session's life (a request it refuses drops the place at once). The rule
//! itself, and the count it is checked against, are [`crate::sockets`]'s.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use super::detach::opens_session;
use crate::refusal::Refusal;
use crate::sockets::Place;
use crate::state::AppState;

/// Refuses a new Socket.IO connection over a cap, before engine.io sees it.
pub async fn admit(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    if opens_session(request.uri()) {
        match place(&state, &request) {
            Ok(Some(place)) => {
                request.extensions_mut().insert(Arc::new(place));
            }
            Ok(None) => {}
            Err(refusal) => {
                state.metrics.connection_refused(refusal.code.as_str());
                return ApiError::from(refusal).into_response();
            }
        }
    }
    next.run(request).await
}

fn place(state: &AppState, request: &Request) -> Result<Option<Place>, Refusal> {
    let caps = &state.caps;
    // The client's address is only worked out when a cap needs it.
    if !caps.any() {
        return Ok(None);
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    let client_ip = caps.client_ip(peer, request.headers());
    state
        .connections
        .open_session(client_ip, caps)
        .map_err(|capped| caps.refusal(capped))
}
