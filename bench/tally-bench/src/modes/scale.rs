//! `scale`: connections held in rising steps (say 5,000, 10,000, 19,000),
//! and at each step what a server holding that many must still do: stay
//! small, get one click to every connection, take a flood from some of them
//! with every connection ending on the exact total, and answer `/healthz`
//! promptly all the while.

use std::time::Instant;

use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::flood::Clickers;
use super::health::{Health, HealthReport, Phase};
use super::held::{ClickersDone, HeldFlood, StepTraffic, click_once};
use super::reading::Reading;
use crate::client::Client;
use crate::cpu::{ToolClock, ToolSpans};
use crate::report::{Latency, histogram, record, summarize};
use crate::timeline::SendTimes;
use crate::{BenchError, Target, connect_range, greeting, micros_since, rss_kib};

/// How to scale.
#[derive(Debug, Clone)]
pub struct ScaleSettings {
    /// Connections held at each step, rising; each step adds to the last.
    pub steps: Vec<usize>,
    /// What each step does with them.
    pub traffic: StepTraffic,
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
    /// The tool's CPU from each click until every connection saw it, in
    /// cores, and whether that was above 90% of the cores it may use: then click → all measured the
    /// tool's reading of every frame as much as the servers' writing them.
    pub click_tool_cpu_cores: f64,
    pub click_tool_saturated: bool,
    pub flood: HeldFlood,
    /// `GET /healthz` through the whole step, from a thread of its own.
    pub health: HealthReport,
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
        let health = Health::spawn(self.target.home(), self.settings.traffic.health_every)?;

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
        let mut tool = ToolSpans::default();
        let (click_to_all, click_missed, click_short) =
            self.click_to_all(clicker, held, total, &mut tool).await?;
        let (click_tool_cpu_cores, click_tool_saturated) = tool.read();
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
            click_tool_cpu_cores,
            click_tool_saturated,
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
    /// must see each one. The tool's CPU from each click until everyone saw
    /// it goes into `tool`.
    async fn click_to_all(
        &self,
        clicker: &mut Client,
        held: &mut Vec<Client>,
        total: &mut u64,
        tool: &mut ToolSpans,
    ) -> Result<(Latency, u64, usize), BenchError> {
        let mut h = histogram();
        let (mut missed, mut short) = (0, 0);
        let mut pace = tokio::time::interval(self.settings.traffic.click_every);
        // A click that took longer than `click_every` to reach everyone
        // does not make the next one due at once.
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for _ in 0..self.settings.traffic.clicks {
            pace.tick().await;
            let busy = ToolClock::start(&[]);
            let reading = Reading::start(std::mem::take(held));
            let at = micros_since(reading.start);
            let clicked = click_once(clicker).await;
            let clicked = match clicked {
                Ok(clicked) => clicked,
                Err(err) => {
                    *held = reading.stop().await?.0;
                    return Err(err);
                }
            };
            *total = (*total).max(clicked);
            let sent = SendTimes::new(clicked.saturating_sub(1), 1);
            sent.note(clicked, at);
            // Each click waits until every connection has seen it (or
            // SETTLE has passed) before the next goes out, so it times one
            // click reaching everyone, not a queue of them.
            let (clients, seen) = reading.until(*total).await?;
            tool.add(&busy);
            *held = clients;
            short = 0;
            for seen in &seen {
                missed += seen.latencies(&sent, &mut h);
                short += usize::from(seen.max() < *total);
            }
        }
        Ok((summarize(&h), missed, short))
    }

    /// The first `flood_clients` held connections click at `flood_rate`
    /// for `flood_duration`; all the others listen.
    async fn flood(
        &self,
        held: &mut Vec<Client>,
        total: &mut u64,
    ) -> Result<HeldFlood, BenchError> {
        let traffic = &self.settings.traffic;
        let n = traffic.flood_clients.min(held.len());
        let base = *total;
        let mut clients = std::mem::take(held);
        let listeners = clients.split_off(n);
        let reading = Reading::start(listeners);
        let start = reading.start;
        let stop = CancellationToken::new();
        let planned = traffic.planned_clicks();
        let sent = SendTimes::new(base, planned + n);
        let (final_tx, final_rx) = watch::channel(0);
        let tool = ToolClock::start(&[]);
        let mut clickers = Clickers::spawn(
            clients,
            traffic.flood_rate,
            traffic.flood_duration,
            start,
            &sent,
            &final_rx,
            &stop,
        );
        let acks = clickers
            .collect_acks(base, &self.target.progress.bar(planned as u64, "clicking"))
            .await;
        let (tool_cpu_cores, tool_saturated) = tool.read();
        let final_total = acks.final_total.max(base + acks.acked);
        *total = final_total;
        let tasks = std::mem::take(&mut clickers.tasks);
        let done = ClickersDone::collect(tasks, &final_tx, &stop, final_total).await?;
        let mut short = done.short;
        let mut most_seen = done.most_seen.max(base);
        let (listeners, seen) = reading.until(final_total).await?;
        let mut visible = histogram();
        let mut missed = 0;
        for seen in &seen {
            missed += seen.latencies(&sent, &mut visible);
            short += usize::from(seen.max() < final_total);
            most_seen = most_seen.max(seen.max());
        }
        *held = done.clients;
        held.extend(listeners);
        *total = most_seen.max(final_total);
        Ok(HeldFlood {
            clients: n,
            target_rate_per_s: traffic.flood_rate,
            // The rate counts the acks in time, over the time until the last
            // of them: late ones have no time of their own to count to.
            achieved_rate_per_s: acks.acked as f64
                / traffic
                    .flood_duration
                    .as_secs_f64()
                    .max((acks.last_ack - clickers.sending_starts).as_secs_f64()),
            clicks: done.acked,
            unacked: done.unacked,
            ack: summarize(&done.ack),
            visible_to_all: summarize(&visible),
            missed,
            converged: short == 0
                && done.unacked == 0
                && most_seen == final_total
                && final_total == base + done.acked,
            tool_cpu_cores,
            tool_saturated,
        })
    }
}
