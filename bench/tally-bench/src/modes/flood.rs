//! `flood`: N clients clicking at an aggregate open-loop rate, one observer.
//! What rate does the server sustain, how fast are clicks acknowledged and
//! seen, and does everyone end on the exact total?

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Observer, cancel_after};
use crate::client::{Client, Incoming};
use crate::report::{Latency, histogram, record, summarize};
use crate::timeline::{Seen, SendTimes};
use crate::{BenchError, SETTLE, Target, connect_all, greeting, micros_since};

#[derive(Debug, Serialize)]
pub struct FloodReport {
    pub mode: &'static str,
    pub clients: usize,
    pub target_rate_per_s: f64,
    /// Acknowledged clicks per second, over the sending time or until the
    /// last ack if that came later: queueing earns no credit.
    pub achieved_rate_per_s: f64,
    /// Clicks the tool sent per second, over the sending time: below the
    /// target rate, the tool itself could not keep up.
    pub sent_rate_per_s: f64,
    /// Clicks acknowledged.
    pub clicks: u64,
    /// Clicks sent but never acknowledged.
    pub unacked: u64,
    /// Click sent → its ack, at the clicking client.
    pub ack: Latency,
    /// Click sent → the observer first sees a total at least that click's.
    pub visible: Latency,
    /// Every client and the observer ended on the final total, the final
    /// total is exactly the start total plus the acknowledged clicks, and
    /// nothing was left unacknowledged.
    pub converged: bool,
    pub final_total: u64,
    /// Frames received by all clients and the observer.
    pub messages_received: u64,
}

/// What one clicking client reports back.
struct ClientResult {
    ack: hdrhistogram::Histogram<u64>,
    max_seen: u64,
    frames: u64,
    sent: u64,
    unacked: u64,
}

/// `n` clients clicking at an aggregate `rate` for `duration`.
pub async fn flood(
    target: &Target,
    n: usize,
    rate: f64,
    duration: Duration,
) -> Result<FloodReport, BenchError> {
    let (mut clients, _) = connect_all(target, n, "connecting").await?;
    let start = Instant::now();
    let stop = CancellationToken::new();
    let (final_tx, final_rx) = watch::channel(0);
    let observer = Observer::spawn(&target.url, start, final_rx.clone(), stop.clone()).await?;
    let base = observer.base;
    for client in &mut clients {
        greeting(client, &target.url).await?;
    }

    let planned = (rate * duration.as_secs_f64()).ceil() as usize;
    // Slack for the last tick of every client's schedule.
    let sent = SendTimes::new(base, planned + n);

    // Each client clicks on its own schedule, one click every n/rate seconds,
    // offset so that together they make an even `rate`.
    let per_client = Duration::from_secs_f64(n as f64 / rate);
    // One end for everyone, fixed before any task runs: spawning 10,000
    // tasks takes a while, and a per-task end would add clicks late.
    let sending_ends = tokio::time::Instant::now() + duration;
    // The achieved rate counts from here, not from `start`: greeting a
    // thousand clients can take seconds on a busy server, and that is no
    // part of the clicking time.
    let sending_starts = Instant::now();
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<u64>();
    let mut tasks = JoinSet::new();
    for (i, client) in clients.into_iter().enumerate() {
        let first = tokio::time::Instant::now() + per_client.mul_f64(i as f64 / n as f64);
        let pace = tokio::time::interval_at(first, per_client);
        tasks.spawn(click_loop(
            client,
            pace,
            start,
            sending_ends,
            sent.clone(),
            ack_tx.clone(),
            final_rx.clone(),
            stop.clone(),
        ));
    }
    drop(ack_tx);

    // The final total is known once every sent click is acked: count acks
    // until the senders are done and the acks stop.
    let bar = target.progress.bar(planned as u64, "clicking");
    let mut acked = 0u64;
    let mut final_total = base;
    let mut last_ack = sending_starts;
    // A server that falls behind still gets a chance to answer, but not forever.
    let give_up = sending_ends + 3 * SETTLE;
    let quiet = Duration::from_millis(500);
    let mut quiet_from = sending_ends;
    loop {
        // Done once sending has ended and no ack came for `quiet`.
        let done_at = quiet_from.max(sending_ends) + quiet;
        tokio::select! {
            ack = ack_rx.recv() => match ack {
                Some(total) => {
                    acked += 1;
                    final_total = final_total.max(total);
                    last_ack = Instant::now();
                    quiet_from = tokio::time::Instant::now();
                    bar.inc(1);
                }
                None => break,
            },
            () = tokio::time::sleep_until(done_at.min(give_up)) => break,
        }
    }
    bar.finish_and_clear();
    final_tx.send_replace(final_total);
    let timer = cancel_after(&stop, SETTLE);
    let mut ack_h = histogram();
    let mut converged = true;
    let mut messages = 0;
    let mut unacked = 0;
    let mut sent_clicks = 0;
    while let Some(joined) = tasks.join_next().await {
        let result = joined?;
        sent_clicks += result.sent;
        ack_h.add(&result.ack).ok();
        converged &= result.max_seen >= final_total;
        messages += result.frames;
        unacked += result.unacked;
    }
    let (seen, observer_frames) = observer.finish().await?;
    timer.abort();
    converged &= seen.max() >= final_total && unacked == 0 && final_total == base + acked;
    let mut visible = histogram();
    seen.latencies(&sent, &mut visible);
    Ok(FloodReport {
        mode: "flood",
        clients: n,
        target_rate_per_s: rate,
        achieved_rate_per_s: acked as f64
            / duration
                .as_secs_f64()
                .max((last_ack - sending_starts).as_secs_f64()),
        sent_rate_per_s: sent_clicks as f64 / duration.as_secs_f64(),
        clicks: acked,
        unacked,
        ack: summarize(&ack_h),
        visible: summarize(&visible),
        converged,
        final_total,
        messages_received: messages + observer_frames,
    })
}

/// One clicking client: clicks on `pace` until `until`, records its acks,
/// then reads on until it has seen the final total (or `stop`).
#[allow(clippy::too_many_arguments)] // one task's whole context, passed once
async fn click_loop(
    mut client: Client,
    mut pace: tokio::time::Interval,
    start: Instant,
    until: tokio::time::Instant,
    sent: SendTimes,
    acks: mpsc::UnboundedSender<u64>,
    mut final_total: watch::Receiver<u64>,
    stop: CancellationToken,
) -> ClientResult {
    let mut send_at = Vec::new();
    let mut ack = histogram();
    let mut seen = Seen::default();
    let mut frames = 0;
    let mut acked = 0;
    // One timer for the whole run: a fresh `sleep_until` per loop turn
    // registers and cancels a timer for every frame, which at 10,000 clients
    // cost the tool CPU that the server under test needs.
    let sending_ends = tokio::time::sleep_until(until);
    tokio::pin!(sending_ends);
    loop {
        let sending = tokio::time::Instant::now() < until;
        let target = *final_total.borrow();
        if !sending && acked == send_at.len() && target != 0 && seen.max() >= target {
            break;
        }
        tokio::select! {
            () = stop.cancelled() => break,
            // Wakes the loop when sending ends: without it a client that
            // receives nothing more would sleep until its next tick, long
            // after the end, and send one click too late.
            () = &mut sending_ends, if sending => {}
            _ = pace.tick(), if sending => {
                send_at.push(micros_since(start));
                if client.click().await.is_err() { break; }
            }
            frame = client.recv() => match frame {
                Ok(Incoming::Ack { id, total }) => {
                    frames += 1;
                    if let Some(&at) = usize::try_from(id).ok().and_then(|id| send_at.get(id)) {
                        record(&mut ack, micros_since(start).saturating_sub(at));
                        sent.note(total, at);
                        acked += 1;
                        acks.send(total).ok();
                    }
                    seen.note(total, 0);
                }
                Ok(Incoming::Count(total)) => { frames += 1; seen.note(total, 0); }
                Ok(Incoming::Other | Incoming::Reply { .. } | Incoming::Message(_)) => frames += 1,
                Err(_) => break,
            },
            _ = final_total.changed() => {}
        }
    }
    client.close().await;
    ClientResult {
        ack,
        max_seen: seen.max(),
        frames,
        sent: send_at.len() as u64,
        unacked: (send_at.len() - acked) as u64,
    }
}
