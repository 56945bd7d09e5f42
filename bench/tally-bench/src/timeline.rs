//! Click send times and first sightings of totals: the bookkeeping behind
//! every latency the tool reports.
//!
//! A click's total is known once it is acknowledged, so latency is "first
//! time a client saw a total ≥ that click's total" minus "time the click was
//! sent". This measures a server that merges broadcasts (one `count` carrying
//! several clicks) the same way as one that broadcasts every click, and it
//! needs no per-click message id on the wire.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

use super::report::record;

/// Send times of clicks, indexed by `total - base - 1`, in µs since the start
/// plus one (zero means "no acknowledged click has that total"). Shared by
/// every sender; each slot is written once, by whoever's ack carried it.
#[derive(Debug, Clone)]
pub struct SendTimes {
    base: u64,
    slots: Arc<[AtomicU64]>,
}

impl SendTimes {
    /// Room for `capacity` clicks after the total `base`.
    pub fn new(base: u64, capacity: usize) -> Self {
        SendTimes {
            base,
            slots: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Notes that the click acknowledged with `total` was sent at `at` µs.
    pub fn note(&self, total: u64, at: u64) {
        if let Some(slot) = total
            .checked_sub(self.base + 1)
            .and_then(|k| usize::try_from(k).ok())
            .and_then(|k| self.slots.get(k))
        {
            slot.store(at + 1, Ordering::Relaxed);
        }
    }

    /// Send times gathered elsewhere (by the other processes of a load run
    /// as several), as [`SendTimes::entries`] gives them.
    pub fn from_entries(base: u64, capacity: usize, entries: &[(u64, u64)]) -> Self {
        let sent = SendTimes::new(base, capacity);
        for &(total, at) in entries {
            sent.note(total, at);
        }
        sent
    }

    /// `(total, sent at µs)` of every acknowledged click, in total order.
    pub fn entries(&self) -> Vec<(u64, u64)> {
        self.iter().collect()
    }

    /// `(total, sent at µs)` of every acknowledged click, in total order.
    fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.slots.iter().enumerate().filter_map(|(k, slot)| {
            let at = slot.load(Ordering::Relaxed);
            (at != 0).then(|| (self.base + k as u64 + 1, at - 1))
        })
    }

    /// How many clicks were acknowledged.
    pub fn acked(&self) -> u64 {
        self.iter().count() as u64
    }
}

/// When one client first saw each larger total, in µs since the start.
/// Totals only grow, so the list is sorted and small totals that arrive late
/// (messages may overtake each other) are ignored, as the contract asks.
#[derive(Debug, Default)]
pub struct Seen {
    sightings: Vec<(u64, u64)>,
    /// The connection was found closed while reading: a connection that
    /// missed totals because it was cut off, not because they were late.
    pub closed: bool,
}

impl Seen {
    pub fn note(&mut self, total: u64, at: u64) {
        if total > self.max() {
            self.sightings.push((total, at));
        }
    }

    /// The largest total seen (0 before any).
    pub fn max(&self) -> u64 {
        self.sightings.last().map_or(0, |&(t, _)| t)
    }

    /// Records, for every acknowledged click, the delay until this client
    /// first saw a total at least that large; returns how many clicks it
    /// never saw (missed updates).
    pub fn latencies(&self, sent: &SendTimes, h: &mut Histogram<u64>) -> u64 {
        let mut i = 0;
        let mut missed = 0;
        for (total, sent_at) in sent.iter() {
            while i < self.sightings.len() && self.sightings[i].0 < total {
                i += 1;
            }
            match self.sightings.get(i) {
                Some(&(_, seen_at)) => record(h, seen_at.saturating_sub(sent_at)),
                None => missed += 1,
            }
        }
        missed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::histogram;

    #[test]
    fn a_merged_broadcast_delivers_every_click_it_covers() {
        let sent = SendTimes::new(100, 4);
        sent.note(101, 1_000);
        sent.note(102, 2_000);
        sent.note(103, 3_000);
        // Click 104 was never acknowledged: it is not counted at all.
        let mut seen = Seen::default();
        seen.note(102, 5_000); // covers 101 and 102
        seen.note(101, 6_000); // late and smaller: ignored
        let mut h = histogram();
        let missed = seen.latencies(&sent, &mut h);
        assert_eq!(missed, 1, "103 was never seen");
        assert_eq!(h.len(), 2);
        // 101 was seen 4 ms after it was sent, 102 3 ms after.
        assert!(h.equivalent(h.max(), 4_000), "{}", h.max());
        assert!(h.equivalent(h.min(), 3_000), "{}", h.min());
        assert_eq!(sent.acked(), 3);
    }
}
