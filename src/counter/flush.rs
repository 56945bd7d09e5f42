//! Write-behind: moves pending increments from memory to the store.
//!
//! Each flush takes every pending delta and writes them in one store call
//! (one transaction) as additions, never as absolute values, so two processes
//! or a replayed batch can never overwrite each other's counts. A failed
//! write hands the deltas back to the counters; the next tick retries them.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::Counters;
use crate::store::{Store, StoreError};

/// How often the final flush is tried at shutdown before giving up.
const FINAL_ATTEMPTS: u32 = 5;

/// The final flush failed: these increments exist only in memory.
#[derive(Debug, thiserror::Error)]
#[error("{unflushed} click(s) could not be written to the store at shutdown: {source}")]
pub struct FinalFlushError {
    pub unflushed: u64,
    #[source]
    pub source: StoreError,
}

/// Writes pending deltas once. Returns how many increments were stored.
pub async fn flush_once(counters: &Counters, store: &dyn Store) -> Result<u64, StoreError> {
    let deltas = counters.take_pending();
    if deltas.is_empty() {
        return Ok(0);
    }
    match store.add(&deltas).await {
        Ok(()) => Ok(deltas.iter().map(|d| d.amount).sum()),
        Err(err) => {
            counters.restore(&deltas);
            Err(err)
        }
    }
}

/// Flushes every `interval` until `cancel` fires, then flushes what is left,
/// retrying a few times, because the final flush is the last chance to keep
/// those clicks.
pub async fn run(
    counters: Arc<Counters>,
    store: Arc<dyn Store>,
    interval: Duration,
    cancel: CancellationToken,
) -> Result<(), FinalFlushError> {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            _ = ticker.tick() => {}
        }
        match flush_once(&counters, store.as_ref()).await {
            Ok(flushed) => {
                if failing {
                    tracing::info!(flushed, "store writes work again");
                    failing = false;
                }
            }
            Err(err) => {
                // Logged once per outage at error level so a dead database
                // does not flood the log every second.
                if failing {
                    tracing::debug!(error = %err, pending = counters.pending_total(), "flush failed again");
                } else {
                    tracing::error!(error = %err, pending = counters.pending_total(), "flush failed; increments kept in memory and retried");
                    failing = true;
                }
            }
        }
    }

    let mut backoff = Duration::from_millis(100);
    for attempt in 1..=FINAL_ATTEMPTS {
        match flush_once(&counters, store.as_ref()).await {
            Ok(flushed) => {
                tracing::info!(flushed, "final flush done");
                return Ok(());
            }
            Err(err) if attempt == FINAL_ATTEMPTS => {
                return Err(FinalFlushError {
                    unflushed: counters.pending_total(),
                    source: err,
                });
            }
            Err(err) => {
                tracing::warn!(error = %err, attempt, "final flush failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
    }
    unreachable!("the last attempt returns")
}
