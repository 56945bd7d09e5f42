//! `scale`: connections held in rising steps (say 5,000, 10,000, 19,000),
//! and at each step what a server holding that many must still do: stay
//! small, get one click to every connection, take a flood from some of them
//! with every connection ending on the exact total, and answer `/healthz`
//! promptly all the while.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::flood::Clickers;
use super::{cancel_after, listen_keep};
use crate::client::{Client, Incoming};
use crate::report::{Latency, histogram, record, summarize};
use crate::timeline::{Seen, SendTimes};
use crate::{BenchError, SETTLE, Target, connect_range, greeting, micros_since, rss_kib};

/// How to scale.
#[derive(Debug, Clone)]
pub struct ScaleSettings {
    /// Connections held at each step, rising; each step adds to the last.
    pub steps: Vec<usize>,
    /// Clicks, `click_every` apart, that must each reach every connection.
    pub clicks: u64,
    pub click_every: Duration,
    /// How many of the held connections click in each step's flood…
    pub flood_clients: usize,
    /// …at this rate, all together…
    pub flood_rate: f64,
    /// …for this long.
    pub flood_duration: Duration,
    /// How often `/healthz` is asked, all through each step.
    pub health_every: Duration,
    /// The server's pid, to read its RSS.
    pub server_pid: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct ScaleReport {
    pub mode: &'static str,
    pub steps: Vec<ScaleStep>,
    /// Why the run ended before its last step, if it did: the error of the
    /// step that failed (the steps before it stand).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

/// One step: `connections` held.
#[derive(Debug, Serialize)]
pub struct ScaleStep {
    pub connections: usize,
    /// Of the connections this step opened.
    pub connect_rate_per_s: f64,
    pub handshake: Latency,
    pub server_rss_kib: Option<u64>,
    /// The server's RSS growth since before the first connection, per
    /// connection held.
    pub rss_per_connection_bytes: Option<u64>,
    /// The server's RSS again after the step's clicks and flood, when every
    /// held connection has been written to for a while, as a long-lived
    /// connection always is (engine.io's heartbeat alone writes a ping every
    /// 25 s). Per-connection queues grow on first use and keep what they
    /// grew, so this, not the figure just after connecting, is what a
    /// server holding connections for hours needs.
    pub server_rss_after_traffic_kib: Option<u64>,
    /// [`Self::server_rss_after_traffic_kib`]'s growth since before the
    /// first connection, per connection held.
    pub rss_per_connection_after_traffic_bytes: Option<u64>,
    /// A click sent → each held connection first sees its total (or a
    /// larger one): one sample per (click, connection).
    pub click_to_all: Latency,
    /// (click, connection) pairs never seen.
    pub click_missed: u64,
    /// Connections that did not end on the last click's total.
    pub click_short: usize,
    pub flood: ScaleFlood,
    /// `GET /healthz` through the whole step, from a thread of its own.
    pub health: HealthReport,
}

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

/// A flood from some of the held connections while all the others listen.
#[derive(Debug, Serialize)]
pub struct ScaleFlood {
    pub clients: usize,
    pub target_rate_per_s: f64,
    /// Acknowledged clicks per second, over the sending time or until the
    /// last ack if that came later.
    pub achieved_rate_per_s: f64,
    pub clicks: u64,
    pub unacked: u64,
    pub ack: Latency,
    /// Click sent → each listening connection first sees a total at least
    /// that click's: one sample per (click, listener).
    pub visible_to_all: Latency,
    /// (click, listener) pairs never seen.
    pub missed: u64,
    /// Every connection, clickers and listeners, ended on the final total;
    /// the final total is the start total plus the acknowledged clicks; and
    /// nothing was left unacknowledged.
    pub converged: bool,
}

/// Runs the steps in turn, holding every connection from one step to the
/// next. A step that fails ends the run; the report keeps the steps before
/// it and says why.
pub async fn scale(target: &Target, settings: &ScaleSettings) -> Result<ScaleReport, BenchError> {
    let rss_before = settings.server_pid.and_then(rss_kib);
    // The clicker of the click-to-all phase, outside the held connections.
    let mut clicker = Client::dial(target.home(), &target.guest(0)).await?;
    let mut total = greeting(&mut clicker, target.home()).await?;
    let mut held = Vec::new();
    let mut steps = Vec::new();
    let mut stopped = None;
    for &connections in &settings.steps {
        let step = Step {
            target,
            settings,
            connections,
            rss_before,
        };
        match step.run(&mut clicker, &mut held, &mut total).await {
            Ok(report) => steps.push(report),
            Err(err) => {
                stopped = Some(err.to_string());
                break;
            }
        }
    }
    clicker.close().await;
    for client in held {
        client.close().await;
    }
    Ok(ScaleReport {
        mode: "scale",
        steps,
        stopped,
    })
}

struct Step<'a> {
    target: &'a Target,
    settings: &'a ScaleSettings,
    connections: usize,
    rss_before: Option<u64>,
}

impl Step<'_> {
    async fn run(
        &self,
        clicker: &mut Client,
        held: &mut Vec<Client>,
        total: &mut u64,
    ) -> Result<ScaleStep, BenchError> {
        let health = Health::spawn(self.target.home(), self.settings.health_every)?;

        // The connections held so far keep reading (and answering the
        // server's pings) while the new ones connect.
        let from = held.len();
        let reading = Reading::start(std::mem::take(held));
        let started = Instant::now();
        let connected = connect_range(self.target, from..self.connections, "connecting").await;
        let connect_secs = started.elapsed().as_secs_f64();
        *held = reading.stop().await?.0;
        let (mut fresh, handshakes) = connected?;
        for (i, client) in fresh.iter_mut().enumerate() {
            greeting(client, self.target.url(from + i)).await?;
        }
        held.extend(fresh);
        let mut handshake = histogram();
        for micros in handshakes {
            record(&mut handshake, micros);
        }
        let server_rss_kib = self.settings.server_pid.and_then(rss_kib);
        let rss_per_connection_bytes = self.per_connection(server_rss_kib, held.len());

        health.enter(Phase::Clicking);
        let (click_to_all, click_missed, click_short) =
            self.click_to_all(clicker, held, total).await?;
        health.enter(Phase::Flooding);
        let flood = self.flood(held, total).await?;
        let server_rss_after_traffic_kib = self.settings.server_pid.and_then(rss_kib);
        let health = health.finish().await?;
        Ok(ScaleStep {
            connections: held.len(),
            connect_rate_per_s: (self.connections - from) as f64 / connect_secs.max(1e-9),
            handshake: summarize(&handshake),
            server_rss_kib,
            rss_per_connection_bytes,
            server_rss_after_traffic_kib,
            rss_per_connection_after_traffic_bytes: self
                .per_connection(server_rss_after_traffic_kib, held.len()),
            click_to_all,
            click_missed,
            click_short,
            flood,
            health,
        })
    }

    /// The growth of the server's RSS since before the first connection, in
    /// bytes per connection held.
    fn per_connection(&self, rss_kib: Option<u64>, held: usize) -> Option<u64> {
        rss_kib
            .zip(self.rss_before)
            .map(|(now, before)| now.saturating_sub(before) * 1024 / held.max(1) as u64)
    }

    /// `clicks` clicks from the clicker, each awaited; every held connection
    /// must see each one.
    async fn click_to_all(
        &self,
        clicker: &mut Client,
        held: &mut Vec<Client>,
        total: &mut u64,
    ) -> Result<(Latency, u64, usize), BenchError> {
        let clicks = self.settings.clicks;
        let sent = SendTimes::new(*total, clicks as usize);
        let reading = Reading::start(std::mem::take(held));
        let mut pace = tokio::time::interval(self.settings.click_every);
        for _ in 0..clicks {
            pace.tick().await;
            let at = micros_since(reading.start);
            let id = clicker.click().await?;
            let acked = async {
                loop {
                    if let Incoming::Ack { id: acked, total } = clicker.recv().await?
                        && acked == id
                    {
                        return Ok::<_, BenchError>(total);
                    }
                }
            };
            let clicked = tokio::time::timeout(SETTLE, acked)
                .await
                .map_err(|_| BenchError::Unacked { acked: 0, sent: 1 })??;
            sent.note(clicked, at);
            *total = (*total).max(clicked);
        }
        let (clients, seen) = reading.until(*total).await?;
        *held = clients;
        let mut h = histogram();
        let mut missed = 0;
        let mut short = 0;
        for seen in &seen {
            missed += seen.latencies(&sent, &mut h);
            short += usize::from(seen.max() < *total);
        }
        Ok((summarize(&h), missed, short))
    }

    /// The first `flood_clients` held connections click at `flood_rate`
    /// for `flood_duration`; all the others listen.
    async fn flood(
        &self,
        held: &mut Vec<Client>,
        total: &mut u64,
    ) -> Result<ScaleFlood, BenchError> {
        let settings = self.settings;
        let n = settings.flood_clients.min(held.len());
        let base = *total;
        let mut clients = std::mem::take(held);
        let listeners = clients.split_off(n);
        let reading = Reading::start(listeners);
        let start = reading.start;
        let stop = CancellationToken::new();
        let planned = (settings.flood_rate * settings.flood_duration.as_secs_f64()).ceil() as usize;
        let sent = SendTimes::new(base, planned + n);
        let (final_tx, final_rx) = watch::channel(0);
        let mut clickers = Clickers::spawn(
            clients,
            settings.flood_rate,
            settings.flood_duration,
            start,
            &sent,
            &final_rx,
            &stop,
        );
        let acks = clickers
            .collect_acks(base, &self.target.progress.bar(planned as u64, "clicking"))
            .await;
        let (acked, final_total) = (acks.acked, acks.final_total);
        final_tx.send_replace(final_total);
        *total = final_total;
        let timer = cancel_after(&stop, SETTLE);
        let mut ack = histogram();
        let mut converged = true;
        let mut unacked = 0;
        let mut held_clickers = Vec::with_capacity(n);
        while let Some(joined) = clickers.tasks.join_next().await {
            let (client, result) = joined?;
            held_clickers.push(client);
            ack.add(&result.ack).ok();
            converged &= result.max_seen >= final_total;
            unacked += result.unacked;
        }
        timer.abort();
        let (listeners, seen) = reading.until(final_total).await?;
        let mut visible = histogram();
        let mut missed = 0;
        for seen in &seen {
            missed += seen.latencies(&sent, &mut visible);
            converged &= seen.max() >= final_total;
        }
        converged &= unacked == 0 && final_total == base + acked;
        held_clickers.extend(listeners);
        *held = held_clickers;
        Ok(ScaleFlood {
            clients: n,
            target_rate_per_s: settings.flood_rate,
            achieved_rate_per_s: acked as f64
                / settings
                    .flood_duration
                    .as_secs_f64()
                    .max((acks.last_ack - clickers.sending_starts).as_secs_f64()),
            clicks: acked,
            unacked,
            ack: summarize(&ack),
            visible_to_all: summarize(&visible),
            missed,
            converged,
        })
    }
}

/// Held connections reading in the background, each noting the totals it
/// sees, until they reach a target total or are stopped; then they are
/// handed back, still open.
struct Reading {
    start: Instant,
    target: watch::Sender<u64>,
    stop: CancellationToken,
    tasks: JoinSet<(Client, Seen, u64)>,
}

impl Reading {
    /// Starts reading, with no target total yet.
    fn start(clients: Vec<Client>) -> Self {
        let start = Instant::now();
        let (target_tx, target_rx) = watch::channel(0);
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for client in clients {
            tasks.spawn(listen_keep(client, start, target_rx.clone(), stop.clone()));
        }
        Reading {
            start,
            target: target_tx,
            stop,
            tasks,
        }
    }

    /// Waits until every connection has seen `total` (or [`SETTLE`] has
    /// passed) and hands them back with what each saw.
    async fn until(self, total: u64) -> Result<(Vec<Client>, Vec<Seen>), BenchError> {
        self.target.send_replace(total);
        let timer = cancel_after(&self.stop, SETTLE);
        let collected = self.collect().await;
        timer.abort();
        collected
    }

    /// Stops reading at once and hands the connections back.
    async fn stop(self) -> Result<(Vec<Client>, Vec<Seen>), BenchError> {
        self.stop.cancel();
        self.collect().await
    }

    async fn collect(mut self) -> Result<(Vec<Client>, Vec<Seen>), BenchError> {
        let mut clients = Vec::with_capacity(self.tasks.len());
        let mut seen = Vec::with_capacity(self.tasks.len());
        while let Some(joined) = self.tasks.join_next().await {
            let (client, saw, _) = joined?;
            clients.push(client);
            seen.push(saw);
        }
        Ok((clients, seen))
    }
}

/// `GET /healthz` every so often on a thread and runtime of its own, so its
/// latency is the server's and not the wait behind the tool's thousands of
/// client tasks. Each probe opens a new connection and asks it to close, as
/// a load balancer's check does: HTTP/1.1 with nothing else, so a plain
/// request line is all it takes.
struct Health {
    stop: CancellationToken,
    phase: Arc<AtomicUsize>,
    result: oneshot::Receiver<([Histogram<u64>; 3], u64)>,
}

/// What a step is doing while `/healthz` is asked.
#[derive(Debug, Clone, Copy)]
enum Phase {
    Connecting = 0,
    Clicking = 1,
    Flooding = 2,
}

/// A probe that takes longer than this has failed.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

impl Health {
    fn spawn(url: &str, every: Duration) -> Result<Self, BenchError> {
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
            stop,
            phase,
            result,
        })
    }

    /// Probes from now on count for `phase`.
    fn enter(&self, phase: Phase) {
        self.phase.store(phase as usize, Ordering::Relaxed);
    }

    async fn finish(self) -> Result<HealthReport, BenchError> {
        self.stop.cancel();
        let ([connecting, clicking, flooding], failures) =
            self.result.await.map_err(|_| BenchError::ProberLost)?;
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
