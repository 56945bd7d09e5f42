//! Broadcasts to every socket of a namespace, a step at a time.
//!
//! Each recipient of a broadcast has a writer task (engine.io's) that the
//! broadcast wakes. Woken all at once, ten thousand of them overflow the
//! worker's run queue into tokio's shared queue, and a task woken after them
//! can be pushed to the back of that queue too: measured with 19,000
//! sockets, a new connection (a `/healthz` probe) waited up to a second to
//! be accepted, the length of the whole broadcast (bench/profiling.md).
//! Writing to [`STEP`] sockets and then letting what is queued run until the
//! shared queue is empty keeps the queues short, so newer work (a health
//! check, the ack of a click, a handshake) waits behind a few hundred tasks
//! at most, not behind the whole broadcast. The broadcast costs the same
//! writes, plus encoding the event once per socket instead of once in all,
//! so audiences of up to [`AT_ONCE`] sockets, whose writers are through
//! the queue within some 20 ms, still get socketioxide's own broadcast.

use serde::Serialize;
use socketioxide::BroadcastError;

use crate::bus::BroadcastOperators;

/// Sockets written to between two turns: half of a tokio worker's local run
/// queue (256 tasks). What an earlier step left there can still make a step
/// overflow into the shared queue; the next turn then waits for it.
pub const STEP: usize = 128;

/// The largest audience written to in one go.
pub const AT_ONCE: usize = 1024;

/// Most turns one step waits for the shared run queue to empty. A server
/// that never drains it (work arriving as fast as it is done) still
/// publishes, a little less politely.
const MOST_TURNS: usize = 16;

/// Emits `event` with `data` to every socket of this node that `everyone`
/// addresses, in one broadcast, encoded once: socketioxide's own. Returns
/// how many of the `audience` (the caller's count of those sockets) missed
/// it: closing sockets, or slow ones whose send buffer is full, which get
/// the next broadcast with newer data.
pub async fn emit_at_once<T: Serialize + ?Sized>(
    everyone: &BroadcastOperators,
    audience: usize,
    event: &str,
    data: &T,
) -> usize {
    // This node's sockets, as in steps (which can only reach local
    // sockets): with several nodes, each publishes its own.
    match everyone.clone().local().emit(event, data).await {
        Ok(()) => 0,
        Err(BroadcastError::Socket(missed)) => missed.len(),
        Err(err) => {
            tracing::warn!(error = %err, event, "broadcast failed");
            audience
        }
    }
}

/// Emits `event` with `data` to every socket of this node that `everyone`
/// addresses. An `audience` (the caller's count of those sockets) of up to
/// [`AT_ONCE`] is one broadcast; a larger one is written [`STEP`] sockets at
/// a time, and between steps this task yields until tokio's shared queue is
/// empty, so the writers of earlier steps are through it or in the worker's
/// own, bounded queue. Returns how many sockets missed it, as
/// [`emit_at_once`] does.
pub async fn emit_to_all<T: Serialize + ?Sized>(
    everyone: &BroadcastOperators,
    audience: usize,
    event: &str,
    data: &T,
) -> usize {
    if audience <= AT_ONCE {
        return emit_at_once(everyone, audience, event, data).await;
    }
    let sockets = everyone.clone().sockets();
    let mut missed = 0;
    for (i, step) in sockets.chunks(STEP).enumerate() {
        if i > 0 {
            settle().await;
        }
        missed += step
            .iter()
            .filter(|socket| socket.emit(event, data).is_err())
            .count();
    }
    missed
}

/// Yields until tokio's shared run queue is empty (or for [`MOST_TURNS`]
/// turns). A yielded task is woken at the worker's next look at its timers
/// and sockets (every 61 polls, or sooner when it runs out of work) and
/// then runs next, so the worker's own queue (at most 256 tasks) may still
/// hold some of what was queued; the shared queue, where anything can end
/// up behind everything, is what must be short.
async fn settle() {
    let runtime = tokio::runtime::Handle::current().metrics();
    for _ in 0..MOST_TURNS {
        tokio::task::yield_now().await;
        if runtime.global_queue_depth() == 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Of 600 tasks queued before a settle, more than a worker's own queue
    /// holds, at most that queue's worth is still waiting when it returns,
    /// and none of them in the shared queue.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn settle_leaves_the_shared_queue_empty() {
        // On a worker, as the coalescer is: the test's own future is not.
        let (ran, shared) = tokio::spawn(async {
            let ran = Arc::new(AtomicUsize::new(0));
            for _ in 0..600 {
                let ran = ran.clone();
                tokio::spawn(async move {
                    ran.fetch_add(1, Ordering::SeqCst);
                });
            }
            settle().await;
            let shared = tokio::runtime::Handle::current()
                .metrics()
                .global_queue_depth();
            (ran.load(Ordering::SeqCst), shared)
        })
        .await
        .unwrap();
        assert_eq!(shared, 0);
        assert!(ran >= 600 - 256, "only {ran} of 600 ran");
    }
}
