//! Places under the connection caps, one per engine.io session.
//!
//! A session costs the server its heartbeat task and a copy of its request
//! head from the moment it opens, whether or not it ever joins a namespace,
//! and it lives on after leaving one (`41` ends the namespace socket, not
//! the session). So the caps count sessions: the early check
//! (`crate::http::admit`) takes a [`Place`] for the request that would open
//! one and puts it in the request's extensions, which engine.io keeps with
//! the session's request head for the session's whole life and drops with
//! it; a request engine.io refuses drops its place at once. A socket
//! joining `/` finds its session's place there and is not counted again,
//! however often it joins and leaves.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use super::caps::{Capped, Caps};
use crate::sync::lock;

/// The places held now. Cheap to clone; every clone counts the same ones.
#[derive(Debug, Clone, Default)]
pub struct Places(Arc<Mutex<Held>>);

#[derive(Debug, Default)]
struct Held {
    total: usize,
    /// By client address key ([`Caps::key`]); an address with none keeps
    /// no entry. Clients whose address is unknown count in `total` only.
    by_key: HashMap<IpAddr, usize>,
}

/// One place under the caps, given back when dropped.
#[derive(Debug)]
pub struct Place {
    places: Places,
    key: Option<IpAddr>,
}

impl Places {
    /// A place for a client whose address key is `key`, unless that would
    /// pass one of `caps`. The check and the count are one step, so
    /// requests arriving together cannot all pass a cap that has room for
    /// only some of them.
    pub fn take(&self, key: Option<IpAddr>, caps: &Caps) -> Result<Place, Capped> {
        let mut held = self.held();
        let of_key = key.map_or(0, |key| held.by_key.get(&key).copied().unwrap_or(0));
        if let Some(capped) = caps.over(held.total, of_key) {
            return Err(capped);
        }
        held.total += 1;
        if let Some(key) = key {
            *held.by_key.entry(key).or_default() += 1;
        }
        Ok(Place {
            places: self.clone(),
            key,
        })
    }

    /// Places held in all.
    pub fn total(&self) -> usize {
        self.held().total
    }

    /// Places held by the address key `key`.
    pub fn of(&self, key: IpAddr) -> usize {
        self.held().by_key.get(&key).copied().unwrap_or(0)
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        lock(&self.0)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut held = self.places.held();
        held.total -= 1;
        let Some(key) = self.key else { return };
        if let Some(count) = held.by_key.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                held.by_key.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_stop_at_each_cap_and_come_back_when_dropped() {
        let places = Places::default();
        let caps = Caps {
            max_connections: 3,
            max_per_ip: 2,
            ..Caps::default()
        };
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = places.take(Some(a), &caps).unwrap();
        let _second = places.take(Some(a), &caps).unwrap();
        assert_eq!(
            places.take(Some(a), &caps).unwrap_err(),
            Capped::TooManyFromIp
        );
        let _third = places.take(Some(b), &caps).unwrap();
        assert_eq!(places.take(Some(b), &caps).unwrap_err(), Capped::ServerFull);
        drop(first);
        assert_eq!((places.total(), places.of(a)), (2, 1));
        // Clients of unknown address count in the total only.
        let unknown = Caps {
            max_per_ip: 1,
            ..Caps::default()
        };
        let _x = places.take(None, &unknown).unwrap();
        let _y = places.take(None, &unknown).unwrap();
        assert_eq!(places.total(), 4);
        assert_eq!(
            places.held().by_key.len(),
            2,
            "unknown addresses keep no entry"
        );
    }
}
