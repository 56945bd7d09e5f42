//! `flood`: N clients clicking at an aggregate open-loop rate, one observer.
//! What rate does the server sustain, how fast are clicks acknowledged and
//! seen, and does everyone end on the exact total?

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Observer, cancel_after, listen};
use crate::client::{Client, Dial, Incoming};
use crate::cpu::{CpuClock, CpuShare};
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
    /// With several `--url`s the observer is on the last node and a click's
    /// total is the one its own node acknowledged, which may not yet count
    /// other nodes' clicks: then this is a lower bound, and `fanout`'s
    /// `delivery_other_nodes` is the exact figure.
    pub visible: Latency,
    /// Every client and the observer ended on the final total, the final
    /// total is exactly the start total plus the acknowledged clicks, and
    /// nothing was left unacknowledged.
    pub converged: bool,
    pub final_total: u64,
    /// Frames received by all clients and the observer.
    pub messages_received: u64,
    /// The tool's and the servers' CPU from the first click to the last
    /// ack: with the tool's core saturated the figures above are a floor.
    pub cpu: CpuShare,
    /// What the attack beside the load achieved (`flood --attack`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attack: Option<AttackReport>,
}

/// An attack beside the flood: one script clicking far faster than a person
/// on one socket, reconnecting whenever it is cut off, and a crowd of
/// sockets opened from one address. The flood's clients are the bystanders
/// whose latency should not suffer.
#[derive(Debug, Clone)]
pub struct Attack {
    /// Clicks per second the script tries.
    pub rate: f64,
    /// Where the script connects from.
    pub script_from: IpAddr,
    /// Sockets opened (and held) from `sockets_from`.
    pub sockets: usize,
    pub sockets_from: IpAddr,
}

/// What the attack got through.
#[derive(Debug, Default, Serialize)]
pub struct AttackReport {
    pub script_from: String,
    pub script_rate_per_s: f64,
    /// Clicks the script sent.
    pub script_sent: u64,
    /// Its clicks the server counted (acknowledged with a total).
    pub script_counted: u64,
    /// Its clicks refused with an error ack (`rate_limited`).
    pub script_refused_clicks: u64,
    /// Its clicks never answered because the server cut it off first; the
    /// server may have counted some of them, so the final total may exceed
    /// the acknowledged clicks by at most this.
    pub script_unanswered: u64,
    /// Times the server disconnected the script.
    pub script_cut_off: u64,
    /// Connections the script opened, the first included.
    pub script_connections: u64,
    /// Its connection attempts the server refused.
    pub script_refused_connections: u64,
    pub sockets_from: String,
    pub sockets_tried: usize,
    pub sockets_accepted: usize,
    /// Attempts refused by a connection cap (HTTP 503).
    pub sockets_refused: usize,
}

/// After being refused or cut off, the script waits this long before it
/// connects again: a real script would retry, and a tighter loop would
/// measure the load tool's CPU rather than the server.
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);

/// What one clicking client reports back.
pub(crate) struct ClientResult {
    /// The client's place among the clickers, so that a workload handing
    /// them back (as `scale` and `crowd` do) keeps them in the load's order.
    pub index: usize,
    pub ack: hdrhistogram::Histogram<u64>,
    pub max_seen: u64,
    pub frames: u64,
    pub sent: u64,
    pub unacked: u64,
}

/// `n` clients clicking at an aggregate `rate` for `duration`.
pub async fn flood(
    target: &Target,
    n: usize,
    rate: f64,
    duration: Duration,
) -> Result<FloodReport, BenchError> {
    flood_with(target, n, rate, duration, None).await
}

/// [`flood`], with an [`Attack`] going on beside it for the same time.
pub async fn flood_with(
    target: &Target,
    n: usize,
    rate: f64,
    duration: Duration,
    attack: Option<Attack>,
) -> Result<FloodReport, BenchError> {
    let (mut clients, _) = connect_all(target, n, "connecting").await?;
    let start = Instant::now();
    let stop = CancellationToken::new();
    let (final_tx, final_rx) = watch::channel(0);
    let observer = Observer::spawn(
        target.far(),
        target.guest(n),
        start,
        final_rx.clone(),
        stop.clone(),
    )
    .await?;
    let base = observer.base;
    for (i, client) in clients.iter_mut().enumerate() {
        greeting(client, target.url(i)).await?;
    }

    // The attack's crowd is in place before the clicking starts and held
    // through it; the script, which also meets the address caps when the
    // server cuts it off and it comes back, starts with the clicking.
    let mut crowd = JoinSet::new();
    let mut attack_report = None;
    if let Some(attack) = &attack {
        let mut report = AttackReport {
            script_from: attack.script_from.to_string(),
            script_rate_per_s: attack.rate,
            sockets_from: attack.sockets_from.to_string(),
            sockets_tried: attack.sockets,
            ..AttackReport::default()
        };
        let how = Dial {
            source: Some(attack.sockets_from),
            ..Dial::default()
        };
        for _ in 0..attack.sockets {
            match Client::dial(target.home(), &how).await {
                Ok(client) => {
                    report.sockets_accepted += 1;
                    crowd.spawn(listen(client, start, final_rx.clone(), stop.clone()));
                }
                Err(crate::ClientError::Refused(_)) => report.sockets_refused += 1,
                Err(err) => return Err(err.into()),
            }
        }
        attack_report = Some(report);
    }

    let planned = (rate * duration.as_secs_f64()).ceil() as usize;
    // Slack for the last tick of every client's schedule.
    let sent = SendTimes::new(base, planned + n);

    let cpu = CpuClock::start(&target.server_pids);
    let mut clickers = Clickers::spawn(clients, rate, duration, start, &sent, &final_rx, &stop);
    // Read over the sending time only: the wait for the last acks after it
    // is idle for the tool and would water its share down.
    let sending_ends = clickers.sending_ends;
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(sending_ends).await;
        cpu.read()
    });
    // The script starts with the bystanders, and clicks until they stop.
    let script = attack.as_ref().map(|attack| {
        tokio::spawn(script_loop(
            target.home().to_string(),
            attack.clone(),
            clickers.sending_ends,
            clickers.ack_sender(),
            stop.clone(),
        ))
    });
    let Acks {
        acked,
        final_total,
        last_ack,
    } = clickers
        .collect_acks(base, &target.progress.bar(planned as u64, "clicking"))
        .await;
    let cpu = cpu.await?;
    // Across several nodes an ack carries its own node's view, which may
    // not count other nodes' latest clicks yet: the total everyone must
    // reach is at least the start plus every acknowledged click.
    let final_total = final_total.max(base + acked);
    let (sending_starts, mut tasks) = (clickers.sending_starts, clickers.tasks);
    final_tx.send_replace(final_total);
    let timer = cancel_after(&stop, SETTLE);
    let mut ack_h = histogram();
    let mut converged = true;
    let mut messages = 0;
    let mut unacked = 0;
    let mut sent_clicks = 0;
    while let Some(joined) = tasks.join_next().await {
        let (client, result) = joined?;
        client.close().await;
        sent_clicks += result.sent;
        ack_h.add(&result.ack).ok();
        converged &= result.max_seen >= final_total;
        messages += result.frames;
        unacked += result.unacked;
    }
    let (seen, observer_frames) = observer.finish().await?;
    let mut script_counted = 0;
    let mut unanswered = 0;
    if let (Some(script), Some(report)) = (script, attack_report.as_mut()) {
        let result = script.await?;
        script_counted = result.counted;
        report.script_sent = result.sent;
        report.script_counted = result.counted;
        report.script_refused_clicks = result.refused;
        report.script_unanswered = result.sent - result.counted - result.refused;
        unanswered = report.script_unanswered;
        report.script_cut_off = result.cut_off;
        report.script_connections = result.connections;
        report.script_refused_connections = result.refused_connections;
    }
    stop.cancel();
    while crowd.join_next().await.is_some() {}
    timer.abort();
    // Clicks the server counted but could not answer, because it cut the
    // script off, are the only ones the total may hold beyond the acks.
    converged &= seen.max() >= final_total
        && unacked == 0
        && (base + acked..=base + acked + unanswered).contains(&final_total);
    let mut visible = histogram();
    seen.latencies(&sent, &mut visible);
    Ok(FloodReport {
        mode: "flood",
        clients: n,
        target_rate_per_s: rate,
        achieved_rate_per_s: (acked - script_counted) as f64
            / duration
                .as_secs_f64()
                .max((last_ack - sending_starts).as_secs_f64()),
        sent_rate_per_s: sent_clicks as f64 / duration.as_secs_f64(),
        clicks: acked - script_counted,
        unacked,
        ack: summarize(&ack_h),
        visible: summarize(&visible),
        converged,
        final_total,
        messages_received: messages + observer_frames,
        cpu,
        attack: attack_report,
    })
}

/// What the attacking script did.
struct ScriptResult {
    sent: u64,
    counted: u64,
    refused: u64,
    cut_off: u64,
    connections: u64,
    refused_connections: u64,
}

/// The attacking script: clicks at `attack.rate` until `until`, and
/// whenever the server cuts it off, connects again (pausing
/// [`RECONNECT_PAUSE`] after each failure). Counted clicks go to `acks`, like
/// everyone's, so the final total stays exact.
async fn script_loop(
    url: String,
    attack: Attack,
    until: tokio::time::Instant,
    acks: mpsc::UnboundedSender<u64>,
    stop: CancellationToken,
) -> ScriptResult {
    let mut result = ScriptResult {
        sent: 0,
        counted: 0,
        refused: 0,
        cut_off: 0,
        connections: 0,
        refused_connections: 0,
    };
    let how = Dial {
        source: Some(attack.script_from),
        ..Dial::default()
    };
    let period = Duration::from_secs_f64(1.0 / attack.rate);
    while tokio::time::Instant::now() < until && !stop.is_cancelled() {
        let mut client = match Client::dial(&url, &how).await {
            Ok(client) => client,
            Err(_) => {
                result.refused_connections += 1;
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
        };
        result.connections += 1;
        // Timer ticks are a millisecond apart at best: a script at 10,000
        // clicks/s sends them in bursts of ten.
        let mut pace = tokio::time::interval(period);
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let sending_ends = tokio::time::sleep_until(until);
        tokio::pin!(sending_ends);
        let answered = |result: &mut ScriptResult, frame| match frame {
            Incoming::Ack { total, .. } => {
                result.counted += 1;
                acks.send(total).ok();
            }
            Incoming::Reply { error: true, .. } => result.refused += 1,
            _ => {}
        };
        let answered_before = result.counted + result.refused;
        let mut sent = 0;
        let mut lost = false;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = &mut sending_ends => break,
                _ = pace.tick() => {
                    if client.click().await.is_err() { lost = true; break; }
                    sent += 1;
                }
                frame = client.recv() => match frame {
                    Ok(frame) => answered(&mut result, frame),
                    Err(_) => { lost = true; break; }
                },
            }
        }
        result.sent += sent;
        if lost {
            result.cut_off += 1;
            tokio::time::sleep(RECONNECT_PAUSE).await;
            continue;
        }
        // The answers to the last clicks, so every counted one is known.
        let drain = async {
            while result.counted + result.refused - answered_before < sent {
                match client.recv().await {
                    Ok(frame) => answered(&mut result, frame),
                    Err(_) => break,
                }
            }
        };
        tokio::time::timeout(SETTLE, drain).await.ok();
        client.close().await;
    }
    result
}

/// A flood's clicking clients, each on its own schedule.
pub(crate) struct Clickers {
    pub tasks: JoinSet<(Client, ClientResult)>,
    /// Where their acks go, until [`Clickers::collect_acks`].
    acks: Option<mpsc::UnboundedSender<u64>>,
    ack_rx: mpsc::UnboundedReceiver<u64>,
    /// The achieved rate counts from here, not from the clients' connect:
    /// greeting a thousand clients can take seconds on a busy server, and
    /// that is no part of the clicking time.
    pub sending_starts: Instant,
    pub sending_ends: tokio::time::Instant,
}

impl Clickers {
    /// Starts `clients` clicking, together at an even `rate`, for
    /// `duration`: each client clicks once every n/rate seconds, offset from
    /// the others.
    pub fn spawn(
        clients: Vec<Client>,
        rate: f64,
        duration: Duration,
        start: Instant,
        sent: &SendTimes,
        final_total: &watch::Receiver<u64>,
        stop: &CancellationToken,
    ) -> Self {
        let n = clients.len().max(1);
        let per_client = Duration::from_secs_f64(n as f64 / rate);
        // One end for everyone, fixed before any task runs: spawning 10,000
        // tasks takes a while, and a per-task end would add clicks late.
        let sending_ends = tokio::time::Instant::now() + duration;
        let sending_starts = Instant::now();
        let (acks, ack_rx) = mpsc::unbounded_channel();
        let mut tasks = JoinSet::new();
        for (i, client) in clients.into_iter().enumerate() {
            let first = tokio::time::Instant::now() + per_client.mul_f64(i as f64 / n as f64);
            tasks.spawn(click_loop(
                (i, client),
                tokio::time::interval_at(first, per_client),
                start,
                sending_ends,
                sent.clone(),
                acks.clone(),
                final_total.clone(),
                stop.clone(),
            ));
        }
        Clickers {
            tasks,
            acks: Some(acks),
            ack_rx,
            sending_starts,
            sending_ends,
        }
    }

    /// Where others that click beside them (the attack's script) send the
    /// totals of their acks, so the final total stays exact.
    pub fn ack_sender(&self) -> mpsc::UnboundedSender<u64> {
        self.acks
            .clone()
            .expect("acks are only closed by collect_acks, which consumes the clicking")
    }

    /// The final total is known once every sent click is acked: counts the
    /// acks until the senders are done and no ack came for half a second. A
    /// server that falls behind still gets a chance to answer, but not
    /// forever.
    pub async fn collect_acks(&mut self, base: u64, bar: &indicatif::ProgressBar) -> Acks {
        // The clients and any `ack_sender` hold the other senders.
        self.acks = None;
        let mut acked = 0u64;
        let mut final_total = base;
        let mut last_ack = self.sending_starts;
        let give_up = self.sending_ends + 3 * SETTLE;
        let quiet = Duration::from_millis(500);
        let mut quiet_from = self.sending_ends;
        loop {
            // Done once sending has ended and no ack came for `quiet`.
            let done_at = quiet_from.max(self.sending_ends) + quiet;
            tokio::select! {
                ack = self.ack_rx.recv() => match ack {
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
        Acks {
            acked,
            final_total,
            last_ack,
        }
    }
}

/// The acks of a flood's clicks.
pub(crate) struct Acks {
    pub acked: u64,
    /// The largest total acknowledged (the start total if none).
    pub final_total: u64,
    /// When the last ack arrived.
    pub last_ack: Instant,
}

/// One clicking client: clicks on `pace` until `until`, records its acks,
/// then reads on until it has seen the final total (or `stop`), and hands
/// the client back open.
#[allow(clippy::too_many_arguments)] // one task's whole context, passed once
async fn click_loop(
    (index, mut client): (usize, Client),
    mut pace: tokio::time::Interval,
    start: Instant,
    until: tokio::time::Instant,
    sent: SendTimes,
    acks: mpsc::UnboundedSender<u64>,
    mut final_total: watch::Receiver<u64>,
    stop: CancellationToken,
) -> (Client, ClientResult) {
    let mut send_at = Vec::new();
    // Ack ids go on from the client's earlier clicks, if it made any.
    let mut first_id = None;
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
                match client.click().await {
                    Ok(id) => { first_id.get_or_insert(id); }
                    Err(_) => break,
                }
            }
            frame = client.recv() => match frame {
                Ok(Incoming::Ack { id, total }) => {
                    frames += 1;
                    let index = first_id
                        .and_then(|first| id.checked_sub(first))
                        .and_then(|i| usize::try_from(i).ok());
                    if let Some(&at) = index.and_then(|i| send_at.get(i)) {
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
    let result = ClientResult {
        index,
        ack,
        max_seen: seen.max(),
        frames,
        sent: send_at.len() as u64,
        unacked: (send_at.len() - acked) as u64,
    };
    (client, result)
}
