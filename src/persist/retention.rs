//! Message retention: deletes messages older than `--message-retention` in
//! the background. Off by default (history is kept forever).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::store::Store;

/// Longest pause between two prunings, however long the retention.
const MAX_PERIOD: Duration = Duration::from_secs(3600);

/// Messages deleted per statement: a first pruning of a large history is
/// many short statements, so message writes and flushes are never held up
/// behind one long delete.
pub const BATCH: u32 = 1_000;

/// How often to prune for a given retention: a tenth of it (so a message
/// outlives it by at most 10%), between one second and an hour.
pub fn period(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_secs(1), MAX_PERIOD)
}

/// Prunes now, then every [`period`], until `cancel` fires.
pub async fn run(store: Arc<dyn Store>, retention: Duration, cancel: CancellationToken) {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    loop {
        let cutoff = now_ms().saturating_sub(retention_ms);
        let mut deleted = 0;
        loop {
            let round = tokio::select! {
                () = cancel.cancelled() => return,
                round = store.prune_messages(cutoff, BATCH) => round,
            };
            match round {
                Ok(n) => {
                    deleted += n;
                    if n < u64::from(BATCH) {
                        break;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "deleting old messages failed; will retry");
                    break;
                }
            }
        }
        if deleted > 0 {
            tracing::info!(deleted, "old messages deleted (--message-retention)");
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(period(retention)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_period_is_a_tenth_within_bounds() {
        assert_eq!(period(Duration::from_secs(5)), Duration::from_secs(1));
        assert_eq!(period(Duration::from_secs(600)), Duration::from_secs(60));
        assert_eq!(period(Duration::from_secs(86_400 * 30)), MAX_PERIOD);
    }
}
