//! One process of a `crowd`: holds its share of the connections and does
//! what the parent orders, one JSON line in, one JSON line out. A process
//! here may hold at most 20,000 descriptors, so a load of 100,000
//! connections is several of these, which the parent starts and steers.
//!
//! Every time a shard reports is in µs since an epoch the parent chose (the
//! wall clock, which all processes on a machine share), so a click the
//! parent sent and a total a shard's connection saw are on one time line.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::flood::Clickers;
use super::held::ClickersDone;
use super::reading::Reading;
use crate::client::Client;
use crate::report::{buckets, histogram, record};
use crate::timeline::SendTimes;
use crate::{BenchError, Target, connect_range, greeting};

/// What the parent asks of a shard.
#[derive(Debug, Serialize, Deserialize)]
pub enum Order {
    /// Hold `upto` connections in all, opening the missing ones.
    Connect { upto: usize },
    /// The clicks `sent` (`(total, at µs)`) went out: wait until every
    /// connection has seen `until` (at most [`SETTLE`]) and say when each saw
    /// each click. After a [`Order::Flood`], this ends it: `sent` are every
    /// shard's clicks and `until` the final total.
    Expect { sent: Vec<(u64, u64)>, until: u64 },
    /// The first `clients` held connections click at `rate` (together) for
    /// `duration_ms`; the others go on reading. The totals of the flood's
    /// clicks lie in `base + 1 ..= base + capacity`.
    Flood {
        clients: usize,
        rate: f64,
        duration_ms: u64,
        base: u64,
        capacity: usize,
    },
    /// Close everything and exit.
    Quit,
}

/// What a shard answers.
#[derive(Debug, Serialize, Deserialize)]
pub enum Answer {
    /// Its connections are open and greeted.
    Connected {
        held: usize,
        /// Upgrade to namespace join of the connections just opened, µs.
        handshakes: Vec<(u64, u64)>,
    },
    /// Its flood's clicks were acknowledged (or given up on).
    Clicked {
        acked: u64,
        /// The largest total an ack carried.
        max_total: u64,
        /// `(total, at µs)` of every acknowledged click.
        sent: Vec<(u64, u64)>,
    },
    /// What its connections saw of the clicks of an [`Order::Expect`].
    Saw {
        /// Click sent → first sight of a total at least its own, one sample
        /// per (click, reading connection), µs.
        latency: Vec<(u64, u64)>,
        /// (click, reading connection) pairs never seen.
        missed: u64,
        /// Connections, clickers included, that did not reach `until`.
        short: usize,
        /// Reading connections found closed (cut off by a node or the
        /// network), which are also short.
        closed: usize,
        /// The largest total any of its connections saw: more than `until`
        /// means a click was counted that no ack accounted for.
        most_seen: u64,
        /// The flood's acks, when this ended one.
        #[serde(skip_serializing_if = "Option::is_none")]
        flood: Option<FloodEnd>,
    },
    /// An order failed; the shard stops.
    Failed { error: String },
}

/// The clicking side of a flood, once it ended.
#[derive(Debug, Serialize, Deserialize)]
pub struct FloodEnd {
    /// Click sent → its ack, µs.
    pub ack: Vec<(u64, u64)>,
    /// Clicks acknowledged by the end, counting any acknowledged after the
    /// [`Answer::Clicked`] that first reported them.
    pub acked: u64,
    pub unacked: u64,
}

/// The instant that is `epoch_us` µs after the Unix epoch, on this
/// process's monotonic clock.
pub fn instant_of(epoch_us: u64) -> Instant {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let since = now.saturating_sub(Duration::from_micros(epoch_us));
    Instant::now()
        .checked_sub(since)
        .unwrap_or_else(Instant::now)
}

/// A flood under way: its clickers and the connections reading beside them.
struct Flooding {
    clickers: Clickers,
    final_total: watch::Sender<u64>,
    stop: CancellationToken,
}

/// Runs a shard: reads orders from `orders`, writes answers to `answers`,
/// until a `quit` order or the end of its input. `target`'s URLs are
/// already rotated for this shard, so its connections start on its own
/// node.
pub async fn shard(
    target: &Target,
    start: Instant,
    orders: impl AsyncBufRead + Unpin,
    mut answers: impl AsyncWrite + Unpin,
) -> Result<(), BenchError> {
    let mut lines = orders.lines();
    let mut worker = Worker {
        target,
        start,
        reading: Some(Reading::start_at(Vec::new(), start)),
        flooding: None,
    };
    while let Some(line) = lines.next_line().await.map_err(BenchError::Runtime)? {
        let order: Order = serde_json::from_str(&line)
            .map_err(|err| BenchError::Refused(format!("a bad order ({err}): {line}")))?;
        let answer = match order {
            Order::Quit => break,
            order => match worker.obey(order).await {
                Ok(answer) => answer,
                Err(err) => Answer::Failed {
                    error: err.to_string(),
                },
            },
        };
        let failed = matches!(answer, Answer::Failed { .. });
        let mut text = serde_json::to_string(&answer).expect("answers serialise");
        text.push('\n');
        answers
            .write_all(text.as_bytes())
            .await
            .map_err(BenchError::Runtime)?;
        answers.flush().await.map_err(BenchError::Runtime)?;
        if failed {
            break;
        }
    }
    worker.close().await;
    Ok(())
}

struct Worker<'a> {
    target: &'a Target,
    start: Instant,
    /// The held connections, reading (all of them, or the listeners during
    /// a flood).
    reading: Option<Reading>,
    flooding: Option<Flooding>,
}

impl Worker<'_> {
    async fn held(&mut self) -> Result<Vec<Client>, BenchError> {
        match self.reading.take() {
            Some(reading) => Ok(reading.stop().await?.0),
            None => Ok(Vec::new()),
        }
    }

    async fn obey(&mut self, order: Order) -> Result<Answer, BenchError> {
        match order {
            Order::Connect { upto } => {
                // The held connections go on reading (and answering the
                // nodes' pings) while the new ones connect: tens of seconds
                // unread on a busy machine would have the nodes close them
                // for a missed pong.
                let from = self.reading.as_ref().map_or(0, Reading::len);
                let (mut fresh, times) =
                    connect_range(self.target, from..upto.max(from), "connecting").await?;
                for (i, client) in fresh.iter_mut().enumerate() {
                    greeting(client, self.target.url(from + i)).await?;
                }
                let mut held = self.held().await?;
                held.extend(fresh);
                let mut handshakes = histogram();
                for micros in times {
                    record(&mut handshakes, micros);
                }
                let held_now = held.len();
                self.reading = Some(Reading::start_at(held, self.start));
                Ok(Answer::Connected {
                    held: held_now,
                    handshakes: buckets(&handshakes),
                })
            }
            Order::Flood {
                clients,
                rate,
                duration_ms,
                base,
                capacity,
            } => self.flood(clients, rate, duration_ms, base, capacity).await,
            Order::Expect { sent, until } => self.expect(&sent, until).await,
            Order::Quit => unreachable!("handled by the caller"),
        }
    }

    async fn flood(
        &mut self,
        clients: usize,
        rate: f64,
        duration_ms: u64,
        base: u64,
        capacity: usize,
    ) -> Result<Answer, BenchError> {
        let mut held = self.held().await?;
        let clients = clients.min(held.len());
        let listeners = held.split_off(clients);
        self.reading = Some(Reading::start_at(listeners, self.start));
        if clients == 0 || rate <= 0.0 {
            // A shard with no share of the flood only listens.
            self.reading = Some(Reading::start_at(
                held.into_iter().chain(self.held().await?).collect(),
                self.start,
            ));
            return Ok(Answer::Clicked {
                acked: 0,
                max_total: base,
                sent: Vec::new(),
            });
        }
        let sent = SendTimes::new(base, capacity);
        let stop = CancellationToken::new();
        let (final_total, final_rx) = watch::channel(0);
        let duration = Duration::from_millis(duration_ms);
        let mut clickers =
            Clickers::spawn(held, rate, duration, self.start, &sent, &final_rx, &stop);
        let acks = clickers
            .collect_acks(base, &self.target.progress.bar(0, "clicking"))
            .await;
        let entries = sent.entries();
        self.flooding = Some(Flooding {
            clickers,
            final_total,
            stop,
        });
        Ok(Answer::Clicked {
            acked: acks.acked,
            max_total: acks.final_total,
            sent: entries,
        })
    }

    async fn expect(&mut self, sent: &[(u64, u64)], until: u64) -> Result<Answer, BenchError> {
        let base = sent
            .first()
            .map_or(until, |&(total, _)| total.saturating_sub(1));
        let capacity = usize::try_from(until.saturating_sub(base)).unwrap_or(0);
        let sent = SendTimes::from_entries(base, capacity, sent);
        let mut short = 0;
        let mut most_seen = 0;
        // The flood's clickers, if one is ending: they read on until they
        // see the final total.
        let mut flood = None;
        let mut held = Vec::new();
        if let Some(flooding) = self.flooding.take() {
            let done = ClickersDone::collect(
                flooding.clickers.tasks,
                &flooding.final_total,
                &flooding.stop,
                until,
            )
            .await?;
            short += done.short;
            most_seen = done.most_seen;
            flood = Some(FloodEnd {
                ack: buckets(&done.ack),
                acked: done.acked,
                unacked: done.unacked,
            });
            held = done.clients;
        }
        let (listeners, seen) = match self.reading.take() {
            Some(reading) => reading.until(until).await?,
            None => (Vec::new(), Vec::new()),
        };
        let mut latency = histogram();
        let mut missed = 0;
        let mut closed = 0;
        for seen in &seen {
            missed += seen.latencies(&sent, &mut latency);
            short += usize::from(seen.max() < until);
            most_seen = most_seen.max(seen.max());
            closed += usize::from(seen.closed);
        }
        // The clickers go back first, as they were held.
        held.extend(listeners);
        self.reading = Some(Reading::start_at(held, self.start));
        Ok(Answer::Saw {
            latency: buckets(&latency),
            missed,
            short,
            closed,
            most_seen,
            flood,
        })
    }

    async fn close(mut self) {
        if let Some(flooding) = self.flooding.take() {
            flooding.stop.cancel();
            let mut tasks = flooding.clickers.tasks;
            while let Some(joined) = tasks.join_next().await {
                if let Ok((client, _)) = joined {
                    client.close().await;
                }
            }
        }
        if let Ok(held) = self.held().await {
            for client in held {
                client.close().await;
            }
        }
    }
}
