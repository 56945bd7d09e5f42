//! Change notification: what moved since the coalescer last looked, and
//! the signal that wakes it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{CounterKey, Online};

/// A total that changed since it was last published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub key: CounterKey,
    pub total: u64,
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
    pub waited: Option<Duration>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.totals.is_empty() && self.presence.is_empty()
    }
}

/// Raised on every change; remembers when the oldest change not yet taken
/// happened.
#[derive(Debug)]
pub(super) struct ChangeSignal {
    changed: Notify,
    /// Nanoseconds since `epoch` plus one of the oldest change not yet
    /// taken (0: none pending).
    first_change: AtomicU64,
    epoch: Instant,
}

impl ChangeSignal {
    pub(super) fn new() -> Self {
        ChangeSignal {
            changed: Notify::new(),
            first_change: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Wakes the coalescer, remembering when the first unpublished change
    /// happened (one clock read per window, not per click).
    pub(super) fn note(&self) {
        if self.first_change.load(Ordering::Relaxed) == 0 {
            let now = self.epoch.elapsed().as_nanos() as u64 + 1;
            self.first_change
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
                .ok();
        }
        self.changed.notify_one();
    }

    /// How long the oldest change since the last call has waited.
    pub(super) fn take_waited(&self) -> Option<Duration> {
        let first = self.first_change.swap(0, Ordering::Relaxed);
        (first > 0).then(|| {
            self.epoch
                .elapsed()
                .saturating_sub(Duration::from_nanos(first - 1))
        })
    }

    /// Resolves after the next change (or at once if one happened since
    /// the last wake-up).
    pub(super) async fn wait(&self) {
        self.changed.notified().await;
    }
}
