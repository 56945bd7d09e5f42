//! `Idempotency-Key`s of the backend API's message posts: a bot that
//! retries a post it got no answer to must not post twice.
//!
//! Each key is remembered with a fingerprint of the request it came with
//! and where that request got to: still being handled, stored (its answer
//! is replayed to every retry), or in doubt (the database did not answer a
//! write in time, so the message may or may not be stored). A retry of a
//! message in doubt sends the very message attempted again, whose id the
//! store skips if it is already there, so it is stored once either way. A
//! request that was refused leaves nothing behind: retrying it is trying
//! anew. The same key with another request is refused (`409`), and so is
//! a retry while the first attempt is still being handled.
//!
//! Keys live in this node's memory for [`KEPT_FOR`], at most [`MAX_KEYS`]
//! of them (the oldest go first); a retry that reaches another node, or
//! comes after a restart, is a new request.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::conversation::Message;
use crate::refusal::{Code, Refusal};
use crate::sync::lock;

/// How long a key is remembered.
pub const KEPT_FOR: Duration = Duration::from_secs(24 * 60 * 60);

/// Most keys remembered at once.
pub const MAX_KEYS: usize = 100_000;

/// Longest key taken, in bytes.
pub const MAX_KEY_LEN: usize = 255;

/// A fingerprint of a request: the same request, the same fingerprint.
pub type Fingerprint = [u8; 32];

/// The fingerprint of a request made of `parts` (each is delimited, so
/// `("ab", "c")` and `("a", "bc")` differ).
pub fn fingerprint(parts: &[&str]) -> Fingerprint {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    hash.finalize().into()
}

/// The keys seen, cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct Keys {
    inner: std::sync::Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    records: HashMap<String, Record>,
    /// Keys in the order they were first seen, to forget the oldest.
    order: VecDeque<(Instant, String)>,
}

#[derive(Debug)]
struct Record {
    fingerprint: Fingerprint,
    seen: Instant,
    state: State,
}

#[derive(Debug)]
enum State {
    InFlight,
    Stored(Message),
    InDoubt(Message),
}

/// What a request with a key is to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// A key not seen: handle the request.
    New,
    /// The first attempt's message is in doubt: send it again as it was.
    Retry(Message),
    /// Already stored: answer with this, store nothing.
    Replay(Message),
}

impl Keys {
    /// Claims `key` for a request with `fingerprint`: what to do with it,
    /// or the refusal of a key used for another request or still in use.
    pub fn claim(&self, key: &str, fingerprint: Fingerprint) -> Result<Claim, Refusal> {
        if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Code::BadRequest.with(format!(
                "an Idempotency-Key is 1 to {MAX_KEY_LEN} visible ASCII characters"
            )));
        }
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        inner.forget(now);
        let Some(record) = inner.records.get_mut(key) else {
            inner.records.insert(
                key.to_string(),
                Record {
                    fingerprint,
                    seen: now,
                    state: State::InFlight,
                },
            );
            inner.order.push_back((now, key.to_string()));
            return Ok(Claim::New);
        };
        if record.fingerprint != fingerprint {
            return Err(
                Code::IdempotencyConflict.with("this Idempotency-Key was used for another request")
            );
        }
        match std::mem::replace(&mut record.state, State::InFlight) {
            State::InFlight => Err(Code::IdempotencyConflict
                .with("a request with this Idempotency-Key is still being handled; try again")),
            State::Stored(message) => {
                record.state = State::Stored(message.clone());
                Ok(Claim::Replay(message))
            }
            State::InDoubt(message) => Ok(Claim::Retry(message)),
        }
    }

    /// Notes how the request holding `key` ended: stored as `Ok(message)`,
    /// in doubt as `Err(Some(message))`, or refused as `Err(None)`.
    pub fn finish(&self, key: &str, outcome: Result<&Message, Option<&Message>>) {
        let mut inner = lock(&self.inner);
        let state = match outcome {
            Ok(message) => State::Stored(message.clone()),
            Err(Some(message)) => State::InDoubt(message.clone()),
            Err(None) => {
                inner.records.remove(key);
                return;
            }
        };
        if let Some(record) = inner.records.get_mut(key) {
            record.state = state;
        }
    }
}

impl Inner {
    /// Forgets the keys older than [`KEPT_FOR`], and the oldest beyond
    /// [`MAX_KEYS`].
    fn forget(&mut self, now: Instant) {
        while let Some((seen, key)) = self.order.front() {
            let expired = now.duration_since(*seen) >= KEPT_FOR;
            // Entries of keys already removed (refused requests) stay in
            // `order` until they come round; it is bounded as well.
            if !expired && self.records.len() < MAX_KEYS && self.order.len() < 2 * MAX_KEYS {
                break;
            }
            // A key forgotten and claimed again has a newer entry; only
            // the record this entry was made for is removed.
            if self.records.get(key).is_some_and(|r| r.seen == *seen) {
                self.records.remove(key);
            }
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::{Content, ConversationId};
    use crate::user::Username;

    fn message() -> Message {
        Message::new(
            ConversationId::parse("c").unwrap(),
            Username::parse("ada").unwrap(),
            Content::parse("hi").unwrap(),
        )
    }

    #[test]
    fn a_key_replays_what_was_stored_and_retries_what_is_in_doubt() {
        let keys = Keys::default();
        let hi = fingerprint(&["c", "ada", "hi"]);
        assert_eq!(keys.claim("k1", hi), Ok(Claim::New));
        let busy = keys.claim("k1", hi).unwrap_err();
        assert_eq!(busy.code, Code::IdempotencyConflict);
        let stored = message();
        keys.finish("k1", Ok(&stored));
        assert_eq!(keys.claim("k1", hi), Ok(Claim::Replay(stored.clone())));
        assert_eq!(keys.claim("k1", hi), Ok(Claim::Replay(stored)));
        let other = keys.claim("k1", fingerprint(&["c", "ada", "bye"]));
        assert_eq!(other.unwrap_err().code, Code::IdempotencyConflict);

        assert_eq!(keys.claim("k2", hi), Ok(Claim::New));
        let doubt = message();
        keys.finish("k2", Err(Some(&doubt)));
        assert_eq!(keys.claim("k2", hi), Ok(Claim::Retry(doubt)));

        assert_eq!(keys.claim("k3", hi), Ok(Claim::New));
        keys.finish("k3", Err(None));
        assert_eq!(
            keys.claim("k3", hi),
            Ok(Claim::New),
            "a refusal is forgotten"
        );

        for bad in ["", "with space", &"k".repeat(MAX_KEY_LEN + 1)] {
            assert_eq!(keys.claim(bad, hi).unwrap_err().code, Code::BadRequest);
        }
        assert_ne!(fingerprint(&["ab", "c"]), fingerprint(&["a", "bc"]));
    }
}
