//! Write-behind: moves pending increments from memory to the store, exactly
//! once.
//!
//! Each flush takes every pending delta into a [`Batch`] and writes it in one
//! store call (one transaction) as additions, never as absolute values, so
//! two processes can never overwrite each other's counts. Every batch carries
//! this process's random node id and the next sequence number. A write that
//! fails is retried verbatim — same deltas, same `(node, seq)` — before any
//! newer deltas are taken, and the store recognises a batch it has already
//! applied: a commit whose answer was lost (a cut connection) is not counted
//! twice.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::counter::{CounterKey, Counters};
use crate::metrics::Metrics;
use crate::store::{Applied, Batch, Store, StoreError};

/// In durable mode, the pause before a failed write is tried again.
const DURABLE_RETRY: Duration = Duration::from_millis(100);

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

/// A batch written without an answer, and the global total its clicks
/// reach (see [`crate::counter::durable::Stored::set`]).
struct Unconfirmed {
    batch: Batch,
    covered: u64,
}

/// Turns pending deltas into numbered batches and writes them.
pub struct Flusher {
    counters: Arc<Counters>,
    store: Arc<dyn Store>,
    node: i64,
    next_seq: i64,
    /// A batch whose write failed: it may or may not have been applied, so
    /// it is retried as it is before anything newer.
    unconfirmed: Option<Unconfirmed>,
    /// Longest a write may take before it counts as failed (a query stuck
    /// on a half-open connection would otherwise stop every later flush).
    write_timeout: Duration,
    metrics: Option<Metrics>,
    /// In cluster mode, where the keys of each committed batch go, so that
    /// the cluster reads their new totals and tells the other nodes.
    committed: Option<mpsc::UnboundedSender<Vec<CounterKey>>>,
}

impl Flusher {
    /// A flusher with a random node id, so batches of different processes
    /// (or of one process before and after a restart) never share an id.
    pub fn new(counters: Arc<Counters>, store: Arc<dyn Store>, write_timeout: Duration) -> Self {
        Flusher {
            counters,
            store,
            node: crate::node::random_id() as i64,
            next_seq: 1,
            unconfirmed: None,
            write_timeout,
            metrics: None,
            committed: None,
        }
    }

    /// Sends the keys of every committed batch to `committed` (cluster
    /// mode's [`crate::cluster`] reads their totals back and publishes
    /// them). Unbounded because a flush must never wait for Redis; the
    /// reader merges whatever has queued into one read.
    pub fn with_committed(mut self, committed: mpsc::UnboundedSender<Vec<CounterKey>>) -> Self {
        self.committed = Some(committed);
        self
    }

    /// Records flush durations, sizes, failures and retries in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Writes the unconfirmed batch, if any, then everything pending.
    /// Returns how many clicks were stored by this call.
    pub async fn flush(&mut self) -> Result<u64, StoreError> {
        let mut stored = 0;
        if let Some(Unconfirmed { batch, covered }) = self.unconfirmed.take() {
            if let Some(metrics) = &self.metrics {
                metrics.flush_retried();
            }
            stored += self.write(batch, covered).await?;
        }
        let (deltas, covered) = self.counters.take_pending_with_total();
        if deltas.is_empty() {
            // Nothing waited: everything counted so far is stored as of now.
            self.counters.flushes().set_flushed_now();
            self.counters.stored().set(covered);
            return Ok(stored);
        }
        let batch = Batch {
            node: self.node,
            seq: self.next_seq,
            deltas,
        };
        self.next_seq += 1;
        Ok(stored + self.write(batch, covered).await?)
    }

    /// Writes `batch`, which holds every click up to the global total
    /// `covered` not stored before.
    async fn write(&mut self, batch: Batch, covered: u64) -> Result<u64, StoreError> {
        let started = std::time::Instant::now();
        // Every click is in the global delta; user deltas repeat some of them.
        let clicks = batch
            .deltas
            .iter()
            .filter(|delta| delta.key == CounterKey::Global)
            .map(|delta| delta.amount)
            .sum();
        // Pending until confirmed, in flight included: `/healthz` and the
        // final error count them.
        self.counters.flushes().set_unconfirmed(clicks);
        let written = tokio::time::timeout(self.write_timeout, self.store.add(&batch))
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Database(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the write took over {:?}", self.write_timeout),
                ))))
            });
        match written {
            Ok(applied) => {
                tracing::debug!(
                    seq = batch.seq,
                    clicks,
                    counters = batch.deltas.len(),
                    elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                    "flushed"
                );
                if applied == Applied::Earlier {
                    tracing::info!(
                        seq = batch.seq,
                        "a retried flush had already been applied; not counted again"
                    );
                }
                self.counters.flushes().set_unconfirmed(0);
                self.counters.flushes().set_failing(false);
                self.counters.flushes().set_flushed_now();
                self.counters.stored().set(covered);
                if let Some(metrics) = &self.metrics {
                    metrics.flushed(batch.deltas.len(), started.elapsed());
                }
                if let Some(committed) = &self.committed {
                    // Gone only once the cluster's tasks have stopped, at
                    // the very end of shutdown: nobody is left to tell.
                    let _ =
                        committed.send(batch.deltas.into_iter().map(|delta| delta.key).collect());
                }
                Ok(clicks)
            }
            Err(err) => {
                if let Some(metrics) = &self.metrics {
                    metrics.flush_failed();
                }
                self.counters.flushes().set_failing(true);
                self.unconfirmed = Some(Unconfirmed { batch, covered });
                Err(err)
            }
        }
    }

    /// Flushes every `interval` until `cancel` fires, then flushes what is
    /// left, retrying a few times, because the final flush is the last chance
    /// to keep those clicks.
    ///
    /// A zero `interval` is durable mode: the flusher writes as soon as
    /// clicks are pending, and whatever arrived during one write goes in the
    /// next (group commit); click handlers wait for their click to be stored
    /// before they acknowledge it.
    pub async fn run(
        mut self,
        interval: Duration,
        cancel: CancellationToken,
    ) -> Result<(), FinalFlushError> {
        let mut ticker = (!interval.is_zero()).then(|| {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            ticker
        });
        let mut failing = false;
        loop {
            match ticker.as_mut() {
                Some(ticker) => tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    _ = ticker.tick() => {}
                },
                None => tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    // A failing write is retried after a pause, not in a
                    // tight loop.
                    () = self.counters.flushes().wait_for_pending(), if !failing => {}
                    () = tokio::time::sleep(DURABLE_RETRY), if failing => {}
                },
            }
            match self.flush().await {
                Ok(flushed) => {
                    if failing {
                        tracing::info!(flushed, "store writes work again");
                        failing = false;
                    }
                }
                Err(err) => {
                    let pending = self.counters.pending_clicks();
                    // Logged once per outage at error level so a dead
                    // database does not flood the log every second.
                    if failing {
                        tracing::debug!(error = %err, pending, "flush failed again");
                    } else {
                        tracing::error!(error = %err, pending, "flush failed; increments kept in memory and retried");
                        failing = true;
                    }
                }
            }
        }

        let mut backoff = Duration::from_millis(100);
        for attempt in 1..=FINAL_ATTEMPTS {
            match self.flush().await {
                Ok(flushed) => {
                    tracing::info!(flushed, "final flush done");
                    return Ok(());
                }
                Err(err) if attempt == FINAL_ATTEMPTS => {
                    return Err(FinalFlushError {
                        unflushed: self.counters.pending_clicks(),
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
}
