//! What the workloads that hold connections from step to step share
//! (`scale` in one process, `crowd` over its shards): the traffic each step
//! puts on the held connections, and the report of its flood.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::cancel_after;
use super::flood::ClientResult;
use crate::client::{Client, Incoming};
use crate::report::{Latency, histogram};
use crate::{BenchError, SETTLE};

/// The traffic of every step, once its connections are held.
#[derive(Debug, Clone)]
pub struct StepTraffic {
    /// Clicks, at least `click_every` apart, that must each reach every
    /// connection; each is sent once every connection has seen the last.
    pub clicks: u64,
    pub click_every: Duration,
    /// How many of the held connections click in each step's flood…
    pub flood_clients: usize,
    /// …at this rate, all together…
    pub flood_rate: f64,
    /// …for this long.
    pub flood_duration: Duration,
    /// How often each node's `/healthz` is asked, all through each step.
    pub health_every: Duration,
}

impl StepTraffic {
    /// The clicks a flood plans to send; their totals, with one late click
    /// per client at most, fit in this plus `flood_clients`.
    pub fn planned_clicks(&self) -> usize {
        (self.flood_rate * self.flood_duration.as_secs_f64()).ceil() as usize
    }
}

/// A flood from some of the held connections while all the others listen.
#[derive(Debug, Serialize)]
pub struct HeldFlood {
    pub clients: usize,
    pub target_rate_per_s: f64,
    /// Acknowledged clicks per second, over the sending time or until the
    /// last ack if that came later.
    pub achieved_rate_per_s: f64,
    /// Clicks acknowledged by the end, late ones included.
    pub clicks: u64,
    pub unacked: u64,
    pub ack: Latency,
    /// Click sent → each listening connection first sees a total at least
    /// that click's: one sample per (click, listener).
    pub visible_to_all: Latency,
    /// (click, listener) pairs never seen.
    pub missed: u64,
    /// Every connection, clickers and listeners, ended on the final total;
    /// the final total is exactly the start total plus every acknowledged
    /// click (no connection saw more, and none of them was acknowledged
    /// after the others were counted); and nothing was left unacknowledged.
    pub converged: bool,
    /// The tool's CPU (every process of it) from the flood's start to its
    /// last ack, in cores, and whether that was above 90% of the cores it
    /// may use: then the flood's latencies are the tool's as much as the
    /// servers'.
    pub tool_cpu_cores: f64,
    pub tool_saturated: bool,
}

/// One click from `clicker`, and the total its ack carried.
pub(crate) async fn click_once(clicker: &mut Client) -> Result<u64, BenchError> {
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
    tokio::time::timeout(SETTLE, acked)
        .await
        .map_err(|_| BenchError::Unacked { acked: 0, sent: 1 })?
}

/// A flood's clickers once they have read on to the final total: their
/// clients back in the order they clicked in (so the next step's flood has
/// the same ones), and what they add up to.
pub(crate) struct ClickersDone {
    pub clients: Vec<Client>,
    pub ack: Histogram<u64>,
    /// Clicks acknowledged by the end, by each client's own count, so an
    /// ack that came after the quiet gap that ended the acks' collection
    /// still counts.
    pub acked: u64,
    pub unacked: u64,
    /// Clickers that did not see `until`.
    pub short: usize,
    /// The largest total a clicker saw.
    pub most_seen: u64,
}

impl ClickersDone {
    /// Tells the clickers `tasks` the final total `until`, waits until they
    /// have seen it (at most [`SETTLE`], then `stop` ends them), and adds
    /// up what they report.
    pub async fn collect(
        mut tasks: JoinSet<(Client, ClientResult)>,
        final_total: &watch::Sender<u64>,
        stop: &CancellationToken,
        until: u64,
    ) -> Result<Self, BenchError> {
        final_total.send_replace(until);
        let timer = cancel_after(stop, SETTLE);
        let mut done = ClickersDone {
            clients: Vec::new(),
            ack: histogram(),
            acked: 0,
            unacked: 0,
            short: 0,
            most_seen: 0,
        };
        let mut clients = Vec::with_capacity(tasks.len());
        while let Some(joined) = tasks.join_next().await {
            let (client, result) = joined?;
            done.ack.add(&result.ack).ok();
            done.acked += result.sent - result.unacked;
            done.unacked += result.unacked;
            done.short += usize::from(result.max_seen < until);
            done.most_seen = done.most_seen.max(result.max_seen);
            clients.push((result.index, client));
        }
        timer.abort();
        clients.sort_unstable_by_key(|&(i, _)| i);
        done.clients = clients.into_iter().map(|(_, client)| client).collect();
        Ok(done)
    }
}
