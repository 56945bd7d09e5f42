//! In-memory counters: the only place where counts change.
//!
//! Every click lands here first. A [`Counter`] keeps the authoritative total
//! (what clients see) and the part of it not yet written to the store
//! (`pending`). The write-behind task in [`flush`] drains `pending` into the
//! store; the coalescing task in [`coalesce`] turns bursts of changes into
//! bounded broadcasts; [`leaderboard`] ranks users. Counters are addressed by
//! [`CounterKey`]: the global total, one counter per user and one per
//! conversation, all flushed and published by the same mechanism. The number
//! of sockets in each conversation (presence) lives here too, published by
//! the same coalescer but never stored.

pub mod coalesce;
pub mod flush;
pub mod leaderboard;
pub mod ranking;
pub mod rate;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use tokio::sync::Notify;

use crate::conversation::ConversationId;
use crate::user::Username;

/// Names one counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CounterKey {
    /// Every click from everyone, anonymous or not.
    Global,
    /// The clicks of one user.
    User(Username),
    /// The clicks made in one conversation.
    Room(ConversationId),
}

impl fmt::Display for CounterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CounterKey::Global => f.write_str("global"),
            CounterKey::User(name) => write!(f, "user:{name}"),
            CounterKey::Room(room) => write!(f, "conversation:{room}"),
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

/// A click refused because counting has stopped (the server is shutting
/// down and its final flush is under way or done).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server is shutting down; this click was not counted")]
pub struct Closed;

/// What one click produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Click {
    /// The global total including this click.
    pub total: u64,
    /// The clicking user's total including this click; `None` if anonymous.
    pub you: Option<u64>,
    /// The conversation's total including this click; `None` outside one.
    pub room: Option<u64>,
}

/// One counter. All fields are atomics so that a click never waits on I/O.
#[derive(Debug, Default)]
pub struct Counter {
    /// What clients are told: the stored value plus every accepted increment.
    total: AtomicU64,
    /// Increments accepted but not yet written to the store.
    pending: AtomicU64,
    /// Set while the counter sits in the dirty list, so it is queued once per
    /// tick. A user in the list has clicked, so their total has changed.
    dirty: AtomicBool,
}

impl Counter {
    fn starting_at(total: u64) -> Self {
        Counter {
            total: AtomicU64::new(total),
            ..Counter::default()
        }
    }

    /// The current total.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::SeqCst)
    }

    /// Adds one; returns the total including it, and whether this is the
    /// first increment since the last flush took this counter's pending.
    fn add_one(&self) -> (u64, bool) {
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
struct Family<K> {
    counters: RwLock<HashMap<K, Arc<Counter>>>,
    dirty: Mutex<Vec<(K, Arc<Counter>)>>,
    unflushed: Mutex<Vec<(K, Arc<Counter>)>>,
}

impl<K: Clone + Eq + std::hash::Hash> Family<K> {
    fn new(counters: HashMap<K, Arc<Counter>>) -> Self {
        Family {
            counters: RwLock::new(counters),
            dirty: Mutex::new(Vec::new()),
            unflushed: Mutex::new(Vec::new()),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<K, Arc<Counter>>> {
        // Counters are atomics, so a panic elsewhere cannot leave one
        // half-updated: a poisoned lock is still safe to use.
        self.counters.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The counter of `key`, created at zero if new. The returned key is the
    /// one first stored (for users: the spelling first seen).
    fn get_or_create(&self, key: &K) -> (K, Arc<Counter>) {
        if let Some((known, counter)) = self.read().get_key_value(key) {
            return (known.clone(), counter.clone());
        }
        let mut counters = self.counters.write().unwrap_or_else(|p| p.into_inner());
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
    fn add_one(&self, key: &K, counter: &Arc<Counter>) -> u64 {
        let (total, first) = counter.add_one();
        if first {
            lock(&self.unflushed).push((key.clone(), counter.clone()));
        }
        total
    }

    /// Queues a counter for the coalescer, once until it is published.
    fn mark_dirty(&self, key: K, counter: Arc<Counter>) {
        if !counter.dirty.swap(true, Ordering::SeqCst) {
            lock(&self.dirty).push((key, counter));
        }
    }

    fn total(&self, key: &K) -> Option<u64> {
        let total = self.read().get(key)?.total();
        (total > 0).then_some(total)
    }

    /// Moves every pending amount into `deltas`. Call under the exclusive gate.
    fn take_pending(&self, deltas: &mut Vec<Delta>, to_key: impl Fn(K) -> CounterKey) {
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
    fn take_changed(&self, changed: &mut Vec<Changed>, to_key: impl Fn(K) -> CounterKey) {
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

/// How many sockets are in each conversation's room, and which of those
/// numbers changed since they were last published.
#[derive(Debug, Default)]
struct Presence {
    online: HashMap<ConversationId, u64>,
    /// Rooms whose number changed since the last publication (a set: a
    /// mass reconnect touches thousands of rooms).
    changed: std::collections::HashSet<ConversationId>,
}

/// Every counter of the process, plus a signal raised on each change.
#[derive(Debug)]
pub struct Counters {
    /// The global counter, outside the maps because every click touches it.
    global: Counter,
    /// The last global total handed to the coalescer, so an unchanged total
    /// is not published again. (The families need no such field: only
    /// counters that moved are in their dirty lists.)
    global_published: AtomicU64,
    /// One counter per user who has clicked (or was loaded from the store).
    users: Family<Username>,
    /// One counter per conversation clicked in (or loaded from the store).
    rooms: Family<ConversationId>,
    /// Sockets per conversation room: not stored, published as `presence`.
    presence: Mutex<Presence>,
    /// Clicks made by identified users since start; the leaderboard task
    /// compares it between ticks to skip work when no user clicked.
    user_clicks: AtomicU64,
    /// Every user's place by count; updated with each identified click.
    ranking: Mutex<ranking::Ranking>,
    /// Clicks taken by the flusher in a batch whose write failed; the
    /// flusher retries that batch and clears this once it is stored.
    unconfirmed: AtomicU64,
    /// Set while the last write to the store failed.
    flush_failing: AtomicBool,
    /// When the last write of counts succeeded, ms since the epoch (0: never).
    flushed_at: std::sync::atomic::AtomicI64,
    /// The global total up to which every click is stored (durable mode's
    /// clicks wait for it to reach theirs).
    stored: tokio::sync::watch::Sender<u64>,
    /// Set once shutdown's final flush is over: nothing more will be
    /// stored, so no click waits for it any longer.
    finished: AtomicBool,
    /// Raised on every click, for the durable-mode flusher.
    pending_changed: Notify,
    /// Shared by every click, exclusive while pending deltas are taken, so a
    /// flush never stores a click in the global total but not in its user's
    /// or its room's (or the reverse). Never held across an `.await`. It
    /// guards the `closed` flag too: once [`Counters::close`] has set it
    /// under the exclusive gate, no click can slip in before the final flush.
    gate: RwLock<bool>,
    changed: Notify,
    /// When the oldest change not yet taken by [`Counters::take_changes`]
    /// happened, in nanoseconds since `epoch` plus one (0: none pending).
    first_change: AtomicU64,
    epoch: std::time::Instant,
}

/// A conversation's number of connected sockets that changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Online {
    pub room: ConversationId,
    pub online: u64,
}

/// Everything the coalescer publishes in one go.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Totals that moved (global, users, conversations).
    pub totals: Vec<Changed>,
    /// Conversations whose number of connected sockets moved.
    pub presence: Vec<Online>,
    /// How long the oldest of these changes waited to be taken (the
    /// coalescing delay `tally_click_to_broadcast_seconds` reports).
    pub waited: Option<std::time::Duration>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.totals.is_empty() && self.presence.is_empty()
    }
}

impl Counters {
    /// Builds the counters from the totals the store holds.
    pub fn from_totals(totals: impl IntoIterator<Item = (CounterKey, u64)>) -> Self {
        let mut global = 0;
        let mut users = HashMap::new();
        let mut rooms = HashMap::new();
        for (key, total) in totals {
            match key {
                CounterKey::Global => global = total,
                CounterKey::User(name) => {
                    users.insert(name, Arc::new(Counter::starting_at(total)));
                }
                CounterKey::Room(room) => {
                    rooms.insert(room, Arc::new(Counter::starting_at(total)));
                }
            }
        }
        let ranking =
            ranking::Ranking::new(users.iter().map(
                |(name, counter): (&Username, &Arc<Counter>)| (name.clone(), counter.total()),
            ));
        Counters {
            global: Counter::starting_at(global),
            global_published: AtomicU64::new(global),
            users: Family::new(users),
            rooms: Family::new(rooms),
            presence: Mutex::new(Presence::default()),
            ranking: Mutex::new(ranking),
            user_clicks: AtomicU64::new(0),
            unconfirmed: AtomicU64::new(0),
            flush_failing: AtomicBool::new(false),
            flushed_at: Default::default(),
            stored: tokio::sync::watch::Sender::new(global),
            finished: AtomicBool::new(false),
            pending_changed: Notify::new(),
            gate: RwLock::new(false),
            changed: Notify::new(),
            first_change: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
        }
    }

    /// The global counter.
    pub fn global(&self) -> &Counter {
        &self.global
    }

    /// Counts one click, attributed to `user` if given. Refused once
    /// [`Counters::close`] has been called.
    pub fn click(&self, user: Option<&Username>) -> Result<Click, Closed> {
        self.click_in(user, None)
    }

    /// Counts one click, attributed to `user` if given, in conversation
    /// `room` if given: the global total, the user's count and the room's
    /// counter move together (a flush takes all of them or none).
    pub fn click_in(
        &self,
        user: Option<&Username>,
        room: Option<&ConversationId>,
    ) -> Result<Click, Closed> {
        let user = user.map(|name| self.users.get_or_create(name));
        let room = room.map(|id| self.rooms.get_or_create(id));
        let click = {
            let closed = self.gate.read().unwrap_or_else(|p| p.into_inner());
            if *closed {
                return Err(Closed);
            }
            // The ranking lock orders this user's increments, so the
            // ranking sees each count go up by one, in order.
            let you = user.as_ref().map(|(name, counter)| {
                let mut ranking = lock(&self.ranking);
                let you = self.users.add_one(name, counter);
                ranking.bump(name, you);
                you
            });
            let room_total = room
                .as_ref()
                .map(|(id, counter)| self.rooms.add_one(id, counter));
            let click = Click {
                total: self.global.add_one().0,
                you,
                room: room_total,
            };
            // Still under the gate: once `close` returns, every counted
            // click is also marked for publishing and flushing, so the last
            // `me`, `room_count` and flush cannot miss one.
            if let Some((name, counter)) = user {
                self.user_clicks.fetch_add(1, Ordering::SeqCst);
                self.users.mark_dirty(name, counter);
            }
            if let Some((id, counter)) = room {
                self.rooms.mark_dirty(id, counter);
            }
            self.note_change();
            click
        };
        self.pending_changed.notify_one();
        Ok(click)
    }

    /// Stops counting: every later [`Counters::click`] is refused. Shutdown
    /// calls it before the final flush, so that flush sees every click that
    /// was acknowledged, whatever state the sockets are in.
    pub fn close(&self) {
        *self.gate.write().unwrap_or_else(|p| p.into_inner()) = true;
    }

    /// A user's total, if the user has ever clicked.
    pub fn user_total(&self, name: &Username) -> Option<u64> {
        self.users.total(name)
    }

    /// A conversation's click total (zero if nobody clicked in it yet).
    pub fn room_total(&self, room: &ConversationId) -> u64 {
        self.rooms.total(room).unwrap_or(0)
    }

    /// The spelling under which a user is known, if they ever clicked.
    pub fn known_username(&self, name: &Username) -> Option<Username> {
        self.users
            .read()
            .get_key_value(name)
            .filter(|(_, counter)| counter.total() > 0)
            .map(|(known, _)| known.clone())
    }

    /// Records a socket entering a conversation's room; returns how many
    /// sockets are in it now.
    pub fn enter(&self, room: &ConversationId) -> u64 {
        self.move_presence(room, |online| *online += 1)
    }

    /// Records a socket leaving a conversation's room (or disconnecting);
    /// returns how many sockets are left in it.
    pub fn leave(&self, room: &ConversationId) -> u64 {
        self.move_presence(room, |online| *online = online.saturating_sub(1))
    }

    fn move_presence(&self, room: &ConversationId, change: impl FnOnce(&mut u64)) -> u64 {
        let online = {
            let mut presence = lock(&self.presence);
            let online = presence.online.entry(room.clone()).or_default();
            change(online);
            let online = *online;
            if online == 0 {
                // An empty room keeps no entry, so rooms people left cost nothing.
                presence.online.remove(room);
            }
            presence.changed.insert(room.clone());
            online
        };
        self.note_change();
        online
    }

    /// Wakes the coalescer, remembering when the first unpublished change
    /// happened (one clock read per window, not per click).
    fn note_change(&self) {
        if self.first_change.load(Ordering::Relaxed) == 0 {
            let now = self.epoch.elapsed().as_nanos() as u64 + 1;
            self.first_change
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
                .ok();
        }
        self.changed.notify_one();
    }

    /// Sockets in a conversation's room now.
    pub fn online(&self, room: &ConversationId) -> u64 {
        lock(&self.presence).online.get(room).copied().unwrap_or(0)
    }

    /// Conversations that have sockets in them now.
    pub fn occupied_rooms(&self) -> usize {
        lock(&self.presence).online.len()
    }

    /// Clicks by identified users since start (only ever grows).
    pub fn user_clicks(&self) -> u64 {
        self.user_clicks.load(Ordering::SeqCst)
    }

    /// One plus the number of users with more clicks than `count`.
    pub fn rank(&self, count: u64) -> u64 {
        lock(&self.ranking).rank(count)
    }

    /// The first `limit` users (at most [`ranking::TOP`]) by count, then
    /// name, with their totals.
    pub fn top_users(&self, limit: usize) -> Vec<(Username, u64)> {
        lock(&self.ranking).top(limit).to_vec()
    }

    /// Takes every pending increment, leaving zero behind. The caller must
    /// store the deltas, retrying until it can (see [`flush`]).
    pub fn take_pending(&self) -> Vec<Delta> {
        let _exclusive = self.gate.write().unwrap_or_else(|p| p.into_inner());
        self.take_pending_gated()
    }

    /// [`Counters::take_pending`], for a caller holding the gate exclusively.
    fn take_pending_gated(&self) -> Vec<Delta> {
        let mut deltas = Vec::new();
        let global = self.global.pending.swap(0, Ordering::SeqCst);
        if global > 0 {
            deltas.push(Delta {
                key: CounterKey::Global,
                amount: global,
            });
        }
        // Only the counters that moved since the last flush: the gate is
        // held exclusively here, and scanning a million idle users would
        // hold up every click for the whole scan.
        self.users.take_pending(&mut deltas, CounterKey::User);
        self.rooms.take_pending(&mut deltas, CounterKey::Room);
        deltas
    }

    /// Like [`Counters::take_pending`], and the global total at that moment:
    /// every click up to it is in these deltas or stored before.
    pub fn take_pending_with_total(&self) -> (Vec<Delta>, u64) {
        let _exclusive = self.gate.write().unwrap_or_else(|p| p.into_inner());
        // Under the exclusive gate no click is half-made: the total read
        // here is exactly what the taken deltas bring the store up to.
        (self.take_pending_gated(), self.global.total())
    }

    /// Records that every click up to the global total `total` is stored.
    pub fn set_stored(&self, total: u64) {
        self.stored.send_if_modified(|stored| {
            let newer = total > *stored;
            if newer {
                *stored = total;
            }
            newer
        });
    }

    /// Resolves once the click that made the global total `total` is
    /// stored (`true`), or once shutdown has written all it could without it
    /// (`false`: the store failed to the end).
    pub async fn stored(&self, total: u64) -> bool {
        let mut stored = self.stored.subscribe();
        let done = stored
            .wait_for(|stored| *stored >= total || self.finished.load(Ordering::SeqCst))
            .await
            .map(|stored| *stored >= total);
        // The sender lives as long as `self`, so the wait cannot end in error.
        done.unwrap_or(false)
    }

    /// Shutdown's final flush is over: wakes every click still waiting to
    /// be stored (see [`Counters::stored`]).
    pub fn finish(&self) {
        self.finished.store(true, Ordering::SeqCst);
        self.stored.send_modify(|_| {});
    }

    /// Resolves after the next click (or at once if one happened since the
    /// last wake-up): the durable-mode flusher's signal.
    pub async fn wait_for_pending(&self) {
        self.pending_changed.notified().await;
    }

    /// Records how many clicks sit in a batch being written or retried
    /// (see [`flush`]); they count as pending until stored.
    pub fn set_unconfirmed(&self, clicks: u64) {
        self.unconfirmed.store(clicks, Ordering::SeqCst);
    }

    /// Records whether the last write to the store failed.
    pub fn set_flush_failing(&self, failing: bool) {
        self.flush_failing.store(failing, Ordering::SeqCst);
    }

    /// Records a successful write of counts, now.
    pub fn set_flushed_now(&self) {
        self.flushed_at
            .store(crate::conversation::now_ms(), Ordering::SeqCst);
    }

    /// When counts were last written, ms since the epoch; `None` before
    /// the first write.
    pub fn flushed_at(&self) -> Option<i64> {
        Some(self.flushed_at.load(Ordering::SeqCst)).filter(|at| *at > 0)
    }

    /// Whether the last write to the store failed (it is being retried):
    /// the database may answer pings and still refuse writes.
    pub fn flush_failing(&self) -> bool {
        self.flush_failing.load(Ordering::SeqCst)
    }

    /// Clicks not yet stored: those since the last flush, plus those in a
    /// batch whose write failed and is being retried. Every click raises the
    /// global counter, so its pending amount is the number of clicks.
    pub fn pending_clicks(&self) -> u64 {
        self.unconfirmed.load(Ordering::SeqCst) + self.global.pending.load(Ordering::SeqCst)
    }

    /// Totals that moved since the last call, each reported once with its
    /// latest value.
    pub fn take_changed(&self) -> Vec<Changed> {
        let mut changed = Vec::new();
        let total = self.global.total();
        if self.global_published.swap(total, Ordering::SeqCst) != total {
            changed.push(Changed {
                key: CounterKey::Global,
                total,
            });
        }
        self.users.take_changed(&mut changed, CounterKey::User);
        self.rooms.take_changed(&mut changed, CounterKey::Room);
        changed
    }

    /// Totals and room occupancies that moved since the last call.
    pub fn take_changes(&self) -> Changes {
        let presence = {
            let mut presence = lock(&self.presence);
            let rooms = std::mem::take(&mut presence.changed);
            rooms
                .into_iter()
                .map(|room| Online {
                    online: presence.online.get(&room).copied().unwrap_or(0),
                    room,
                })
                .collect()
        };
        let first = self.first_change.swap(0, Ordering::Relaxed);
        let waited = (first > 0).then(|| {
            self.epoch
                .elapsed()
                .saturating_sub(std::time::Duration::from_nanos(first - 1))
        });
        Changes {
            totals: self.take_changed(),
            presence,
            waited,
        }
    }

    /// Resolves after the next change (or at once if one happened since the
    /// last wake-up). Many changes between two waits wake the waiter once,
    /// which is what makes coalescing cheap.
    pub async fn wait_for_change(&self) {
        self.changed.notified().await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(raw: &str) -> Username {
        Username::parse(raw).unwrap()
    }

    #[tokio::test]
    async fn a_click_waits_until_stored_or_until_nothing_more_will_be() {
        let counters = Counters::from_totals([(CounterKey::Global, 0)]);
        let first = counters.click(None).unwrap().total;
        let second = counters.click(None).unwrap().total;
        counters.set_stored(first);
        assert!(counters.stored(first).await);
        let waiting = counters.stored(second);
        tokio::pin!(waiting);
        assert!(
            futures_util::poll!(&mut waiting).is_pending(),
            "not stored yet"
        );
        counters.finish();
        assert!(!waiting.await, "the final flush did not store it");
    }

    #[test]
    fn clicks_return_the_new_totals() {
        let counters =
            Counters::from_totals([(CounterKey::Global, 41), (CounterKey::User(name("ada")), 5)]);
        assert_eq!(
            counters.click(None).unwrap(),
            Click {
                total: 42,
                you: None,
                room: None
            }
        );
        assert_eq!(
            counters.click(Some(&name("ADA"))).unwrap(),
            Click {
                total: 43,
                you: Some(6),
                room: None
            }
        );
        assert_eq!(
            counters.click(Some(&name("bob"))).unwrap(),
            Click {
                total: 44,
                you: Some(1),
                room: None
            }
        );
        assert_eq!(
            counters.pending_clicks(),
            3,
            "three clicks, two of them by users"
        );
        assert_eq!(counters.user_total(&name("Ada")), Some(6));
        assert_eq!(counters.user_total(&name("carol")), None);
    }

    #[test]
    fn the_first_spelling_of_a_user_is_kept() {
        let counters = Counters::from_totals([]);
        counters.click(Some(&name("Ada"))).unwrap();
        counters.click(Some(&name("ADA"))).unwrap();
        assert_eq!(
            counters.known_username(&name("ada")).unwrap().as_str(),
            "Ada"
        );
        let deltas = counters.take_pending();
        let user = deltas
            .iter()
            .find(|d| matches!(d.key, CounterKey::User(_)))
            .unwrap();
        assert_eq!(user.amount, 2);
        let CounterKey::User(stored) = &user.key else {
            unreachable!()
        };
        assert_eq!(stored.as_str(), "Ada");
    }

    #[test]
    fn pending_is_taken_once_and_an_unconfirmed_batch_still_counts() {
        let counters = Counters::from_totals([]);
        for _ in 0..3 {
            counters.click(None).unwrap();
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

        counters.click(None).unwrap();
        counters.set_unconfirmed(3);
        assert_eq!(
            counters.pending_clicks(),
            4,
            "the failed batch and the new click"
        );
        counters.set_unconfirmed(0);
        assert_eq!(
            counters.take_pending(),
            [Delta {
                key: CounterKey::Global,
                amount: 1
            }]
        );
        assert_eq!(counters.global().total(), 4);
    }

    #[test]
    fn changes_are_reported_once_with_the_latest_total() {
        let counters = Counters::from_totals([(CounterKey::Global, 10)]);
        assert!(counters.take_changed().is_empty());
        counters.click(None).unwrap();
        counters.click(Some(&name("ada"))).unwrap();
        counters.click(Some(&name("ada"))).unwrap();
        let changed = counters.take_changed();
        assert_eq!(
            changed,
            [
                Changed {
                    key: CounterKey::Global,
                    total: 13
                },
                Changed {
                    key: CounterKey::User(name("ada")),
                    total: 2
                },
            ]
        );
        assert!(counters.take_changed().is_empty());
        counters.click(Some(&name("ada"))).unwrap();
        assert_eq!(
            counters.take_changed().len(),
            2,
            "a user is queued again after being published"
        );
    }

    #[test]
    fn concurrent_clicks_are_exact_and_flushes_never_split_a_click() {
        let counters = Arc::new(Counters::from_totals([]));
        let threads: Vec<_> = ["ada", "bob", "carol", "dan"]
            .map(|user| {
                let counters = counters.clone();
                let user = name(user);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        counters.click(Some(&user)).unwrap();
                    }
                })
            })
            .into_iter()
            .collect();
        // Flush while clicks are under way. Every click is attributed, so in
        // every batch the global delta must equal the sum of the user deltas.
        let mut stored = 0;
        let mut check = |deltas: Vec<Delta>| {
            let (global, users) = deltas.iter().fold((0, 0), |(g, u), d| match d.key {
                CounterKey::Global => (g + d.amount, u),
                CounterKey::User(_) => (g, u + d.amount),
                CounterKey::Room(_) => (g, u),
            });
            assert_eq!(global, users, "a flush split a click");
            stored += global;
        };
        while threads.iter().any(|t| !t.is_finished()) {
            check(counters.take_pending());
        }
        for thread in threads {
            thread.join().unwrap();
        }
        check(counters.take_pending());
        assert_eq!(counters.global().total(), 40_000);
        assert_eq!(stored, 40_000);
        assert_eq!(counters.user_clicks(), 40_000);
    }

    #[test]
    fn no_click_is_accepted_after_close_and_every_accepted_one_is_pending() {
        let counters = Arc::new(Counters::from_totals([]));
        let threads: Vec<_> = ["ada", "bob"]
            .map(|user| {
                let counters = counters.clone();
                let user = name(user);
                std::thread::spawn(move || {
                    let mut accepted = 0u64;
                    while counters.click(Some(&user)).is_ok() {
                        accepted += 1;
                    }
                    accepted
                })
            })
            .into_iter()
            .collect();
        // Let the clickers get going, then close while they are mid-stream.
        while counters.global().total() < 10_000 {
            std::thread::yield_now();
        }
        counters.close();
        let accepted: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        let flushed: u64 = counters
            .take_pending()
            .iter()
            .filter(|d| d.key == CounterKey::Global)
            .map(|d| d.amount)
            .sum();
        assert_eq!(
            flushed, accepted,
            "the final batch holds every accepted click"
        );
        assert_eq!(counters.global().total(), accepted);
        assert_eq!(counters.click(None), Err(Closed));
        assert_eq!(counters.pending_clicks(), 0, "a refused click adds nothing");
    }

    #[test]
    fn the_kept_ranking_matches_the_counts_after_concurrent_clicks() {
        let counters = Arc::new(Counters::from_totals([
            (CounterKey::User(name("u0")), 50),
            (CounterKey::User(name("u1")), 7),
        ]));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let counters = counters.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000 {
                        let user = name(&format!("u{}", (i * (t + 1)) % 37));
                        counters.click(Some(&user)).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let mut all = Vec::new();
        for i in 0..37 {
            if let Some(total) = counters.user_total(&name(&format!("u{i}"))) {
                all.push((name(&format!("u{i}")), total));
            }
        }
        for (user, total) in &all {
            let larger = all.iter().filter(|(_, other)| other > total).count() as u64;
            assert_eq!(counters.rank(*total), larger + 1, "rank of {user}");
        }
        all.sort_by(ranking::by_rank);
        assert_eq!(counters.top_users(10), all[..10]);
    }

    #[test]
    fn a_click_in_a_conversation_moves_its_counter_with_the_others() {
        let room = ConversationId::parse("coach:ada").unwrap();
        let counters = Arc::new(Counters::from_totals([(CounterKey::Room(room.clone()), 7)]));
        let click = counters.click_in(Some(&name("ada")), Some(&room)).unwrap();
        assert_eq!(
            click,
            Click {
                total: 1,
                you: Some(1),
                room: Some(8)
            }
        );
        assert_eq!(counters.room_total(&room), 8);
        let other = ConversationId::parse("other").unwrap();
        counters.click_in(None, Some(&other)).unwrap();
        assert_eq!(counters.room_total(&other), 1);
        let mut deltas = counters.take_pending();
        deltas.sort_by_key(|d| d.key.to_string());
        assert_eq!(
            deltas,
            [
                Delta {
                    key: CounterKey::Room(room.clone()),
                    amount: 1
                },
                Delta {
                    key: CounterKey::Room(other),
                    amount: 1
                },
                Delta {
                    key: CounterKey::Global,
                    amount: 2
                },
                Delta {
                    key: CounterKey::User(name("ada")),
                    amount: 1
                },
            ]
        );
        let changed = counters.take_changed();
        assert!(changed.contains(&Changed {
            key: CounterKey::Room(room),
            total: 8
        }));
    }

    #[test]
    fn presence_counts_sockets_and_reports_each_room_once() {
        let counters = Counters::from_totals([]);
        let room = ConversationId::parse("r").unwrap();
        assert_eq!(counters.enter(&room), 1);
        assert_eq!(counters.enter(&room), 2);
        assert_eq!(counters.leave(&room), 1);
        assert_eq!(counters.online(&room), 1);
        let changes = counters.take_changes();
        assert_eq!(
            changes.presence,
            [Online {
                room: room.clone(),
                online: 1
            }]
        );
        assert!(counters.take_changes().is_empty());
        assert_eq!(counters.leave(&room), 0);
        assert_eq!(counters.occupied_rooms(), 0, "an empty room is forgotten");
        assert_eq!(counters.take_changes().presence[0].online, 0);
    }
}
