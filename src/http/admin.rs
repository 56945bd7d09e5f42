//! The monitoring API, behind `--admin-token`: `GET /api/admin/connections`
//! lists the live sockets a page at a time, `GET /api/admin/stats` gives
//! the totals an operator watches. Without the token both answer 404.

use std::collections::HashSet;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::ApiError;
use crate::bus::SocketIo;
use crate::clock::iso_millis;
use crate::conversation::ConversationId;
use crate::refusal::{Code, ErrorBody};
use crate::sockets::{Identity, Snapshot};
use crate::state::AppState;
use crate::user::Username;

/// Default and largest page of `/api/admin/connections`.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1_000;

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    super::bearer::authorize(state.admin_token.as_deref(), headers)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// How many sockets, 1 to 1,000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// The last `socketId` of the previous page.
    after: Option<String>,
}

/// One socket, with the design's connection data.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionView {
    socket_id: String,
    user_id: Option<Username>,
    conversation_ids: Vec<ConversationId>,
    transport: &'static str,
    connection_time: String,
    last_activity: String,
    remote_addr: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectionsPage {
    /// Sockets connected now.
    total: usize,
    /// This page, ordered by `socketId`.
    connections: Vec<ConnectionView>,
    /// Pass as `after` for the next page; `null` on the last one.
    next: Option<String>,
}

/// `GET /api/admin/connections?limit=N&after=<socketId>`.
#[utoipa::path(
    get,
    path = "/api/admin/connections",
    tag = "monitoring",
    params(Page),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "A page of the live sockets, by `socketId`", body = ConnectionsPage),
        (status = 401, description = "`unauthorized`: no token or a wrong one", body = ErrorBody),
        (status = 404, description = "`not_found`: the server has no `--admin-token`", body = ErrorBody),
        (status = 422, description = "`invalid_query`", body = ErrorBody),
    )
)]
pub async fn connections(
    State(state): State<AppState>,
    Extension(io): Extension<SocketIo>,
    headers: HeaderMap,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Json<ConnectionsPage>, ApiError> {
    authorize(&state, &headers)?;
    let Query(page) = page.map_err(|_| invalid_limit())?;
    let limit = match page.limit {
        None => DEFAULT_PAGE,
        Some(limit) if (1..=MAX_PAGE).contains(&limit) => limit,
        Some(_) => return Err(invalid_limit()),
    };
    let mut sockets = io.of("/").map(|ns| ns.sockets()).unwrap_or_default();
    let total = sockets.len();
    sockets.sort_by_key(|socket| socket.id.to_string());
    let after = page.after.unwrap_or_default();
    let mut connections: Vec<ConnectionView> = sockets
        .iter()
        .filter(|socket| socket.id.to_string() > after)
        .take(limit + 1)
        .map(|socket| ConnectionView::from(Snapshot::of(socket)))
        .collect();
    let next = (connections.len() > limit).then(|| {
        connections.truncate(limit);
        connections
            .last()
            .map(|last| last.socket_id.clone())
            .unwrap_or_default()
    });
    Ok(Json(ConnectionsPage {
        total,
        connections,
        next,
    }))
}

impl From<Snapshot> for ConnectionView {
    fn from(socket: Snapshot) -> Self {
        let connection = socket.connection.as_ref();
        ConnectionView {
            socket_id: socket.id,
            user_id: socket.user,
            conversation_ids: socket.conversations,
            transport: socket.transport,
            connection_time: iso_millis(connection.map_or(0, |c| c.connected_at)),
            last_activity: iso_millis(connection.map_or(0, |c| c.last_activity())),
            remote_addr: connection
                .and_then(|c| c.remote)
                .map(|addr| addr.to_string()),
        }
    }
}

fn invalid_limit() -> ApiError {
    Code::InvalidQuery
        .with(format!("limit must be a whole number from 1 to {MAX_PAGE}"))
        .into()
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClicksPerSecond {
    last_10s: f64,
    last_60s: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Sockets connected now.
    connections: usize,
    /// Distinct identified users among them.
    users: usize,
    /// Conversations with at least one socket.
    rooms: usize,
    clicks_per_second: ClicksPerSecond,
    /// Clicks counted but not yet stored.
    pending: u64,
    /// When everything counted until then was last stored (ISO 8601);
    /// `null` before the first flush.
    last_flush_at: Option<String>,
    total: u64,
}

/// `GET /api/admin/stats`.
#[utoipa::path(
    get,
    path = "/api/admin/stats",
    tag = "monitoring",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The totals an operator watches", body = Stats),
        (status = 401, description = "`unauthorized`: no token or a wrong one", body = ErrorBody),
        (status = 404, description = "`not_found`: the server has no `--admin-token`", body = ErrorBody),
    )
)]
pub async fn stats(
    State(state): State<AppState>,
    Extension(io): Extension<SocketIo>,
    headers: HeaderMap,
) -> Result<Json<Stats>, ApiError> {
    authorize(&state, &headers)?;
    let sockets = io.of("/").map(|ns| ns.sockets()).unwrap_or_default();
    let users: HashSet<Username> = sockets
        .iter()
        .filter_map(|socket| socket.extensions.get::<Identity>().and_then(|id| id.user))
        .collect();
    Ok(Json(Stats {
        connections: sockets.len(),
        users: users.len(),
        rooms: state.counters.occupied_rooms(),
        clicks_per_second: ClicksPerSecond {
            last_10s: state.rate.per_second(Duration::from_secs(10)),
            last_60s: state.rate.per_second(Duration::from_secs(60)),
        },
        pending: state.counters.pending_clicks(),
        last_flush_at: state.counters.flushes().flushed_at().map(iso_millis),
        total: state.counters.global().total(),
    }))
}
