//! Rate limits on client events, per socket and per user.
//!
//! Every limited event (`click`, `message`, `typing`, `join_conversation`,
//! `refresh`) passes two token buckets (`governor`'s GCRA): one of the
//! socket, and one of its user shared by all of that user's sockets on this
//! node, so opening more tabs does not buy more clicks. An event over either
//! limit is not counted or relayed; its ack says `rate_limited` with
//! `retryAfterMs`. A socket that keeps sending far over its limit — more
//! refused events within [`ABUSE_WINDOW`] than [`ABUSE_FACTOR`] times the
//! event's burst — is disconnected.
//!
//! Creating what is kept for ever — a new username, a new conversation,
//! both made by their first click — passes one more bucket, of the client
//! address ([`Limits::may_create`]), so one host cannot fill the database
//! with junk names however many sockets it opens.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::{EventLimits, Limit};
use crate::events::ClientEvent;
use crate::sync::lock;
use crate::user::Username;

/// How long refusals are added up to judge a socket abusive.
pub const ABUSE_WINDOW: Duration = Duration::from_secs(10);

/// Refused events per window, in bursts of the refused event, that get a
/// socket disconnected.
pub const ABUSE_FACTOR: u32 = 10;

/// The token bucket of a limit, or `None` for no limit.
fn quota(limit: Limit) -> Option<Quota> {
    let rate = NonZeroU32::new(limit.per_second)?;
    let burst = NonZeroU32::new(limit.burst.max(1))?;
    Some(Quota::per_second(rate).allow_burst(burst))
}

/// The limits of the server, with the per-user buckets.
pub struct Limits {
    /// Each client event's limit, indexed by [`ClientEvent::index`]; `None`
    /// for an event that is never limited.
    limits: Vec<Option<Limit>>,
    per_user: Vec<Option<DefaultKeyedRateLimiter<String>>>,
    /// Per client address key: new names, new conversations.
    new_names: Option<DefaultKeyedRateLimiter<IpAddr>>,
    new_conversations: Option<DefaultKeyedRateLimiter<IpAddr>>,
    clock: DefaultClock,
}

/// What a click may create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creation {
    Name,
    Conversation,
}

/// The buckets of one socket, created on its first limited event.
#[derive(Default)]
pub struct SocketLimits {
    buckets: [std::sync::OnceLock<Option<DefaultDirectRateLimiter>>; ClientEvent::ALL.len()],
    refusals: Mutex<Refusals>,
    /// Set once the socket was judged abusive, so it is cut off once.
    judged: std::sync::atomic::AtomicBool,
}

/// The refusals of a socket in the current abuse window.
#[derive(Debug, Default)]
struct Refusals {
    /// When the window began; `None` before the first refusal.
    since: Option<Instant>,
    count: u32,
}

impl std::fmt::Debug for SocketLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketLimits").finish_non_exhaustive()
    }
}

/// Why an event was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// When a retry would pass.
    pub retry_after: Duration,
    /// The socket keeps sending far over its limit: disconnect it.
    pub abusive: bool,
}

impl Limits {
    /// The limits the options set, one per limited client event.
    pub fn new(options: &EventLimits) -> Self {
        let limits: Vec<Option<Limit>> = ClientEvent::ALL
            .iter()
            .map(|event| event.limit(options))
            .collect();
        Limits {
            per_user: limits
                .iter()
                .map(|limit| limit.and_then(quota).map(RateLimiter::keyed))
                .collect(),
            limits,
            new_names: quota(options.new_name).map(RateLimiter::keyed),
            new_conversations: quota(options.new_conversation).map(RateLimiter::keyed),
            clock: DefaultClock::default(),
        }
    }

    /// No limits at all.
    pub fn unlimited() -> Self {
        Self::new(&EventLimits::NONE)
    }

    /// Takes one token for `event` from the socket's and the user's buckets.
    pub fn check(
        &self,
        socket: &SocketLimits,
        user: Option<&Username>,
        event: ClientEvent,
    ) -> Result<(), Limited> {
        let Some(limit) = self.limits[event.index()] else {
            return Ok(());
        };
        let Some(quota) = quota(limit) else {
            return Ok(());
        };
        let bucket = socket.buckets[event.index()]
            .get_or_init(|| Some(RateLimiter::direct(quota)))
            .as_ref();
        let refused = match bucket.map(|bucket| bucket.check()) {
            Some(Err(not_until)) => Some(not_until.wait_time_from(self.clock.now())),
            _ => None,
        };
        let refused = refused.or_else(|| {
            let per_user = self.per_user[event.index()].as_ref()?;
            per_user
                .check_key(&user?.folded())
                .err()
                .map(|not_until| not_until.wait_time_from(self.clock.now()))
        });
        let Some(retry_after) = refused else {
            return Ok(());
        };
        let abusive = {
            let mut refusals = lock(&socket.refusals);
            let now = Instant::now();
            if refusals
                .since
                .is_none_or(|since| now - since > ABUSE_WINDOW)
            {
                *refusals = Refusals {
                    since: Some(now),
                    count: 0,
                };
            }
            refusals.count += 1;
            refusals.count > ABUSE_FACTOR * limit.burst.max(1)
                && !socket
                    .judged
                    .swap(true, std::sync::atomic::Ordering::SeqCst)
        };
        Err(Limited {
            retry_after: retry_after.max(Duration::from_millis(1)),
            abusive,
        })
    }

    /// Forgets the buckets of users who have been quiet long enough to be
    /// full again, so the per-user maps do not grow with every user ever
    /// seen.
    pub fn forget_idle_users(&self) {
        for limiter in self.per_user.iter().flatten() {
            limiter.retain_recent();
        }
        for limiter in [&self.new_names, &self.new_conversations]
            .into_iter()
            .flatten()
        {
            limiter.retain_recent();
        }
    }

    /// Takes a token for creating `what` from the client address key
    /// `client`; when refused, how long until one would pass. A client
    /// whose address is unknown is not limited here.
    pub fn may_create(&self, what: Creation, client: Option<IpAddr>) -> Result<(), Duration> {
        let limiter = match what {
            Creation::Name => &self.new_names,
            Creation::Conversation => &self.new_conversations,
        };
        let (Some(limiter), Some(client)) = (limiter, client) else {
            return Ok(());
        };
        limiter
            .check_key(&client)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_second: u32, burst: u32) -> Limit {
        Limit { per_second, burst }
    }

    fn clicks_limited(per_second: u32, burst: u32) -> Limits {
        Limits::new(&EventLimits {
            click: limit(per_second, burst),
            ..EventLimits::NONE
        })
    }

    #[test]
    fn a_burst_passes_then_events_wait_and_users_share_a_bucket() {
        let limits = clicks_limited(1, 3);
        let ada = Username::parse("ada").unwrap();
        let (tab1, tab2) = (SocketLimits::default(), SocketLimits::default());
        for _ in 0..3 {
            assert!(limits.check(&tab1, Some(&ada), ClientEvent::Click).is_ok());
        }
        let refused = limits
            .check(&tab1, Some(&ada), ClientEvent::Click)
            .unwrap_err();
        assert!(
            refused.retry_after > Duration::ZERO && refused.retry_after <= Duration::from_secs(1)
        );
        assert!(!refused.abusive);
        // Another tab of the same user: its own bucket is full, the user's is not.
        assert!(limits.check(&tab2, Some(&ada), ClientEvent::Click).is_err());
        // Another user on a fresh socket is not affected; unlimited kinds pass.
        let bob = Username::parse("bob").unwrap();
        assert!(
            limits
                .check(&SocketLimits::default(), Some(&bob), ClientEvent::Click)
                .is_ok()
        );
        assert!(
            limits
                .check(&tab1, Some(&ada), ClientEvent::Message)
                .is_ok()
        );
    }

    #[test]
    fn a_socket_far_over_its_limit_is_judged_abusive() {
        let limits = clicks_limited(1, 2);
        let socket = SocketLimits::default();
        let verdicts: Vec<_> = (0..30)
            .map(|_| limits.check(&socket, None, ClientEvent::Click))
            .collect();
        assert!(verdicts[..2].iter().all(Result::is_ok));
        let abusive = verdicts
            .iter()
            .position(|v| v.is_err_and(|l| l.abusive))
            .expect("judged abusive");
        // Refusals 1..=20 are tolerated (10 × a burst of 2), the 21st is not.
        assert_eq!(abusive, 2 + 20);
        assert_eq!(
            verdicts
                .iter()
                .filter(|v| v.is_err_and(|l| l.abusive))
                .count(),
            1,
            "judged once"
        );
    }
}
