//! What the flusher reports back to the counters: clicks in a batch not yet
//! confirmed, whether writes are failing, when the last one succeeded, and
//! the signal that wakes durable mode's flusher on every click.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use tokio::sync::Notify;

/// The flush bookkeeping, shared by the flusher (which writes it) and the
/// health answers (which read it).
#[derive(Debug, Default)]
pub struct FlushBook {
    /// Clicks taken by the flusher in a batch whose write failed; the
    /// flusher retries that batch and clears this once it is stored.
    unconfirmed: AtomicU64,
    /// Set while the last write to the store failed.
    failing: AtomicBool,
    /// When the last write of counts succeeded, ms since the epoch (0: never).
    flushed_at: AtomicI64,
    /// Raised on every click, for the durable-mode flusher.
    pending: Notify,
}

impl FlushBook {
    /// Records how many clicks sit in a batch being written or retried;
    /// they count as pending until stored.
    pub fn set_unconfirmed(&self, clicks: u64) {
        self.unconfirmed.store(clicks, Ordering::SeqCst);
    }

    pub(super) fn unconfirmed(&self) -> u64 {
        self.unconfirmed.load(Ordering::SeqCst)
    }

    /// Records whether the last write to the store failed.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Whether the last write to the store failed (it is being retried):
    /// the database may answer pings and still refuse writes.
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
    }

    /// Records a successful write of counts, now.
    pub fn set_flushed_now(&self) {
        self.flushed_at
            .store(crate::clock::now_ms(), Ordering::SeqCst);
    }

    /// When counts were last written, ms since the epoch; `None` before
    /// the first write.
    pub fn flushed_at(&self) -> Option<i64> {
        Some(self.flushed_at.load(Ordering::SeqCst)).filter(|at| *at > 0)
    }

    pub(super) fn clicked(&self) {
        self.pending.notify_one();
    }

    /// Resolves after the next click (or at once if one happened since the
    /// last wake-up): the durable-mode flusher's signal.
    pub async fn wait_for_pending(&self) {
        self.pending.notified().await;
    }
}
