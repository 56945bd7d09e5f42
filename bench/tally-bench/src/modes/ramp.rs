//! `ramp`: flood at rising rates to find the highest rate a server sustains
//! with every click counted and p99 click-to-visible latency under a bound.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::flood::{FloodReport, flood};
use crate::client::Client;
use crate::{BenchError, Target};

/// Quiet time between steps, at least.
const PAUSE: Duration = Duration::from_millis(500);

/// A server that answers a new connection within this is taken as drained.
const PROMPT: Duration = Duration::from_millis(20);

/// Waits until the server handshakes a new connection promptly again (at
/// most 30 s), so one overloaded step's backlog — a server still writing
/// queued broadcasts — does not count against the next step. Probing with a
/// handshake rather than a click leaves the total alone.
async fn settle(target: &Target) -> Result<(), BenchError> {
    let give_up = Instant::now() + Duration::from_secs(30);
    tokio::time::sleep(PAUSE).await;
    while Instant::now() < give_up {
        let started = Instant::now();
        let client = Client::dial(target.home(), &target.guest(0)).await?;
        let took = started.elapsed();
        client.close().await;
        if took < PROMPT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// How to ramp.
#[derive(Debug, Clone)]
pub struct RampSettings {
    /// Clicking connections (reconnected for every step, so a step starts
    /// from a server that has drained the previous one).
    pub clients: usize,
    /// First rate, clicks/s.
    pub start_rate: f64,
    /// Each next rate is the last one times this.
    pub factor: f64,
    /// Highest rate tried.
    pub max_rate: f64,
    /// Length of each step.
    pub step: Duration,
    /// Bound on the observer's p99 click-to-visible latency.
    pub bound: Duration,
    /// Extra steps, bisecting (geometrically) between the last good rate and
    /// the first bad one, so the answer is finer than `factor`.
    pub refine: u32,
}

#[derive(Debug, Serialize)]
pub struct RampReport {
    pub mode: &'static str,
    pub clients: usize,
    pub bound_p99_ms: f64,
    /// The highest rate of a step that passed; 0 if none did.
    pub highest_sustained_rate_per_s: f64,
    /// Why the ramp stopped rising: `latency` (p99 over the bound), `lost`
    /// (clicks unacknowledged or a client off the exact total), `throughput`
    /// (acks fell behind the clicks sent), `load generator` (the tool could
    /// not send the offered rate: the result is a floor, not the server's
    /// limit), or `max rate`.
    pub limited_by: &'static str,
    /// The warm-up at the start rate, run first and not judged.
    pub warmup: FloodReport,
    /// Every step in the order run.
    pub steps: Vec<FloodReport>,
}

/// Ramps as `settings` say; a step passes when the tool sent at least 90% of
/// the offered rate, every client converged on the exact total with nothing
/// left unacknowledged, acks kept up with at least 90% of the clicks sent,
/// and p99 visible latency stayed within the bound.
pub async fn ramp(target: &Target, settings: &RampSettings) -> Result<RampReport, BenchError> {
    let bound_ms = settings.bound.as_secs_f64() * 1000.0;
    // Why a step fails, or None if it passes. Throughput is judged against
    // what was actually sent, so a short step's rounding is no failure; the
    // tool falling short of the offered rate is reported as such.
    let verdict = |r: &FloodReport| {
        if r.sent_rate_per_s < 0.9 * r.target_rate_per_s {
            Some("load generator")
        } else if !r.converged {
            Some("lost")
        } else if r.achieved_rate_per_s < 0.9 * r.sent_rate_per_s {
            Some("throughput")
        } else if r.visible.p99_ms > bound_ms {
            Some("latency")
        } else {
            None
        }
    };
    // The first thousand connections a fresh server takes cost it page
    // faults and allocator growth (and Node its JIT), none of which later
    // steps pay: on this machine that alone put the first step's p99 over
    // the bound in runs whose later steps passed. A warm-up step at the
    // start rate goes first; it is reported, not judged.
    let warmup = flood(target, settings.clients, settings.start_rate, settings.step).await?;
    settle(target).await?;
    let mut steps = Vec::new();
    let mut best = 0.0;
    let mut failed = None;
    let mut limited_by = "max rate";
    let mut rate = settings.start_rate;
    while rate <= settings.max_rate {
        let report = flood(target, settings.clients, rate, settings.step).await?;
        settle(target).await?;
        let why = verdict(&report);
        steps.push(report);
        if let Some(why) = why {
            failed = Some(rate);
            limited_by = why;
            break;
        }
        best = rate;
        rate *= settings.factor;
    }
    // Refining is pointless when the tool itself was the limit.
    if let Some(mut bad) = failed.filter(|_| limited_by != "load generator") {
        for _ in 0..settings.refine {
            if best == 0.0 {
                break;
            }
            let mid = (best * bad).sqrt();
            let report = flood(target, settings.clients, mid, settings.step).await?;
            settle(target).await?;
            match verdict(&report) {
                None => best = mid,
                Some(why) => {
                    bad = mid;
                    limited_by = why;
                }
            }
            steps.push(report);
        }
    }
    Ok(RampReport {
        mode: "ramp",
        clients: settings.clients,
        bound_p99_ms: bound_ms,
        highest_sustained_rate_per_s: best,
        limited_by,
        warmup,
        steps,
    })
}
