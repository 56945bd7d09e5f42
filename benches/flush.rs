//! How long one flush of many distinct users takes on a real database: the
//! store's `add` of a batch with USERS users (default 10,000) into the
//! database at TALLY_BENCH_DATABASE_URL (seed it with bench/seed-users.sh),
//! ROUNDS times (default 20). Run on a quiet machine:
//!
//! ```sh
//! TALLY_BENCH_DATABASE_URL=sqlite:///tmp/big.db cargo bench --bench flush
//! ```
//!
//! Each round adds one click to users u0, u100, u200, … (a different stride
//! offset per round, so rows are not all hot), as if that many users had
//! clicked within one flush interval. The clicks stay in the database.

use std::time::Instant;

use tally::counter::{CounterKey, Delta};
use tally::store::{self, Batch, StoreOptions};
use tally::user::Username;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Ok(url) = std::env::var("TALLY_BENCH_DATABASE_URL") else {
        eprintln!("set TALLY_BENCH_DATABASE_URL to a seeded database (bench/seed-users.sh)");
        return Ok(());
    };
    let users: usize = std::env::var("USERS").map_or(Ok(10_000), |v| v.parse())?;
    let rounds: i64 = std::env::var("ROUNDS").map_or(Ok(20), |v| v.parse())?;
    let store = store::connect(&url, &StoreOptions::default()).await?;
    let node = i64::from(std::process::id()) << 20;
    let mut times = Vec::new();
    for round in 0..rounds {
        let mut deltas = vec![Delta {
            key: CounterKey::Global,
            amount: users as u64,
        }];
        for i in 0..users {
            let name = format!("u{}", i * 100 + round as usize % 100);
            deltas.push(Delta {
                key: CounterKey::User(Username::parse(&name)?),
                amount: 1,
            });
        }
        let batch = Batch {
            node,
            seq: round + 1,
            deltas,
        };
        let started = Instant::now();
        store.add(&batch).await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "{} flushes of {users} users into {}: p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        times.len(),
        store.backend(),
        at(0.5),
        at(0.9),
        at(1.0)
    );
    Ok(())
}
