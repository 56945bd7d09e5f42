//! Prometheus metrics: what tally counts about itself, and `/metrics`.
//!
//! Every [`Tally`](crate::Tally) owns its own recorder instead of installing
//! the process-wide one of the `metrics` crate: a host that embeds tally may
//! have a recorder of its own, and two instances in one process (tests do
//! this) must not add up into each other's figures. Handlers record through
//! [`Metrics`], a cheap-to-clone bundle of handles; figures that are a
//! state rather than an event (sockets connected, pending clicks) are read
//! when `/metrics` is scraped. Names start with `tally_`; durations are in
//! seconds, as Prometheus expects.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

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
    /// key (an allocation and a hash) each time.
    events: HashMap<&'static str, Counter>,
    broadcasts: HashMap<&'static str, (Counter, Counter)>,
}

/// The events and broadcasts whose counters are registered up front.
const EVENTS: [&str; 6] = [
    "click",
    "refresh",
    "join_conversation",
    "leave_conversation",
    "message",
    "typing",
];
const BROADCASTS: [&str; 4] = ["count", "me", "room_count", "presence"];

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
        let describe = |name: &'static str, unit: Unit, help: &'static str| {
            recorder.describe_counter(name.into(), Some(unit), help.into());
        };
        describe(
            "tally_clicks_total",
            Unit::Count,
            "Clicks counted since start",
        );
        describe(
            "tally_messages_total",
            Unit::Count,
            "Chat messages stored and sent since start",
        );
        describe(
            "tally_socket_connects_total",
            Unit::Count,
            "Socket.IO sockets that joined namespace /",
        );
        describe(
            "tally_socket_disconnects_total",
            Unit::Count,
            "Sockets that left, by reason",
        );
        describe(
            "tally_handshakes_refused_total",
            Unit::Count,
            "Socket.IO handshakes refused, by reason",
        );
        describe(
            "tally_events_received_total",
            Unit::Count,
            "Socket.IO events received, by name",
        );
        describe(
            "tally_broadcasts_total",
            Unit::Count,
            "Broadcasts sent, by event",
        );
        describe(
            "tally_broadcast_recipients_total",
            Unit::Count,
            "Sockets addressed by broadcasts, by event",
        );
        describe(
            "tally_flush_failures_total",
            Unit::Count,
            "Writes of counts that failed (each is retried)",
        );
        describe(
            "tally_flush_retries_total",
            Unit::Count,
            "Retries of a batch whose write had failed",
        );
        describe(
            "tally_rate_limited_total",
            Unit::Count,
            "Events refused by the rate limits, by name",
        );
        describe(
            "tally_abusive_disconnects_total",
            Unit::Count,
            "Sockets disconnected for sending far over their rate limits",
        );
        describe(
            "tally_connections_refused_total",
            Unit::Count,
            "New connections refused by a cap, by reason",
        );
        describe(
            "tally_http_requests_total",
            Unit::Count,
            "HTTP requests answered, by matched route and status",
        );
        let gauge = |name: &'static str, help: &'static str| {
            recorder.describe_gauge(name.into(), None, help.into());
        };
        gauge(
            "tally_sockets_connected",
            "Sockets connected now, by transport",
        );
        gauge(
            "tally_pending_clicks",
            "Clicks counted but not yet stored (a crash would lose them)",
        );
        gauge(
            "tally_conversations_occupied",
            "Conversations with at least one socket in them",
        );
        gauge("tally_build_info", "The running build (always 1)");
        let histogram = |name: &'static str, unit: Unit, help: &'static str| {
            recorder.describe_histogram(name.into(), Some(unit), help.into());
        };
        histogram(
            "tally_click_to_broadcast_seconds",
            Unit::Seconds,
            "From the first click of a coalescing window to its broadcast",
        );
        histogram(
            "tally_broadcast_fanout_seconds",
            Unit::Seconds,
            "Time to hand one publication to every recipient's queue, steps included",
        );
        histogram(
            "tally_flush_duration_seconds",
            Unit::Seconds,
            "Time of one successful write of counts",
        );
        histogram(
            "tally_flush_batch_size",
            Unit::Count,
            "Counters in one successful write",
        );
        histogram(
            "tally_message_write_seconds",
            Unit::Seconds,
            "Time of one group commit of chat messages",
        );
        histogram(
            "tally_message_batch_size",
            Unit::Count,
            "Messages in one group commit",
        );
        let counter =
            |name: &'static str| recorder.register_counter(&Key::from_static_name(name), &METADATA);
        let histo = |name: &'static str| {
            recorder.register_histogram(&Key::from_static_name(name), &METADATA)
        };
        let labelled = |name: &'static str, event: &'static str| {
            recorder.register_counter(&Self::labelled(name, &[("event", event.into())]), &METADATA)
        };
        let events = EVENTS
            .into_iter()
            .map(|event| (event, labelled("tally_events_received_total", event)))
            .collect();
        let broadcasts = BROADCASTS
            .into_iter()
            .map(|event| {
                let sent = labelled("tally_broadcasts_total", event);
                let recipients = labelled("tally_broadcast_recipients_total", event);
                (event, (sent, recipients))
            })
            .collect();
        let inner = Inner {
            events,
            broadcasts,
            clicks: counter("tally_clicks_total"),
            messages: counter("tally_messages_total"),
            connects: counter("tally_socket_connects_total"),
            flush_failures: counter("tally_flush_failures_total"),
            flush_retries: counter("tally_flush_retries_total"),
            click_to_broadcast: histo("tally_click_to_broadcast_seconds"),
            broadcast_fanout: histo("tally_broadcast_fanout_seconds"),
            flush_duration: histo("tally_flush_duration_seconds"),
            flush_counters: histo("tally_flush_batch_size"),
            message_write: histo("tally_message_write_seconds"),
            message_batch: histo("tally_message_batch_size"),
            handle: recorder.handle(),
            recorder,
        };
        let metrics = Metrics(Arc::new(inner));
        metrics
            .gauge(
                "tally_build_info",
                &[("version", env!("CARGO_PKG_VERSION").to_string())],
            )
            .set(1.0);
        metrics
    }

    fn labelled(name: &'static str, labels: &[(&'static str, String)]) -> Key {
        Key::from_parts(
            name,
            labels
                .iter()
                .map(|(key, value)| Label::new(*key, value.clone()))
                .collect::<Vec<_>>(),
        )
    }

    fn counter(&self, name: &'static str, labels: &[(&'static str, String)]) -> Counter {
        self.0
            .recorder
            .register_counter(&Self::labelled(name, labels), &METADATA)
    }

    fn gauge(&self, name: &'static str, labels: &[(&'static str, String)]) -> Gauge {
        self.0
            .recorder
            .register_gauge(&Self::labelled(name, labels), &METADATA)
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
        self.counter(
            "tally_socket_disconnects_total",
            &[("reason", reason.into())],
        )
        .increment(1);
    }

    pub fn handshake_refused(&self, reason: &'static str) {
        self.counter(
            "tally_handshakes_refused_total",
            &[("reason", reason.into())],
        )
        .increment(1);
    }

    pub fn event(&self, event: &'static str) {
        match self.0.events.get(event) {
            Some(counter) => counter.increment(1),
            None => self
                .counter("tally_events_received_total", &[("event", event.into())])
                .increment(1),
        }
    }

    /// One broadcast of `event` addressed to `recipients` sockets.
    pub fn broadcast(&self, event: &'static str, recipients: usize) {
        let (sent, addressed) = match self.0.broadcasts.get(event) {
            Some((sent, addressed)) => (sent.clone(), addressed.clone()),
            None => (
                self.counter("tally_broadcasts_total", &[("event", event.into())]),
                self.counter(
                    "tally_broadcast_recipients_total",
                    &[("event", event.into())],
                ),
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
    pub fn rate_limited(&self, event: &'static str, abusive: bool) {
        self.counter("tally_rate_limited_total", &[("event", event.into())])
            .increment(1);
        if abusive {
            self.counter("tally_abusive_disconnects_total", &[])
                .increment(1);
        }
    }

    /// A new connection refused by a cap.
    pub fn connection_refused(&self, reason: &'static str) {
        self.counter(
            "tally_connections_refused_total",
            &[("reason", reason.into())],
        )
        .increment(1);
    }

    /// One HTTP request answered.
    pub fn http_request(&self, route: &str, status: u16) {
        self.counter(
            "tally_http_requests_total",
            &[("route", route.to_string()), ("status", status.to_string())],
        )
        .increment(1);
    }

    /// The state read at scrape time.
    pub fn set_state(&self, state: &State) {
        for (transport, sockets) in [("websocket", state.websocket), ("polling", state.polling)] {
            self.gauge(
                "tally_sockets_connected",
                &[("transport", transport.into())],
            )
            .set(sockets as f64);
        }
        self.gauge("tally_pending_clicks", &[])
            .set(state.pending as f64);
        self.gauge("tally_conversations_occupied", &[])
            .set(state.occupied as f64);
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
        a.event("click");
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
