//! The JSON API: leaderboard, one user's count, and guest sessions.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use serde::Deserialize;

use super::ApiError;
use crate::auth::IssuedToken;
use crate::counter::leaderboard::{self, Ranked};
use crate::refusal::Code;
use crate::state::AppState;
use crate::user::Username;

/// Largest `limit` accepted by `/api/leaderboard`.
pub const MAX_LIMIT: usize = crate::counter::ranking::TOP;
const DEFAULT_LIMIT: usize = 10;

#[derive(Debug, Deserialize)]
pub struct LeaderboardQuery {
    limit: Option<usize>,
}

/// `GET /api/leaderboard?limit=N`: the top N users (default 10, at most 100).
pub async fn leaderboard(
    State(state): State<AppState>,
    query: Result<Query<LeaderboardQuery>, QueryRejection>,
) -> Result<Json<Vec<Ranked>>, ApiError> {
    let limit = match query {
        Ok(Query(LeaderboardQuery { limit: None })) => DEFAULT_LIMIT,
        Ok(Query(LeaderboardQuery { limit: Some(n) })) if (1..=MAX_LIMIT).contains(&n) => n,
        _ => {
            return Err(Code::BadRequest
                .with(format!(
                    "limit must be a whole number from 1 to {MAX_LIMIT}"
                ))
                .into());
        }
    };
    Ok(Json(leaderboard::top(&state.counters, limit)))
}

/// `GET /api/users/{username}`: one user's count and rank.
pub async fn user(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Ranked>, ApiError> {
    let name = Username::parse(&name).map_err(|_| ApiError::invalid_username())?;
    leaderboard::rank_of(&state.counters, &name)
        .map(Json)
        .ok_or_else(|| Code::UnknownUser.with("no such user").into())
}

#[derive(Debug, Deserialize)]
pub struct SessionRequest {
    username: String,
}

/// `POST /api/session {"username"}`: a short-lived token for that name, when
/// guest login is on.
pub async fn session(
    State(state): State<AppState>,
    body: Result<Json<SessionRequest>, JsonRejection>,
) -> Result<Json<IssuedToken>, ApiError> {
    if !state.auth.guest_login {
        return Err(Code::GuestLoginDisabled
            .with("guest login is disabled on this server")
            .into());
    }
    let Json(request) = body.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::too_large();
        }
        Code::BadRequest
            .with(format!(
                "expected a JSON body {{\"username\": \"...\"}}: {}",
                rejection.body_text()
            ))
            .into()
    })?;
    let username = Username::parse(&request.username).map_err(|_| ApiError::invalid_username())?;
    state
        .auth
        .tokens
        .issue(username)
        .map(Json)
        .map_err(|err| ApiError::Internal(format!("cannot sign a token: {err}")))
}
