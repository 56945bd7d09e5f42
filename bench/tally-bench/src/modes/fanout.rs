//! `fanout`: one clicker, N listeners. How long until a click is visible to
//! every listener, and does every listener see every click?

use std::time::Duration;

use serde::Serialize;

use super::{Audience, audience, cancel_after};
use crate::client::Incoming;
use crate::report::{Latency, histogram, summarize};
use crate::timeline::SendTimes;
use crate::{BenchError, SETTLE, Target, micros_since};

#[derive(Debug, Serialize)]
pub struct FanoutReport {
    pub mode: &'static str,
    pub listeners: usize,
    pub target_rate_per_s: f64,
    /// Clicks sent (all of them acknowledged, or the run fails).
    pub clicks: u64,
    /// Click sent → a listener first sees a total at least that click's, one
    /// sample per (click, listener).
    pub delivery: Latency,
    /// [`FanoutReport::delivery`] for the listeners on other nodes than the
    /// clicker's (several `--url`s only): a click crossing nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_other_nodes: Option<Latency>,
    /// (click, listener) pairs where the listener never saw the click's total
    /// or a larger one.
    pub missed_updates: u64,
    /// Listeners that did not end on the final total.
    pub listeners_missing_final_total: usize,
    /// Frames received by the listeners.
    pub messages_received: u64,
    /// Extra clients that never read during the run (see [`Stalled`]).
    pub stalled: usize,
    /// Of them, how many were still connected and reached the exact total
    /// once they read again and one more click was made. (The server may
    /// have disconnected the others: a client whose buffer is full misses
    /// its heartbeat; a real client then reconnects and its greeting
    /// carries the total.)
    pub stalled_recovered: usize,
    /// The server's RSS at the end of the clicking, KiB (with a pid).
    pub server_rss_kib: Option<u64>,
}

/// Clients that stop reading, for [`fanout_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Stalled {
    /// How many.
    pub clients: usize,
    /// Their receive buffer, bytes: small, so they fill it after a few
    /// frames and the server's sends to them back up.
    pub recv_buffer: u32,
    /// The server's pid, to read its RSS.
    pub server_pid: Option<u32>,
}

/// One clicker at `rate` clicks/s for `duration`, `n` listeners.
pub async fn fanout(
    target: &Target,
    n: usize,
    rate: f64,
    duration: Duration,
) -> Result<FanoutReport, BenchError> {
    fanout_with(target, n, rate, duration, Stalled::default()).await
}

/// [`fanout`], plus `stalled.clients` clients that never read while the
/// clicks go on; then they read again, one more click is made, and the
/// report says how many of them reach its total.
pub async fn fanout_with(
    target: &Target,
    n: usize,
    rate: f64,
    duration: Duration,
    stalled: Stalled,
) -> Result<FanoutReport, BenchError> {
    let mut stuck = Vec::with_capacity(stalled.clients);
    for i in 0..stalled.clients {
        let how = crate::Dial {
            recv_buffer: Some(stalled.recv_buffer),
            ..target.guest(n + 1 + i)
        };
        stuck.push(crate::client::Client::dial(target.url(n + 1 + i), &how).await?);
    }
    let Audience {
        mut clicker,
        base,
        start,
        stop,
        final_total: final_tx,
        listeners: mut tasks,
    } = audience(target, n).await?;
    let clicks = (rate * duration.as_secs_f64()).ceil() as u64;
    let sent = SendTimes::new(base, clicks as usize);

    // Open loop: clicks leave on schedule whatever the acks do.
    let bar = target.progress.bar(clicks, "clicking");
    let mut send_at = Vec::with_capacity(clicks as usize);
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut acked = 0;
    let mut last_total = base;
    let deadline = tokio::time::Instant::now() + duration + SETTLE;
    while acked < clicks {
        tokio::select! {
            _ = pace.tick(), if (send_at.len() as u64) < clicks => {
                send_at.push(micros_since(start));
                clicker.click().await?;
            }
            frame = clicker.recv() => if let Incoming::Ack { id, total } = frame? {
                let at = usize::try_from(id).ok().and_then(|id| send_at.get(id));
                sent.note(total, at.copied().unwrap_or(0));
                last_total = last_total.max(total);
                acked += 1;
                bar.inc(1);
            },
            () = tokio::time::sleep_until(deadline) => {
                return Err(BenchError::Unacked { acked, sent: clicks });
            }
        }
    }
    bar.finish_and_clear();
    let server_rss_kib = stalled.server_pid.and_then(crate::rss_kib);
    final_tx.send_replace(last_total);
    // Listeners that never reach the final total are cut off after SETTLE.
    let timer = cancel_after(&stop, SETTLE);
    let mut h = histogram();
    let mut remote = histogram();
    let mut missing = 0;
    let mut missed = 0;
    let mut messages = 0;
    while let Some(joined) = tasks.join_next().await {
        let (i, seen, frames) = joined?;
        missing += usize::from(seen.max() < last_total);
        missed += seen.latencies(&sent, &mut h);
        if target.remote(i) {
            seen.latencies(&sent, &mut remote);
        }
        messages += frames;
    }
    timer.abort();
    let stalled_recovered = recover(&mut clicker, stuck).await?;
    clicker.close().await;
    Ok(FanoutReport {
        mode: "fanout",
        listeners: n,
        target_rate_per_s: rate,
        clicks,
        delivery: summarize(&h),
        delivery_other_nodes: (target.urls.len() > 1).then(|| summarize(&remote)),
        missed_updates: missed,
        listeners_missing_final_total: missing,
        messages_received: messages,
        stalled: stalled.clients,
        stalled_recovered,
        server_rss_kib,
    })
}

/// The stalled clients read again; one more click is made; how many of
/// them see its total (or a larger one) within [`SETTLE`].
async fn recover(
    clicker: &mut crate::client::Client,
    stuck: Vec<crate::client::Client>,
) -> Result<usize, BenchError> {
    if stuck.is_empty() {
        return Ok(0);
    }
    let (target_tx, target_rx) = tokio::sync::watch::channel(0);
    let stop = tokio_util::sync::CancellationToken::new();
    let start = std::time::Instant::now();
    let mut readers = tokio::task::JoinSet::new();
    for client in stuck {
        readers.spawn(super::listen(
            client,
            start,
            target_rx.clone(),
            stop.clone(),
        ));
    }
    clicker.click().await?;
    let total = loop {
        if let Incoming::Ack { total, .. } = clicker.recv().await? {
            break total;
        }
    };
    target_tx.send_replace(total);
    let timer = cancel_after(&stop, SETTLE);
    let mut recovered = 0;
    while let Some(joined) = readers.join_next().await {
        let (seen, _) = joined?;
        recovered += usize::from(seen.max() >= total);
    }
    timer.abort();
    Ok(recovered)
}
