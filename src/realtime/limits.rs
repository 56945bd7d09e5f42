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

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::user::Username;

/// How long refusals are added up to judge a socket abusive.
pub const ABUSE_WINDOW: Duration = Duration::from_secs(10);

/// Refused events per window, in bursts of the refused event, that get a
/// socket disconnected.
pub const ABUSE_FACTOR: u32 = 10;

/// The limited events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Click = 0,
    Message = 1,
    Typing = 2,
    Join = 3,
    Refresh = 4,
}

const KINDS: usize = 5;

/// A rate and a burst, as `--click-limit 20:40` gives them; a rate of 0 is
/// no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub per_second: u32,
    pub burst: u32,
}

impl Limit {
    fn quota(self) -> Option<Quota> {
        let rate = NonZeroU32::new(self.per_second)?;
        let burst = NonZeroU32::new(self.burst.max(1))?;
        Some(Quota::per_second(rate).allow_burst(burst))
    }
}

impl std::str::FromStr for Limit {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "`{raw}`: expected RATE:BURST (events per second and burst, e.g. 20:40), or 0 for no limit"
            )
        };
        let raw = raw.trim();
        if raw == "0" {
            return Ok(Limit {
                per_second: 0,
                burst: 0,
            });
        }
        let (rate, burst) = raw.split_once(':').ok_or_else(bad)?;
        let per_second: u32 = rate.trim().parse().map_err(|_| bad())?;
        let burst: u32 = burst.trim().parse().map_err(|_| bad())?;
        if per_second > 0 && burst == 0 {
            return Err(bad());
        }
        Ok(Limit { per_second, burst })
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.per_second == 0 {
            f.write_str("0")
        } else {
            write!(f, "{}:{}", self.per_second, self.burst)
        }
    }
}

/// The limits of the server, with the per-user buckets.
pub struct Limits {
    limits: [Limit; KINDS],
    per_user: [Option<DefaultKeyedRateLimiter<String>>; KINDS],
    clock: DefaultClock,
}

/// The buckets of one socket, created on its first limited event.
#[derive(Default)]
pub struct SocketLimits {
    buckets: [std::sync::OnceLock<Option<DefaultDirectRateLimiter>>; KINDS],
    /// Refusals since `.0`.
    refusals: Mutex<(Option<Instant>, u32)>,
    /// Set once the socket was judged abusive, so it is cut off once.
    judged: std::sync::atomic::AtomicBool,
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
    /// `limits` in the order of [`Kind`]: click, message, typing, join,
    /// refresh.
    pub fn new(limits: [Limit; KINDS]) -> Self {
        Limits {
            per_user: limits.map(|limit| limit.quota().map(RateLimiter::keyed)),
            limits,
            clock: DefaultClock::default(),
        }
    }

    /// No limits at all.
    pub fn unlimited() -> Self {
        Self::new(
            [Limit {
                per_second: 0,
                burst: 0,
            }; KINDS],
        )
    }

    /// Takes one token of `kind` from the socket's and the user's buckets.
    pub fn check(
        &self,
        socket: &SocketLimits,
        user: Option<&Username>,
        kind: Kind,
    ) -> Result<(), Limited> {
        let limit = self.limits[kind as usize];
        let Some(quota) = limit.quota() else {
            return Ok(());
        };
        let bucket = socket.buckets[kind as usize]
            .get_or_init(|| Some(RateLimiter::direct(quota)))
            .as_ref();
        let refused = match bucket.map(|bucket| bucket.check()) {
            Some(Err(not_until)) => Some(not_until.wait_time_from(self.clock.now())),
            _ => None,
        };
        let refused = refused.or_else(|| {
            let per_user = self.per_user[kind as usize].as_ref()?;
            per_user
                .check_key(&user?.folded())
                .err()
                .map(|not_until| not_until.wait_time_from(self.clock.now()))
        });
        let Some(retry_after) = refused else {
            return Ok(());
        };
        let abusive = {
            let mut refusals = socket.refusals.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if refusals.0.is_none_or(|since| now - since > ABUSE_WINDOW) {
                *refusals = (Some(now), 0);
            }
            refusals.1 += 1;
            refusals.1 > ABUSE_FACTOR * limit.burst.max(1)
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_second: u32, burst: u32) -> Limit {
        Limit { per_second, burst }
    }

    #[test]
    fn limits_parse_and_print() {
        assert_eq!("20:40".parse::<Limit>().unwrap(), limit(20, 40));
        assert_eq!("0".parse::<Limit>().unwrap(), limit(0, 0));
        assert_eq!(limit(5, 10).to_string(), "5:10");
        for bad in ["20", "a:b", "20:0", ":5", "-1:3"] {
            assert!(bad.parse::<Limit>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_burst_passes_then_events_wait_and_users_share_a_bucket() {
        let limits = Limits::new([
            limit(1, 3),
            limit(0, 0),
            limit(0, 0),
            limit(0, 0),
            limit(0, 0),
        ]);
        let ada = Username::parse("ada").unwrap();
        let (tab1, tab2) = (SocketLimits::default(), SocketLimits::default());
        for _ in 0..3 {
            assert!(limits.check(&tab1, Some(&ada), Kind::Click).is_ok());
        }
        let refused = limits.check(&tab1, Some(&ada), Kind::Click).unwrap_err();
        assert!(
            refused.retry_after > Duration::ZERO && refused.retry_after <= Duration::from_secs(1)
        );
        assert!(!refused.abusive);
        // Another tab of the same user: its own bucket is full, the user's is not.
        assert!(limits.check(&tab2, Some(&ada), Kind::Click).is_err());
        // Another user on a fresh socket is not affected; unlimited kinds pass.
        let bob = Username::parse("bob").unwrap();
        assert!(
            limits
                .check(&SocketLimits::default(), Some(&bob), Kind::Click)
                .is_ok()
        );
        assert!(limits.check(&tab1, Some(&ada), Kind::Message).is_ok());
    }

    #[test]
    fn a_socket_far_over_its_limit_is_judged_abusive() {
        let limits = Limits::new([
            limit(1, 2),
            limit(0, 0),
            limit(0, 0),
            limit(0, 0),
            limit(0, 0),
        ]);
        let socket = SocketLimits::default();
        let verdicts: Vec<_> = (0..30)
            .map(|_| limits.check(&socket, None, Kind::Click))
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
