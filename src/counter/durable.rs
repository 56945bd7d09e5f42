//! Durable mode's wait: a click is acknowledged once the global total it
//! made is stored, or told it will not be once shutdown has written all it
//! could.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// The global total up to which every click is stored.
#[derive(Debug)]
pub struct Stored {
    stored: watch::Sender<u64>,
    /// Set once shutdown's final flush is over: nothing more will be
    /// stored, so no click waits for it any longer.
    finished: AtomicBool,
}

impl Stored {
    /// Everything up to `total` is stored (it was loaded from the store).
    pub(super) fn new(total: u64) -> Self {
        Stored {
            stored: watch::Sender::new(total),
            finished: AtomicBool::new(false),
        }
    }

    /// Records that every click up to the global total `total` is stored.
    pub fn set(&self, total: u64) {
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
    pub async fn reached(&self, total: u64) -> bool {
        let mut stored = self.stored.subscribe();
        let done = stored
            .wait_for(|stored| *stored >= total || self.finished.load(Ordering::SeqCst))
            .await
            .map(|stored| *stored >= total);
        // The sender lives as long as `self`, so the wait cannot end in error.
        done.unwrap_or(false)
    }

    /// Shutdown's final flush is over: wakes every click still waiting to
    /// be stored.
    pub fn finish(&self) {
        self.finished.store(true, Ordering::SeqCst);
        self.stored.send_modify(|_| {});
    }
}
