//! The standalone server behind `tally serve`: a [`Tally`] on its own
//! listener, stopped by a signal.
//!
//! It uses only the public embedding API ([`Tally::router`],
//! [`Tally::start`], [`crate::serve::serve`]), so the server `tally serve`
//! runs and the one a host application mounts are assembled and stopped
//! the same way.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::app::{RunError, StartError, Tally, TallyBuilder};
use crate::config::Config;
use crate::serve::serve;
use crate::server::{HttpOptions, listen, raise_fd_limit, serve_http};
use crate::store::Store;

/// A server that is bound and ready to run.
pub struct App {
    listener: TcpListener,
    /// `--metrics-addr`'s listener, when `/metrics` is served apart.
    metrics: Option<TcpListener>,
    tally: Tally,
}

impl App {
    /// Opens the store named in `config`, builds tally on it and binds
    /// `config.addr`.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let addr = config.addr;
        Self::bind(Tally::builder(config), addr).await
    }

    /// Builds the server on a store the caller provides (tests use this to
    /// inject failures).
    pub async fn build_with_store(
        config: Config,
        store: Arc<dyn Store>,
    ) -> Result<Self, StartError> {
        let addr = config.addr;
        Self::bind(Tally::builder(config).store(store), addr).await
    }

    /// Builds tally from `builder` and binds `addr`; everything that can fail
    /// at start fails here, before the server reports itself ready.
    pub async fn bind(builder: TallyBuilder, addr: SocketAddr) -> Result<Self, StartError> {
        let tally = builder.build().await?;
        raise_fd_limit(tally.max_connections());
        let listener = listen(addr).map_err(|source| StartError::Bind { addr, source })?;
        let metrics = match tally.metrics_addr() {
            Some(addr) => Some(listen(addr).map_err(|source| StartError::Bind { addr, source })?),
            None => None,
        };
        Ok(App {
            listener,
            metrics,
            tally,
        })
    }

    /// Where `/metrics` is served when `--metrics-addr` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    /// Serves until `shutdown` completes, then shuts down without losing a
    /// click: tally stops counting, publishes the last totals, closes every
    /// socket and writes what is left while HTTP is still served, and then
    /// the HTTP server stops accepting.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), RunError> {
        let App {
            listener,
            metrics,
            tally,
        } = self;
        // The request lines name the path, never the query: a polling
        // request's `sid` is enough to speak as its socket.
        let router = tally.router().layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &axum::http::Request<_>| {
                    tracing::debug_span!(
                        target: "tally::http",
                        "request",
                        method = %request.method(),
                        path = %request.uri().path(),
                    )
                })
                .on_request(())
                .on_response(
                    |response: &axum::http::Response<_>,
                     latency: std::time::Duration,
                     _: &tracing::Span| {
                        tracing::debug!(
                            target: "tally::http",
                            status = response.status().as_u16(),
                            ?latency,
                            "response"
                        );
                    },
                ),
        );
        let metrics_router = tally.metrics();
        let stop = CancellationToken::new();
        let running = tally.start();
        if let Some(metrics) = metrics {
            let addr = metrics.local_addr().map_err(RunError::Serve)?;
            tracing::info!("metrics on http://{addr}/metrics");
            // The same loop as the main address, timeouts included (its
            // bytes are not the Admin UI's).
            let options = HttpOptions {
                byte_counts: None,
                ..running.http_options()
            };
            tokio::spawn(serve_http(metrics, metrics_router, options, stop.clone()));
        }
        tokio::spawn({
            let stop = stop.clone();
            async move {
                shutdown.await;
                stop.cancel();
            }
        });
        serve(listener, router, running, stop.cancelled_owned()).await
    }
}
