//! `/healthz` probed all through a workload, from a thread of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::report::{Latency, histogram, record, summarize};
use crate::{BenchError, micros_since};

/// `/healthz` latency over a whole step and in each of its phases.
#[derive(Debug, Serialize)]
pub struct HealthReport {
    pub all: Latency,
    /// While this step's new connections were opened.
    pub connecting: Latency,
    /// While the clicks that must reach everyone went out.
    pub clicking: Latency,
    /// During the flood.
    pub flooding: Latency,
    /// Probes that failed, timed out or were not answered with 200.
    pub failures: u64,
}

/// `GET /healthz` every so often on a thread and runtime of its own, so its
/// latency is the server's and not the wait behind the tool's thousands of
/// client tasks. Each probe opens a new connection and asks it to close, as
/// a load balancer's check does: HTTP/1.1 with nothing else, so a plain
/// request line is all it takes.
pub(crate) struct Health {
    /// Stops the prober when dropped, so one whose step failed before
    /// [`Health::finish`] does not ask `/healthz` for the rest of the run.
    stop: DropGuard,
    phase: Arc<AtomicUsize>,
    result: oneshot::Receiver<([Histogram<u64>; 3], u64)>,
}

/// What a step is doing while `/healthz` is asked.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Phase {
    Connecting = 0,
    Clicking = 1,
    Flooding = 2,
}

/// A probe that takes longer than this has failed.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

impl Health {
    pub fn spawn(url: &str, every: Duration) -> Result<Self, BenchError> {
        let rest = url.split("://").nth(1).unwrap_or(url);
        let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_end_matches('/');
        let path = if prefix.is_empty() {
            "/healthz".to_string()
        } else {
            format!("/{prefix}/healthz")
        };
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        let authority = authority.to_string();
        let stop = CancellationToken::new();
        let (result_tx, result) = oneshot::channel();
        let stopped = stop.clone();
        let phase = Arc::new(AtomicUsize::new(Phase::Connecting as usize));
        let now = phase.clone();
        std::thread::Builder::new()
            .name("health".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(_) => return,
                };
                let probes = runtime.block_on(async move {
                    let mut latency = [histogram(), histogram(), histogram()];
                    let mut failures = 0;
                    let mut pace = tokio::time::interval(every);
                    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            () = stopped.cancelled() => break,
                            _ = pace.tick() => {}
                        }
                        let started = Instant::now();
                        // A probe counts for the phase it started in.
                        let phase = now.load(Ordering::Relaxed);
                        let probe =
                            tokio::time::timeout(HEALTH_TIMEOUT, probe(&authority, &request));
                        match probe.await {
                            Ok(true) => record(&mut latency[phase], micros_since(started)),
                            _ => failures += 1,
                        }
                    }
                    (latency, failures)
                });
                result_tx.send(probes).ok();
            })
            .map_err(BenchError::Runtime)?;
        Ok(Health {
            stop: stop.drop_guard(),
            phase,
            result,
        })
    }

    /// Probes from now on count for `phase`.
    pub fn enter(&self, phase: Phase) {
        self.phase.store(phase as usize, Ordering::Relaxed);
    }

    pub async fn finish(self) -> Result<HealthReport, BenchError> {
        let Health { stop, result, .. } = self;
        drop(stop);
        let ([connecting, clicking, flooding], failures) =
            result.await.map_err(|_| BenchError::ProberLost)?;
        let mut all = histogram();
        for phase in [&connecting, &clicking, &flooding] {
            all.add(phase).ok();
        }
        Ok(HealthReport {
            all: summarize(&all),
            connecting: summarize(&connecting),
            clicking: summarize(&clicking),
            flooding: summarize(&flooding),
            failures,
        })
    }
}

/// One probe: whether the server answered 200.
async fn probe(authority: &str, request: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(authority).await else {
        return false;
    };
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut response = Vec::new();
    if stream.read_to_end(&mut response).await.is_err() {
        return false;
    }
    response.starts_with(b"HTTP/1.1 200")
}
