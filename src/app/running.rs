//! [`Running`]: tally's background tasks, running, and the shutdown that
//! stops them in the order that loses nothing.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{RECONNECT_AFTER, RunError};
use crate::bus::SocketIo;
use crate::cluster::{Cluster, Tasks as ClusterTasks};
use crate::config::ServingConfig;
use crate::events::{SERVER_SHUTDOWN, ServerShutdown};
use crate::persist::flush::FinalFlushError;
use crate::server::HttpOptions;
use crate::server::bytes::ByteCounts;
use crate::state::AppState;

/// How long shutdown waits for the final totals to reach Redis.
const CLUSTER_GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long shutdown waits for the webhook to deliver what is queued.
const WEBHOOK_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// tally's background tasks, running. Dropping it leaves them running until
/// the runtime ends, and whatever was not flushed is lost: call
/// [`Running::shutdown`].
#[must_use = "call `shutdown` when the host stops, or the last clicks are lost"]
pub struct Running {
    pub(super) state: AppState,
    pub(super) io: SocketIo,
    /// In cluster mode, this node's part and its tasks.
    pub(super) cluster: Option<(Cluster, ClusterTasks)>,
    pub(super) stops: Stops,
    pub(super) tasks: Tasks,
    pub(super) serving: ServingConfig,
}

/// The signals that end the background tasks, one per stage of shutdown.
pub(super) struct Stops {
    /// The coalescer and the leaderboard publish once more and end.
    pub publishing: CancellationToken,
    /// The flusher writes what is left and ends.
    pub flushing: CancellationToken,
    /// The message writer stores what is queued, and retention ends.
    pub messages: CancellationToken,
}

/// The background tasks.
pub(super) struct Tasks {
    /// `None` with `--broadcast-interval 0`: handlers publish.
    pub coalescer: Option<JoinHandle<()>>,
    pub leaderboard: JoinHandle<()>,
    pub flusher: JoinHandle<Result<(), FinalFlushError>>,
    pub message_writer: JoinHandle<()>,
    pub webhook: Option<JoinHandle<()>>,
    pub retention: Option<JoinHandle<()>>,
    pub housekeeping: JoinHandle<()>,
    pub health_check: JoinHandle<()>,
}

impl Running {
    /// `--shutdown-timeout`: how long closing the sockets, and then the
    /// HTTP server's requests, may take.
    pub fn shutdown_timeout(&self) -> Duration {
        self.serving.shutdown_timeout
    }

    /// Where [`crate::serve()`] counts the bytes of its connections, for the
    /// Admin UI (with `--admin`).
    pub fn byte_counts(&self) -> Option<ByteCounts> {
        self.state.admin.as_ref().map(|admin| admin.byte_counts())
    }

    /// How [`crate::serve()`] serves each connection: `--header-read-timeout`,
    /// `--send-timeout` (counted in the metrics), and the byte counts of the
    /// Admin UI.
    pub fn http_options(&self) -> HttpOptions {
        HttpOptions {
            header_read_timeout: self.serving.header_read_timeout,
            send_timeout: self.serving.send_timeout,
            send_timeouts: Some(self.state.metrics.send_timeouts()),
            byte_counts: self.byte_counts(),
        }
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
    ///    `shutting_down` error and not counted; so is a chat message (from
    ///    the very start), and the messages already queued are stored and
    ///    answered, for at most `--shutdown-timeout` (the rest are refused);
    /// 2. the coalescer and the leaderboard task publish the last totals,
    ///    which now include every counted click, while every socket is still
    ///    open to receive them;
    /// 3. every socket is closed (long-polling requests end with them, so a
    ///    host's HTTP server can drain), by the same `--shutdown-timeout`
    ///    deadline as step 1;
    /// 4. the final flush writes every remaining increment, retried a few
    ///    times; if it still fails, the error says how many clicks are lost;
    /// 5. in a cluster, the other nodes are sent the final totals and this
    ///    node's goodbye (its sockets leave presence at once);
    /// 6. the webhook gets up to 5 s to deliver the messages it has queued.
    ///
    /// Call it when the host's shutdown signal arrives, alongside the HTTP
    /// server's own graceful shutdown (or let [`crate::serve()`] do both).
    pub async fn shutdown(self) -> Result<(), RunError> {
        let Running {
            state,
            io,
            cluster,
            stops,
            tasks,
            serving,
        } = self;
        tasks.housekeeping.abort();
        // From the first moment, a new message is refused `shutting_down`.
        state.messages.close();
        // Storing the queued messages and closing the sockets share this.
        let deadline = tokio::time::Instant::now() + serving.shutdown_timeout;
        tracing::info!("shutting down: publishing the last totals and closing connections");
        // Not ready from now on: `/readyz` answers 503 and new Socket.IO
        // connections are refused, while the connected clients are told to
        // come back (to this server once restarted, or to another).
        state.draining.store(true, Ordering::SeqCst);
        if let Some(everyone) = io.of("/") {
            let notice = ServerShutdown {
                reconnect_after_ms: RECONNECT_AFTER.as_millis() as u64,
            };
            // This node's clients only: the other nodes stay up.
            everyone.local().emit(SERVER_SHUTDOWN, &notice).await.ok();
        }
        // From here on no click is counted, so the last broadcasts carry the
        // final totals and the final flush holds every acknowledged click.
        state.counters.close();
        // Likewise no new message is taken; the queued ones are stored and
        // answered (and sent to their rooms) while sockets are open.
        stops.messages.cancel();
        let messages_stored = tasks.message_writer.await;
        if let Some(retention) = tasks.retention {
            retention.await.ok();
        }
        stops.publishing.cancel();
        let published = match tasks.coalescer {
            Some(coalescer) => coalescer.await,
            None => Ok(()),
        };
        let published = published.and(tasks.leaderboard.await);

        let shutdown_timeout = serving.shutdown_timeout;
        if tokio::time::timeout_at(deadline, io.close()).await.is_err() {
            tracing::warn!("sockets still closing after {shutdown_timeout:?}; flushing anyway");
        }
        if let Some(admin) = &state.admin {
            admin.detach();
        }
        stops.flushing.cancel();
        let flushed = tasks.flusher.await;
        // Durable clicks still waiting to be stored will not be: they end
        // now rather than wait on a store nobody writes to any more.
        state.counters.stored().finish();
        let flushed = flushed?;
        // The other nodes hear the final totals and that this node's
        // sockets are gone.
        if let Some((cluster, tasks)) = cluster {
            tasks
                .stop(&cluster, &state.counters, CLUSTER_GOODBYE_TIMEOUT)
                .await;
        }
        // Checked until the last write, so `/healthz` told the truth during
        // the whole drain.
        tasks.health_check.abort();
        // The writer has ended, so the webhook's queue is closed: it ends
        // once what is queued is delivered, or is cut short.
        if let Some(mut webhook) = tasks.webhook
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
