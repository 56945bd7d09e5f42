//! The workloads. Each takes a [`Target`](super::Target) and returns a
//! serialisable report: one JSON line for scripts.

mod capacity;
mod chat;
mod crowd;
mod fanout;
mod flood;
mod health;
mod held;
mod idle;
mod reading;
mod scale;
mod shard;
mod soak;

pub use capacity::{CapacityReport, CapacitySettings, RunError, Rung, capacity};
pub use chat::{ChatReport, chat};
pub use crowd::{CrowdReport, CrowdSettings, CrowdStep, Shards, crowd};
pub use fanout::{FanoutReport, Stalled, fanout, fanout_with};
pub use flood::{Attack, AttackReport, FloodReport, flood, flood_with};
pub use health::HealthReport;
pub use held::{HeldFlood, StepTraffic};
pub use idle::{IdleReport, idle};
pub use scale::{ScaleReport, ScaleSettings, scale};
pub use shard::{instant_of, shard};
pub use soak::{SoakReport, soak};

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::client::{Client, Incoming};
use super::micros_since;
use super::timeline::Seen;

/// One clicker and `n` listeners that read in the background until they
/// have seen `final_total` (fanout and soak share it).
pub(crate) struct Audience {
    pub clicker: Client,
    /// The total in the clicker's greeting.
    pub base: u64,
    pub start: Instant,
    pub stop: CancellationToken,
    pub final_total: watch::Sender<u64>,
    /// Each listener's index in the load, what it saw and its frames.
    pub listeners: tokio::task::JoinSet<(usize, Seen, u64)>,
}

/// Connects `n` listeners and a clicker, waits for every greeting, and
/// starts the listeners.
pub(crate) async fn audience(
    target: &super::Target,
    n: usize,
) -> Result<Audience, super::BenchError> {
    let (mut clients, _) = super::connect_all(target, n, "connecting").await?;
    let mut clicker = Client::dial(target.home(), &target.guest(n)).await?;
    let base = super::greeting(&mut clicker, target.home()).await?;
    for (i, client) in clients.iter_mut().enumerate() {
        super::greeting(client, target.url(i)).await?;
    }
    let start = Instant::now();
    let stop = CancellationToken::new();
    let (final_total, final_rx) = watch::channel(0);
    let mut listeners = tokio::task::JoinSet::new();
    for (i, client) in clients.into_iter().enumerate() {
        let listening = listen(client, start, final_rx.clone(), stop.clone());
        listeners.spawn(async move {
            let (seen, frames) = listening.await;
            (i, seen, frames)
        });
    }
    Ok(Audience {
        clicker,
        base,
        start,
        stop,
        final_total,
        listeners,
    })
}

/// Reads one client's frames, noting when each larger total arrives, until
/// it has seen the final total (sent on `target` once known; 0 = not yet) or
/// `stop` fires, then closes it. Returns what it saw and how many frames it
/// received.
pub(crate) async fn listen(
    client: Client,
    start: Instant,
    target: watch::Receiver<u64>,
    stop: CancellationToken,
) -> (Seen, u64) {
    let (client, seen, frames) = listen_keep(client, start, target, stop).await;
    client.close().await;
    (seen, frames)
}

/// [`listen`], handing the client back open instead of closing it, for
/// workloads that hold their connections from one phase to the next.
pub(crate) async fn listen_keep(
    mut client: Client,
    start: Instant,
    mut target: watch::Receiver<u64>,
    stop: CancellationToken,
) -> (Client, Seen, u64) {
    let mut seen = Seen::default();
    let mut frames = 0;
    let reached = |seen: &Seen, target: u64| target != 0 && seen.max() >= target;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            frame = client.recv() => match frame {
                Ok(Incoming::Count(total)) => {
                    frames += 1;
                    seen.note(total, micros_since(start));
                    if reached(&seen, *target.borrow()) { break; }
                }
                Ok(_) => frames += 1,
                Err(_) => {
                    seen.closed = true;
                    break;
                }
            },
            changed = target.changed() => {
                if changed.is_err() || reached(&seen, *target.borrow_and_update()) { break; }
            }
        }
    }
    (client, seen, frames)
}

/// A listening client on its own OS thread and runtime, for measurements
/// that must not wait behind the thousands of other clients' tasks: when a
/// broadcast reaches 10,000 sockets at once, a task in the shared runtime
/// may be polled tens of milliseconds after its frame arrived, and that
/// delay is the tool's, not the server's.
pub(crate) struct Observer {
    /// The total in the observer's greeting.
    pub base: u64,
    result: tokio::sync::oneshot::Receiver<(Seen, u64)>,
}

impl Observer {
    /// Connects on a new thread and returns once the greeting arrived.
    pub async fn spawn(
        url: &str,
        how: super::Dial,
        start: Instant,
        target: watch::Receiver<u64>,
        stop: CancellationToken,
    ) -> Result<Self, super::BenchError> {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (result_tx, result) = tokio::sync::oneshot::channel();
        let url = url.to_string();
        std::thread::Builder::new()
            .name("observer".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        ready_tx.send(Err(super::BenchError::Runtime(err))).ok();
                        return;
                    }
                };
                runtime.block_on(async move {
                    let connected = async {
                        let mut client = Client::dial(&url, &how).await?;
                        let base = super::greeting(&mut client, &url).await?;
                        Ok((client, base))
                    };
                    match connected.await {
                        Ok((client, base)) => {
                            ready_tx.send(Ok(base)).ok();
                            result_tx
                                .send(listen(client, start, target, stop).await)
                                .ok();
                        }
                        Err(err) => {
                            ready_tx.send(Err(err)).ok();
                        }
                    }
                });
            })
            .map_err(super::BenchError::Runtime)?;
        let base = ready_rx
            .await
            .map_err(|_| super::BenchError::ObserverLost)??;
        Ok(Observer { base, result })
    }

    /// What the observer saw, once it has seen the final total or was stopped.
    pub async fn finish(self) -> Result<(Seen, u64), super::BenchError> {
        self.result
            .await
            .map_err(|_| super::BenchError::ObserverLost)
    }
}

/// Cancels `stop` after `after`, so waits for stragglers end; abort the
/// returned task when everything arrived in time.
pub(crate) fn cancel_after(
    stop: &CancellationToken,
    after: Duration,
) -> tokio::task::JoinHandle<()> {
    let stop = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        stop.cancel();
    })
}
