//! [`Tally`]: tally built and ready to mount, as axum routers — the page,
//! the API, the health checks, `/metrics`, the Admin UI and Socket.IO —
//! each with the layers it needs (compression, limits, safety headers,
//! the origin policy, the early cap check).

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::routing::MethodRouter;
use socketioxide::service::SocketIoService;
use tower_http::compression::CompressionLayer;
use tower_http::set_header::SetResponseHeaderLayer;

use super::builder::TallyBuilder;
use super::tasks::Background;
use crate::bus::{Adapter, SocketIo};
use crate::config::{Config, ServingConfig};
use crate::http::{self, OriginPolicy};
use crate::state::AppState;

/// tally, built and ready to mount: its routes, and the background tasks
/// that [`Tally::start`] spawns.
///
/// Every router serves its paths relative to where it is mounted, so a host
/// can put all of tally under a prefix:
///
/// ```no_run
/// # async fn host() -> Result<(), Box<dyn std::error::Error>> {
/// use axum::{Router, routing::get};
///
/// let config = tally::Config::from_env()?;
/// let tally = tally::Tally::builder(config).build().await?;
/// let app: Router = Router::new()
///     .route("/", get(|| async { "the host's own page" }))
///     // Page at /tally/, API at /tally/api/…, /tally/healthz, and
///     // Socket.IO at /tally/socket.io/.
///     .nest_service("/tally", tally.router());
/// let running = tally.start();
/// // … serve `app`; on the host's shutdown signal:
/// running.shutdown().await?;
/// # Ok(()) }
/// ```
pub struct Tally {
    pub(super) state: AppState,
    pub(super) io: SocketIo,
    pub(super) socket_service: SocketIoService<MethodRouter, Adapter>,
    pub(super) policy: OriginPolicy,
    /// Whether WebSocket is among `--transports`.
    pub(super) websocket: bool,
    /// What [`Tally::start`] needs to spawn the background tasks.
    pub(super) background: Background,
    /// `--metrics-addr`, `--shutdown-timeout`, `--header-read-timeout`.
    pub(super) serving: ServingConfig,
}

impl Tally {
    /// Starts building tally from a configuration.
    pub fn builder(config: Config) -> TallyBuilder {
        TallyBuilder {
            config,
            store: None,
            identity: None,
        }
    }

    /// Everything tally serves in one router: [`Tally::page`],
    /// [`Tally::api`], [`Tally::health`], [`Tally::socket_io`] and, unless
    /// `--metrics-addr` puts it elsewhere, [`Tally::metrics`]; and a JSON
    /// `404` for any other path. Mount it with `nest_service(prefix, …)`, or
    /// serve it as it is.
    pub fn router(&self) -> Router {
        let router = Router::new()
            .merge(self.page())
            .merge(self.api())
            .merge(self.health())
            .merge(self.socket_io());
        let router = if self.serving.metrics_addr.is_none() {
            router.merge(self.metrics())
        } else {
            router
        };
        let router = match self.admin_ui() {
            Some(admin_ui) => router.merge(admin_ui),
            None => router,
        };
        // The routes above carry the safety headers already; this gives them
        // to the JSON 404 and to Socket.IO's long-polling answers too.
        with_safety_headers(router.fallback(http::not_found))
    }

    /// `GET /metrics`: this instance's metrics in the Prometheus text format.
    pub fn metrics(&self) -> Router {
        let state = self.state.clone();
        let io = self.io.clone();
        let router = Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let (state, io) = (state.clone(), io.clone());
                async move { http::metrics::render(&state, &io) }
            }),
        );
        with_safety_headers(router).layer(axum::middleware::from_fn_with_state(
            self.state.metrics.clone(),
            http::track,
        ))
    }

    /// Where `--metrics-addr` asks `/metrics` to be served, if anywhere but
    /// the main address.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.serving.metrics_addr
    }

    /// The page and its assets: `/` (a request for the mount path without
    /// its trailing slash is redirected to it), `/app.js`, `/app.css`. The
    /// page finds the API and Socket.IO relative to its own address, so it
    /// expects [`Tally::api`] and [`Tally::socket_io`] under the same prefix.
    /// Mount it with `nest_service` or `merge`: axum's `nest` routes a nested
    /// `/` to the bare prefix only, never to `prefix/` where the page lives.
    pub fn page(&self) -> Router {
        self.compressed(http::page())
            .layer(SetResponseHeaderLayer::if_not_present(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(http::PAGE_CSP),
            ))
            .layer(SetResponseHeaderLayer::if_not_present(
                header::X_FRAME_OPTIONS,
                HeaderValue::from_static("DENY"),
            ))
    }

    /// The official Socket.IO Admin UI at `/admin/`, when `--admin` is on
    /// (its namespace `/admin` is part of [`Tally::socket_io`]).
    pub fn admin_ui(&self) -> Option<Router> {
        self.state.admin.as_ref()?;
        Some(
            self.compressed(http::admin_ui::routes())
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(http::admin_ui::ADMIN_UI_CSP),
                ))
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::X_FRAME_OPTIONS,
                    HeaderValue::from_static("DENY"),
                )),
        )
    }

    /// The JSON API: `/api/leaderboard`, `/api/users/{username}`,
    /// `/api/session`, and the backend's `/api/conversations/{id}` (read)
    /// and `/api/conversations/{id}/messages` (post) when `--api-key` is
    /// set. CORS follows `--allowed-origins`.
    pub fn api(&self) -> Router {
        let router = self
            .compressed(http::api())
            // The monitoring API lists the sockets of this instance.
            .layer(axum::Extension(self.io.clone()));
        match self.policy.cors() {
            Some(cors) => router.layer(cors),
            None => router,
        }
    }

    /// `--max-connections` (0: no cap).
    pub fn max_connections(&self) -> usize {
        self.state.caps.max_connections
    }

    /// `/healthz`: 200 while the store answers, 503 otherwise.
    pub fn health(&self) -> Router {
        self.compressed(http::health())
    }

    /// HTTP routes with tally's state, compressed when the client accepts
    /// it. (Socket.IO traffic never passes through compression.)
    ///
    /// Every such route also gets a body limit, a time limit (`408` after
    /// [`crate::http::REQUEST_TIMEOUT`], but for message posts) and the headers that keep browsers from guessing
    /// content types or leaking the page's address.
    fn compressed(&self, routes: Router<AppState>) -> Router {
        let routes = routes
            .with_state(self.state.clone())
            .layer(CompressionLayer::new())
            .layer(axum::extract::DefaultBodyLimit::max(http::MAX_BODY))
            .layer(axum::middleware::from_fn(http::time_limit));
        with_safety_headers(routes).layer(axum::middleware::from_fn_with_state(
            self.state.metrics.clone(),
            http::track,
        ))
    }

    /// Socket.IO at `/socket.io/` (WebSocket and long-polling), behind the
    /// `--allowed-origins` check.
    pub fn socket_io(&self) -> Router {
        // Clones of the one service share its sessions.
        let router = Router::new()
            .route_service("/socket.io", self.socket_service.clone())
            .route_service("/socket.io/", self.socket_service.clone())
            // Outside the Socket.IO service, so engine.io stores the copy.
            .layer(axum::middleware::map_request(
                http::detach::own_request_head,
            ));
        let router = if self.websocket {
            router
        } else {
            router.layer(axum::middleware::from_fn(
                http::upgrades::no_websocket_upgrades,
            ))
        };
        let router = router.layer(axum::middleware::from_fn_with_state(
            self.state.clone(),
            http::admit,
        ));
        let router = match self.policy.cors() {
            Some(cors) => router.layer(cors),
            None => router,
        };
        router
            .layer(axum::middleware::from_fn_with_state(
                self.policy.clone(),
                http::origin_check,
            ))
            .layer(axum::middleware::from_fn_with_state(
                self.state.metrics.clone(),
                http::track,
            ))
    }
}

/// The headers that keep browsers from guessing content types or leaking
/// the page's address, on every answer of `router` that does not set its
/// own.
fn with_safety_headers(router: Router) -> Router {
    router
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
}
