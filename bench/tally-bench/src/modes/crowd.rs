//! `crowd`: `scale` for more connections than one process may hold. The
//! load is split over several shard processes ([`super::shard`]), each
//! under the 20,000-descriptor limit of this machine, spread over the
//! nodes' URLs and the loopback source addresses; this process steers them
//! step by step and merges what they saw. At each step: the connections
//! held, the servers' memory summed after connecting and after traffic,
//! clicks that must reach every connection, a flood from some of them with
//! every connection ending on the exact total, and every node's `/healthz`
//! latency throughout.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, Lines};

use super::health::{Health, HealthReport, Phase};
use super::held::{HeldFlood, StepTraffic, click_once};
use super::shard::{Answer, Order, instant_of, shard};
use crate::client::Client;
use crate::cpu::{ToolClock, ToolSpans};
use crate::report::{Latency, add_buckets, histogram, summarize};
use crate::{BenchError, SETTLE, Target, greeting, micros_since, rss_kib};

/// How long a shard may take over one order before the run is given up: it
/// covers connecting a shard's whole share at a slow connect rate.
const ORDER_TIMEOUT: Duration = Duration::from_secs(600);

/// How to run the crowd.
#[derive(Debug, Clone)]
pub struct CrowdSettings {
    /// Shard processes; each holds an even share of every step.
    pub processes: usize,
    /// Connections held at each step, rising, over all shards.
    pub steps: Vec<usize>,
    /// What each step does with them (the flood's clients are over all
    /// shards).
    pub traffic: StepTraffic,
}

/// Where the shards run.
#[derive(Debug, Clone)]
pub enum Shards {
    /// Each in a process of its own: this executable, run with the hidden
    /// `shard` subcommand.
    Processes(PathBuf),
    /// Each as a task of this process (for tests: the same orders and
    /// answers, without the descriptor limit's reason to split).
    Tasks,
}

#[derive(Debug, Serialize)]
pub struct CrowdReport {
    pub mode: &'static str,
    pub processes: usize,
    pub nodes: usize,
    pub steps: Vec<CrowdStep>,
    /// Why the run ended before its last step, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

/// One step: `connections` held over all shards.
#[derive(Debug, Serialize)]
pub struct CrowdStep {
    pub connections: usize,
    /// The most connections one shard process held.
    pub most_per_process: usize,
    /// Of the connections this step opened.
    pub connect_rate_per_s: f64,
    pub handshake: Latency,
    /// The sum of the servers' RSS once the step's connections are open.
    pub servers_rss_kib: Option<u64>,
    /// Each server's RSS then, in `--server-pid` order.
    pub rss_kib_by_node: Vec<Option<u64>>,
    /// The sum again after the step's clicks and flood, when every
    /// connection has been written to (per-connection queues grow on first
    /// use and keep what they grew).
    pub servers_rss_after_traffic_kib: Option<u64>,
    pub rss_after_traffic_kib_by_node: Vec<Option<u64>>,
    /// A click sent → each held connection first sees its total or more.
    pub click_to_all: Latency,
    /// (click, connection) pairs never seen.
    pub click_missed: u64,
    /// Connections that did not end on the last click's total.
    pub click_short: usize,
    /// The tool's CPU (this process and its shards) from each click until
    /// every connection saw it, in cores, and whether that was above 90%
    /// of the cores it may use: then click → all measured the tool's
    /// reading of every frame as much as the servers' writing them.
    pub click_tool_cpu_cores: f64,
    pub click_tool_saturated: bool,
    /// Held connections found closed by the end of the step (cut off by a
    /// node or the network rather than merely late), counted in the shorts
    /// and misses too.
    pub closed: usize,
    /// Its `tool_cpu_cores` are this process's and its shards'.
    pub flood: HeldFlood,
    /// `GET /healthz` on each node through the whole step, in `--url`
    /// order.
    pub health: Vec<HealthReport>,
}

/// One shard and the pipe to it.
struct Link {
    orders: Box<dyn AsyncWrite + Unpin + Send>,
    answers: Lines<BufReader<Box<dyn AsyncRead + Unpin + Send>>>,
    process: Option<tokio::process::Child>,
    task: Option<tokio::task::JoinHandle<Result<(), BenchError>>>,
}

impl Link {
    async fn send(&mut self, order: &Order) -> Result<(), BenchError> {
        let mut line = serde_json::to_string(order).expect("orders serialise");
        line.push('\n');
        self.orders
            .write_all(line.as_bytes())
            .await
            .map_err(BenchError::Runtime)?;
        self.orders.flush().await.map_err(BenchError::Runtime)
    }

    async fn answer(&mut self) -> Result<Answer, BenchError> {
        let line = tokio::time::timeout(ORDER_TIMEOUT, self.answers.next_line())
            .await
            .map_err(|_| BenchError::Shard("no answer in time".into()))?
            .map_err(BenchError::Runtime)?
            .ok_or_else(|| BenchError::Shard("it exited".into()))?;
        match serde_json::from_str(&line) {
            Ok(Answer::Failed { error }) => Err(BenchError::Shard(error)),
            Ok(answer) => Ok(answer),
            Err(err) => Err(BenchError::Shard(format!("a bad answer ({err}): {line}"))),
        }
    }
}

/// The shards of a crowd.
struct Crowd {
    links: Vec<Link>,
}

impl Crowd {
    /// Starts `settings.processes` shards; shard `k` gets the node URLs
    /// rotated by `k`, so that its first connections, and the flood's, are
    /// spread over the nodes.
    async fn start(
        target: &Target,
        processes: usize,
        epoch_us: u64,
        shards: &Shards,
    ) -> Result<Self, BenchError> {
        let mut links = Vec::with_capacity(processes);
        for k in 0..processes {
            let mut own = target.clone();
            own.urls.rotate_left(k % target.urls.len().max(1));
            own.connect_rate = target.connect_rate / processes as f64;
            own.server_pids.clear();
            // Each shard numbers its connections from 0, so its users get a
            // prefix of their own: `u` becomes `u0-`, `u1-`, … and no two
            // shards sign in the same name.
            own.users = target.users.as_ref().map(|prefix| format!("{prefix}{k}-"));
            links.push(match shards {
                Shards::Tasks => {
                    let (ours, theirs) = tokio::io::duplex(1 << 20);
                    let (their_read, their_write) = tokio::io::split(theirs);
                    let (our_read, our_write) = tokio::io::split(ours);
                    let task = tokio::spawn(async move {
                        let start = instant_of(epoch_us);
                        shard(&own, start, BufReader::new(their_read), their_write).await
                    });
                    let answers: Box<dyn AsyncRead + Unpin + Send> = Box::new(our_read);
                    Link {
                        orders: Box::new(our_write),
                        answers: BufReader::new(answers).lines(),
                        process: None,
                        task: Some(task),
                    }
                }
                Shards::Processes(exe) => {
                    let mut command = tokio::process::Command::new(exe);
                    if let Some(users) = &own.users {
                        command.arg("--users").arg(users);
                    }
                    command
                        .arg("--quiet")
                        .arg("--url")
                        .arg(own.urls.join(","))
                        .arg("--connect-rate")
                        .arg(own.connect_rate.to_string())
                        .arg("--source-addrs")
                        .arg(own.sources.len().to_string())
                        .arg("shard")
                        .arg("--epoch-us")
                        .arg(epoch_us.to_string())
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::inherit())
                        .kill_on_drop(true);
                    let mut child = command.spawn().map_err(BenchError::Runtime)?;
                    let stdin = child.stdin.take().expect("piped");
                    let stdout = child.stdout.take().expect("piped");
                    let answers: Box<dyn AsyncRead + Unpin + Send> = Box::new(stdout);
                    Link {
                        orders: Box::new(stdin),
                        answers: BufReader::new(answers).lines(),
                        process: Some(child),
                        task: None,
                    }
                }
            });
        }
        Ok(Crowd { links })
    }

    /// The shard processes' pids (none when they are tasks).
    fn pids(&self) -> Vec<u32> {
        self.links
            .iter()
            .filter_map(|link| link.process.as_ref().and_then(|child| child.id()))
            .collect()
    }

    /// Gives shard `k` the order `order(k)`, all at once, and collects the
    /// answers in shard order.
    async fn order(&mut self, order: impl Fn(usize) -> Order) -> Result<Vec<Answer>, BenchError> {
        for (k, link) in self.links.iter_mut().enumerate() {
            link.send(&order(k)).await?;
        }
        let mut answers = Vec::with_capacity(self.links.len());
        for link in &mut self.links {
            answers.push(link.answer().await?);
        }
        Ok(answers)
    }

    /// Tells every shard to quit first, so they close their connections
    /// together, then waits for each.
    async fn quit(mut self) {
        for link in &mut self.links {
            link.send(&Order::Quit).await.ok();
        }
        for link in self.links {
            if let Some(mut child) = link.process {
                // A shard closes its connections and exits; one that hangs
                // is killed rather than left behind.
                if tokio::time::timeout(SETTLE, child.wait()).await.is_err() {
                    child.kill().await.ok();
                }
            }
            if let Some(task) = link.task {
                task.await.ok();
            }
        }
    }
}

/// Shard `k`'s part of `total` split over `n`.
fn share(total: usize, k: usize, n: usize) -> usize {
    total / n + usize::from(k < total % n)
}

/// Microseconds since the Unix epoch, now.
fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Runs the crowd's steps. A step that fails ends the run; the report keeps
/// the steps before it and says why.
pub async fn crowd(
    target: &Target,
    settings: &CrowdSettings,
    shards: &Shards,
) -> Result<CrowdReport, BenchError> {
    let processes = settings.processes.max(1);
    let epoch_us = unix_micros();
    let start = instant_of(epoch_us);
    let mut crowd = Crowd::start(target, processes, epoch_us, shards).await?;
    let mut total = 0;
    let mut steps = Vec::new();
    let mut stopped = None;
    let mut held = 0;
    for &connections in &settings.steps {
        let step = Step {
            target,
            settings,
            processes,
            start,
        };
        match step.run(&mut crowd, &mut total, held, connections).await {
            Ok(report) => {
                held = report.connections;
                steps.push(report);
            }
            Err(err) => {
                stopped = Some(err.to_string());
                break;
            }
        }
    }
    crowd.quit().await;
    Ok(CrowdReport {
        mode: "crowd",
        processes,
        nodes: target.urls.len(),
        steps,
        stopped,
    })
}

struct Step<'a> {
    target: &'a Target,
    settings: &'a CrowdSettings,
    processes: usize,
    start: Instant,
}

impl Step<'_> {
    async fn run(
        &self,
        crowd: &mut Crowd,
        total: &mut u64,
        held: usize,
        connections: usize,
    ) -> Result<CrowdStep, BenchError> {
        let n = self.processes;
        let health = self
            .target
            .urls
            .iter()
            .map(|url| Health::spawn(url, self.settings.traffic.health_every))
            .collect::<Result<Vec<_>, _>>()?;

        let started = Instant::now();
        let answers = crowd
            .order(|k| Order::Connect {
                upto: share(connections, k, n),
            })
            .await?;
        let connect_secs = started.elapsed().as_secs_f64();
        let mut handshake = histogram();
        let mut now_held = 0;
        let mut most_per_process = 0;
        for answer in answers {
            let Answer::Connected { held, handshakes } = answer else {
                return Err(BenchError::Shard("answered Connect out of turn".into()));
            };
            add_buckets(&mut handshake, &handshakes);
            now_held += held;
            most_per_process = most_per_process.max(held);
        }
        let rss_kib_by_node = self.rss();

        for probe in &health {
            probe.enter(Phase::Clicking);
        }
        // The clicker connects afresh for each step's clicks: one held
        // across steps would sit unread while 50,000 others connect, long
        // enough to miss engine.io's ping and be cut off by its node.
        let mut clicker = Client::dial(self.target.home(), &self.target.guest(0)).await?;
        *total = (*total).max(greeting(&mut clicker, self.target.home()).await?);
        let clicked = self.click_to_all(crowd, &mut clicker, total).await;
        clicker.close().await;
        let clicked = clicked?;
        for probe in &health {
            probe.enter(Phase::Flooding);
        }
        let (flood, closed_after_flood) = self.flood(crowd, total).await?;
        let rss_after_traffic_kib_by_node = self.rss();
        let mut healths = Vec::with_capacity(health.len());
        for probe in health {
            healths.push(probe.finish().await?);
        }
        Ok(CrowdStep {
            connections: now_held,
            most_per_process,
            connect_rate_per_s: connections.saturating_sub(held) as f64 / connect_secs.max(1e-9),
            handshake: summarize(&handshake),
            servers_rss_kib: sum(&rss_kib_by_node),
            rss_kib_by_node,
            servers_rss_after_traffic_kib: sum(&rss_after_traffic_kib_by_node),
            rss_after_traffic_kib_by_node,
            click_to_all: clicked.latency,
            click_missed: clicked.missed,
            click_short: clicked.short,
            click_tool_cpu_cores: clicked.tool_cpu_cores,
            click_tool_saturated: clicked.tool_saturated,
            // Closed connections stay closed, so the later count includes
            // the earlier one.
            closed: clicked.closed.max(closed_after_flood),
            flood,
            health: healths,
        })
    }

    fn rss(&self) -> Vec<Option<u64>> {
        self.target
            .server_pids
            .iter()
            .map(|&pid| rss_kib(pid))
            .collect()
    }

    /// `clicks` clicks from the clicker, each awaited; every held connection
    /// must see each one.
    async fn click_to_all(
        &self,
        crowd: &mut Crowd,
        clicker: &mut Client,
        total: &mut u64,
    ) -> Result<Clicked, BenchError> {
        let mut latency = histogram();
        let (mut missed, mut short, mut closed) = (0, 0, 0);
        let mut pace = tokio::time::interval(self.settings.traffic.click_every);
        // A click that took longer than `click_every` to reach everyone
        // does not make the next one due at once.
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tool = ToolSpans::default();
        let pids = crowd.pids();
        for _ in 0..self.settings.traffic.clicks {
            pace.tick().await;
            let busy = ToolClock::start(&pids);
            let at = micros_since(self.start);
            let clicked = click_once(clicker).await?;
            *total = (*total).max(clicked);
            // Each click waits until every connection has seen it (or
            // SETTLE has passed) before the next goes out: a click sent
            // while the last is still being written to 100,000 sockets
            // would queue behind it and time the backlog, not one click
            // reaching everyone.
            let saw = Sightings::expect(crowd, vec![(clicked, at)], *total).await?;
            tool.add(&busy);
            latency.add(&saw.latency).ok();
            missed += saw.missed;
            short = saw.short;
            closed = saw.closed;
        }
        let (tool_cpu_cores, tool_saturated) = tool.read();
        Ok(Clicked {
            latency: summarize(&latency),
            missed,
            short,
            closed,
            tool_cpu_cores,
            tool_saturated,
        })
    }

    /// The flood: shard `k` clicks with its share of `flood_clients` at its
    /// share of the rate; then every shard learns every click and the final
    /// total, and says what its connections saw.
    async fn flood(
        &self,
        crowd: &mut Crowd,
        total: &mut u64,
    ) -> Result<(HeldFlood, usize), BenchError> {
        let traffic = &self.settings.traffic;
        let n = self.processes;
        let base = *total;
        let capacity = traffic.planned_clicks() + traffic.flood_clients;
        let flood_started = Instant::now();
        // The tool's CPU over the sending and its acks, not the whole step:
        // connecting is slow and light, and would dilute a saturated flood.
        let tool = ToolClock::start(&crowd.pids());
        let answers = crowd
            .order(|k| {
                let clients = share(traffic.flood_clients, k, n);
                Order::Flood {
                    clients,
                    rate: traffic.flood_rate * clients as f64 / traffic.flood_clients as f64,
                    duration_ms: u64::try_from(traffic.flood_duration.as_millis())
                        .unwrap_or(u64::MAX),
                    base,
                    capacity,
                }
            })
            .await?;
        let (tool_cpu_cores, tool_saturated) = tool.read();
        let mut acked = 0;
        let mut final_total = base;
        let mut sent = Vec::new();
        for answer in answers {
            let Answer::Clicked {
                acked: a,
                max_total,
                sent: s,
            } = answer
            else {
                return Err(BenchError::Shard("answered Flood out of turn".into()));
            };
            acked += a;
            final_total = final_total.max(max_total);
            sent.extend(s);
        }
        let clicking_secs = flood_started.elapsed().as_secs_f64();
        // Across several nodes an ack carries its own node's view: the
        // total everyone must reach is at least the start plus every ack.
        final_total = final_total.max(base + acked);
        sent.sort_unstable();
        let saw = Sightings::expect(crowd, sent, final_total).await?;
        *total = saw.most_seen.max(final_total);
        // The rate counts the acks in time; `clicks` the shards' own count
        // of acks, which includes any that came after the quiet gap that
        // ended their first answer.
        let on_time = acked;
        let acked = saw.flood_acked.max(acked);
        let flood = HeldFlood {
            clients: traffic.flood_clients,
            target_rate_per_s: traffic.flood_rate,
            achieved_rate_per_s: on_time as f64
                / traffic
                    .flood_duration
                    .as_secs_f64()
                    .max(clicking_secs - 0.5),
            clicks: acked,
            unacked: saw.unacked,
            ack: summarize(&saw.ack),
            visible_to_all: summarize(&saw.latency),
            missed: saw.missed,
            converged: saw.short == 0
                && saw.unacked == 0
                && saw.most_seen == final_total
                && final_total == base + acked,
            tool_cpu_cores,
            tool_saturated,
        };
        Ok((flood, saw.closed))
    }
}

/// Every shard's answer to one [`Order::Expect`], added up.
struct Sightings {
    latency: hdrhistogram::Histogram<u64>,
    missed: u64,
    short: usize,
    closed: usize,
    /// The largest total any connection saw.
    most_seen: u64,
    /// When the order ended a flood: its acks, their count and the clicks
    /// left unacknowledged.
    ack: hdrhistogram::Histogram<u64>,
    flood_acked: u64,
    unacked: u64,
}

impl Sightings {
    /// Tells every shard the clicks `sent` and the total `until` they must
    /// all reach, and adds up what they saw.
    async fn expect(
        crowd: &mut Crowd,
        sent: Vec<(u64, u64)>,
        until: u64,
    ) -> Result<Self, BenchError> {
        let answers = crowd
            .order(|_| Order::Expect {
                sent: sent.clone(),
                until,
            })
            .await?;
        let mut saw = Sightings {
            latency: histogram(),
            missed: 0,
            short: 0,
            closed: 0,
            most_seen: 0,
            ack: histogram(),
            flood_acked: 0,
            unacked: 0,
        };
        for answer in answers {
            let Answer::Saw {
                latency,
                missed,
                short,
                closed,
                most_seen,
                flood,
            } = answer
            else {
                return Err(BenchError::Shard("answered Expect out of turn".into()));
            };
            add_buckets(&mut saw.latency, &latency);
            saw.missed += missed;
            saw.short += short;
            saw.closed += closed;
            saw.most_seen = saw.most_seen.max(most_seen);
            if let Some(flood) = flood {
                add_buckets(&mut saw.ack, &flood.ack);
                saw.flood_acked += flood.acked;
                saw.unacked += flood.unacked;
            }
        }
        Ok(saw)
    }
}

/// What the held connections saw of the clicks one at a time.
struct Clicked {
    latency: Latency,
    missed: u64,
    short: usize,
    closed: usize,
    /// The tool's CPU from each click until everyone saw it.
    tool_cpu_cores: f64,
    tool_saturated: bool,
}

/// The sum of the figures, if every one is known.
fn sum(values: &[Option<u64>]) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.iter().copied().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_differ_by_at_most_one() {
        for (total, n) in [(100_000, 6), (7, 3), (2, 5), (0, 4)] {
            let shares: Vec<usize> = (0..n).map(|k| share(total, k, n)).collect();
            assert_eq!(shares.iter().sum::<usize>(), total, "{shares:?}");
            let (min, max) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
            assert!(max - min <= 1, "{shares:?}");
        }
    }
}
