//! Serving tally, standalone or inside a host's router: [`serve`] runs an
//! HTTP server and tally's shutdown together, in the order that loses
//! nothing. The HTTP/1.1 loop itself and the operating system around it
//! (listen backlog, open-file limit, signals) are [`crate::server`]'s.

use std::future::Future;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

pub use crate::server::{nodelay, shutdown_signal};

use crate::app::{RunError, Running};
use crate::server::serve_http;

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
/// `ConnectInfo<SocketAddr>`, `--header-read-timeout` for its request
/// headers, and `--send-timeout` for a client that stops reading.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    running: Running,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let addr = listener.local_addr().map_err(RunError::Serve)?;
    let drain_timeout = running.shutdown_timeout();
    let http_options = running.http_options();
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
        http_options,
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
