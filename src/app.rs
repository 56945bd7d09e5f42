//! Building, running and stopping the server.
//!
//! [`App::build`] does everything that can fail at start (open and migrate
//! the store, load the counts, bind the port) so errors surface before the
//! server reports itself ready. [`App::run_until`] serves until a shutdown
//! future completes, then stops in the order that loses nothing: stop
//! accepting, close every socket, publish the last total, flush the counts.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
use socketioxide::{SocketIo, TransportType};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::compression::CompressionLayer;
use tower_http::trace::TraceLayer;

use crate::auth::{Auth, Tokens};
use crate::config::{Config, ConfigError, Transport};
use crate::counter::coalesce::Pacing;
use crate::counter::leaderboard::LiveLeaderboard;
use crate::counter::{self, Counters};
use crate::http::{self, OriginPolicy};
use crate::realtime::{self, connections::Connections};
use crate::state::AppState;
use crate::store::{self, Store, StoreError};

/// How long open connections get to finish after the shutdown signal before
/// the final flush goes ahead without them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes read from a WebSocket per system call.
const WS_READ_BUFFER: usize = 1024;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("could not open the store: {0}")]
    Store(#[from] StoreError),
    #[error("could not listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error(transparent)]
    FinalFlush(#[from] counter::flush::FinalFlushError),
    #[error("a background task panicked: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A server that is bound and ready to run.
pub struct App {
    listener: TcpListener,
    router: Router,
    io: SocketIo,
    state: AppState,
    flush_interval: Duration,
    leaderboard_interval: Duration,
    broadcast_budget: Duration,
}

impl App {
    /// Opens the store named in `config` and builds the server on it.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        config.validate()?;
        let store = store::connect(&config.database_url).await?;
        Self::build_with_store(config, store).await
    }

    /// Builds the server on a store the caller provides (tests use this to
    /// inject failures).
    pub async fn build_with_store(
        config: Config,
        store: Arc<dyn Store>,
    ) -> Result<Self, StartError> {
        config.validate()?;
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
        let state = AppState {
            leaderboard: Arc::new(LiveLeaderboard::new(&counters)),
            counters,
            store,
            auth: Arc::new(auth),
            broadcast_interval: config.broadcast_interval,
            connections: Connections::default(),
        };

        let (socket_layer, io) = socket_io_builder(&config)
            .with_state(state.clone())
            .build_layer();
        realtime::register(&io);

        let policy = OriginPolicy::new(&config.allowed_origins);
        // Compression wraps the page and API routes only: Socket.IO traffic is
        // handled by its own layer outside it and never buffered by it.
        let mut router = http::routes()
            .with_state(state.clone())
            .layer(CompressionLayer::new())
            .layer(socket_layer)
            // Outside the Socket.IO layer, so engine.io stores the copy.
            .layer(axum::middleware::map_request(
                realtime::detach::own_request_head,
            ));
        if let Some(cors) = policy.cors() {
            router = router.layer(cors);
        }
        let router = router
            .layer(axum::middleware::from_fn_with_state(
                policy,
                http::origin_check,
            ))
            .layer(TraceLayer::new_for_http());

        let listener = TcpListener::bind(config.addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.addr,
                source,
            })?;

        Ok(App {
            listener,
            router,
            io,
            state,
            flush_interval: config.flush_interval,
            leaderboard_interval: config.leaderboard_interval,
            broadcast_budget: config.broadcast_budget,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    /// The shared state, for embedding and tests.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then shuts down without losing a click.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), RunError> {
        let addr = self.local_addr();
        let App {
            listener,
            router,
            io,
            state,
            flush_interval,
            leaderboard_interval,
            broadcast_budget,
        } = self;

        let stop_flushing = CancellationToken::new();
        let flusher = tokio::spawn(counter::flush::run(
            state.counters.clone(),
            state.store.clone(),
            flush_interval,
            stop_flushing.clone(),
        ));
        let stop_publishing = CancellationToken::new();
        let coalescer = (!state.broadcast_interval.is_zero()).then(|| {
            let io = io.clone();
            let connections = state.connections.clone();
            tokio::spawn(counter::coalesce::run(
                state.counters.clone(),
                Pacing {
                    interval: state.broadcast_interval,
                    per_recipient: broadcast_budget,
                },
                move || connections.current(),
                stop_publishing.clone(),
                move |changed| {
                    let io = io.clone();
                    async move { realtime::publish(&io, &changed).await }
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
                move |top| {
                    let io = io.clone();
                    async move { realtime::publish_leaderboard(&io, &top).await }
                }
            },
        ));

        let stop = CancellationToken::new();
        tokio::spawn({
            let stop = stop.clone();
            async move {
                shutdown.await;
                stop.cancel();
            }
        });

        tracing::info!("listening on http://{addr}");
        // Every frame tally writes is small and wanted now: without
        // TCP_NODELAY, Nagle's algorithm holds a frame back until the previous
        // one is acknowledged, which the benchmarks showed as 40–70 ms tails.
        let listener = listener.tap_io(|tcp| {
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::debug!(error = %err, "cannot set TCP_NODELAY");
            }
        });
        let server = axum::serve(listener, router)
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future();
        // Sockets are closed as soon as the signal arrives: WebSocket
        // connections are no longer tracked by the HTTP server once upgraded,
        // and long-polling requests would otherwise hold the drain open. The
        // last coalesced total goes out first, while the sockets are still there.
        let close_sockets = async {
            stop.cancelled().await;
            tracing::info!("shutting down: closing connections");
            stop_publishing.cancel();
            let published = match coalescer {
                Some(coalescer) => coalescer.await,
                None => Ok(()),
            };
            let published = published.and(leaderboard.await);
            io.close().await;
            published
        };
        let drained = async { tokio::join!(server, close_sockets) };
        tokio::pin!(drained);
        let (served, published) = tokio::select! {
            results = &mut drained => results,
            () = async { stop.cancelled().await; tokio::time::sleep(DRAIN_TIMEOUT).await } => {
                tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; flushing anyway");
                (Ok(()), Ok(()))
            }
        };

        // Whatever happened above, the counts are flushed before reporting it.
        stop_flushing.cancel();
        let flushed = flusher.await?;
        served.map_err(RunError::Serve)?;
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

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
