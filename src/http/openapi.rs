//! The HTTP API's OpenAPI 3.1 document, served at `/api/openapi.json`.
//!
//! It is derived, not written: each handler's `#[utoipa::path]` says its
//! route, parameters and answers next to its code, and every body's
//! schema comes from the type that is serialised (the error body from
//! [`crate::refusal::ErrorBody`], a message from its wire form). A test
//! checks that every route of [`super::api`] is in it, and CI runs
//! schemathesis against a running server to check the answers match it.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{admin, api, conversations};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tally",
        description = "The HTTP API of tally, a real-time click tracker and chat server. \
            The real-time side (clicks, conversations) speaks Socket.IO at `/socket.io/`.",
    ),
    paths(
        api::leaderboard,
        api::user,
        api::session,
        conversations::read,
        conversations::post,
        admin::connections,
        admin::stats,
        document,
    ),
    modifiers(&Schemes),
)]
pub struct ApiDoc;

/// The two bearer schemes: the backend's `--api-key` and the operator's
/// `--admin-token`.
struct Schemes;

impl Modify for Schemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, what) in [
            ("api_key", "`--api-key`, for a backend"),
            ("admin_token", "`--admin-token`, for an operator's tools"),
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(what))
                        .build(),
                ),
            );
        }
    }
}

/// `GET /api/openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json"))
)]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
