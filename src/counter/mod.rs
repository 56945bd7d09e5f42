//! In-memory counters: the only place where counts change.
//!
//! Every click lands here first, in [`Counters::click_in`]: the global
//! total, the user's count and the conversation's counter move together
//! under a shared gate, so a flush (which takes the gate exclusively) holds
//! both halves of a click or neither. Around that core, one file per
//! concern: one counter and its family (`family.rs`), sockets per room
//! ([`presence`]), what changed since the last publication ([`changes`]),
//! what the flusher reports back ([`flushes`]) and durable mode's wait for
//! a click to be stored ([`durable`]); the order of users ([`ranking`],
//! [`leaderboard`]), the throttle that turns changes into broadcasts
//! ([`coalesce`]) and the click rate ([`rate`]). Writing counts to the
//! store is [`crate::persist::flush`]'s job: nothing here knows the store.

pub mod changes;
pub mod coalesce;
pub mod durable;
mod family;
pub mod flushes;
pub mod leaderboard;
pub mod presence;
pub mod ranking;
pub mod rate;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use changes::ChangeSignal;
pub use changes::{Changed, Changes};
use durable::Stored;
pub use family::Counter;
use family::Family;
use flushes::FlushBook;
pub use presence::{Online, Presence};

use crate::conversation::ConversationId;
use crate::sync::{lock, read, write};
use crate::user::Username;

/// Most totals [`Counters::merge`] applies under one hold of the gate.
const MERGE_CHUNK: usize = 1_000;

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

/// Every counter of the process, with what is published and flushed of
/// them.
#[derive(Debug)]
pub struct Counters {
    /// Shared by every click, exclusive while pending deltas are taken, so a
    /// flush never stores a click in the global total but not in its user's
    /// or its room's (or the reverse). Never held across an `.await`. It
    /// guards the `closed` flag too: once [`Counters::close`] has set it
    /// under the exclusive gate, no click can slip in before the final flush.
    gate: RwLock<bool>,
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
    /// Every user's place by count; updated with each identified click.
    ranking: Mutex<ranking::Ranking>,
    /// Moves of users' totals since start (clicks by identified users, and
    /// merges that raised one); the leaderboard task compares it between
    /// ticks to skip work when no user's total moved.
    user_clicks: AtomicU64,
    presence: Presence,
    changes: ChangeSignal,
    flushes: FlushBook,
    stored: Stored,
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
            gate: RwLock::new(false),
            global: Counter::starting_at(global),
            global_published: AtomicU64::new(global),
            users: Family::new(users),
            rooms: Family::new(rooms),
            ranking: Mutex::new(ranking),
            user_clicks: AtomicU64::new(0),
            presence: Presence::default(),
            changes: ChangeSignal::new(),
            flushes: FlushBook::default(),
            stored: Stored::new(global),
        }
    }

    /// The global counter.
    pub fn global(&self) -> &Counter {
        &self.global
    }

    /// What the flusher reports: unconfirmed clicks, failing writes, the
    /// last success, and the durable flusher's wake-up.
    pub fn flushes(&self) -> &FlushBook {
        &self.flushes
    }

    /// Durable mode's wait for a click to be stored.
    pub fn stored(&self) -> &Stored {
        &self.stored
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
            let closed = read(&self.gate);
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
            self.changes.note();
            click
        };
        self.flushes.clicked();
        Ok(click)
    }

    /// Stops counting: every later [`Counters::click`] is refused. Shutdown
    /// calls it before the final flush, so that flush sees every click that
    /// was acknowledged, whatever state the sockets are in.
    pub fn close(&self) {
        *write(&self.gate) = true;
    }

    /// A user's total, if the user has ever clicked.
    pub fn user_total(&self, name: &Username) -> Option<u64> {
        self.users.total(name)
    }

    /// Whether anyone ever clicked in a conversation (it has a counter).
    pub fn knows_room(&self, room: &ConversationId) -> bool {
        self.rooms.total(room).is_some()
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
        let online = self.presence.enter(room);
        self.changes.note();
        online
    }

    /// Records a socket leaving a conversation's room (or disconnecting);
    /// returns how many sockets are left in it.
    pub fn leave(&self, room: &ConversationId) -> u64 {
        let online = self.presence.leave(room);
        self.changes.note();
        online
    }

    /// Sockets in a conversation's room now.
    pub fn online(&self, room: &ConversationId) -> u64 {
        self.presence.online(room)
    }

    /// Conversations that have sockets of this node in them now.
    pub fn occupied_rooms(&self) -> usize {
        self.presence.occupied()
    }

    /// This node's sockets per conversation (what its heartbeat says).
    pub fn local_presence(&self) -> Vec<(ConversationId, u64)> {
        self.presence.local()
    }

    /// Replaces the other nodes' sockets per conversation (cluster mode,
    /// from their heartbeats); the rooms whose number moved are published.
    pub fn set_remote_presence(&self, remote: HashMap<ConversationId, u64>) {
        if self.presence.set_remote(remote) {
            self.changes.note();
        }
    }

    /// Moves of users' totals since start (only ever grows).
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
    /// store the deltas, retrying until it can (see
    /// [`crate::persist::flush`]).
    pub fn take_pending(&self) -> Vec<Delta> {
        self.take_pending_with_total().0
    }

    /// Like [`Counters::take_pending`], and the global total at that moment:
    /// every click up to it is in these deltas or stored before.
    pub fn take_pending_with_total(&self) -> (Vec<Delta>, u64) {
        let _exclusive = write(&self.gate);
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
        // Under the exclusive gate no click is half-made: the total read
        // here is exactly what the taken deltas bring the store up to.
        (deltas, self.global.total())
    }

    /// Brings in totals read from the database (committed by any node):
    /// each counter is raised to the stored value plus this node's clicks
    /// not yet taken by a flush, and never lowered. Returns how many
    /// counters moved.
    ///
    /// This is the whole of cluster mode's consistency rule. The stored
    /// value holds only clicks some flush committed, and this node's
    /// pending clicks were taken by no flush yet, so the sum never exceeds
    /// the true total; raising only keeps every node's totals from going
    /// back; and once clicks stop and every node has flushed, the stored
    /// value is the true total, which every node reaches with the last
    /// read. Stale, repeated or reordered reads only lower the candidate,
    /// which `max` ignores. (A batch in flight is left out of "this node's
    /// own", so a read that already includes it cannot count it twice.)
    pub fn merge(&self, committed: &[(CounterKey, u64)]) -> usize {
        let mut moved = 0;
        let mut users_moved = false;
        // Exclusive, so no click is half-made: between a click's pending
        // increment and its total's, a candidate would count it twice. Taken
        // per chunk, so a reload of a million users does not hold up every
        // click for the whole of it (each key's rule needs only itself).
        for chunk in committed.chunks(MERGE_CHUNK) {
            let _exclusive = write(&self.gate);
            for (key, stored) in chunk {
                match key {
                    CounterKey::Global => {
                        let candidate = stored + self.global.pending.load(Ordering::SeqCst);
                        if self.global.raise_to(candidate).is_some() {
                            moved += 1;
                        }
                    }
                    CounterKey::User(name) => {
                        let (name, counter) = self.users.get_or_create(name);
                        let candidate = stored + counter.pending.load(Ordering::SeqCst);
                        if let Some(before) = counter.raise_to(candidate) {
                            lock(&self.ranking).raise(&name, before, candidate);
                            self.users.mark_dirty(name, counter);
                            users_moved = true;
                            moved += 1;
                        }
                    }
                    CounterKey::Room(room) => {
                        let (room, counter) = self.rooms.get_or_create(room);
                        let candidate = stored + counter.pending.load(Ordering::SeqCst);
                        if counter.raise_to(candidate).is_some() {
                            self.rooms.mark_dirty(room, counter);
                            moved += 1;
                        }
                    }
                }
            }
        }
        if users_moved {
            // The leaderboard task skips its work while this stays put.
            self.user_clicks.fetch_add(1, Ordering::SeqCst);
        }
        if moved > 0 {
            self.changes.note();
        }
        moved
    }

    /// Clicks not yet stored: those since the last flush, plus those in a
    /// batch whose write failed and is being retried. Every click raises the
    /// global counter, so its pending amount is the number of clicks.
    pub fn pending_clicks(&self) -> u64 {
        self.flushes.unconfirmed() + self.global.pending.load(Ordering::SeqCst)
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
        let presence = self.presence.take_changed();
        let waited = self.changes.take_waited();
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
        self.changes.wait().await;
    }
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
        counters.stored().set(first);
        assert!(counters.stored().reached(first).await);
        let waiting = counters.stored().reached(second);
        tokio::pin!(waiting);
        assert!(
            futures_util::poll!(&mut waiting).is_pending(),
            "not stored yet"
        );
        counters.stored().finish();
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
        counters.flushes().set_unconfirmed(3);
        assert_eq!(
            counters.pending_clicks(),
            4,
            "the failed batch and the new click"
        );
        counters.flushes().set_unconfirmed(0);
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
