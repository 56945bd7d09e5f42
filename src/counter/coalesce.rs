//! Coalescing of count changes into bounded broadcasts.
//!
//! A throttle, not a debounce: the first change after a quiet period is
//! published at once; changes that arrive within `interval` of a publication
//! are merged into a single trailing publication of the latest totals. Nothing
//! is dropped (the last total is always published), and the publication rate
//! is bounded by `1 / interval` however fast clicks arrive.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Changed, Counters};

/// Publishes changed totals until `cancel` fires, then publishes whatever
/// changed last so a shutdown does not swallow the final total.
pub async fn run<P, F>(
    counters: Arc<Counters>,
    interval: Duration,
    cancel: CancellationToken,
    mut publish: P,
) where
    P: FnMut(Vec<Changed>) -> F,
    F: Future<Output = ()>,
{
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            () = counters.wait_for_change() => {}
        }
        let changed = counters.take_changed();
        if changed.is_empty() {
            continue;
        }
        publish(changed).await;
        // Changes during this pause leave a wake-up permit behind, so the
        // next loop turn publishes them as one trailing update.
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(interval) => {}
        }
    }
    let changed = counters.take_changed();
    if !changed.is_empty() {
        publish(changed).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    #[tokio::test(start_paused = true)]
    async fn first_change_is_immediate_and_a_burst_becomes_one_trailing_update() {
        let counters = Arc::new(Counters::from_totals([]));
        let cancel = CancellationToken::new();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(
            counters.clone(),
            Duration::from_millis(10),
            cancel.clone(),
            move |changed| {
                let tx = tx.clone();
                async move {
                    tx.send((tokio::time::Instant::now(), changed)).unwrap();
                }
            },
        ));

        let start = tokio::time::Instant::now();
        counters.click(None);
        let (at, first) = rx.recv().await.unwrap();
        assert_eq!(
            at, start,
            "the first change after a quiet period is not delayed"
        );
        assert_eq!(first[0].total, 1);

        for _ in 0..99 {
            counters.click(None);
        }
        let (at, trailing) = rx.recv().await.unwrap();
        assert_eq!(at - start, Duration::from_millis(10));
        assert_eq!(
            trailing[0].total, 100,
            "the trailing update carries the latest total"
        );

        cancel.cancel();
        task.await.unwrap();
        assert!(
            rx.try_recv().is_err(),
            "a burst yields exactly one trailing update"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_publishes_the_last_change() {
        let counters = Arc::new(Counters::from_totals([]));
        let cancel = CancellationToken::new();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(
            counters.clone(),
            Duration::from_secs(3600),
            cancel.clone(),
            move |changed| {
                let tx = tx.clone();
                async move { tx.send(changed).unwrap() }
            },
        ));
        counters.click(None);
        assert_eq!(rx.recv().await.unwrap()[0].total, 1);
        counters.click(None);
        cancel.cancel();
        task.await.unwrap();
        assert_eq!(rx.recv().await.unwrap()[0].total, 2);
    }
}
