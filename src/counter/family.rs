//! One counter, and a family of them keyed by user or conversation.
//!
//! A [`Counter`] keeps the authoritative total (what clients see) and the
//! part of it not yet written to the store (`pending`), both atomics so a
//! click never waits. A [`Family`] creates counters on first use and keeps
//! two short lists beside its map, so that neither a publication nor a
//! flush ever scans every known counter.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use super::{Changed, CounterKey, Delta};
use crate::sync::{lock, read, write};

/// One counter. All fields are atomics so that a click never waits on I/O.
#[derive(Debug, Default)]
pub struct Counter {
    /// What clients are told: the stored value plus every accepted increment.
    total: AtomicU64,
    /// Increments accepted but not yet written to the store.
    pub(super) pending: AtomicU64,
    /// Set while the counter sits in the dirty list, so it is queued once per
    /// tick. A user in the list has clicked, so their total has changed.
    dirty: AtomicBool,
}

impl Counter {
    pub(super) fn starting_at(total: u64) -> Self {
        Counter {
            total: AtomicU64::new(total),
            ..Counter::default()
        }
    }

    /// The current total.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::SeqCst)
    }

    /// Raises the total to `at_least` if it is below; returns the total
    /// before, when it was raised.
    pub(super) fn raise_to(&self, at_least: u64) -> Option<u64> {
        let before = self.total.fetch_max(at_least, Ordering::SeqCst);
        (before < at_least).then_some(before)
    }

    /// Adds one; returns the total including it, and whether this is the
    /// first increment since the last flush took this counter's pending.
    pub(super) fn add_one(&self) -> (u64, bool) {
        let first = self.pending.fetch_add(1, Ordering::SeqCst) == 0;
        (self.total.fetch_add(1, Ordering::SeqCst) + 1, first)
    }
}

/// Counters of one kind (users, conversations), each created on first use.
///
/// Besides the map, two lists hold the counters that need attention, so
/// neither a publication nor a flush ever scans every known counter: `dirty`
/// (total moved since the coalescer last looked) and `unflushed` (pending
/// left zero since the last flush).
#[derive(Debug)]
pub(super) struct Family<K> {
    counters: RwLock<HashMap<K, Arc<Counter>>>,
    dirty: Mutex<Vec<(K, Arc<Counter>)>>,
    unflushed: Mutex<Vec<(K, Arc<Counter>)>>,
}

impl<K: Clone + Eq + std::hash::Hash> Family<K> {
    pub(super) fn new(counters: HashMap<K, Arc<Counter>>) -> Self {
        Family {
            counters: RwLock::new(counters),
            dirty: Mutex::new(Vec::new()),
            unflushed: Mutex::new(Vec::new()),
        }
    }

    pub(super) fn read(&self) -> RwLockReadGuard<'_, HashMap<K, Arc<Counter>>> {
        read(&self.counters)
    }

    /// The counter of `key`, created at zero if new. The returned key is the
    /// one first stored (for users: the spelling first seen).
    pub(super) fn get_or_create(&self, key: &K) -> (K, Arc<Counter>) {
        if let Some((known, counter)) = self.read().get_key_value(key) {
            return (known.clone(), counter.clone());
        }
        let mut counters = write(&self.counters);
        match counters.entry(key.clone()) {
            Entry::Occupied(known) => (known.key().clone(), known.get().clone()),
            Entry::Vacant(new) => {
                let counter = new.insert(Arc::new(Counter::default())).clone();
                (key.clone(), counter)
            }
        }
    }

    /// Adds one to a counter found by [`Family::get_or_create`]. Call under
    /// the shared gate, so a flush takes both halves of a click or neither.
    pub(super) fn add_one(&self, key: &K, counter: &Arc<Counter>) -> u64 {
        let (total, first) = counter.add_one();
        if first {
            lock(&self.unflushed).push((key.clone(), counter.clone()));
        }
        total
    }

    /// Queues a counter for the coalescer, once until it is published.
    pub(super) fn mark_dirty(&self, key: K, counter: Arc<Counter>) {
        if !counter.dirty.swap(true, Ordering::SeqCst) {
            lock(&self.dirty).push((key, counter));
        }
    }

    pub(super) fn total(&self, key: &K) -> Option<u64> {
        let total = self.read().get(key)?.total();
        (total > 0).then_some(total)
    }

    /// Moves every pending amount into `deltas`. Call under the exclusive gate.
    pub(super) fn take_pending(&self, deltas: &mut Vec<Delta>, to_key: impl Fn(K) -> CounterKey) {
        for (key, counter) in std::mem::take(&mut *lock(&self.unflushed)) {
            let amount = counter.pending.swap(0, Ordering::SeqCst);
            if amount > 0 {
                deltas.push(Delta {
                    key: to_key(key),
                    amount,
                });
            }
        }
    }

    /// Moves every dirty counter's latest total into `changed`.
    pub(super) fn take_changed(
        &self,
        changed: &mut Vec<Changed>,
        to_key: impl Fn(K) -> CounterKey,
    ) {
        for (key, counter) in std::mem::take(&mut *lock(&self.dirty)) {
            // Cleared before reading the total: a click after this line
            // queues the counter again, a click before it is in the total read.
            counter.dirty.store(false, Ordering::SeqCst);
            changed.push(Changed {
                key: to_key(key),
                total: counter.total(),
            });
        }
    }
}
