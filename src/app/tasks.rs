//! [`Tally::start`]: spawning the background tasks — the health check, the
//! housekeeping ticker, the message log's writer (and its webhook), the
//! retention of old messages, the flusher, the coalescer that broadcasts
//! totals, and the leaderboard — each given the handles it needs.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::housekeeping;
use super::routes::Tally;
use super::running::{Running, Stops, Tasks};
use crate::counter::coalesce::{self, Pacing};
use crate::counter::leaderboard;
use crate::persist::flush::Flusher;
use crate::persist::message_log::{self, Queue};
use crate::persist::{health, retention};
use crate::realtime::{chat, publish};
use crate::webhook::{self, Outbox, WebhookConfig, WebhookQueue};

/// What the background tasks are made from, taken at build time.
pub(super) struct Background {
    pub flush_interval: Duration,
    /// Longest one flush's (or one batch of messages') write may take
    /// before it is retried.
    pub write_timeout: Duration,
    pub leaderboard_interval: Duration,
    pub broadcast_budget: Duration,
    pub health_check: HealthCheck,
    /// Messages waiting for the writer that `start` spawns.
    pub message_queue: Queue,
    pub webhook: Option<Webhook>,
    pub message_retention: Option<Duration>,
}

/// How often the store's health is checked, and how long a check may take.
pub(super) struct HealthCheck {
    pub every: Duration,
    pub timeout: Duration,
}

/// The message webhook: its queue, the end its deliverer reads, and where
/// it delivers.
pub(super) struct Webhook {
    pub queue: WebhookQueue,
    pub outbox: Outbox,
    pub config: WebhookConfig,
}

impl Tally {
    /// Spawns the background tasks — the coalescer that broadcasts totals,
    /// the leaderboard task, the flusher that writes counts to the store —
    /// and hands back the handle that stops them. Take the routers first:
    /// `start` consumes `self`. Must be called inside a Tokio runtime.
    pub fn start(self) -> Running {
        let Tally {
            state,
            io,
            background,
            serving,
            ..
        } = self;
        let Background {
            flush_interval,
            write_timeout,
            leaderboard_interval,
            broadcast_budget,
            health_check,
            message_queue,
            webhook,
            message_retention,
        } = background;
        let stops = Stops {
            publishing: CancellationToken::new(),
            flushing: CancellationToken::new(),
            messages: CancellationToken::new(),
        };
        let health_check = tokio::spawn(health::run(
            state.store_health.clone(),
            state.store.clone(),
            health_check.every,
            health_check.timeout,
        ));
        let housekeeping = tokio::spawn(housekeeping::run(state.clone()));
        let (webhook_queue, webhook) = match webhook {
            Some(Webhook {
                queue,
                outbox,
                config,
            }) => (
                Some(queue),
                Some(tokio::spawn(webhook::deliver(config, outbox))),
            ),
            None => (None, None),
        };
        let message_writer = tokio::spawn(message_log::write(
            state.store.clone(),
            message_queue,
            webhook_queue,
            message_log::WriterTimeouts {
                write: write_timeout,
                drain: serving.shutdown_timeout,
            },
            stops.messages.clone(),
            state.metrics.clone(),
            {
                let io = io.clone();
                let clustered = state.cluster.is_some();
                move |messages| {
                    let io = io.clone();
                    async move { chat::broadcast(&io, &messages, clustered).await }
                }
            },
        ));
        let retention = message_retention.map(|retention| {
            tokio::spawn(retention::run(
                state.store.clone(),
                retention,
                stops.messages.clone(),
            ))
        });
        let mut flusher = Flusher::new(state.counters.clone(), state.store.clone(), write_timeout)
            .with_metrics(state.metrics.clone());
        // In a cluster every committed batch is read back and told to the
        // other nodes.
        let cluster = match state.cluster.clone() {
            Some(cluster) => {
                let (committed, batches) = mpsc::unbounded_channel();
                flusher = flusher.with_committed(committed);
                let tasks = cluster.start(
                    state.counters.clone(),
                    state.store.clone(),
                    state.metrics.clone(),
                    batches,
                );
                Some((cluster, tasks))
            }
            None => None,
        };
        let flusher = tokio::spawn(flusher.run(flush_interval, stops.flushing.clone()));
        // With a zero interval every click is published by its handler.
        let coalescer = (!state.broadcast_interval.is_zero()).then(|| {
            let io = io.clone();
            let connections = state.connections.clone();
            let publisher = state.clone();
            tokio::spawn(coalesce::run(
                state.counters.clone(),
                Pacing {
                    interval: state.broadcast_interval,
                    per_recipient: broadcast_budget,
                },
                move || connections.current(),
                stops.publishing.clone(),
                move |changes| {
                    let io = io.clone();
                    let state = publisher.clone();
                    async move { publish::changes(&io, &changes, &state).await }
                },
            ))
        });
        let leaderboard = tokio::spawn(leaderboard::run(
            state.counters.clone(),
            state.leaderboard.clone(),
            leaderboard_interval,
            stops.publishing.clone(),
            {
                let io = io.clone();
                let connections = state.connections.clone();
                move |top| {
                    let io = io.clone();
                    let audience = connections.current();
                    async move { publish::leaderboard(&io, &top, audience).await }
                }
            },
        ));
        Running {
            state,
            io,
            cluster,
            stops,
            tasks: Tasks {
                coalescer,
                leaderboard,
                flusher,
                message_writer,
                webhook,
                retention,
                housekeeping,
                health_check,
            },
            serving,
        }
    }
}
