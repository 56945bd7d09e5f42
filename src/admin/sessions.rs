//! Admin UI logins: a random session id per successful password check,
//! valid for `--admin-session-ttl`, so a reload of the UI does not ask for
//! the password again (the UI sends the id back in its handshake).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most live sessions: past it the oldest is forgotten, so repeated logins
/// cannot grow the table without bound.
const MAX_SESSIONS: usize = 1_000;

pub struct Sessions {
    ttl: Duration,
    /// Session id → when it expires.
    live: Mutex<HashMap<String, Instant>>,
}

/// Without the ids: each one is a login.
impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("ttl", &self.ttl)
            .field("live", &self.live().len())
            .finish()
    }
}

impl Sessions {
    pub fn new(ttl: Duration) -> Self {
        Sessions {
            ttl,
            live: Mutex::default(),
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session, valid from `now`.
    pub fn create(&self, now: Instant) -> String {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the OS provides random bytes");
        let id = hex::encode(bytes);
        let mut live = self.live();
        live.retain(|_, expires| *expires > now);
        if live.len() >= MAX_SESSIONS
            && let Some(oldest) = live
                .iter()
                .min_by_key(|(_, expires)| **expires)
                .map(|(id, _)| id.clone())
        {
            live.remove(&oldest);
        }
        live.insert(id.clone(), now + self.ttl);
        id
    }

    /// Whether `id` names a session that has not expired at `now`.
    pub fn valid(&self, id: &str, now: Instant) -> bool {
        let mut live = self.live();
        match live.get(id) {
            Some(expires) if *expires > now => true,
            Some(_) => {
                live.remove(id);
                false
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_valid_until_it_expires() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let now = Instant::now();
        let id = sessions.create(now);
        assert_eq!(id.len(), 32);
        assert!(sessions.valid(&id, now + Duration::from_secs(59)));
        assert!(!sessions.valid(&id, now + Duration::from_secs(60)));
        assert!(!sessions.valid("not-a-session", now));
        assert_ne!(sessions.create(now), id, "ids are random");
    }

    #[test]
    fn the_table_is_bounded() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let now = Instant::now();
        let first = sessions.create(now);
        for i in 1..=MAX_SESSIONS {
            sessions.create(now + Duration::from_millis(i as u64));
        }
        assert_eq!(sessions.live().len(), MAX_SESSIONS);
        assert!(!sessions.valid(&first, now), "the oldest made room");
    }
}
