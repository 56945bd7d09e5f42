//! The official Socket.IO Admin UI at `/admin/` (with `--admin`): the
//! files of the npm package `@socket.io/admin-ui`, with its fonts and icons
//! from their npm packages instead of public CDNs and a script that points
//! the UI at this server, assembled by `web/build.mjs` and embedded by
//! `build.rs`. The UI talks to the namespace `/admin` ([`crate::admin`]).

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::Router;
use axum::extract::{OriginalUri, Path};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use super::ApiError;
use super::assets::Asset;
use crate::state::AppState;

/// The UI's Content-Security-Policy: like the page's, except that its
/// framework (Vuetify) writes its theme into a `<style>` element at run
/// time, so inline styles are allowed. Scripts are still only its own
/// files.
pub const ADMIN_UI_CSP: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; \
     connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Path under `/admin/`, content type, bytes.
static FILES: &[(&str, &str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/admin_ui.rs"));

/// The files by path, each hashed once, at the first request: the UI's
/// scripts are too large for the compiler's constant evaluation.
static ASSETS: LazyLock<HashMap<&'static str, Asset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|(path, content_type, body)| (*path, Asset::bytes(content_type, body)))
        .collect()
});

/// `/admin`, `/admin/` and the UI's files.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin", get(index))
        .route("/admin/", get(index))
        .route("/admin/{*path}", get(file))
}

/// The UI loads its files relatively, so it must be served from `/admin/`.
async fn index(OriginalUri(uri): OriginalUri, request: HeaderMap) -> Response {
    if !uri.path().ends_with('/') {
        return Redirect::permanent(&format!("{}/", uri.path())).into_response();
    }
    file(Path("index.html".to_string()), request).await
}

async fn file(Path(path): Path<String>, request: HeaderMap) -> Response {
    match ASSETS.get(path.as_str()) {
        Some(asset) => asset.respond(&request),
        None => ApiError::not_found().into_response(),
    }
}
