//! `tally-bench`: a load generator for servers speaking the click contract
//! (`click` with an ack carrying `{total}`, broadcast `count` `{total}`).
//!
//! Modes:
//! - [`idle`]: open N connections at a bounded rate and hold them; handshake
//!   latency and, given the server's pid, its RSS per connection;
//! - [`fanout`]: N listeners, one clicker at R clicks/s; click-to-every-recipient
//!   latency and listeners that missed the final total;
//! - [`flood`]: N clients clicking at an aggregate open-loop rate; achieved
//!   rate, ack latency, click-to-visible latency at an observer, convergence;
//! - [`ramp`]: floods at rising rates until the p99 visible latency passes a
//!   bound or clicks are lost; the highest sustained rate.
//!
//! Latencies are measured against the server's own totals: a click's total is
//! known from its ack, and a recipient "sees" it when it first receives a
//! total at least that large. Use it only against servers you run yourself.

pub mod client;
pub mod report;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use client::{Client, ClientError, Incoming};
use report::{Latency, histogram, record, summarize};

/// How long to wait for stragglers (late acks, the last broadcast).
const SETTLE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Protocol(String),
}

/// Microseconds since `start`.
fn micros_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Opens `n` connections, at most `rate` per second, failing on the first
/// error so an unreachable server is reported at once.
async fn connect_all(
    url: &str,
    n: usize,
    rate: f64,
) -> Result<(Vec<Client>, Vec<u64>), BenchError> {
    let mut pending = JoinSet::new();
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1.0)));
    for _ in 0..n {
        pace.tick().await;
        let url = url.to_string();
        pending.spawn(async move {
            let started = Instant::now();
            let client = Client::connect(&url).await?;
            Ok::<_, ClientError>((client, micros_since(started)))
        });
    }
    let mut clients = Vec::with_capacity(n);
    let mut handshakes = Vec::with_capacity(n);
    while let Some(joined) = pending.join_next().await {
        let (client, micros) = joined.map_err(|e| BenchError::Protocol(e.to_string()))??;
        clients.push(client);
        handshakes.push(micros);
    }
    Ok((clients, handshakes))
}

/// Waits for the greeting `count` and returns its total.
async fn greeting(client: &mut Client) -> Result<u64, BenchError> {
    let wait = async {
        loop {
            if let Incoming::Count(total) = client.recv().await? {
                return Ok::<_, BenchError>(total);
            }
        }
    };
    tokio::time::timeout(SETTLE, wait).await.map_err(|_| {
        BenchError::Protocol("no `count` after connecting: is this a tally-contract server?".into())
    })?
}

/// The resident set size of a process, in KiB (Linux).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[derive(Debug, Serialize)]
pub struct IdleReport {
    pub mode: &'static str,
    pub connections: usize,
    pub connect_rate_per_s: f64,
    pub handshake: Latency,
    pub server_rss_kib_before: Option<u64>,
    pub server_rss_kib_after: Option<u64>,
    pub rss_per_connection_bytes: Option<u64>,
}

/// Opens and holds `n` connections; see the module docs.
pub async fn idle(
    url: &str,
    n: usize,
    connect_rate: f64,
    hold: Duration,
    server_pid: Option<u32>,
) -> Result<IdleReport, BenchError> {
    let before = server_pid.and_then(rss_kib);
    let started = Instant::now();
    let (clients, handshakes) = connect_all(url, n, connect_rate).await?;
    let elapsed = started.elapsed().as_secs_f64();

    // Held connections must keep answering pings, so each gets a reader.
    let stop = CancellationToken::new();
    let mut held = JoinSet::new();
    for mut client in clients {
        let stop = stop.clone();
        held.spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    frame = client.recv() => if frame.is_err() { return false },
                }
            }
            client.close().await;
            true
        });
    }
    tokio::time::sleep(hold).await;
    let after = server_pid.and_then(rss_kib);
    stop.cancel();
    let mut alive = 0;
    while let Some(ok) = held.join_next().await {
        alive += usize::from(ok.unwrap_or(false));
    }
    if alive < n {
        return Err(BenchError::Protocol(format!(
            "{} of {n} connections were dropped while idle",
            n - alive
        )));
    }

    let mut h = histogram();
    for micros in handshakes {
        record(&mut h, micros);
    }
    Ok(IdleReport {
        mode: "idle",
        connections: n,
        connect_rate_per_s: n as f64 / elapsed.max(1e-9),
        handshake: summarize(&h),
        server_rss_kib_before: before,
        server_rss_kib_after: after,
        rss_per_connection_bytes: before
            .zip(after)
            .map(|(b, a)| a.saturating_sub(b) * 1024 / n.max(1) as u64),
    })
}

/// When each total was first seen by one client, in µs since the start.
#[derive(Debug, Default)]
struct Seen(Vec<(u64, u64)>);

impl Seen {
    fn note(&mut self, total: u64, at: u64) {
        if self.0.last().is_none_or(|&(last, _)| total > last) {
            self.0.push((total, at));
        }
    }

    fn max(&self) -> u64 {
        self.0.last().map_or(0, |&(t, _)| t)
    }

    /// Records, for every total in `sent`, the delay until this client first
    /// saw a total at least that large.
    fn latencies(&self, base: u64, sent: &[AtomicU64], h: &mut hdrhistogram::Histogram<u64>) {
        let mut i = 0;
        for (k, sent_at) in sent.iter().enumerate() {
            let sent_at = sent_at.load(Ordering::Relaxed);
            if sent_at == 0 {
                continue;
            }
            let total = base + k as u64 + 1;
            while i < self.0.len() && self.0[i].0 < total {
                i += 1;
            }
            if let Some(&(_, seen_at)) = self.0.get(i) {
                record(h, seen_at.saturating_sub(sent_at - 1));
            }
        }
    }
}

/// Send times of clicks, indexed by `total - base - 1`, in µs since the start
/// plus one (zero means "no click with that total was acked").
fn send_times(capacity: usize) -> Arc<[AtomicU64]> {
    (0..capacity).map(|_| AtomicU64::new(0)).collect()
}

fn note_sent(sent: &[AtomicU64], base: u64, total: u64, at: u64) {
    if let Some(slot) = total
        .checked_sub(base + 1)
        .and_then(|k| sent.get(k as usize))
    {
        slot.store(at + 1, Ordering::Relaxed);
    }
}

/// Listens until it has seen `final_total` (sent on `target`) or `stop`.
async fn listen(
    mut client: Client,
    start: Instant,
    mut target: tokio::sync::watch::Receiver<u64>,
    stop: CancellationToken,
) -> (Seen, u64) {
    let mut seen = Seen::default();
    let mut frames = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            frame = client.recv() => match frame {
                Ok(Incoming::Count(total)) => {
                    frames += 1;
                    seen.note(total, micros_since(start));
                    if *target.borrow_and_update() != 0 && seen.max() >= *target.borrow() { break; }
                }
                Ok(_) => frames += 1,
                Err(_) => break,
            },
            _ = target.changed() => if seen.max() >= *target.borrow() { break; },
        }
    }
    client.close().await;
    (seen, frames)
}

#[derive(Debug, Serialize)]
pub struct FanoutReport {
    pub mode: &'static str,
    pub listeners: usize,
    pub target_rate_per_s: f64,
    pub clicks: u64,
    pub delivery: Latency,
    pub listeners_missing_final_total: usize,
}

/// One clicker at `rate`, `n` listeners; see the module docs.
pub async fn fanout(
    url: &str,
    n: usize,
    rate: f64,
    duration: Duration,
    connect_rate: f64,
) -> Result<FanoutReport, BenchError> {
    let (mut listeners, _) = connect_all(url, n, connect_rate).await?;
    let mut clicker = Client::connect(url).await?;
    let base = greeting(&mut clicker).await?;
    for listener in &mut listeners {
        greeting(listener).await?;
    }

    let clicks = (rate * duration.as_secs_f64()).ceil() as u64;
    let sent = send_times(clicks as usize);
    let start = Instant::now();
    let stop = CancellationToken::new();
    let (final_tx, final_rx) = tokio::sync::watch::channel(0);
    let mut tasks = JoinSet::new();
    for listener in listeners {
        tasks.spawn(listen(listener, start, final_rx.clone(), stop.clone()));
    }

    // Open loop: clicks leave on schedule whatever the acks do.
    let mut send_at = vec![0u64; clicks as usize];
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut acked = 0;
    let mut last_total = base;
    let mut sent_count = 0;
    let deadline = tokio::time::Instant::now() + duration + SETTLE;
    while acked < clicks {
        tokio::select! {
            _ = pace.tick(), if sent_count < clicks => {
                send_at[sent_count as usize] = micros_since(start);
                clicker.click().await?;
                sent_count += 1;
            }
            frame = clicker.recv() => if let Incoming::Ack { id, total } = frame? {
                note_sent(&sent, base, total, send_at[id as usize]);
                last_total = last_total.max(total);
                acked += 1;
            },
            () = tokio::time::sleep_until(deadline) => return Err(BenchError::Protocol(format!("only {acked} of {clicks} clicks were acknowledged"))),
        }
    }
    final_tx.send_replace(last_total);
    let timer = tokio::spawn({
        let stop = stop.clone();
        async move {
            tokio::time::sleep(SETTLE).await;
            stop.cancel();
        }
    });
    let mut h = histogram();
    let mut missing = 0;
    while let Some(joined) = tasks.join_next().await {
        let (seen, _) = joined.map_err(|e| BenchError::Protocol(e.to_string()))?;
        missing += usize::from(seen.max() < last_total);
        seen.latencies(base, &sent, &mut h);
    }
    timer.abort();
    clicker.close().await;
    Ok(FanoutReport {
        mode: "fanout",
        listeners: n,
        target_rate_per_s: rate,
        clicks,
        delivery: summarize(&h),
        listeners_missing_final_total: missing,
    })
}

#[derive(Debug, Serialize)]
pub struct FloodReport {
    pub mode: &'static str,
    pub clients: usize,
    pub target_rate_per_s: f64,
    pub achieved_rate_per_s: f64,
    pub clicks: u64,
    pub ack: Latency,
    pub visible: Latency,
    pub converged: bool,
    pub final_total: u64,
    pub messages_received: u64,
}

/// `n` clients clicking at an aggregate `rate` for `duration`; see the module docs.
pub async fn flood(
    url: &str,
    n: usize,
    rate: f64,
    duration: Duration,
    connect_rate: f64,
) -> Result<FloodReport, BenchError> {
    let (mut clients, _) = connect_all(url, n, connect_rate).await?;
    let mut observer = Client::connect(url).await?;
    let base = greeting(&mut observer).await?;
    for client in &mut clients {
        greeting(client).await?;
    }

    let planned = (rate * duration.as_secs_f64()).ceil() as usize;
    let sent = send_times(planned + n);
    let start = Instant::now();
    let stop = CancellationToken::new();
    let (final_tx, final_rx) = tokio::sync::watch::channel(0);
    let observer_task = tokio::spawn(listen(observer, start, final_rx.clone(), stop.clone()));

    // Each client clicks on its own schedule; together they make `rate`.
    let per_client = Duration::from_secs_f64(n as f64 / rate);
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<(u64, u64)>();
    let mut tasks = JoinSet::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        let sent = sent.clone();
        let ack_tx = ack_tx.clone();
        let mut final_rx = final_rx.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            // Spread the clients' first clicks over one period.
            let first = tokio::time::Instant::now() + per_client.mul_f64(i as f64 / n as f64);
            let mut pace = tokio::time::interval_at(first, per_client);
            let until = tokio::time::Instant::now() + duration;
            let mut send_at = Vec::new();
            let mut h = histogram();
            let mut seen = Seen::default();
            let mut frames = 0;
            let mut acked = 0;
            loop {
                let sending = tokio::time::Instant::now() < until;
                if !sending
                    && acked == send_at.len()
                    && *final_rx.borrow() != 0
                    && seen.max() >= *final_rx.borrow()
                {
                    break;
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = pace.tick(), if sending => {
                        send_at.push(micros_since(start));
                        if client.click().await.is_err() { break; }
                    }
                    frame = client.recv() => match frame {
                        Ok(Incoming::Ack { id, total }) => {
                            frames += 1;
                            let at = send_at[id as usize];
                            record(&mut h, micros_since(start) - at);
                            note_sent(&sent, base, total, at);
                            seen.note(total, 0);
                            acked += 1;
                            ack_tx.send((1, total)).ok();
                        }
                        Ok(Incoming::Count(total)) => { frames += 1; seen.note(total, 0); }
                        Ok(Incoming::Other) => frames += 1,
                        Err(_) => break,
                    },
                    _ = final_rx.changed() => {}
                }
            }
            client.close().await;
            (h, seen.max(), frames, send_at.len() - acked)
        });
    }
    drop(ack_tx);

    // The final total is known once every sent click is acked: count acks
    // until the senders are done and the acks stop.
    let mut acked = 0u64;
    let mut final_total = base;
    let mut last_ack = start;
    let sending_ends = tokio::time::Instant::now() + duration;
    // A server that falls behind still gets a chance to answer, but not forever.
    let give_up = sending_ends + 3 * SETTLE;
    // Done when, after sending has ended, half a second passes without an ack.
    let mut quiet_from = sending_ends;
    loop {
        tokio::select! {
            ack = ack_rx.recv() => match ack {
                Some((count, total)) => {
                    acked += count;
                    final_total = final_total.max(total);
                    last_ack = Instant::now();
                    quiet_from = quiet_from.max(tokio::time::Instant::now());
                }
                None => break,
            },
            () = tokio::time::sleep_until(quiet_from + Duration::from_millis(500)) => break,
            () = tokio::time::sleep_until(give_up) => break,
        }
    }
    final_tx.send_replace(final_total);
    let timer = tokio::spawn({
        let stop = stop.clone();
        async move {
            tokio::time::sleep(SETTLE).await;
            stop.cancel();
        }
    });
    let mut ack_h = histogram();
    let mut converged = true;
    let mut messages = 0;
    let mut unacked = 0;
    while let Some(joined) = tasks.join_next().await {
        let (h, max, frames, missing) = joined.map_err(|e| BenchError::Protocol(e.to_string()))?;
        ack_h.add(&h).ok();
        converged &= max >= final_total;
        messages += frames;
        unacked += missing;
    }
    let (seen, observer_frames) = observer_task
        .await
        .map_err(|e| BenchError::Protocol(e.to_string()))?;
    timer.abort();
    converged &= seen.max() >= final_total && unacked == 0 && final_total == base + acked;
    let mut visible = histogram();
    seen.latencies(base, &sent, &mut visible);
    Ok(FloodReport {
        mode: "flood",
        clients: n,
        target_rate_per_s: rate,
        // Clicks count as done when acknowledged: a server that queues them
        // gets no credit for the rate at which they were sent.
        achieved_rate_per_s: acked as f64
            / duration.as_secs_f64().max((last_ack - start).as_secs_f64()),
        clicks: acked,
        ack: summarize(&ack_h),
        visible: summarize(&visible),
        converged,
        final_total,
        messages_received: messages + observer_frames,
    })
}

#[derive(Debug, Serialize)]
pub struct RampReport {
    pub mode: &'static str,
    pub clients: usize,
    pub bound_p99_ms: f64,
    pub highest_sustained_rate_per_s: f64,
    pub steps: Vec<FloodReport>,
}

/// Floods at `start_rate`, then ×1.5 per step, until the observer's p99
/// visible latency exceeds `bound`, clicks are lost, or the achieved rate
/// falls below 90% of the target.
pub async fn ramp(
    url: &str,
    n: usize,
    start_rate: f64,
    max_rate: f64,
    step: Duration,
    bound: Duration,
    connect_rate: f64,
) -> Result<RampReport, BenchError> {
    let mut rate = start_rate;
    let mut best = 0.0;
    let mut steps = Vec::new();
    while rate <= max_rate {
        let report = flood(url, n, rate, step, connect_rate).await?;
        let ok = report.converged
            && report.visible.p99_ms <= bound.as_secs_f64() * 1000.0
            && report.achieved_rate_per_s >= 0.9 * rate;
        steps.push(report);
        if !ok {
            break;
        }
        best = rate;
        rate *= 1.5;
    }
    Ok(RampReport {
        mode: "ramp",
        clients: n,
        bound_p99_ms: bound.as_secs_f64() * 1000.0,
        highest_sustained_rate_per_s: best,
        steps,
    })
}
