//! The HTTP/1.1 server loop: axum's `serve` plus what it lacks, a header
//! read timeout (slowloris), `TCP_NODELAY` on every connection, the peer's
//! address for every request, and a graceful stop.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::serve::{ListenerExt, TapIo};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::bytes::{ByteCounts, Counted};
use super::send::SendTimeout;

/// How each connection is served.
#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    /// How long a client may take to send its request headers.
    pub header_read_timeout: Duration,
    /// How long a write may wait for the client to read ([`SendTimeout`]);
    /// zero for no bound.
    pub send_timeout: Duration,
    /// Counted each time a connection is ended by `send_timeout`.
    pub send_timeouts: Option<metrics::Counter>,
    /// Where to add up the bytes in and out, if anywhere.
    pub byte_counts: Option<ByteCounts>,
}

/// The HTTP/1.1 server: accepts on `listener` and serves `router` on every
/// connection until `stop`, then asks each open connection to finish the
/// request it is on and close, and returns once they all have.
///
/// This is axum's `serve` loop plus what it lacks: a header read timeout
/// (slowloris), which hyper only enforces when it is given a timer, and a
/// bound on writes the client never reads.
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    options: HttpOptions,
    stop: CancellationToken,
) {
    let HttpOptions {
        header_read_timeout,
        send_timeout,
        send_timeouts,
        byte_counts,
    } = options;
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
        let tcp = SendTimeout::new(tcp, send_timeout, send_timeouts.clone());
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
/// that serve tally with `axum::serve` (`tally::serve::serve` does it itself). Every
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
