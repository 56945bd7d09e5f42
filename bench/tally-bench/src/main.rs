//! `tally-bench`: load-test a server that speaks tally's click contract and
//! print one JSON result line. Only point it at servers you run yourself: it
//! connects to the URL it is given and nothing else.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tally_bench::{self as bench, CapacitySettings, Progress, Target};

/// Load generator for Socket.IO click servers (tally, or anything speaking
/// the same contract: `click` with an ack carrying `{"total":N}`, and `count`
/// broadcasts of `{"total":N}`).
///
/// Speaks Socket.IO v5 over WebSocket itself. Prints one JSON line on stdout
/// (progress bars go to stderr when it is a terminal). Use it only against
/// servers you run yourself.
#[derive(Debug, Parser)]
#[command(name = "tally-bench", version)]
struct Cli {
    /// Base URL of the server under test; the only addresses the tool
    /// connects to. Repeat it (or separate with commas) for the nodes of a
    /// cluster: connection i goes to node i mod n, the clicker to the first.
    #[arg(
        long,
        env = "TALLY_BENCH_URL",
        default_value = "http://127.0.0.1:3000",
        value_delimiter = ',',
        global = true
    )]
    url: Vec<String>,

    /// New connections per second while connecting.
    #[arg(
        long,
        env = "TALLY_BENCH_CONNECT_RATE",
        default_value_t = 2000.0,
        global = true
    )]
    connect_rate: f64,

    /// No progress bars even on a terminal.
    #[arg(long, env = "TALLY_BENCH_QUIET", global = true)]
    quiet: bool,

    /// Sign the load's clients in as users named PREFIX0, PREFIX1, … (the
    /// server must accept bare usernames, as `--auth open` does), so their
    /// clicks count for users: ranking and per-user flushes under load.
    #[arg(long, env = "TALLY_BENCH_USERS", value_name = "PREFIX", global = true)]
    users: Option<String>,

    /// Spread the load's connections over this many loopback source
    /// addresses, 127.0.0.2 and up, for a server on this machine: each
    /// address has its own ~28,000 ephemeral ports, and servers cap the
    /// connections of one address. 0: whatever address the OS picks.
    #[arg(
        long,
        env = "TALLY_BENCH_SOURCE_ADDRS",
        default_value_t = 0,
        global = true
    )]
    source_addrs: u32,

    /// Process id of the server under test, to read its memory and CPU
    /// time from /proc; repeat it (or separate with commas) for the nodes
    /// of a cluster.
    #[arg(
        long,
        env = "TALLY_BENCH_SERVER_PID",
        value_delimiter = ',',
        global = true
    )]
    server_pid: Vec<u32>,

    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Open and hold connections; report connect rate, handshake latency and
    /// the server's RSS per connection.
    Idle {
        /// Connections to open.
        #[arg(long, env = "TALLY_BENCH_CONNECTIONS", default_value_t = 1000)]
        connections: usize,
        /// How long to hold them before measuring.
        #[arg(long, env = "TALLY_BENCH_HOLD", default_value = "3s", value_parser = humantime::parse_duration)]
        hold: Duration,
    },
    /// One clicker, many listeners: click-to-every-recipient latency and
    /// missed updates.
    Fanout {
        /// Listening connections.
        #[arg(long, env = "TALLY_BENCH_CONNECTIONS", default_value_t = 1000)]
        connections: usize,
        /// Clicks per second of the one clicker.
        #[arg(long, env = "TALLY_BENCH_RATE", default_value_t = 50.0)]
        rate: f64,
        /// How long to click.
        #[arg(long, env = "TALLY_BENCH_DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Extra clients that never read while the clicks go on (their
        /// receive buffer is about 2 KiB, so it fills after a few frames);
        /// afterwards they read again and the report says how many reach
        /// the exact total after one more click.
        #[arg(long, env = "TALLY_BENCH_STALLED", default_value_t = 0)]
        stalled: usize,
    },
    /// Many clients clicking at an aggregate open-loop rate: achieved rate,
    /// ack and visible latency, exact convergence.
    Flood {
        /// Clicking connections.
        #[arg(long, env = "TALLY_BENCH_CONNECTIONS", default_value_t = 1000)]
        connections: usize,
        /// Aggregate clicks per second.
        #[arg(long, env = "TALLY_BENCH_RATE", default_value_t = 1000.0)]
        rate: f64,
        /// How long to click.
        #[arg(long, env = "TALLY_BENCH_DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Attack the server while the load runs: a script clicking at
        /// `--attack-rate` on one socket from 127.0.0.1 (reconnecting when
        /// cut off), and `--attack-sockets` connections from 127.1.0.1. The
        /// load's clients are the bystanders; needs `--source-addrs`.
        #[arg(long, env = "TALLY_BENCH_ATTACK")]
        attack: bool,
        /// Clicks per second of the attacking script.
        #[arg(long, env = "TALLY_BENCH_ATTACK_RATE", default_value_t = 10_000.0)]
        attack_rate: f64,
        /// Connections the attack opens from one address.
        #[arg(long, env = "TALLY_BENCH_ATTACK_SOCKETS", default_value_t = 500)]
        attack_sockets: usize,
    },
    /// N members in one conversation, messages spread over them at an
    /// open-loop rate: send-to-every-member latency, ack latency, messages
    /// lost. Members sign in as `--users` (default prefix `member`).
    Chat {
        /// Members of the conversation, each on its own connection.
        #[arg(long, env = "TALLY_BENCH_CONNECTIONS", default_value_t = 1000)]
        connections: usize,
        /// Messages per second, all members together.
        #[arg(long, env = "TALLY_BENCH_RATE", default_value_t = 50.0)]
        rate: f64,
        /// How long to send.
        #[arg(long, env = "TALLY_BENCH_DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// The conversation's id.
        #[arg(long, env = "TALLY_BENCH_CONVERSATION", default_value = "bench")]
        conversation: String,
    },
    /// Long-lived connections with light traffic: holds the listeners while
    /// one client clicks slowly, samples the server's RSS, and checks every
    /// listener ends on the exact total.
    Soak {
        /// Listening connections held for the whole run.
        #[arg(long, env = "TALLY_BENCH_CONNECTIONS", default_value_t = 1000)]
        connections: usize,
        /// Clicks per second of the one clicker.
        #[arg(long, env = "TALLY_BENCH_RATE", default_value_t = 5.0)]
        rate: f64,
        /// How long to hold them.
        #[arg(long, env = "TALLY_BENCH_DURATION", default_value = "10m", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// How often to sample the server's RSS.
        #[arg(long, env = "TALLY_BENCH_SAMPLE_EVERY", default_value = "30s", value_parser = humantime::parse_duration)]
        sample_every: Duration,
    },
    /// Climbs a ladder of click rates, several floods at each judged by
    /// their median, and reports the highest rate sustained with every click
    /// counted and the median p99 click-to-visible latency within the
    /// bound; it goes on past a failed rate and stops after two in a row.
    Capacity {
        /// Clicking connections.
        #[arg(long, env = "TALLY_BENCH_CONNECTIONS", default_value_t = 1000)]
        connections: usize,
        /// The rates to try, rising, comma-separated (clicks/s); without
        /// it, a geometric ladder from `--start-rate` by `--factor`.
        #[arg(long, env = "TALLY_BENCH_RATES", value_delimiter = ',')]
        rates: Vec<f64>,
        /// First rate of the geometric ladder, clicks per second.
        #[arg(long, env = "TALLY_BENCH_START_RATE", default_value_t = 100.0)]
        start_rate: f64,
        /// Each next rate of the geometric ladder is the last times this.
        #[arg(long, env = "TALLY_BENCH_FACTOR", default_value_t = 1.5)]
        factor: f64,
        /// Highest rate of the geometric ladder.
        #[arg(long, env = "TALLY_BENCH_MAX_RATE", default_value_t = 200_000.0)]
        max_rate: f64,
        /// Runs at each rate, judged by their median.
        #[arg(long, env = "TALLY_BENCH_RUNS", default_value_t = 3)]
        runs: usize,
        /// Length of each run.
        #[arg(long, env = "TALLY_BENCH_STEP", default_value = "3s", value_parser = humantime::parse_duration)]
        step: Duration,
        /// Bound on the median p99 click-to-visible latency.
        #[arg(long, env = "TALLY_BENCH_BOUND", default_value = "100ms", value_parser = humantime::parse_duration)]
        bound: Duration,
        /// Stop after this many failed rates in a row.
        #[arg(long, env = "TALLY_BENCH_STOP_AFTER", default_value_t = 2)]
        stop_after: usize,
    },
    /// Holds connections in rising steps; at each step measures the
    /// server's RSS, clicks that must reach every connection, a flood from
    /// some of them with exact convergence everywhere, and `/healthz`
    /// latency throughout. Ends early, keeping the steps done, when a step
    /// fails.
    Scale {
        /// Connections held at each step, rising, comma-separated.
        #[arg(
            long,
            env = "TALLY_BENCH_STEPS",
            value_delimiter = ',',
            default_value = "5000,10000,19000"
        )]
        steps: Vec<usize>,
        #[command(flatten)]
        traffic: TrafficArgs,
    },
    /// `scale` over several processes, for more connections than one
    /// process may hold (each holds an even share, under the open-file
    /// limit): the connections in rising steps over every `--url`, the sum
    /// of the servers' RSS (`--server-pid` for each node), clicks that must
    /// reach every connection, a flood, and each node's `/healthz`.
    Crowd {
        /// Shard processes to split the load over.
        #[arg(long, env = "TALLY_BENCH_PROCESSES", default_value_t = 6)]
        processes: usize,
        /// Connections held at each step over all processes, rising,
        /// comma-separated.
        #[arg(
            long,
            env = "TALLY_BENCH_STEPS",
            value_delimiter = ',',
            default_value = "20000,50000,100000"
        )]
        steps: Vec<usize>,
        #[command(flatten)]
        traffic: TrafficArgs,
    },
    /// One process of a `crowd` (started by it; orders on stdin, answers
    /// on stdout).
    #[command(hide = true)]
    Shard {
        /// The crowd's time origin, µs since the Unix epoch.
        #[arg(long)]
        epoch_us: u64,
    },
}

/// What `scale` and `crowd` do at each step once its connections are held.
#[derive(Debug, clap::Args)]
struct TrafficArgs {
    /// Clicks per step that must each reach every connection.
    #[arg(long, env = "TALLY_BENCH_CLICKS", default_value_t = 5)]
    clicks: u64,
    /// Least time between those clicks; each also waits until every
    /// connection has seen the one before, so it times one click reaching
    /// everyone rather than a queue of them.
    #[arg(long, env = "TALLY_BENCH_CLICK_EVERY", default_value = "1s", value_parser = humantime::parse_duration)]
    click_every: Duration,
    /// Held connections that click in each step's flood (over every
    /// process of a crowd).
    #[arg(long, env = "TALLY_BENCH_FLOOD_CLIENTS", default_value_t = 1000)]
    flood_clients: usize,
    /// The flood's clicks per second, all together.
    #[arg(long, env = "TALLY_BENCH_FLOOD_RATE", default_value_t = 1000.0)]
    flood_rate: f64,
    /// How long each flood lasts.
    #[arg(long, env = "TALLY_BENCH_FLOOD_DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    flood_duration: Duration,
    /// How often each node's `/healthz` is asked.
    #[arg(long, env = "TALLY_BENCH_HEALTH_EVERY", default_value = "100ms", value_parser = humantime::parse_duration)]
    health_every: Duration,
}

impl TrafficArgs {
    /// The checked traffic for `steps` (which must rise).
    fn for_steps(self, steps: &[usize]) -> anyhow::Result<bench::StepTraffic> {
        anyhow::ensure!(
            !steps.is_empty() && steps.windows(2).all(|pair| pair[0] < pair[1]),
            "--steps must rise"
        );
        anyhow::ensure!(
            (1..=steps[0]).contains(&self.flood_clients),
            "--flood-clients must be between 1 and the first step"
        );
        anyhow::ensure!(
            self.flood_rate > 0.0 && self.clicks > 0,
            "--flood-rate and --clicks must be positive"
        );
        anyhow::ensure!(
            !self.click_every.is_zero() && !self.health_every.is_zero(),
            "--click-every and --health-every must be positive"
        );
        Ok(bench::StepTraffic {
            clicks: self.clicks,
            click_every: self.click_every,
            flood_clients: self.flood_clients,
            flood_rate: self.flood_rate,
            flood_duration: self.flood_duration,
            health_every: self.health_every,
        })
    }
}

impl Mode {
    fn connections(&self) -> usize {
        match self {
            Mode::Idle { connections, .. }
            | Mode::Fanout { connections, .. }
            | Mode::Flood { connections, .. }
            | Mode::Chat { connections, .. }
            | Mode::Soak { connections, .. }
            | Mode::Capacity { connections, .. } => *connections,
            Mode::Scale { steps, .. } => steps.iter().copied().max().unwrap_or(0),
            // The shards hold the connections, each an even share, under the
            // limit they inherit from this process: checking that share
            // here fails at once rather than after a shard's first step.
            Mode::Crowd {
                processes, steps, ..
            } => steps
                .iter()
                .copied()
                .max()
                .unwrap_or(0)
                .div_ceil((*processes).max(1)),
            Mode::Shard { .. } => 1,
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(json) => {
            // A shard's answers went out as it ran; it prints no result.
            if !json.is_empty() {
                println!("{json}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            // One line, no backtrace: these are operator errors (no server,
            // wrong URL, limits), not bugs, and the library's messages
            // already carry their cause.
            eprintln!("tally-bench: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Whether `url` names this machine's loopback interface.
fn is_loopback(url: &str) -> bool {
    let host = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split(['/', ':'])
        .next()
        .unwrap_or_default();
    host == "localhost" || host.starts_with("127.")
}

/// Runs the chosen mode and returns its JSON result line.
async fn run(cli: Cli) -> anyhow::Result<String> {
    anyhow::ensure!(cli.connect_rate > 0.0, "--connect-rate must be positive");
    anyhow::ensure!(
        cli.mode.connections() > 0,
        "--connections must be at least 1"
    );
    let attackers = match cli.mode {
        Mode::Flood {
            attack: true,
            attack_sockets,
            ..
        } => attack_sockets + 1,
        _ => 0,
    };
    // One descriptor per connection, plus the clicker or observer.
    bench::raise_fd_limit(cli.mode.connections() + attackers + 1)?;
    if cli.source_addrs > 0 {
        anyhow::ensure!(
            cli.url.iter().all(|url| is_loopback(url)),
            "--source-addrs needs a server on this machine (a URL on 127.0.0.1 or localhost)"
        );
    }
    // The first server's pid, for the modes that read one server.
    let server_pid = cli.server_pid.first().copied();
    let target = Target {
        urls: cli.url.clone(),
        connect_rate: cli.connect_rate,
        users: cli.users.clone(),
        sources: bench::loopback_sources(cli.source_addrs),
        server_pids: cli.server_pid.clone(),
        progress: if cli.quiet {
            Progress::hidden()
        } else {
            Progress::stderr()
        },
    };
    let json = match cli.mode {
        Mode::Idle { connections, hold } => {
            serde_json::to_string(&bench::idle(&target, connections, hold, server_pid).await?)
        }
        Mode::Fanout {
            connections,
            rate,
            duration,
            stalled,
        } => {
            anyhow::ensure!(rate > 0.0, "--rate must be positive");
            let stalled = bench::Stalled {
                clients: stalled,
                recv_buffer: 2048,
                server_pid,
            };
            serde_json::to_string(
                &bench::fanout_with(&target, connections, rate, duration, stalled).await?,
            )
        }
        Mode::Flood {
            connections,
            rate,
            duration,
            attack,
            attack_rate,
            attack_sockets,
        } => {
            anyhow::ensure!(rate > 0.0, "--rate must be positive");
            let attack = if attack {
                anyhow::ensure!(
                    cli.source_addrs > 0,
                    "--attack needs --source-addrs: the load's clients must come from \
                     other addresses than the attack's, or the caps meant for the attack \
                     would refuse them too"
                );
                anyhow::ensure!(attack_rate > 0.0, "--attack-rate must be positive");
                Some(bench::Attack {
                    rate: attack_rate,
                    script_from: [127, 0, 0, 1].into(),
                    sockets: attack_sockets,
                    sockets_from: [127, 1, 0, 1].into(),
                })
            } else {
                None
            };
            serde_json::to_string(
                &bench::flood_with(&target, connections, rate, duration, attack).await?,
            )
        }
        Mode::Chat {
            connections,
            rate,
            duration,
            conversation,
        } => {
            anyhow::ensure!(rate > 0.0, "--rate must be positive");
            serde_json::to_string(
                &bench::chat(&target, connections, rate, duration, &conversation).await?,
            )
        }
        Mode::Soak {
            connections,
            rate,
            duration,
            sample_every,
        } => {
            anyhow::ensure!(rate > 0.0, "--rate must be positive");
            anyhow::ensure!(!sample_every.is_zero(), "--sample-every must be positive");
            serde_json::to_string(
                &bench::soak(
                    &target,
                    connections,
                    rate,
                    duration,
                    sample_every,
                    server_pid,
                )
                .await?,
            )
        }
        Mode::Capacity {
            connections,
            rates,
            start_rate,
            factor,
            max_rate,
            runs,
            step,
            bound,
            stop_after,
        } => {
            let rates = if rates.is_empty() {
                anyhow::ensure!(
                    start_rate > 0.0 && factor > 1.0,
                    "--start-rate must be positive and --factor above 1"
                );
                CapacitySettings::geometric(start_rate, factor, max_rate)
            } else {
                rates
            };
            anyhow::ensure!(
                !rates.is_empty()
                    && rates[0] > 0.0
                    && rates.windows(2).all(|pair| pair[0] < pair[1]),
                "the ladder's rates must be positive and rise"
            );
            anyhow::ensure!(
                runs > 0 && stop_after > 0,
                "--runs and --stop-after must be at least 1"
            );
            let settings = CapacitySettings {
                clients: connections,
                rates,
                runs,
                duration: step,
                bound,
                stop_after,
            };
            serde_json::to_string(&bench::capacity(&target, &settings).await?)
        }
        Mode::Scale { steps, traffic } => {
            let settings = bench::ScaleSettings {
                traffic: traffic.for_steps(&steps)?,
                steps,
                server_pid,
            };
            serde_json::to_string(&bench::scale(&target, &settings).await?)
        }
        Mode::Crowd {
            processes,
            steps,
            traffic,
        } => {
            anyhow::ensure!(processes > 0, "--processes must be at least 1");
            let settings = bench::CrowdSettings {
                processes,
                traffic: traffic.for_steps(&steps)?,
                steps,
            };
            let exe = std::env::current_exe().context("finding this executable for the shards")?;
            serde_json::to_string(
                &bench::crowd(&target, &settings, &bench::Shards::Processes(exe)).await?,
            )
        }
        Mode::Shard { epoch_us } => {
            let stdin = tokio::io::BufReader::new(tokio::io::stdin());
            bench::shard(
                &target,
                bench::instant_of(epoch_us),
                stdin,
                tokio::io::stdout(),
            )
            .await?;
            return Ok(String::new());
        }
    }
    .context("serialising the result")?;
    Ok(json)
}
