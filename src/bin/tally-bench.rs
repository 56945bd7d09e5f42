//! `tally-bench`: load-test a server that speaks tally's click contract.
//! Only point it at servers you run yourself.

use std::time::Duration;

use clap::{Parser, Subcommand};

/// Load generator for Socket.IO click servers (tally, or anything speaking
/// the same contract). Prints one JSON result line.
#[derive(Debug, Parser)]
#[command(name = "tally-bench", version)]
struct Cli {
    /// Base URL of the server under test.
    #[arg(
        long,
        env = "TALLY_BENCH_URL",
        default_value = "http://127.0.0.1:3000",
        global = true
    )]
    url: String,

    /// New connections per second while connecting.
    #[arg(
        long,
        env = "TALLY_BENCH_CONNECT_RATE",
        default_value_t = 2000.0,
        global = true
    )]
    connect_rate: f64,

    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Open and hold connections; report handshake latency and server RSS per connection.
    Idle {
        /// Connections to open.
        #[arg(long, env = "TALLY_BENCH_CONNECTIONS", default_value_t = 1000)]
        connections: usize,
        /// How long to hold them before measuring.
        #[arg(long, env = "TALLY_BENCH_HOLD", default_value = "3s", value_parser = humantime::parse_duration)]
        hold: Duration,
        /// Server process id, to read its RSS from /proc.
        #[arg(long, env = "TALLY_BENCH_SERVER_PID")]
        server_pid: Option<u32>,
    },
    /// One clicker, many listeners: click-to-every-recipient latency.
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
    },
    /// Many clients clicking at an aggregate open-loop rate.
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
    },
    /// Floods at rising rates until p99 visible latency passes the bound.
    Ramp {
        /// Clicking connections.
        #[arg(long, env = "TALLY_BENCH_CONNECTIONS", default_value_t = 1000)]
        connections: usize,
        /// First rate, clicks per second; each step is 1.5× the last.
        #[arg(long, env = "TALLY_BENCH_START_RATE", default_value_t = 500.0)]
        start_rate: f64,
        /// Highest rate tried.
        #[arg(long, env = "TALLY_BENCH_MAX_RATE", default_value_t = 200_000.0)]
        max_rate: f64,
        /// Length of each step.
        #[arg(long, env = "TALLY_BENCH_STEP", default_value = "5s", value_parser = humantime::parse_duration)]
        step: Duration,
        /// Bound on the observer's p99 click-to-visible latency.
        #[arg(long, env = "TALLY_BENCH_BOUND", default_value = "100ms", value_parser = humantime::parse_duration)]
        bound: Duration,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let url = cli.url.as_str();
    let rate = cli.connect_rate;
    let json = match cli.mode {
        Mode::Idle {
            connections,
            hold,
            server_pid,
        } => serde_json::to_string(
            &tally::bench::idle(url, connections, rate, hold, server_pid).await?,
        )?,
        Mode::Fanout {
            connections,
            rate: clicks,
            duration,
        } => serde_json::to_string(
            &tally::bench::fanout(url, connections, clicks, duration, rate).await?,
        )?,
        Mode::Flood {
            connections,
            rate: clicks,
            duration,
        } => serde_json::to_string(
            &tally::bench::flood(url, connections, clicks, duration, rate).await?,
        )?,
        Mode::Ramp {
            connections,
            start_rate,
            max_rate,
            step,
            bound,
        } => serde_json::to_string(
            &tally::bench::ramp(url, connections, start_rate, max_rate, step, bound, rate).await?,
        )?,
    };
    println!("{json}");
    Ok(())
}
