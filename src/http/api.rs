//! The JSON API: leaderboard, one user's count, and guest sessions.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use serde::Deserialize;

use super::ApiError;
use crate::auth::IssuedToken;
use crate::counter::leaderboard::{self, Ranked};
use crate::refusal::{Code, ErrorBody};
use crate::state::AppState;
use crate::user::Username;

/// Largest `limit` accepted by `/api/leaderboard`.
pub const MAX_LIMIT: usize = crate::counter::ranking::TOP;
const DEFAULT_LIMIT: usize = 10;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LeaderboardQuery {
    /// How many users, 1 to 100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<usize>,
}

/// `GET /api/leaderboard?limit=N`: the top N users (default 10, at most 100).
#[utoipa::path(
    get,
    path = "/api/leaderboard",
    tag = "counts",
    params(LeaderboardQuery),
    responses(
        (status = 200, description = "The best users, best first", body = Vec<Ranked>),
        (status = 400, description = "`bad_request`: `limit` out of range", body = ErrorBody),
    )
)]
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
#[utoipa::path(
    get,
    path = "/api/users/{username}",
    tag = "counts",
    params(("username" = Username, Path, description = "A username")),
    responses(
        (status = 200, description = "The user's count and rank", body = Ranked),
        (status = 404, description = "`unknown_user`: nobody by that name ever clicked", body = ErrorBody),
        (status = 422, description = "`invalid_username`", body = ErrorBody),
    )
)]
pub async fn user(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<Ranked>, ApiError> {
    let Ok(Path(name)) = name else {
        return Err(ApiError::invalid_username());
    };
    let name = Username::parse(&name).map_err(|_| ApiError::invalid_username())?;
    leaderboard::rank_of(&state.counters, &name)
        .map(Json)
        .ok_or_else(|| Code::UnknownUser.with("no such user").into())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SessionRequest {
    /// 1 to 32 of `A-Z a-z 0-9 _ . -`.
    #[schema(pattern = r"^[A-Za-z0-9_.-]{1,32}$")]
    username: String,
}

/// `POST /api/session {"username"}`: a short-lived token for that name, when
/// guest login is on.
#[utoipa::path(
    post,
    path = "/api/session",
    tag = "sessions",
    request_body = SessionRequest,
    responses(
        (status = 200, description = "A token for that name, valid for `--token-ttl`", body = IssuedToken),
        (status = 400, description = "`bad_request`: not the JSON body expected", body = ErrorBody),
        (status = 403, description = "`guest_login_disabled`", body = ErrorBody),
        (status = 413, description = "`too_large`: over 64 KiB", body = ErrorBody),
        (status = 422, description = "`invalid_username`", body = ErrorBody),
    )
)]
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
