//! The standalone server behind `tally serve`: a [`Tally`] on its own
//! listener, stopped by a signal.
//!
//! It uses only the public embedding API ([`Tally::router`],
//! [`Tally::start`], [`serve`]), so the server `tally serve` runs and the one
//! a host application mounts are assembled and stopped the same way.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use tower::ServiceExt;

use axum::serve::{ListenerExt, TapIo};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use axum::Router;

use crate::admin::bytes::{ByteCounts, Counted};
use crate::app::{RunError, Running, StartError, Tally, TallyBuilder};
use crate::config::Config;
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
        let router = tally.router().layer(TraceLayer::new_for_http());
        let metrics_router = tally.metrics();
        let stop = CancellationToken::new();
        let running = tally.start();
        if let Some(metrics) = metrics {
            let addr = metrics.local_addr().map_err(RunError::Serve)?;
            tracing::info!("metrics on http://{addr}/metrics");
            // The same loop as the main address, header timeout included.
            tokio::spawn(serve_http(
                metrics,
                metrics_router,
                running.header_read_timeout(),
                None,
                stop.clone(),
            ));
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

/// Serves `router` — a host's app with tally mounted in it, or tally's own
/// router — on `listener` until `shutdown` completes, then stops in order:
/// tally drains first while HTTP is still served (`/readyz` answers 503,
/// new Socket.IO connections are refused, clients are told
/// `server_shutdown`, the last totals are published, sockets are closed,
/// what is left is written), then the HTTP server stops accepting and gets
/// at most `--shutdown-timeout` to finish its requests. Logs
/// `listening on http://…` first. Returns tally's shutdown's result, after
/// the counts were flushed.
///
/// Each connection is HTTP/1.1 with upgrades (WebSocket), `TCP_NODELAY`
/// (see [`nodelay`]), the peer's address as axum's
/// `ConnectInfo<SocketAddr>`, and `--header-read-timeout` for its request
/// headers.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    running: Running,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let addr = listener.local_addr().map_err(RunError::Serve)?;
    let drain_timeout = running.shutdown_timeout();
    let header_read_timeout = running.header_read_timeout();
    let byte_counts = running.byte_counts();
    // `stop` starts tally's shutdown; `stop_http` ends HTTP once it is done.
    let stop = CancellationToken::new();
    let stop_http = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown.await;
            stop.cancel();
        }
    });

    tracing::info!("listening on http://{addr}");
    // The accept loop runs as a task of its own, never in the caller's
    // future: `main` awaits this on the thread that started the runtime,
    // which is not one of its workers, and a task spawned from outside the
    // workers joins the back of the shared queue. Under a broadcast to
    // thousands of sockets that queue holds one writer per socket, so every
    // new connection (a health check too) waited for the whole broadcast:
    // 80 ms at 5,000 sockets. Spawned from a worker, it runs next. The
    // handle aborts it when dropped, so a caller that drops this future
    // (a host's `select!`, a test) still frees the port.
    let mut server = AbortOnDropHandle::new(tokio::spawn(serve_http(
        listener,
        router,
        header_read_timeout,
        byte_counts,
        stop_http.clone(),
    )));
    let served = async {
        let ended = tokio::select! {
            ended = &mut server => ended,
            () = async { stop_http.cancelled().await; tokio::time::sleep(drain_timeout).await } => {
                server.abort();
                tracing::warn!("HTTP requests still open after {drain_timeout:?}; not waiting for them");
                Ok(())
            }
        };
        stop.cancel();
        ended
    };
    let stopped = async {
        stop.cancelled().await;
        let stopped = running.shutdown().await;
        stop_http.cancel();
        stopped
    };
    let (served, stopped) = tokio::join!(served, stopped);
    // Clicks that could not be stored matter most; then an accept loop that
    // panicked (after tally has shut down in order all the same).
    stopped?;
    served.map_err(RunError::Task)
}

/// The listen backlog asked for; the kernel caps it at
/// `net.core.somaxconn` (4,096 by default since Linux 5.4). tokio's
/// `TcpListener::bind` asks for 1,024. When thousands of clients connect at
/// once (a deploy, a network blip) a full queue makes the kernel drop their
/// SYNs, and a client, or a load balancer's health check, retries only
/// after a second.
const LISTEN_BACKLOG: u32 = 65_535;

/// Binds and listens on `addr` with [`LISTEN_BACKLOG`].
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted server binds its port even
    // while the last one's connections linger in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The HTTP/1.1 server: accepts on `listener` and serves `router` on every
/// connection until `stop`, then asks each open connection to finish the
/// request it is on and close, and returns once they all have.
///
/// This is axum's `serve` loop plus what it lacks: a header read timeout
/// (slowloris), which hyper only enforces when it is given a timer.
async fn serve_http(
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    byte_counts: Option<ByteCounts>,
    stop: CancellationToken,
) {
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    accept_failed(err).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        set_nodelay(&tcp);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request)
        });
        let stop = stop.clone();
        let byte_counts = byte_counts.clone();
        connections.spawn(async move {
            let mut http = http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            // Both arms serve the same way; only the stream's type differs.
            match byte_counts {
                Some(counts) => {
                    let io = TokioIo::new(Counted::new(tcp, counts));
                    drive(
                        http.serve_connection(io, service).with_upgrades(),
                        &stop,
                        peer,
                    )
                    .await;
                }
                None => {
                    let io = TokioIo::new(tcp);
                    drive(
                        http.serve_connection(io, service).with_upgrades(),
                        &stop,
                        peer,
                    )
                    .await;
                }
            }
        });
    }
    // Closed at once, so new clients are refused (and a load balancer
    // moves on) while the open connections finish.
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Serves one connection until it ends, or until `stop`, then lets it
/// finish its request and close.
async fn drive<I, S>(
    connection: http1::UpgradeableConnection<I, S>,
    stop: &CancellationToken,
    peer: SocketAddr,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    // Timeouts and clients that hang up are routine, not errors.
    if let Err(err) = served {
        tracing::trace!(%peer, error = %err, "HTTP connection ended");
    }
}

/// What to do when `accept` fails. A connection that died before it was
/// accepted concerns only its client; anything else (out of file
/// descriptors, above all) would fail again at once, so the loop pauses
/// instead of spinning.
async fn accept_failed(err: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        err.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %err, "cannot accept connections; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Sets `TCP_NODELAY` on every connection `listener` accepts, for hosts
/// that serve tally with `axum::serve` ([`serve`] does it itself). Every
/// frame tally writes is small and wanted now: without it, Nagle's
/// algorithm holds a frame back until the previous one is acknowledged,
/// which the benchmarks showed as 40–70 ms tails.
pub fn nodelay(listener: TcpListener) -> TapIo<TcpListener, fn(&mut TcpStream)> {
    // A function pointer rather than a closure, so the listener's type can
    // be named and axum's `ConnectInfo<SocketAddr>` works on it.
    fn tap(tcp: &mut TcpStream) {
        set_nodelay(tcp);
    }
    listener.tap_io(tap)
}

fn set_nodelay(tcp: &TcpStream) {
    if let Err(err) = tcp.set_nodelay(true) {
        tracing::debug!(error = %err, "cannot set TCP_NODELAY");
    }
}

/// Descriptors that are not connections: the database pool, the listeners,
/// logs, the runtime's own.
const FD_RESERVE: u64 = 100;

/// Raises this process's soft limit on open files to its hard limit (each
/// connection is one), logs how many connections that leaves room for, and
/// warns when it is fewer than `--max-connections` allows (or, with no cap,
/// fewer than 65,536): the operator then has to raise the hard limit
/// (`ulimit -Hn`, systemd's `LimitNOFILE=`), which a process cannot.
fn raise_fd_limit(max_connections: usize) {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(err) => {
            tracing::warn!(error = %err, "cannot raise the open-file limit");
            return;
        }
    };
    let room = limit.saturating_sub(FD_RESERVE);
    let wanted = match max_connections {
        0 => 65_536,
        cap => cap as u64,
    };
    if room < wanted {
        tracing::warn!(
            open_files = limit,
            "the open-file limit of {limit} leaves room for about {room} connections; \
             raise the hard limit (ulimit -Hn, LimitNOFILE=) to hold more"
        );
    } else {
        tracing::info!(open_files = limit, "room for about {room} connections");
    }
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed
/// when this is called, not when the future is first polled: a signal that
/// arrives between the server saying it listens and the first poll of a
/// task would otherwise kill the process instead of stopping it in order.
/// Call it inside the runtime, before serving.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        let install = |kind: SignalKind, name: &'static str| match signal(kind) {
            Ok(signal) => Some(signal),
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for {name}");
                None
            }
        };
        (
            install(SignalKind::interrupt(), "Ctrl-C"),
            install(SignalKind::terminate(), "SIGTERM"),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (interrupt, terminate) = signals;
            tokio::select! {
                () = received(interrupt) => {}
                () = received(terminate) => {}
            }
        }
        #[cfg(not(unix))]
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    }
}

/// Completes when `signal` arrives; never, if it could not be installed.
#[cfg(unix)]
async fn received(signal: Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(mut signal) => {
            signal.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}
