//! What the Admin UI's dashboard shows: `server_stats`, sent to every
//! admin socket every 2 s, with the events aggregated since the last one.
//!
//! The counters are atomics bumped where tally already does work per
//! connection, event or broadcast (a broadcast adds its recipients in one
//! go), so aggregated mode costs an atomic add per event and nothing per
//! recipient; bytes are counted per connection (`super::bytes`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Events counted since the last `server_stats`.
#[derive(Debug, Default)]
pub struct Aggregated {
    connections: AtomicU64,
    packets_in: AtomicU64,
    packets_out: AtomicU64,
    /// Disconnections by reason; a handful of reasons, so a small map.
    disconnections: Mutex<HashMap<&'static str, u64>>,
}

/// One entry of `aggregatedEvents`, as the UI reads it.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AggregatedEvent {
    /// Milliseconds since the epoch, truncated to the second.
    pub timestamp: i64,
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_type: Option<&'static str>,
    pub count: u64,
}

impl Aggregated {
    pub fn connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn disconnection(&self, reason: &'static str) {
        let mut by_reason = self
            .disconnections
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *by_reason.entry(reason).or_default() += 1;
    }

    pub fn packet_in(&self) {
        self.packets_in.fetch_add(1, Ordering::Relaxed);
    }

    pub fn packets_out(&self, count: u64) {
        self.packets_out.fetch_add(count, Ordering::Relaxed);
    }

    /// Everything counted since the last call, stamped `timestamp`, and
    /// the counters back at zero. Types with nothing to report are left out.
    pub fn take(&self, timestamp: i64) -> Vec<AggregatedEvent> {
        let timestamp = timestamp - timestamp.rem_euclid(1000);
        let mut events = Vec::new();
        let mut push = |kind, sub_type, count| {
            if count > 0 {
                events.push(AggregatedEvent {
                    timestamp,
                    kind,
                    sub_type,
                    count,
                });
            }
        };
        push(
            "rawConnection",
            None,
            self.connections.swap(0, Ordering::Relaxed),
        );
        let disconnections = std::mem::take(
            &mut *self
                .disconnections
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for (reason, count) in disconnections {
            push("rawDisconnection", Some(reason), count);
        }
        push(
            "packetsIn",
            None,
            self.packets_in.swap(0, Ordering::Relaxed),
        );
        push(
            "packetsOut",
            None,
            self.packets_out.swap(0, Ordering::Relaxed),
        );
        events
    }
}

/// The `bytesIn` and `bytesOut` entries, stamped like [`Aggregated::take`]'s.
pub fn bytes(timestamp: i64, bytes_in: u64, bytes_out: u64) -> Vec<AggregatedEvent> {
    let timestamp = timestamp - timestamp.rem_euclid(1000);
    [("bytesIn", bytes_in), ("bytesOut", bytes_out)]
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .map(|(kind, count)| AggregatedEvent {
            timestamp,
            kind,
            sub_type: None,
            count,
        })
        .collect()
}

/// A namespace and its sockets, for the dashboard.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceStats {
    pub name: &'static str,
    pub sockets_count: usize,
}

/// The `server_stats` event.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerStats {
    pub server_id: String,
    pub hostname: String,
    pub pid: u32,
    /// Seconds since the server started.
    pub uptime: f64,
    /// Connected clients, the Admin UI's own included.
    pub clients_count: usize,
    pub polling_clients_count: usize,
    pub aggregated_events: Vec<AggregatedEvent>,
    /// Every namespace, always in the same order: the UI merges this list
    /// into the one it has, so a namespace left out would stay as it was.
    pub namespaces: Vec<NamespaceStats>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_reported_once_and_stamped_by_the_second() {
        let aggregated = Aggregated::default();
        aggregated.connection();
        aggregated.connection();
        aggregated.disconnection("transport close");
        aggregated.packet_in();
        aggregated.packets_out(1000);
        let events = aggregated.take(1_700_000_001_234);
        assert_eq!(
            events,
            vec![
                AggregatedEvent {
                    timestamp: 1_700_000_001_000,
                    kind: "rawConnection",
                    sub_type: None,
                    count: 2
                },
                AggregatedEvent {
                    timestamp: 1_700_000_001_000,
                    kind: "rawDisconnection",
                    sub_type: Some("transport close"),
                    count: 1
                },
                AggregatedEvent {
                    timestamp: 1_700_000_001_000,
                    kind: "packetsIn",
                    sub_type: None,
                    count: 1
                },
                AggregatedEvent {
                    timestamp: 1_700_000_001_000,
                    kind: "packetsOut",
                    sub_type: None,
                    count: 1000
                },
            ]
        );
        assert!(aggregated.take(1_700_000_003_000).is_empty());
    }
}
