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
    /// (click, listener) pairs where the listener never saw the click's total
    /// or a larger one.
    pub missed_updates: u64,
    /// Listeners that did not end on the final total.
    pub listeners_missing_final_total: usize,
    /// Frames received by the listeners.
    pub messages_received: u64,
}

/// One clicker at `rate` clicks/s for `duration`, `n` listeners.
pub async fn fanout(
    target: &Target,
    n: usize,
    rate: f64,
    duration: Duration,
) -> Result<FanoutReport, BenchError> {
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
    final_tx.send_replace(last_total);
    // Listeners that never reach the final total are cut off after SETTLE.
    let timer = cancel_after(&stop, SETTLE);
    let mut h = histogram();
    let mut missing = 0;
    let mut missed = 0;
    let mut messages = 0;
    while let Some(joined) = tasks.join_next().await {
        let (seen, frames) = joined?;
        missing += usize::from(seen.max() < last_total);
        missed += seen.latencies(&sent, &mut h);
        messages += frames;
    }
    timer.abort();
    clicker.close().await;
    Ok(FanoutReport {
        mode: "fanout",
        listeners: n,
        target_rate_per_s: rate,
        clicks,
        delivery: summarize(&h),
        missed_updates: missed,
        listeners_missing_final_total: missing,
        messages_received: messages,
    })
}
