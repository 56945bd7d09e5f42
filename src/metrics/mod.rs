//! Prometheus metrics: what tally counts about itself, and `/metrics`.
//!
//! Every [`Tally`](crate::Tally) owns its own recorder instead of installing
//! the process-wide one of the `metrics` crate: a host that embeds tally may
//! have a recorder of its own, and two instances in one process (tests do
//! this) must not add up into each other's figures. Handlers record through
//! [`Metrics`], a cheap-to-clone bundle of handles; figures that are a
//! state rather than an event (sockets connected, pending clicks) are read
//! when `/metrics` is scraped. Names start with `tally_`; durations are in
//! seconds, as Prometheus expects. Every metric is described once, in
//! [`catalog`].

pub mod catalog;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use catalog::Kind;
pub use catalog::Metric;

use crate::events::{BROADCASTS, ClientEvent};

/// Histogram buckets, in seconds: 100 µs to 10 s.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0,
];

/// Batch-size buckets (counters per flush, messages per write).
const SIZES: [f64; 8] = [1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0, 1e6, 1e7];

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// The metrics of one tally instance. Cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    clicks: Counter,
    messages: Counter,
    connects: Counter,
    flush_failures: Counter,
    flush_retries: Counter,
    click_to_broadcast: Histogram,
    broadcast_fanout: Histogram,
    flush_duration: Histogram,
    flush_counters: Histogram,
    message_write: Histogram,
    message_batch: Histogram,
    /// Handles of the labelled counters that move on every event and every
    /// broadcast, registered once: looking a labelled series up builds its
    /// key (an allocation and a hash) each time. Indexed by
    /// [`ClientEvent::index`].
    events: Vec<Counter>,
    broadcasts: HashMap<&'static str, (Counter, Counter)>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&BUCKETS)
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_size".into()),
                    &SIZES,
                )
            })
            .expect("the bucket lists are not empty")
            .build_recorder();
        for metric in Metric::ALL {
            let spec = metric.spec();
            let (name, help) = (spec.name.into(), spec.help.into());
            match spec.kind {
                Kind::Counter => recorder.describe_counter(name, spec.unit, help),
                Kind::Gauge => recorder.describe_gauge(name, spec.unit, help),
                Kind::Histogram => recorder.describe_histogram(name, spec.unit, help),
            }
        }
        let counter = |metric: Metric| {
            recorder.register_counter(&Key::from_static_name(metric.name()), &METADATA)
        };
        let histogram = |metric: Metric| {
            recorder.register_histogram(&Key::from_static_name(metric.name()), &METADATA)
        };
        let by_event = |metric: Metric, event: &'static str| {
            let key = Self::labelled(metric, &[("event", event.into())]);
            recorder.register_counter(&key, &METADATA)
        };
        let events = ClientEvent::ALL
            .iter()
            .map(|event| by_event(Metric::EventsReceived, event.name()))
            .collect();
        let broadcasts = BROADCASTS
            .into_iter()
            .map(|event| {
                let sent = by_event(Metric::Broadcasts, event);
                let recipients = by_event(Metric::BroadcastRecipients, event);
                (event, (sent, recipients))
            })
            .collect();
        let inner = Inner {
            events,
            broadcasts,
            clicks: counter(Metric::Clicks),
            messages: counter(Metric::Messages),
            connects: counter(Metric::SocketConnects),
            flush_failures: counter(Metric::FlushFailures),
            flush_retries: counter(Metric::FlushRetries),
            click_to_broadcast: histogram(Metric::ClickToBroadcast),
            broadcast_fanout: histogram(Metric::BroadcastFanout),
            flush_duration: histogram(Metric::FlushDuration),
            flush_counters: histogram(Metric::FlushBatchSize),
            message_write: histogram(Metric::MessageWrite),
            message_batch: histogram(Metric::MessageBatchSize),
            handle: recorder.handle(),
            recorder,
        };
        let metrics = Metrics(Arc::new(inner));
        metrics
            .gauge(
                Metric::BuildInfo,
                &[("version", env!("CARGO_PKG_VERSION").to_string())],
            )
            .set(1.0);
        metrics
    }

    fn labelled(metric: Metric, labels: &[(&'static str, String)]) -> Key {
        Key::from_parts(
            metric.name(),
            labels
                .iter()
                .map(|(key, value)| Label::new(*key, value.clone()))
                .collect::<Vec<_>>(),
        )
    }

    fn counter(&self, metric: Metric, labels: &[(&'static str, String)]) -> Counter {
        self.0
            .recorder
            .register_counter(&Self::labelled(metric, labels), &METADATA)
    }

    fn gauge(&self, metric: Metric, labels: &[(&'static str, String)]) -> Gauge {
        self.0
            .recorder
            .register_gauge(&Self::labelled(metric, labels), &METADATA)
    }

    /// One click counted.
    pub fn click(&self) {
        self.0.clicks.increment(1);
    }

    /// Messages stored by one group commit that took `took`.
    pub fn messages_written(&self, messages: usize, took: Duration) {
        self.0.messages.increment(messages as u64);
        self.0.message_write.record(took);
        self.0.message_batch.record(messages as f64);
    }

    pub fn connected(&self) {
        self.0.connects.increment(1);
    }

    /// A socket left; `reason` is socketioxide's, in snake case.
    pub fn disconnected(&self, reason: &str) {
        self.counter(Metric::SocketDisconnects, &[("reason", reason.into())])
            .increment(1);
    }

    /// A handshake refused, by its refusal's code.
    pub fn handshake_refused(&self, reason: &'static str) {
        self.counter(Metric::HandshakesRefused, &[("reason", reason.into())])
            .increment(1);
    }

    /// A client event received.
    pub fn event(&self, event: ClientEvent) {
        self.0.events[event.index()].increment(1);
    }

    /// One broadcast of `event` addressed to `recipients` sockets.
    pub fn broadcast(&self, event: &'static str, recipients: usize) {
        let (sent, addressed) = match self.0.broadcasts.get(event) {
            Some((sent, addressed)) => (sent.clone(), addressed.clone()),
            None => (
                self.counter(Metric::Broadcasts, &[("event", event.into())]),
                self.counter(Metric::BroadcastRecipients, &[("event", event.into())]),
            ),
        };
        sent.increment(1);
        addressed.increment(recipients as u64);
    }

    /// A publication: how long its oldest change waited, and how long
    /// handing it out took.
    pub fn published(&self, waited: Option<Duration>, fanout: Duration) {
        if let Some(waited) = waited {
            self.0.click_to_broadcast.record(waited);
        }
        self.0.broadcast_fanout.record(fanout);
    }

    /// A successful write of `counters` counters that took `took`.
    pub fn flushed(&self, counters: usize, took: Duration) {
        self.0.flush_duration.record(took);
        self.0.flush_counters.record(counters as f64);
    }

    pub fn flush_failed(&self) {
        self.0.flush_failures.increment(1);
    }

    pub fn flush_retried(&self) {
        self.0.flush_retries.increment(1);
    }

    /// An event refused by a rate limit; `abusive` when its socket is
    /// disconnected for it.
    pub fn rate_limited(&self, event: ClientEvent, abusive: bool) {
        self.counter(Metric::RateLimited, &[("event", event.name().into())])
            .increment(1);
        if abusive {
            self.counter(Metric::AbusiveDisconnects, &[]).increment(1);
        }
    }

    /// The counter of connections ended by `--send-timeout`, for the
    /// HTTP server to count in.
    pub fn send_timeouts(&self) -> Counter {
        self.counter(Metric::SendTimeouts, &[])
    }

    /// A new connection refused by a cap.
    pub fn connection_refused(&self, reason: &'static str) {
        self.counter(Metric::ConnectionsRefused, &[("reason", reason.into())])
            .increment(1);
    }

    /// One HTTP request answered.
    pub fn http_request(&self, route: &str, status: u16) {
        self.counter(
            Metric::HttpRequests,
            &[("route", route.to_string()), ("status", status.to_string())],
        )
        .increment(1);
    }

    /// The state read at scrape time.
    pub fn set_state(&self, state: &State) {
        for (transport, sockets) in [("websocket", state.websocket), ("polling", state.polling)] {
            self.gauge(Metric::SocketsConnected, &[("transport", transport.into())])
                .set(sockets as f64);
        }
        self.gauge(Metric::PendingClicks, &[])
            .set(state.pending as f64);
        self.gauge(Metric::ConversationsOccupied, &[])
            .set(state.occupied as f64);
        if let Some(cluster) = &state.cluster {
            self.gauge(Metric::ClusterPeers, &[])
                .set(cluster.peers as f64);
            self.gauge(Metric::RedisConnected, &[])
                .set(if cluster.connected { 1.0 } else { 0.0 });
            self.counter(Metric::ClusterMessagesDropped, &[])
                .absolute(cluster.dropped);
        }
    }

    /// A reload of every total after a gap in the news from other nodes.
    pub fn cluster_reloaded(&self) {
        self.counter(Metric::ClusterReloads, &[]).increment(1);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.0.handle.render()
    }

    /// Drains histogram samples into their buckets; called periodically so
    /// samples do not pile up between scrapes.
    pub fn upkeep(&self) {
        self.0.handle.run_upkeep();
    }
}

/// Figures read from the running server when `/metrics` is scraped.
#[derive(Debug, Default, Clone, Copy)]
pub struct State {
    pub websocket: usize,
    pub polling: usize,
    pub pending: u64,
    pub occupied: usize,
    /// In cluster mode only.
    pub cluster: Option<ClusterState>,
}

/// Cluster mode's figures at scrape time.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClusterState {
    pub peers: usize,
    pub connected: bool,
    pub dropped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_keep_their_own_figures() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.click();
        a.click();
        b.click();
        a.event(ClientEvent::Click);
        assert!(
            a.render().contains("tally_clicks_total 2"),
            "{}",
            a.render()
        );
        assert!(
            b.render().contains("tally_clicks_total 1"),
            "{}",
            b.render()
        );
        assert!(
            a.render()
                .contains("tally_events_received_total{event=\"click\"} 1")
        );
        assert!(a.render().contains("tally_build_info{version=\""));
    }
}
