//! Assembling tally from its parts: one way for `tally serve` and for a host
//! application that mounts tally beside its own routes.
//!
//! [`Tally::builder`] does everything that can fail at start (open and
//! migrate the store, load the counts) and returns a [`Tally`]: the Socket.IO
//! routes, the API, the page and `/healthz` as axum routers a host mounts
//! where it likes ([`Tally::router`] for all of them). [`Tally::start`] then
//! spawns the background tasks (coalescer, leaderboard, flusher) and returns
//! [`Running`], whose [`Running::shutdown`] stops in the order that loses
//! nothing: stop counting, publish the last totals while sockets are still
//! open, close every socket, write what is left.
//!
//! The standalone server ([`crate::serve::App`]) is this plus a listener.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::routing::{MethodRouter, any};
use socketioxide::service::SocketIoService;
use socketioxide::{SocketIo, TransportType};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::Layer;
use tower_http::compression::CompressionLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;

use crate::admin::{Admin, AdminOptions, Credentials};
use crate::auth::{Auth, Tokens};
use crate::config::{Config, ConfigError, Transport};
use crate::conversation::log::{self as message_log, MessageLog};
use crate::conversation::retention;
use crate::conversation::webhook::{self, Outbox, WebhookConfig, WebhookQueue};
use crate::counter::coalesce::Pacing;
use crate::counter::flush::FinalFlushError;
use crate::counter::leaderboard::LiveLeaderboard;
use crate::counter::{self, Counters};
use crate::health;
use crate::http::{self, OriginPolicy};
use crate::identity::{DynIdentityProvider, IdentityProvider};
use crate::metrics::Metrics;
use crate::realtime::{self, connections::Connections};
use crate::state::AppState;
use crate::store::{self, Store, StoreError};

/// How long clients are asked to wait before reconnecting after
/// `server_shutdown` (they add up to as much again at random, so a restart
/// does not bring every client back in the same instant).
pub const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// Longest an HTTP request outside Socket.IO may take (long-polling holds
/// its requests open on purpose and is not limited by this).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How often histogram samples are folded into their buckets between
/// scrapes.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// How long shutdown waits for the webhook to deliver what is queued.
const WEBHOOK_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes read from a WebSocket per system call.
const WS_READ_BUFFER: usize = 1024;

/// Why tally could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("could not open the store: {0}")]
    Store(#[from] StoreError),
    #[error("could not listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Why tally stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error(transparent)]
    FinalFlush(#[from] FinalFlushError),
    #[error("a background task panicked: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Options for building a [`Tally`] beyond its [`Config`].
#[must_use = "a builder does nothing until `build` is awaited"]
pub struct TallyBuilder {
    config: Config,
    store: Option<Arc<dyn Store>>,
    identity: Option<Arc<dyn DynIdentityProvider>>,
}

impl TallyBuilder {
    /// Uses this store instead of connecting to `config.database_url` (tests
    /// use it to inject failures; hosts can share a store they built).
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Lets the host decide who each Socket.IO connection belongs to, instead
    /// of tally's token or username rule (see [`crate::identity`]).
    pub fn identity(mut self, provider: impl IdentityProvider) -> Self {
        self.identity = Some(Arc::new(provider));
        self
    }

    /// Checks the configuration, opens and migrates the store, loads the
    /// counts, and assembles the routes.
    pub async fn build(self) -> Result<Tally, StartError> {
        let TallyBuilder {
            config,
            store,
            identity,
        } = self;
        config.validate()?;
        let store = match store {
            Some(store) => store,
            None => store::connect(&config.database_url, &config.store_options()).await?,
        };
        let counters = Arc::new(Counters::from_totals(store.load().await?));
        tracing::info!(
            backend = store.backend(),
            total = counters.global().total(),
            "store ready"
        );
        let secret = match &config.jwt_secret {
            Some(secret) => secret.0.as_bytes().to_vec(),
            None => Tokens::random_secret(),
        };
        let auth = Auth {
            mode: config.auth,
            tokens: Tokens::new(&secret, config.token_ttl),
            guest_login: config.guest_login(),
        };
        let (messages, message_queue) = MessageLog::new();
        let webhook = match (&config.message_webhook, &config.webhook_secret) {
            (Some(url), Some(secret)) => {
                let (queue, outbox) = WebhookQueue::new();
                let config = WebhookConfig {
                    url: url.clone(),
                    secret: secret.0.clone(),
                    retry: webhook::Retry::default(),
                    timeout: Duration::from_secs(10),
                };
                Some((queue, outbox, config))
            }
            _ => None,
        };
        let state = AppState {
            leaderboard: Arc::new(LiveLeaderboard::new(&counters)),
            counters,
            store,
            store_health: Default::default(),
            auth: Arc::new(auth),
            identity,
            broadcast_interval: config.broadcast_interval,
            durable: config.flush_interval.is_zero(),
            connections: Connections::default(),
            messages,
            metrics: Metrics::new(),
            draining: Default::default(),
            history_size: config.history_size as usize,
            api_key: config.api_key.as_ref().map(|key| Arc::from(key.0.as_str())),
            admin_token: config
                .admin_token
                .as_ref()
                .map(|token| Arc::from(token.0.as_str())),
            rate: Default::default(),
            admin: config.admin.then(|| {
                Admin::new(AdminOptions {
                    mode: config.admin_mode,
                    readonly: config.admin_readonly,
                    credentials: config.admin_password_hash.as_ref().map(|hash| Credentials {
                        user: config.admin_user.clone(),
                        password_hash: hash.0.clone(),
                    }),
                    session_ttl: config.admin_session_ttl,
                })
            }),
            limits: Arc::new(config.limits()),
            caps: Arc::new(http::Caps {
                max_connections: config.max_connections,
                max_per_ip: config.max_connections_per_ip,
                trusted_proxies: config.trusted_proxies.clone(),
            }),
        };
        // One service for every Socket.IO route: each instance owns its own
        // table of engine.io sessions, so a second one would not know the
        // sessions the first opened.
        let (socket_layer, io) = socket_io_builder(&config)
            .with_state(state.clone())
            .build_layer();
        // The inner route is never reached on Socket.IO's path; the service
        // answers every request there itself.
        let socket_service = socket_layer.layer(any(http::not_found));
        realtime::register(&io);
        if let Some(admin) = &state.admin {
            admin.register(&io);
        }
        Ok(Tally {
            websocket: config.allows(Transport::Websocket),
            // Generous: a large flush is several statements, each of which
            // may wait up to the timeout for a lock or a connection.
            write_timeout: config.database_timeout * 6,
            policy: OriginPolicy::new(&config.allowed_origins),
            state,
            io,
            socket_service,
            flush_interval: config.flush_interval,
            leaderboard_interval: config.leaderboard_interval,
            broadcast_budget: config.broadcast_budget,
            health_check: (config.health_check_interval, config.database_timeout),
            message_queue,
            webhook,
            message_retention: config.message_retention,
            metrics_addr: config.metrics_addr,
            shutdown_timeout: config.shutdown_timeout,
            header_read_timeout: config.header_read_timeout,
        })
    }
}

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
    state: AppState,
    io: SocketIo,
    socket_service: SocketIoService<MethodRouter>,
    policy: OriginPolicy,
    /// Whether WebSocket is among `--transports`.
    websocket: bool,
    /// Longest one flush's write may take before it is retried.
    write_timeout: Duration,
    flush_interval: Duration,
    leaderboard_interval: Duration,
    broadcast_budget: Duration,
    /// How often the store's health is checked, and how long a check may
    /// take.
    health_check: (Duration, Duration),
    /// Messages waiting for the writer that `start` spawns.
    message_queue: message_log::Queue,
    webhook: Option<(WebhookQueue, Outbox, WebhookConfig)>,
    message_retention: Option<Duration>,
    metrics_addr: Option<std::net::SocketAddr>,
    shutdown_timeout: Duration,
    header_read_timeout: Duration,
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
        let router = if self.metrics_addr.is_none() {
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
                async move { realtime::render_metrics(&state, &io) }
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
        self.metrics_addr
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
    /// [`REQUEST_TIMEOUT`]) and the headers that keep browsers from guessing
    /// content types or leaking the page's address.
    fn compressed(&self, routes: Router<AppState>) -> Router {
        let routes = routes
            .with_state(self.state.clone())
            .layer(CompressionLayer::new())
            .layer(axum::extract::DefaultBodyLimit::max(http::MAX_BODY))
            .layer(TimeoutLayer::with_status_code(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                REQUEST_TIMEOUT,
            ));
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
                realtime::detach::own_request_head,
            ));
        let router = if self.websocket {
            router
        } else {
            router.layer(axum::middleware::from_fn(
                realtime::upgrades::no_websocket_upgrades,
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

    /// Spawns the background tasks — the coalescer that broadcasts totals,
    /// the leaderboard task, the flusher that writes counts to the store —
    /// and hands back the handle that stops them. Take the routers first:
    /// `start` consumes `self`. Must be called inside a Tokio runtime.
    pub fn start(self) -> Running {
        let Tally {
            state,
            io,
            flush_interval,
            leaderboard_interval,
            broadcast_budget,
            health_check: (check_every, check_timeout),
            write_timeout,
            message_queue,
            webhook,
            message_retention,
            shutdown_timeout,
            header_read_timeout,
            ..
        } = self;
        let stop_messages = CancellationToken::new();
        let health_check = tokio::spawn(health::run(
            state.store_health.clone(),
            state.store.clone(),
            check_every,
            check_timeout,
        ));
        let metrics_upkeep = tokio::spawn({
            let metrics = state.metrics.clone();
            let (rate, counters) = (state.rate.clone(), state.counters.clone());
            let limits = state.limits.clone();
            let admin = state.admin.clone();
            async move {
                // Once a second: the click rate's sample; every few
                // seconds: the histograms' upkeep.
                let mut every = tokio::time::interval(Duration::from_secs(1));
                for tick in 0u64.. {
                    let at = every.tick().await;
                    rate.sample(at.into_std(), counters.global().total());
                    if let Some(admin) = &admin
                        && tick % crate::admin::STATS_EVERY.as_secs() == 0
                    {
                        admin.publish_stats();
                    }
                    if tick % METRICS_UPKEEP.as_secs() == 0 {
                        metrics.upkeep();
                        limits.forget_idle_users();
                    }
                }
            }
        });
        let (webhook_queue, webhook) = match webhook {
            Some((queue, outbox, config)) => (
                Some(queue),
                Some(tokio::spawn(webhook::deliver(config, outbox))),
            ),
            None => (None, None),
        };
        let message_writer = tokio::spawn(message_log::write(
            state.store.clone(),
            message_queue,
            webhook_queue,
            write_timeout,
            stop_messages.clone(),
            state.metrics.clone(),
            {
                let io = io.clone();
                move |messages| {
                    let io = io.clone();
                    async move { realtime::conversations::broadcast(&io, &messages).await }
                }
            },
        ));
        let retention = message_retention.map(|retention| {
            tokio::spawn(retention::run(
                state.store.clone(),
                retention,
                stop_messages.clone(),
            ))
        });
        let stop_flushing = CancellationToken::new();
        let flusher = tokio::spawn(
            counter::flush::Flusher::new(
                state.counters.clone(),
                state.store.clone(),
                write_timeout,
            )
            .with_metrics(state.metrics.clone())
            .run(flush_interval, stop_flushing.clone()),
        );
        let stop_publishing = CancellationToken::new();
        // With a zero interval every click is published by its handler.
        let coalescer = (!state.broadcast_interval.is_zero()).then(|| {
            let io = io.clone();
            let connections = state.connections.clone();
            let publisher = state.clone();
            tokio::spawn(counter::coalesce::run(
                state.counters.clone(),
                Pacing {
                    interval: state.broadcast_interval,
                    per_recipient: broadcast_budget,
                },
                move || connections.current(),
                stop_publishing.clone(),
                move |changes| {
                    let io = io.clone();
                    let state = publisher.clone();
                    async move { realtime::publish(&io, &changes, &state).await }
                },
            ))
        });
        let leaderboard = tokio::spawn(counter::leaderboard::run(
            state.counters.clone(),
            state.leaderboard.clone(),
            leaderboard_interval,
            stop_publishing.clone(),
            {
                let io = io.clone();
                let connections = state.connections.clone();
                move |top| {
                    let io = io.clone();
                    let audience = connections.current();
                    async move { realtime::publish_leaderboard(&io, &top, audience).await }
                }
            },
        ));
        Running {
            state,
            io,
            stop_publishing,
            stop_flushing,
            stop_messages,
            coalescer,
            leaderboard,
            flusher,
            message_writer,
            webhook,
            retention,
            metrics_upkeep,
            health_check,
            shutdown_timeout,
            header_read_timeout,
        }
    }
}

/// tally's background tasks, running. Dropping it leaves them running until
/// the runtime ends, and whatever was not flushed is lost: call
/// [`Running::shutdown`].
#[must_use = "call `shutdown` when the host stops, or the last clicks are lost"]
pub struct Running {
    state: AppState,
    io: SocketIo,
    stop_publishing: CancellationToken,
    stop_flushing: CancellationToken,
    stop_messages: CancellationToken,
    coalescer: Option<JoinHandle<()>>,
    leaderboard: JoinHandle<()>,
    flusher: JoinHandle<Result<(), FinalFlushError>>,
    message_writer: JoinHandle<()>,
    webhook: Option<JoinHandle<()>>,
    retention: Option<JoinHandle<()>>,
    metrics_upkeep: JoinHandle<()>,
    health_check: JoinHandle<()>,
    shutdown_timeout: Duration,
    header_read_timeout: Duration,
}

impl Running {
    /// `--shutdown-timeout`: how long closing the sockets, and then the
    /// HTTP server's requests, may take.
    pub fn shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }

    /// Where [`crate::serve()`] counts the bytes of its connections, for the
    /// Admin UI (with `--admin`).
    pub fn byte_counts(&self) -> Option<crate::admin::bytes::ByteCounts> {
        self.state.admin.as_ref().map(|admin| admin.byte_counts())
    }

    /// `--header-read-timeout`: how long [`crate::serve()`] lets a client take
    /// to send its request headers.
    pub fn header_read_timeout(&self) -> Duration {
        self.header_read_timeout
    }

    /// Sockets connected now.
    pub fn connections(&self) -> usize {
        self.state.connections.current()
    }

    /// Stops tally without losing an acknowledged click, in this order:
    ///
    /// 0. tally stops being ready: `/readyz` answers 503, new Socket.IO
    ///    connections are refused (`server shutting down`), and every
    ///    connected client gets `server_shutdown {"reconnectAfterMs"}`;
    /// 1. counting stops: a click arriving from now on is answered with a
    ///    `shutting_down` error and not counted; so is a chat message, and
    ///    the messages already queued are stored and answered;
    /// 2. the coalescer and the leaderboard task publish the last totals,
    ///    which now include every counted click, while every socket is still
    ///    open to receive them;
    /// 3. every socket is closed (long-polling requests end with them, so a
    ///    host's HTTP server can drain), waiting at most `--shutdown-timeout`;
    /// 4. the final flush writes every remaining increment, retried a few
    ///    times; if it still fails, the error says how many clicks are lost;
    /// 5. the webhook gets up to 5 s to deliver the messages it has queued.
    ///
    /// Call it when the host's shutdown signal arrives, alongside the HTTP
    /// server's own graceful shutdown (or let [`crate::serve()`] do both).
    pub async fn shutdown(self) -> Result<(), RunError> {
        let Running {
            state,
            io,
            stop_publishing,
            stop_flushing,
            stop_messages,
            coalescer,
            leaderboard,
            flusher,
            message_writer,
            webhook,
            retention,
            metrics_upkeep,
            health_check,
            shutdown_timeout,
            header_read_timeout: _,
        } = self;
        metrics_upkeep.abort();
        tracing::info!("shutting down: publishing the last totals and closing connections");
        // Not ready from now on: `/readyz` answers 503 and new Socket.IO
        // connections are refused, while the connected clients are told to
        // come back (to this server once restarted, or to another).
        state
            .draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(everyone) = io.of("/") {
            let notice = realtime::events::ServerShutdown {
                reconnect_after_ms: RECONNECT_AFTER.as_millis() as u64,
            };
            everyone
                .emit(realtime::events::SERVER_SHUTDOWN, &notice)
                .await
                .ok();
        }
        // From here on no click is counted, so the last broadcasts carry the
        // final totals and the final flush holds every acknowledged click.
        state.counters.close();
        // Likewise no new message is taken; the queued ones are stored and
        // answered (and sent to their rooms) while sockets are open.
        stop_messages.cancel();
        let messages_stored = message_writer.await;
        if let Some(retention) = retention {
            retention.await.ok();
        }
        stop_publishing.cancel();
        let published = match coalescer {
            Some(coalescer) => coalescer.await,
            None => Ok(()),
        };
        let published = published.and(leaderboard.await);

        if tokio::time::timeout(shutdown_timeout, io.close())
            .await
            .is_err()
        {
            tracing::warn!("sockets still closing after {shutdown_timeout:?}; flushing anyway");
        }
        if let Some(admin) = &state.admin {
            admin.detach();
        }
        stop_flushing.cancel();
        let flushed = flusher.await;
        // Durable clicks still waiting to be stored will not be: they end
        // now rather than wait on a store nobody writes to any more.
        state.counters.finish();
        let flushed = flushed?;
        // Checked until the last write, so `/healthz` told the truth during
        // the whole drain.
        health_check.abort();
        // The writer has ended, so the webhook's queue is closed: it ends
        // once what is queued is delivered, or is cut short.
        if let Some(mut webhook) = webhook
            && tokio::time::timeout(WEBHOOK_DRAIN_TIMEOUT, &mut webhook)
                .await
                .is_err()
        {
            webhook.abort();
            tracing::warn!(
                "the webhook did not take every queued message within {WEBHOOK_DRAIN_TIMEOUT:?}; \
                 the rest are stored but were not delivered"
            );
        }
        messages_stored?;
        published?;
        flushed?;
        tracing::info!(total = state.counters.global().total(), "stopped");
        Ok(())
    }
}

fn socket_io_builder(config: &Config) -> socketioxide::SocketIoBuilder {
    let max_payload = usize::try_from(config.max_payload).unwrap_or(usize::MAX);
    let builder = SocketIo::builder()
        .ping_interval(config.ping_interval)
        .ping_timeout(config.ping_timeout)
        .max_payload(config.max_payload)
        // engine.io applies `max_payload` to polling bodies only; these make
        // WebSocket messages obey the same limit.
        .ws_max_message_size(max_payload)
        .ws_max_frame_size(max_payload)
        // Client packets are a few dozen bytes; a 1 KiB read chunk instead of
        // the default 4 KiB saved about 3 KiB of RSS per idle WebSocket
        // connection (31 → 28 KiB, 3,000 connections, measured on this
        // project's machine). Larger messages still arrive, in more reads.
        .ws_read_buffer_size(WS_READ_BUFFER);
    match (
        config.allows(Transport::Websocket),
        config.allows(Transport::Polling),
    ) {
        (true, false) => builder.transports([TransportType::Websocket]),
        (false, true) => builder.transports([TransportType::Polling]),
        _ => builder.transports([TransportType::Polling, TransportType::Websocket]),
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
