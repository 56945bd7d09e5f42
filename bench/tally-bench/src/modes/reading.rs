//! Held connections reading in the background between the phases of a
//! workload that keeps them (`scale`, and each process of `crowd`).

use std::time::Instant;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{cancel_after, listen_keep};
use crate::client::Client;
use crate::timeline::Seen;
use crate::{BenchError, SETTLE};

/// Held connections reading in the background, each noting the totals it
/// sees, until they reach a target total or are stopped; then they are
/// handed back, still open.
pub(crate) struct Reading {
    /// Where the µs of every sighting count from.
    pub start: Instant,
    target: watch::Sender<u64>,
    stop: CancellationToken,
    /// Each connection's place in `clients`, and its reader.
    tasks: JoinSet<(usize, (Client, Seen, u64))>,
}

impl Reading {
    /// Starts reading, with no target total yet.
    pub fn start(clients: Vec<Client>) -> Self {
        Self::start_at(clients, Instant::now())
    }

    /// [`Reading::start`], timing sightings from `start` (an instant shared
    /// with other processes, for a load run as several).
    pub fn start_at(clients: Vec<Client>, start: Instant) -> Self {
        let (target_tx, target_rx) = watch::channel(0);
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for (i, client) in clients.into_iter().enumerate() {
            let reader = listen_keep(client, start, target_rx.clone(), stop.clone());
            tasks.spawn(async move { (i, reader.await) });
        }
        Reading {
            start,
            target: target_tx,
            stop,
            tasks,
        }
    }

    /// How many connections are reading.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Waits until every connection has seen `total` (or [`SETTLE`] has
    /// passed) and hands them back with what each saw.
    pub async fn until(self, total: u64) -> Result<(Vec<Client>, Vec<Seen>), BenchError> {
        self.target.send_replace(total);
        let timer = cancel_after(&self.stop, SETTLE);
        let collected = self.collect().await;
        timer.abort();
        collected
    }

    /// Stops reading at once and hands the connections back.
    pub async fn stop(self) -> Result<(Vec<Client>, Vec<Seen>), BenchError> {
        self.stop.cancel();
        self.collect().await
    }

    /// The connections in the order they were given (not the order their
    /// readers ended), so a caller picking the first few of them picks the
    /// same ones every time.
    async fn collect(mut self) -> Result<(Vec<Client>, Vec<Seen>), BenchError> {
        let mut done = Vec::with_capacity(self.tasks.len());
        while let Some(joined) = self.tasks.join_next().await {
            done.push(joined?);
        }
        done.sort_unstable_by_key(|&(i, _)| i);
        Ok(done
            .into_iter()
            .map(|(_, (client, saw, _))| (client, saw))
            .unzip())
    }
}
