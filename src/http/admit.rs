//! The early check of the connection caps: a request that would open a new
//! engine.io session (one without a `sid`) over `--max-connections` or
//! `--max-connections-per-ip` is answered `503` with a JSON reason before
//! engine.io spends any memory on it; one that passes holds a place under
//! the caps from then on. The rule itself, and the count it is checked
//! against, are [`crate::sockets`]'s; the place becomes the socket's (and
//! the caps are checked again) when it joins the namespace.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use super::detach::opens_session;
use crate::refusal::Refusal;
use crate::state::AppState;

/// Refuses a new Socket.IO connection over a cap, before engine.io sees it.
pub async fn admit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if opens_session(request.uri())
        && let Some(refusal) = refusal(&state, &request)
    {
        state.metrics.connection_refused(refusal.code.as_str());
        return ApiError::from(refusal).into_response();
    }
    next.run(request).await
}

fn refusal(state: &AppState, request: &Request) -> Option<Refusal> {
    let caps = &state.caps;
    // The client's address is only worked out when a cap needs it.
    if !caps.any() {
        return None;
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    let client_ip = caps.client_ip(peer, request.headers());
    let capped = state.connections.open_session(client_ip, caps).err()?;
    Some(caps.refusal(capped))
}
