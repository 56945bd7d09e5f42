//! The one error type HTTP handlers return.
//!
//! Each variant maps to a status code and a JSON body
//! `{"error": {"code", "message"}}`. Internal details are logged, never sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::StoreError;
use crate::user::USERNAME_RULE;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("origin not allowed")]
    ForbiddenOrigin,
    #[error("not found")]
    NotFound,
    #[error("no such user")]
    UnknownUser,
    #[error("{0}")]
    BadRequest(String),
    #[error("{USERNAME_RULE}")]
    InvalidUsername,
    #[error("guest login is disabled on this server")]
    GuestLoginDisabled,
    #[error("missing or wrong API key")]
    Unauthorized,
    #[error("the request body is too large (at most {} bytes)", super::MAX_BODY)]
    TooLarge,
    /// Input that parsed but breaks a rule (422), with its own code.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// A temporary refusal (503) with its own code: shutting down, a write
    /// that failed.
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    #[error("the database is unavailable")]
    StoreUnavailable(#[from] StoreError),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::ForbiddenOrigin | ApiError::GuestLoginDisabled => StatusCode::FORBIDDEN,
            ApiError::NotFound | ApiError::UnknownUser => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidUsername | ApiError::Invalid { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::StoreUnavailable(_) | ApiError::Unavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code in the body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::ForbiddenOrigin => "forbidden_origin",
            ApiError::NotFound => "not_found",
            ApiError::UnknownUser => "unknown_user",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::InvalidUsername => "invalid_username",
            ApiError::GuestLoginDisabled => "guest_login_disabled",
            ApiError::Unauthorized => "unauthorized",
            ApiError::TooLarge => "too_large",
            ApiError::Invalid { code, .. } | ApiError::Unavailable { code, .. } => code,
            ApiError::StoreUnavailable(_) => "store_unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl ApiError {
    /// The JSON body: `{"error": {"code", "message"}}`. The message never
    /// carries internal details.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"code": self.code(), "message": self.to_string()}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::StoreUnavailable(source) => {
                tracing::warn!(error = %source, "request failed: store unavailable");
            }
            ApiError::Internal(detail) => tracing::error!(%detail, "request failed"),
            _ => {}
        }
        if matches!(self, ApiError::Unauthorized) {
            return (
                self.status(),
                [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
                Json(self.body()),
            )
                .into_response();
        }
        (self.status(), Json(self.body())).into_response()
    }
}
