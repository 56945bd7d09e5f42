//! The once-a-second jobs of a running server: the click rate's sample,
//! the Admin UI's `server_stats` every [`crate::admin::STATS_EVERY`], and
//! every [`UPKEEP_EVERY`] the histograms' upkeep and forgetting the rate
//! limits of idle users.

use std::time::Duration;

use crate::admin::STATS_EVERY;
use crate::state::AppState;

/// How often histogram samples are folded into their buckets between
/// scrapes, and idle users' rate-limit buckets dropped.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Runs until aborted, at shutdown.
pub async fn run(state: AppState) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    for tick in 0u64.. {
        let at = every.tick().await;
        state
            .rate
            .sample(at.into_std(), state.counters.global().total());
        if let Some(admin) = &state.admin
            && tick % STATS_EVERY.as_secs() == 0
        {
            admin.publish_stats().await;
        }
        if tick % UPKEEP_EVERY.as_secs() == 0 {
            state.metrics.upkeep();
            state.limits.forget_idle_users();
        }
    }
}
