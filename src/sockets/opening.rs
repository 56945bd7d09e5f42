//! Engine.io sessions that are open but have not joined a namespace yet.
//!
//! A session costs the server its heartbeat task and a copy of its request
//! head from the moment it opens, so it holds a place under the caps from
//! then on, not only once it joins `/`: otherwise one address could open
//! sessions without bound by never sending the namespace connect. Each
//! open session leaves a ticket here, under its client's address key,
//! until it joins (the ticket becomes its socket's place) or until
//! `--connect-timeout`, when socketioxide closes a session that never
//! joined and the ticket expires with it.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How often every address's expired tickets are swept; in between, an
/// address's own are swept whenever it is looked at.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// The tickets of sessions opening now, by client address key (`None` for
/// a client whose address is unknown).
#[derive(Debug, Default)]
pub struct Opening {
    /// Each key's deadlines, oldest first (every ticket lives equally long).
    by_key: HashMap<Option<IpAddr>, VecDeque<Instant>>,
    total: usize,
    swept_at: Option<Instant>,
}

impl Opening {
    /// A ticket for a session opened by `key`, until `deadline`.
    pub fn open(&mut self, key: Option<IpAddr>, deadline: Instant) {
        self.by_key.entry(key).or_default().push_back(deadline);
        self.total += 1;
    }

    /// A session of `key` joined: its oldest ticket is taken, if it has one
    /// left (it may have expired, or been opened before the caps counted).
    pub fn join(&mut self, key: Option<IpAddr>, now: Instant) {
        self.expire(key, now);
        let Some(tickets) = self.by_key.get_mut(&key) else {
            return;
        };
        tickets.pop_front();
        self.total -= 1;
        if tickets.is_empty() {
            self.by_key.remove(&key);
        }
    }

    /// Tickets of `key` that have not expired at `now`.
    pub fn of(&mut self, key: Option<IpAddr>, now: Instant) -> usize {
        self.expire(key, now);
        self.by_key.get(&key).map_or(0, VecDeque::len)
    }

    /// Tickets of every key; expired ones are swept at most every
    /// quarter second, so the figure may count a few just expired (it errs
    /// on the side of the caps).
    pub fn total(&mut self, now: Instant) -> usize {
        if self
            .swept_at
            .is_none_or(|at| now.duration_since(at) >= SWEEP_EVERY)
        {
            self.swept_at = Some(now);
            let keys: Vec<_> = self.by_key.keys().copied().collect();
            for key in keys {
                self.expire(key, now);
            }
        }
        self.total
    }

    /// Drops the expired tickets of `key`.
    fn expire(&mut self, key: Option<IpAddr>, now: Instant) {
        let Some(tickets) = self.by_key.get_mut(&key) else {
            return;
        };
        while tickets.front().is_some_and(|deadline| *deadline <= now) {
            tickets.pop_front();
            self.total -= 1;
        }
        if tickets.is_empty() {
            self.by_key.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_last_until_they_join_or_expire() {
        let mut opening = Opening::default();
        let start = Instant::now();
        let a: Option<IpAddr> = Some("192.0.2.1".parse().unwrap());
        let b: Option<IpAddr> = Some("192.0.2.2".parse().unwrap());
        opening.open(a, start + Duration::from_secs(10));
        opening.open(a, start + Duration::from_secs(11));
        opening.open(b, start + Duration::from_secs(10));
        assert_eq!((opening.of(a, start), opening.total(start)), (2, 3));
        opening.join(a, start);
        assert_eq!(opening.of(a, start), 1);
        // Joining again with no ticket left changes nothing.
        opening.join(b, start);
        opening.join(b, start);
        assert_eq!(opening.of(b, start), 0);
        let later = start + Duration::from_secs(11);
        assert_eq!((opening.of(a, later), opening.total(later)), (0, 0));
        assert!(opening.by_key.is_empty(), "no key is kept without tickets");
    }
}
