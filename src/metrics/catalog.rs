//! The table of every metric tally exports: name, type, unit and help,
//! each name spelled once. [`super::Metrics`] describes every entry to the
//! recorder at start and registers its handles from here, so a metric is
//! added by a variant of [`Metric`] (the compiler then asks for its
//! [`Spec`]) and the call that records it.

use metrics::Unit;

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric's description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub name: &'static str,
    pub kind: Kind,
    /// Durations are in seconds, as Prometheus expects; gauges carry none.
    pub unit: Option<Unit>,
    pub help: &'static str,
}

/// Every metric of tally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::VariantArray)]
pub enum Metric {
    Clicks,
    Messages,
    SocketConnects,
    SocketDisconnects,
    HandshakesRefused,
    EventsReceived,
    Broadcasts,
    BroadcastRecipients,
    FlushFailures,
    FlushRetries,
    RateLimited,
    AbusiveDisconnects,
    SendTimeouts,
    ConnectionsRefused,
    HttpRequests,
    SocketsConnected,
    PendingClicks,
    ConversationsOccupied,
    ClusterPeers,
    RedisConnected,
    ClusterReloads,
    ClusterMessagesDropped,
    BuildInfo,
    ClickToBroadcast,
    BroadcastFanout,
    FlushDuration,
    FlushBatchSize,
    MessageWrite,
    MessageBatchSize,
}

impl Metric {
    /// Every metric.
    pub const ALL: &'static [Metric] = <Self as strum::VariantArray>::VARIANTS;

    /// Its name, type, unit and help.
    pub const fn spec(self) -> Spec {
        use Kind::{Counter, Gauge, Histogram};
        let (name, kind, unit, help) = match self {
            Metric::Clicks => (
                "tally_clicks_total",
                Counter,
                Some(Unit::Count),
                "Clicks counted since start",
            ),
            Metric::Messages => (
                "tally_messages_total",
                Counter,
                Some(Unit::Count),
                "Chat messages stored and sent since start",
            ),
            Metric::SocketConnects => (
                "tally_socket_connects_total",
                Counter,
                Some(Unit::Count),
                "Socket.IO sockets that joined namespace /",
            ),
            Metric::SocketDisconnects => (
                "tally_socket_disconnects_total",
                Counter,
                Some(Unit::Count),
                "Sockets that left, by reason",
            ),
            Metric::HandshakesRefused => (
                "tally_handshakes_refused_total",
                Counter,
                Some(Unit::Count),
                "Socket.IO handshakes refused, by reason",
            ),
            Metric::EventsReceived => (
                "tally_events_received_total",
                Counter,
                Some(Unit::Count),
                "Socket.IO events received, by name",
            ),
            Metric::Broadcasts => (
                "tally_broadcasts_total",
                Counter,
                Some(Unit::Count),
                "Broadcasts sent, by event",
            ),
            Metric::BroadcastRecipients => (
                "tally_broadcast_recipients_total",
                Counter,
                Some(Unit::Count),
                "Sockets addressed by broadcasts, by event",
            ),
            Metric::FlushFailures => (
                "tally_flush_failures_total",
                Counter,
                Some(Unit::Count),
                "Writes of counts that failed (each is retried)",
            ),
            Metric::FlushRetries => (
                "tally_flush_retries_total",
                Counter,
                Some(Unit::Count),
                "Retries of a batch whose write had failed",
            ),
            Metric::RateLimited => (
                "tally_rate_limited_total",
                Counter,
                Some(Unit::Count),
                "Events refused by the rate limits, by name",
            ),
            Metric::AbusiveDisconnects => (
                "tally_abusive_disconnects_total",
                Counter,
                Some(Unit::Count),
                "Sockets disconnected for sending far over their rate limits",
            ),
            Metric::SendTimeouts => (
                "tally_send_timeouts_total",
                Counter,
                Some(Unit::Count),
                "Connections closed because the client read nothing it was sent for --send-timeout",
            ),
            Metric::ConnectionsRefused => (
                "tally_connections_refused_total",
                Counter,
                Some(Unit::Count),
                "New connections refused by a cap, by reason",
            ),
            Metric::HttpRequests => (
                "tally_http_requests_total",
                Counter,
                Some(Unit::Count),
                "HTTP requests answered, by matched route and status",
            ),
            Metric::SocketsConnected => (
                "tally_sockets_connected",
                Gauge,
                None,
                "Sockets connected now, by transport",
            ),
            Metric::PendingClicks => (
                "tally_pending_clicks",
                Gauge,
                None,
                "Clicks counted but not yet stored (a crash would lose them)",
            ),
            Metric::ConversationsOccupied => (
                "tally_conversations_occupied",
                Gauge,
                None,
                "Conversations with at least one socket in them",
            ),
            Metric::ClusterPeers => (
                "tally_cluster_peers",
                Gauge,
                None,
                "Other nodes heard from within --peer-timeout (cluster mode)",
            ),
            Metric::RedisConnected => (
                "tally_redis_connected",
                Gauge,
                None,
                "1 while Redis answers, 0 while it does not (cluster mode)",
            ),
            Metric::ClusterReloads => (
                "tally_cluster_reloads_total",
                Counter,
                Some(Unit::Count),
                "Reloads of every total from the database after news from other nodes was lost",
            ),
            Metric::ClusterMessagesDropped => (
                "tally_cluster_messages_dropped_total",
                Counter,
                Some(Unit::Count),
                "Messages to other nodes not sent because Redis was unreachable",
            ),
            Metric::BuildInfo => (
                "tally_build_info",
                Gauge,
                None,
                "The running build (always 1)",
            ),
            Metric::ClickToBroadcast => (
                "tally_click_to_broadcast_seconds",
                Histogram,
                Some(Unit::Seconds),
                "From the first click of a coalescing window to its broadcast",
            ),
            Metric::BroadcastFanout => (
                "tally_broadcast_fanout_seconds",
                Histogram,
                Some(Unit::Seconds),
                "Time to hand one publication to every recipient's queue, steps included",
            ),
            Metric::FlushDuration => (
                "tally_flush_duration_seconds",
                Histogram,
                Some(Unit::Seconds),
                "Time of one successful write of counts",
            ),
            Metric::FlushBatchSize => (
                "tally_flush_batch_size",
                Histogram,
                Some(Unit::Count),
                "Counters in one successful write",
            ),
            Metric::MessageWrite => (
                "tally_message_write_seconds",
                Histogram,
                Some(Unit::Seconds),
                "Time of one group commit of chat messages",
            ),
            Metric::MessageBatchSize => (
                "tally_message_batch_size",
                Histogram,
                Some(Unit::Count),
                "Messages in one group commit",
            ),
        };
        Spec {
            name,
            kind,
            unit,
            help,
        }
    }

    /// Its name in the exposition.
    pub const fn name(self) -> &'static str {
        self.spec().name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_prefixed_and_say_their_kind() {
        let mut names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
        for metric in Metric::ALL {
            let Spec {
                name, kind, unit, ..
            } = metric.spec();
            assert!(name.starts_with("tally_"), "{name}");
            match kind {
                Kind::Counter => assert!(name.ends_with("_total"), "{name}"),
                Kind::Histogram if unit == Some(Unit::Seconds) => {
                    assert!(name.ends_with("_seconds"), "{name}")
                }
                _ => {}
            }
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Metric::ALL.len());
    }
}
