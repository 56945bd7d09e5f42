//! Whether the store answers, as a background check last saw it.
//!
//! `/healthz` and `/readyz` report this instead of querying the database on
//! every request. A health check then costs no query and never waits for
//! one, which matters most when the server is busiest: SQLite answers from
//! a thread of its own, and a task woken from outside the runtime's workers
//! joins the back of the shared run queue, behind one writer task per socket
//! during a broadcast — 120 ms at 5,000 sockets, measured (bench/profiling.md).
//! A load balancer that probes several times a second no longer adds to the
//! database's load either.
//!
//! The check runs every `--health-check-interval` and may take up to
//! `--database-timeout`; a check that fails or times out marks the store
//! down until one succeeds. Transitions are logged once, not per probe.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::store::Store;

/// The store's availability as last checked. Starts up, since tally is
/// built only once the store has loaded the counts; the first check runs as
/// the background tasks start.
#[derive(Debug)]
pub struct StoreHealth {
    up: AtomicBool,
}

impl Default for StoreHealth {
    fn default() -> Self {
        Self {
            up: AtomicBool::new(true),
        }
    }
}

impl StoreHealth {
    /// Whether the last check got an answer in time.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    /// Asks the store once, waiting at most `timeout`, and records the
    /// outcome.
    pub async fn check(&self, store: &dyn Store, timeout: Duration) {
        let answer = match tokio::time::timeout(timeout, store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        };
        let up = answer.is_ok();
        let was_up = self.up.swap(up, Ordering::SeqCst);
        match answer {
            Err(error) if was_up => {
                tracing::warn!(%error, backend = store.backend(), "health check: store unavailable");
            }
            Ok(()) if !was_up => {
                tracing::info!(
                    backend = store.backend(),
                    "health check: store answers again"
                );
            }
            _ => {}
        }
    }
}

/// Checks `store` every `every`, for as long as the task runs. It keeps
/// nothing that needs saving, so stopping it is aborting it.
pub async fn run(
    health: Arc<StoreHealth>,
    store: Arc<dyn Store>,
    every: Duration,
    timeout: Duration,
) {
    let mut ticks = tokio::time::interval(every);
    // A check slower than the interval is not followed by a burst of them.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: building tally proved the store could
    // load the counts, not that it still answers (a host may hand in its
    // own store).
    loop {
        ticks.tick().await;
        health.check(store.as_ref(), timeout).await;
    }
}
