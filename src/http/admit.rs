//! The early check of the connection caps: a request that would open a new
//! engine.io session (one without a `sid`) over `--max-connections` or
//! `--max-connections-per-ip` is answered `503` with a JSON reason before
//! engine.io spends any memory on it. The rule itself, and the count it is
//! checked against, are [`crate::sockets`]'s; the socket is counted (and
//! the caps checked again) when it joins the namespace.

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
    // The client's address is only worked out when a per-address cap needs it.
    let client_ip = if caps.max_per_ip > 0 {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0);
        caps.client_ip(peer, request.headers())
    } else {
        None
    };
    let capped = state.connections.capped(client_ip, caps)?;
    Some(caps.refusal(capped))
}
