//! In-memory counters: the only place where counts change.
//!
//! Every click lands here first. A [`Counter`] keeps the authoritative total
//! (what clients see) and the part of it not yet written to the store
//! (`pending`). The write-behind task in [`flush`] drains `pending` into the
//! store; the coalescing task in [`coalesce`] turns bursts of changes into
//! bounded broadcasts. Counters are addressed by [`CounterKey`] so per-room
//! and per-user counters can join the global one without a new mechanism.

pub mod coalesce;
pub mod flush;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::Notify;

/// Names one counter. Only the global click counter exists today; rooms and
/// users become further variants.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CounterKey {
    /// Every click from everyone.
    Global,
}

impl fmt::Display for CounterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CounterKey::Global => f.write_str("global"),
        }
    }
}

/// An amount added to one counter since the last successful flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    pub key: CounterKey,
    pub amount: u64,
}

/// A total that changed since it was last published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub key: CounterKey,
    pub total: u64,
}

/// One counter. All fields are atomics so that a click never takes a lock.
#[derive(Debug, Default)]
pub struct Counter {
    /// What clients are told: the stored value plus every accepted increment.
    total: AtomicU64,
    /// Increments accepted but not yet written to the store.
    pending: AtomicU64,
    /// The last total handed to the coalescer, so unchanged counters are skipped.
    published: AtomicU64,
}

impl Counter {
    fn starting_at(total: u64) -> Self {
        Counter {
            total: AtomicU64::new(total),
            pending: AtomicU64::new(0),
            published: AtomicU64::new(total),
        }
    }

    /// The current total.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Acquire)
    }

    /// Adds `amount` and returns the total including it. The pending amount
    /// is raised first so a flush can never see a total it cannot account for.
    fn add(&self, amount: u64) -> u64 {
        self.pending.fetch_add(amount, Ordering::AcqRel);
        self.total.fetch_add(amount, Ordering::AcqRel) + amount
    }
}

/// Every counter of the process, plus a signal raised on each change.
#[derive(Debug)]
pub struct Counters {
    /// The global counter, kept outside the map because every click touches it.
    global: Arc<Counter>,
    /// Keyed counters other than the global one. Locked only briefly and never
    /// across an `.await`.
    others: RwLock<HashMap<CounterKey, Arc<Counter>>>,
    changed: Notify,
}

impl Counters {
    /// Builds the counters from the totals the store holds.
    pub fn from_totals(totals: impl IntoIterator<Item = (CounterKey, u64)>) -> Self {
        let mut global = 0;
        let mut others = HashMap::new();
        for (key, total) in totals {
            match key {
                CounterKey::Global => global = total,
                #[allow(unreachable_patterns)]
                other => {
                    others.insert(other, Arc::new(Counter::starting_at(total)));
                }
            }
        }
        Counters {
            global: Arc::new(Counter::starting_at(global)),
            others: RwLock::new(others),
            changed: Notify::new(),
        }
    }

    /// The global counter.
    pub fn global(&self) -> &Counter {
        &self.global
    }

    /// Counts one click on `key` and returns the new total.
    pub fn increment(&self, key: &CounterKey) -> u64 {
        let total = self.with_counter(key, |counter| counter.add(1));
        self.changed.notify_one();
        total
    }

    fn with_counter<R>(&self, key: &CounterKey, f: impl FnOnce(&Counter) -> R) -> R {
        if *key == CounterKey::Global {
            return f(&self.global);
        }
        if let Some(counter) = self.read_others().get(key) {
            return f(counter);
        }
        let counter = self
            .others
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        f(&counter)
    }

    fn read_others(&self) -> std::sync::RwLockReadGuard<'_, HashMap<CounterKey, Arc<Counter>>> {
        // A panic elsewhere cannot leave a counter half-updated (they are
        // atomics), so a poisoned lock is still safe to use.
        self.others
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn for_each(&self, mut f: impl FnMut(&CounterKey, &Counter)) {
        f(&CounterKey::Global, &self.global);
        for (key, counter) in self.read_others().iter() {
            f(key, counter);
        }
    }

    /// Takes every pending increment, leaving zero behind. The caller must
    /// either store the deltas or hand them back with [`Counters::restore`].
    pub fn take_pending(&self) -> Vec<Delta> {
        let mut deltas = Vec::new();
        self.for_each(|key, counter| {
            let amount = counter.pending.swap(0, Ordering::AcqRel);
            if amount > 0 {
                deltas.push(Delta {
                    key: key.clone(),
                    amount,
                });
            }
        });
        deltas
    }

    /// Puts back deltas that could not be stored, so the next flush retries them.
    pub fn restore(&self, deltas: &[Delta]) {
        for delta in deltas {
            self.with_counter(&delta.key, |counter| {
                counter.pending.fetch_add(delta.amount, Ordering::AcqRel)
            });
        }
    }

    /// The sum of increments not yet stored.
    pub fn pending_total(&self) -> u64 {
        let mut sum = 0;
        self.for_each(|_, counter| sum += counter.pending.load(Ordering::Acquire));
        sum
    }

    /// Totals that moved since the last call, each reported once.
    pub fn take_changed(&self) -> Vec<Changed> {
        let mut changed = Vec::new();
        self.for_each(|key, counter| {
            let total = counter.total();
            if counter.published.swap(total, Ordering::AcqRel) != total {
                changed.push(Changed {
                    key: key.clone(),
                    total,
                });
            }
        });
        changed
    }

    /// Resolves after the next change (or at once if one happened since the
    /// last wake-up). Many changes between two waits wake the waiter once,
    /// which is what makes coalescing cheap.
    pub async fn wait_for_change(&self) {
        self.changed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increments_return_the_new_total() {
        let counters = Counters::from_totals([(CounterKey::Global, 41)]);
        assert_eq!(counters.increment(&CounterKey::Global), 42);
        assert_eq!(counters.global().total(), 42);
        assert_eq!(counters.pending_total(), 1);
    }

    #[test]
    fn pending_is_taken_once_and_restored_on_failure() {
        let counters = Counters::from_totals([]);
        for _ in 0..3 {
            counters.increment(&CounterKey::Global);
        }
        let deltas = counters.take_pending();
        assert_eq!(
            deltas,
            [Delta {
                key: CounterKey::Global,
                amount: 3
            }]
        );
        assert!(counters.take_pending().is_empty());

        counters.increment(&CounterKey::Global);
        counters.restore(&deltas);
        assert_eq!(
            counters.take_pending(),
            [Delta {
                key: CounterKey::Global,
                amount: 4
            }]
        );
        assert_eq!(counters.global().total(), 4);
    }

    #[test]
    fn changes_are_reported_once_with_the_latest_total() {
        let counters = Counters::from_totals([(CounterKey::Global, 10)]);
        assert!(counters.take_changed().is_empty());
        counters.increment(&CounterKey::Global);
        counters.increment(&CounterKey::Global);
        assert_eq!(
            counters.take_changed(),
            [Changed {
                key: CounterKey::Global,
                total: 12
            }]
        );
        assert!(counters.take_changed().is_empty());
    }

    #[test]
    fn concurrent_increments_are_exact() {
        let counters = Arc::new(Counters::from_totals([]));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let counters = counters.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        counters.increment(&CounterKey::Global);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(counters.global().total(), 40_000);
        assert_eq!(counters.pending_total(), 40_000);
    }
}
