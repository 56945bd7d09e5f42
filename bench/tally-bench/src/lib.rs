//! `tally-bench`: a load generator for servers speaking the click contract
//! (`click` with an ack carrying `{total}`, broadcast `count` `{total}`).
//!
//! Modes ([`modes`]):
//! - [`idle`]: open N connections at a bounded rate and hold them; handshake
//!   latency and, given the server's pid, its RSS per connection;
//! - [`fanout`]: N listeners, one clicker at R clicks/s; click-to-every-recipient
//!   latency and missed updates;
//! - [`flood`]: N clients clicking at an aggregate open-loop rate; achieved
//!   rate, ack latency, click-to-visible latency at an observer, convergence;
//! - [`capacity`]: a ladder of rates, several floods at each, judged by
//!   their median: the highest rate sustained with every click counted and
//!   p99 visible latency under a bound, and whether the tool limited it;
//! - [`scale`]: connections held in rising steps; at each, the server's
//!   memory, one click reaching all of them, a flood from some of them, and
//!   `/healthz` answering throughout;
//! - [`crowd`]: `scale` split over several processes ([`shard`]s), each
//!   under the per-process descriptor limit, for loads of 100,000
//!   connections over the nodes of a cluster.
//!
//! Latencies are measured against the server's own totals: a click's total is
//! known from its ack, and a recipient "sees" it when it first receives a
//! total at least that large ([`timeline`]), so servers that merge broadcasts
//! are measured as fairly as servers that send one per click.
//!
//! The tool only ever connects to the URL it is given: use it against servers
//! you run yourself.

pub mod client;
pub mod cpu;
pub mod modes;
pub mod progress;
pub mod report;
pub mod timeline;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

pub use client::{Client, ClientError, Dial, Incoming};
pub use modes::{
    Attack, AttackReport, CapacityReport, CapacitySettings, ChatReport, CrowdReport, CrowdSettings,
    FanoutReport, FloodReport, HeldFlood, IdleReport, RunError, Rung, ScaleReport, ScaleSettings,
    Shards, SoakReport, Stalled, StepTraffic, capacity, chat, crowd, fanout, fanout_with, flood,
    flood_with, idle, instant_of, scale, shard, soak,
};
pub use progress::Progress;

/// How long to wait for stragglers (late acks, the last broadcast) before
/// calling them lost.
pub(crate) const SETTLE: Duration = Duration::from_secs(10);

/// Where and how to connect; shared by every mode.
#[derive(Debug, Clone)]
pub struct Target {
    /// Base URLs of the server's nodes, e.g. `http://127.0.0.1:3000` (one
    /// for a single server). Connection `i` of the load goes to node
    /// `i % urls.len()`; the clicker (and the sender of chat's first
    /// message) is on the first, so with several nodes most of the load
    /// sees clicks made on another node.
    pub urls: Vec<String>,
    /// New connections per second while connecting: bursts of thousands of
    /// handshakes would measure the accept queue, not the server.
    pub connect_rate: f64,
    /// Progress bars on stderr (hidden anyway when stderr is no terminal).
    pub progress: Progress,
    /// When set, the clients of `connect_all` sign in (open mode's bare
    /// `username`) as this prefix plus their index: `u0`, `u1`, … So their
    /// clicks count for users, as on a server where people chose names.
    pub users: Option<String>,
    /// Local addresses the load's connections come from, in turn (empty:
    /// whatever the OS picks). See [`loopback_sources`].
    pub sources: Vec<IpAddr>,
    /// The server processes under test (one per node), for the modes that
    /// read their memory or CPU time from `/proc`; empty when unknown.
    pub server_pids: Vec<u32>,
}

impl Target {
    /// A target with the default connect rate and no progress bars.
    pub fn new(url: impl Into<String>) -> Self {
        Target {
            urls: vec![url.into()],
            connect_rate: 2000.0,
            progress: Progress::hidden(),
            users: None,
            sources: Vec::new(),
            server_pids: Vec::new(),
        }
    }

    /// The node of connection `i`.
    pub fn node(&self, i: usize) -> usize {
        i % self.urls.len().max(1)
    }

    /// The URL connection `i` goes to.
    pub fn url(&self, i: usize) -> &str {
        &self.urls[self.node(i)]
    }

    /// The first node's URL: where the clicker and the probes connect.
    pub fn home(&self) -> &str {
        &self.urls[0]
    }

    /// The last node's URL: where the flood's observer connects, so that
    /// with several nodes it sees most clicks from another node.
    pub fn far(&self) -> &str {
        &self.urls[self.urls.len() - 1]
    }

    /// Whether connection `i` is on another node than the clicker's.
    pub fn remote(&self, i: usize) -> bool {
        self.node(i) != 0
    }

    /// How the `i`-th connection of the load is opened: its source address
    /// in turn, and its username when the load signs in.
    pub fn dial(&self, i: usize) -> Dial {
        Dial {
            username: self.users.as_ref().map(|prefix| format!("{prefix}{i}")),
            source: self.source(i),
            recv_buffer: None,
        }
    }

    /// Like [`Target::dial`], but never signed in: the clicker, observer and
    /// probes the tool adds to the load.
    pub fn guest(&self, i: usize) -> Dial {
        Dial {
            source: self.source(i),
            ..Dial::default()
        }
    }

    /// The source address of the `i`-th connection, if sources are set.
    pub fn source(&self, i: usize) -> Option<IpAddr> {
        (!self.sources.is_empty()).then(|| self.sources[i % self.sources.len()])
    }
}

/// `count` loopback addresses from 127.0.0.2 up, for a server on this
/// machine: Linux answers on all of 127.0.0.0/8, and each address brings
/// its own ~28,000 ephemeral ports and its own per-address connection cap.
/// 127.0.0.1 is left out, for the connections the load does not count
/// (an attacker's, in `flood --attack`).
pub fn loopback_sources(count: u32) -> Vec<IpAddr> {
    (0..count)
        .map(|i| {
            IpAddr::V4(std::net::Ipv4Addr::from(
                u32::from(std::net::Ipv4Addr::new(127, 0, 0, 2)) + i,
            ))
        })
        .collect()
}

/// Why a run could not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(
        "{url} speaks Socket.IO but sent no `count` event within {SETTLE:?} of connecting: \
         it does not implement the click contract"
    )]
    NoGreeting { url: String },
    #[error("{dropped} of {of} connections were dropped while idle")]
    Dropped { dropped: usize, of: usize },
    #[error("only {acked} of {sent} clicks were acknowledged within {SETTLE:?}")]
    Unacked { acked: u64, sent: u64 },
    #[error(
        "{needed} connections need more file descriptors than the limit of {limit} \
         (raise it with `ulimit -n`)"
    )]
    FdLimit { needed: u64, limit: u64 },
    #[error("a client task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("cannot start the observer's thread: {0}")]
    Runtime(std::io::Error),
    #[error("the observer's thread ended without a result")]
    ObserverLost,
    #[error("the /healthz prober's thread ended without a result")]
    ProberLost,
    #[error("the server refused {0}")]
    Refused(String),
    #[error("a shard of the load failed: {0}")]
    Shard(String),
}

impl BenchError {
    /// Whether the tool, not the server, ran out of something: descriptors
    /// or local ports. A run that failed so says nothing about the server,
    /// as a tool that could not send the offered rate says nothing.
    pub fn is_tool_side(&self) -> bool {
        // EMFILE, ENFILE, EADDRNOTAVAIL (no local port left), ENOBUFS.
        const OUT_OF: [i32; 4] = [24, 23, 99, 105];
        let io = match self {
            BenchError::FdLimit { .. } => return true,
            BenchError::Client(ClientError::Tcp { source, .. }) => Some(source),
            BenchError::Client(ClientError::Connect {
                source: tokio_tungstenite::tungstenite::Error::Io(source),
                ..
            }) => Some(source),
            _ => None,
        };
        io.and_then(std::io::Error::raw_os_error)
            .is_some_and(|code| OUT_OF.contains(&code))
    }
}

/// Raises this process's open-file limit to its hard limit and checks that
/// `connections` sockets (plus some slack for the runtime) fit under it.
pub fn raise_fd_limit(connections: usize) -> Result<u64, BenchError> {
    let needed = connections as u64 + 64;
    // Best effort: on systems without RLIMIT_NOFILE the check below still runs.
    let limit = rlimit::increase_nofile_limit(u64::MAX)
        .or_else(|_| rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft))
        .unwrap_or(u64::MAX);
    if limit < needed {
        return Err(BenchError::FdLimit { needed, limit });
    }
    Ok(limit)
}

/// Microseconds since `start`.
pub(crate) fn micros_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Opens `n` connections, at most `target.connect_rate` per second. Fails on
/// the first error, so an unreachable server is reported at once rather than
/// after the whole connect schedule. Returns the clients and each one's
/// handshake time (WebSocket upgrade to namespace `40`) in µs.
pub(crate) async fn connect_all(
    target: &Target,
    n: usize,
    label: &str,
) -> Result<(Vec<Client>, Vec<u64>), BenchError> {
    connect_range(target, 0..n, label).await
}

/// [`connect_all`] for the load's connections numbered `range` (which
/// decides their source addresses and usernames), for workloads that add
/// connections to those they hold.
pub(crate) async fn connect_range(
    target: &Target,
    range: std::ops::Range<usize>,
    label: &str,
) -> Result<(Vec<Client>, Vec<u64>), BenchError> {
    let n = range.len();
    let bar = target.progress.bar(n as u64, label);
    let mut pending = JoinSet::new();
    let mut opened = Vec::with_capacity(n);
    let mut done = |joined: Result<Result<(usize, Client, u64), ClientError>, _>| {
        opened.push(joined??);
        bar.inc(1);
        Ok::<_, BenchError>(())
    };
    let mut pace =
        tokio::time::interval(Duration::from_secs_f64(1.0 / target.connect_rate.max(1.0)));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in range {
        pace.tick().await;
        while let Some(joined) = pending.try_join_next() {
            done(joined)?;
        }
        let url = target.url(i).to_string();
        let how = target.dial(i);
        pending.spawn(async move {
            let started = Instant::now();
            let client = Client::dial(&url, &how).await?;
            Ok((i, client, micros_since(started)))
        });
    }
    while let Some(joined) = pending.join_next().await {
        done(joined)?;
    }
    bar.finish_and_clear();
    // Handed back in the load's order, not the order the handshakes ended:
    // connection `i` is the one on node `target.node(i)`,
    // which is what a caller picking some of them (a flood's clickers)
    // relies on.
    opened.sort_unstable_by_key(|&(i, _, _)| i);
    Ok(opened
        .into_iter()
        .map(|(_, client, micros)| (client, micros))
        .unzip())
}

/// Waits for the greeting `count` every contract server sends on connect and
/// returns its total.
pub(crate) async fn greeting(client: &mut Client, url: &str) -> Result<u64, BenchError> {
    let wait = async {
        loop {
            if let Incoming::Count(total) = client.recv().await? {
                return Ok::<_, BenchError>(total);
            }
        }
    };
    tokio::time::timeout(SETTLE, wait)
        .await
        .map_err(|_| BenchError::NoGreeting { url: url.into() })?
}

/// The resident set size of a process, in KiB (Linux; `None` elsewhere or if
/// the process is gone).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
