//! `soak`: long-lived connections with light traffic (the design's EC-2).
//! Holds N listeners while one clicker clicks slowly for a long time,
//! samples the server's memory at a fixed period, and checks at the end
//! that every listener is still connected and on the exact total.

use std::time::Duration;

use serde::Serialize;

use super::{Audience, audience, cancel_after};
use crate::client::Incoming;
use crate::{BenchError, SETTLE, Target, rss_kib};

#[derive(Debug, Serialize)]
pub struct SoakReport {
    pub mode: &'static str,
    pub connections: usize,
    pub target_rate_per_s: f64,
    pub duration_s: f64,
    /// Clicks sent and acknowledged.
    pub clicks: u64,
    /// `(seconds since start, server RSS in KiB)`, one per sample period.
    pub rss_samples: Vec<(f64, u64)>,
    /// Last sample minus the first, KiB (positive: grew).
    pub rss_drift_kib: Option<i64>,
    /// Listeners that ended off the final total (or were dropped).
    pub listeners_missing_final_total: usize,
}

/// `n` listeners and one clicker at `rate` for `duration`, sampling the
/// RSS of `server_pid` every `every`.
pub async fn soak(
    target: &Target,
    n: usize,
    rate: f64,
    duration: Duration,
    every: Duration,
    server_pid: Option<u32>,
) -> Result<SoakReport, BenchError> {
    let Audience {
        mut clicker,
        base,
        start,
        stop,
        final_total: final_tx,
        listeners: mut tasks,
    } = audience(target, n).await?;

    let mut samples = Vec::new();
    let sample = |samples: &mut Vec<(f64, u64)>| {
        if let Some(rss) = server_pid.and_then(rss_kib) {
            samples.push((start.elapsed().as_secs_f64(), rss));
        }
    };
    sample(&mut samples);
    let bar = target
        .progress
        .bar(duration.as_secs().max(1), "soaking (s)");
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut sampler = tokio::time::interval(every);
    sampler.tick().await;
    let mut seconds = tokio::time::interval(Duration::from_secs(1));
    let end = tokio::time::Instant::now() + duration;
    let (mut sent, mut acked, mut last_total) = (0u64, 0u64, base);
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(end) => break,
            _ = pace.tick() => {
                clicker.click().await?;
                sent += 1;
            }
            _ = sampler.tick() => sample(&mut samples),
            _ = seconds.tick() => bar.inc(1),
            frame = clicker.recv() => if let Incoming::Ack { total, .. } = frame? {
                acked += 1;
                last_total = last_total.max(total);
            },
        }
    }
    // The last acks.
    let settle = tokio::time::Instant::now() + SETTLE;
    while acked < sent {
        tokio::select! {
            () = tokio::time::sleep_until(settle) => {
                return Err(BenchError::Unacked { acked, sent });
            }
            frame = clicker.recv() => if let Incoming::Ack { total, .. } = frame? {
                acked += 1;
                last_total = last_total.max(total);
            },
        }
    }
    bar.finish_and_clear();
    sample(&mut samples);
    final_tx.send_replace(last_total);
    let timer = cancel_after(&stop, SETTLE);
    let mut missing = 0;
    while let Some(joined) = tasks.join_next().await {
        let (_, seen, _) = joined?;
        missing += usize::from(seen.max() < last_total);
    }
    timer.abort();
    clicker.close().await;
    let drift = match (samples.first(), samples.last()) {
        (Some(first), Some(last)) if samples.len() > 1 => Some(last.1 as i64 - first.1 as i64),
        _ => None,
    };
    Ok(SoakReport {
        mode: "soak",
        connections: n,
        target_rate_per_s: rate,
        duration_s: duration.as_secs_f64(),
        clicks: acked,
        rss_samples: samples,
        rss_drift_kib: drift,
        listeners_missing_final_total: missing,
    })
}
