//! Coalescing of count changes into bounded broadcasts.
//!
//! A throttle, not a debounce: the first change after a quiet period is
//! published at once; changes that arrive within `interval` of a publication
//! are merged into a single trailing publication of the latest totals. Nothing
//! is dropped (the last total is always published), and the publication rate
//! is bounded by `1 / interval` however fast clicks arrive.
//!
//! The time from one publication's start to the next also grows with the
//! audience ([`Pacing`]):
//! a broadcast costs one frame, and one `send` system call, per connected
//! socket, so a fixed rate of broadcasts that is free for a hundred sockets
//! takes whole cores at ten thousand. Bounding frames per second instead of
//! broadcasts per second keeps small audiences instant and lets large ones
//! get fewer, fresher updates rather than a queue that grows behind them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Changes, Counters};

/// How long the coalescer waits from the start of a publication to the
/// start of the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// Least time between two publications, whatever the audience.
    pub interval: Duration,
    /// Time set aside per recipient of a publication.
    pub per_recipient: Duration,
}

impl Pacing {
    /// The time from the start of a publication that reached `recipients`
    /// sockets to the start of the next: the longer of the interval and the
    /// audience's share of the frame budget.
    pub fn pause(&self, recipients: usize) -> Duration {
        let recipients = u32::try_from(recipients).unwrap_or(u32::MAX);
        self.interval
            .max(self.per_recipient.saturating_mul(recipients))
    }
}

/// Publishes changed totals until `cancel` fires, then publishes whatever
/// changed last so a shutdown does not swallow the final total. `audience`
/// tells how many sockets a publication reaches.
pub async fn run<P, F, A>(
    counters: Arc<Counters>,
    pacing: Pacing,
    audience: A,
    cancel: CancellationToken,
    mut publish: P,
) where
    P: FnMut(Changes) -> F,
    F: Future<Output = ()>,
    A: Fn() -> usize,
{
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            () = counters.wait_for_change() => {}
        }
        let changed = counters.take_changes();
        if changed.is_empty() {
            continue;
        }
        let started = tokio::time::Instant::now();
        publish(changed).await;
        // Changes during this pause leave a wake-up permit behind, so the
        // next loop turn publishes them as one trailing update. The pause
        // counts from the publication's start: a broadcast to thousands of
        // sockets takes turns with other work (see `realtime::fanout`) and
        // can itself outlast the pause, and the next total should then go
        // out as soon as it is done, not a whole pause later.
        let pause = pacing.pause(audience()).saturating_sub(started.elapsed());
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
    let changed = counters.take_changes();
    if !changed.is_empty() {
        publish(changed).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::mpsc;
    use tokio::task::JoinHandle;
    use tokio::time::Instant;

    const PACING: Pacing = Pacing {
        interval: Duration::from_millis(10),
        per_recipient: Duration::from_micros(5),
    };

    /// A running coalescer whose publications arrive as (when, global total).
    struct Harness {
        counters: Arc<Counters>,
        audience: Arc<AtomicUsize>,
        cancel: CancellationToken,
        published: mpsc::UnboundedReceiver<(Instant, u64)>,
        task: JoinHandle<()>,
    }

    impl Harness {
        fn start(pacing: Pacing, audience: usize) -> Self {
            let counters = Arc::new(Counters::from_totals([]));
            let audience = Arc::new(AtomicUsize::new(audience));
            let cancel = CancellationToken::new();
            let (tx, published) = mpsc::unbounded_channel();
            let task = tokio::spawn(run(
                counters.clone(),
                pacing,
                {
                    let audience = audience.clone();
                    move || audience.load(Ordering::Relaxed)
                },
                cancel.clone(),
                move |changed: Changes| {
                    let tx = tx.clone();
                    async move { tx.send((Instant::now(), changed.totals[0].total)).unwrap() }
                },
            ));
            Self {
                counters,
                audience,
                cancel,
                published,
                task,
            }
        }

        fn click(&self, times: usize) {
            for _ in 0..times {
                self.counters.click(None).unwrap();
            }
        }

        async fn next(&mut self) -> (Instant, u64) {
            self.published.recv().await.expect("the coalescer runs")
        }

        /// Cancels the coalescer and returns what it published on the way out.
        async fn stop(mut self) -> Vec<u64> {
            self.cancel.cancel();
            self.task.await.unwrap();
            let mut last = Vec::new();
            while let Ok((_, total)) = self.published.try_recv() {
                last.push(total);
            }
            last
        }
    }

    #[tokio::test(start_paused = true)]
    async fn first_change_is_immediate_and_a_burst_becomes_one_trailing_update() {
        // An audience small enough that the interval decides.
        let mut coalescer = Harness::start(PACING, 100);
        let start = Instant::now();
        coalescer.click(1);
        assert_eq!(
            coalescer.next().await,
            (start, 1),
            "the first change after a quiet period is not delayed"
        );

        coalescer.click(99);
        let (at, total) = coalescer.next().await;
        assert_eq!(at - start, Duration::from_millis(10));
        assert_eq!(total, 100, "the trailing update carries the latest total");
        assert!(
            coalescer.stop().await.is_empty(),
            "a burst yields exactly one trailing update"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_publishes_the_last_change() {
        let pacing = Pacing {
            interval: Duration::from_secs(3600),
            per_recipient: Duration::ZERO,
        };
        let mut coalescer = Harness::start(pacing, 1);
        coalescer.click(1);
        assert_eq!(coalescer.next().await.1, 1);
        coalescer.click(1);
        assert_eq!(coalescer.stop().await, [2]);
    }

    #[test]
    fn the_pause_is_the_interval_until_the_audience_outgrows_it() {
        assert_eq!(PACING.pause(0), Duration::from_millis(10));
        assert_eq!(PACING.pause(2_000), Duration::from_millis(10));
        assert_eq!(PACING.pause(10_000), Duration::from_millis(50));
        let off = Pacing {
            per_recipient: Duration::ZERO,
            ..PACING
        };
        assert_eq!(off.pause(1_000_000), Duration::from_millis(10));
        assert_eq!(
            PACING.pause(usize::MAX),
            Duration::from_micros(5) * u32::MAX
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_publication_counts_towards_the_pause() {
        const SLOW: Duration = Duration::from_millis(30);
        let counters = Arc::new(Counters::from_totals([]));
        let cancel = CancellationToken::new();
        let (tx, mut published) = mpsc::unbounded_channel();
        // 10,000 recipients: a 50 ms pause, of which each publication takes 30.
        let task = tokio::spawn(run(
            counters.clone(),
            PACING,
            || 10_000,
            cancel.clone(),
            move |changed: Changes| {
                let tx = tx.clone();
                async move {
                    tx.send((Instant::now(), changed.totals[0].total)).unwrap();
                    tokio::time::sleep(SLOW).await;
                }
            },
        ));
        let start = Instant::now();
        counters.click(None).unwrap();
        assert_eq!(published.recv().await, Some((start, 1)));
        counters.click(None).unwrap();
        assert_eq!(
            published.recv().await,
            Some((start + Duration::from_millis(50), 2)),
            "publications start 50 ms apart, not 30 + 50"
        );
        cancel.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_audience_spaces_publications_by_its_size() {
        let mut coalescer = Harness::start(PACING, 10_000);
        let start = Instant::now();
        coalescer.click(1);
        assert_eq!(coalescer.next().await, (start, 1));
        // The pause after each publication is sized by the audience at that
        // moment, so this shrink shows from the next publication on.
        coalescer.audience.store(10, Ordering::Relaxed);
        coalescer.click(1);
        let (at, total) = coalescer.next().await;
        assert_eq!(
            (at - start, total),
            (Duration::from_millis(50), 2),
            "10,000 recipients at 5 µs each hold the next broadcast for 50 ms"
        );
        coalescer.click(1);
        let (later, total) = coalescer.next().await;
        assert_eq!(
            (later - at, total),
            (Duration::from_millis(10), 3),
            "a small audience is back to the interval"
        );
        assert!(coalescer.stop().await.is_empty());
    }
}
