//! The one error type HTTP handlers return.
//!
//! An [`ApiError`] is a [`Refusal`] (whose [`Code`] decides the status, in
//! [`Code::status`]), a store failure or an internal fault; every answer's
//! body is `{"error": {"code", "message"}}`. Internal details are logged,
//! never sent.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::refusal::{Code, Refusal};
use crate::store::StoreError;
use crate::user::USERNAME_RULE;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request was refused; the refusal is the answer.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The store failed: `store_unavailable`, with the detail logged.
    #[error("the database is unavailable")]
    Store(#[from] StoreError),
    /// A server fault: `internal`, with the detail logged.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// `not_found`: no such route, or one switched off.
    pub fn not_found() -> Self {
        Code::NotFound.with("not found").into()
    }

    /// `unauthorized`: a missing or wrong bearer key.
    pub fn unauthorized() -> Self {
        Code::Unauthorized.with("missing or wrong API key").into()
    }

    /// `invalid_username`, saying the rule.
    pub fn invalid_username() -> Self {
        Code::InvalidUsername.with(USERNAME_RULE).into()
    }

    /// `too_large`: a body over [`super::MAX_BODY`].
    pub fn too_large() -> Self {
        Code::TooLarge
            .with(format!(
                "the request body is too large (at most {} bytes)",
                super::MAX_BODY
            ))
            .into()
    }

    /// The answer as a refusal: what the client is told.
    pub fn refusal(&self) -> Refusal {
        match self {
            ApiError::Refused(refusal) => refusal.clone(),
            ApiError::Store(_) => Code::StoreUnavailable.with(self.to_string()),
            ApiError::Internal(_) => Code::Internal.with(self.to_string()),
        }
    }

    /// The stable machine-readable code in the body.
    pub fn code(&self) -> Code {
        match self {
            ApiError::Refused(refusal) => refusal.code,
            ApiError::Store(_) => Code::StoreUnavailable,
            ApiError::Internal(_) => Code::Internal,
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.code().status()
    }

    /// The JSON body: `{"error": {"code", "message"}}`.
    pub fn body(&self) -> serde_json::Value {
        self.refusal().body()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Store(source) => {
                tracing::warn!(error = %source, "request failed: store unavailable");
            }
            ApiError::Internal(detail) => tracing::error!(%detail, "request failed"),
            ApiError::Refused(_) => {}
        }
        let body = Json(self.body());
        if self.code() == Code::Unauthorized {
            return (self.status(), [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response();
        }
        (self.status(), body).into_response()
    }
}
