//! Ranking users by their click counts.
//!
//! Ranks are "competition" ranks: users with equal counts share a rank and the
//! next rank skips (1, 2, 2, 4). Order is count descending, then username
//! (case-insensitively) ascending. The order itself is kept click by click in
//! [`super::ranking`]; [`run`] republishes the live top list at most once
//! per interval and only after a user clicked, and connecting sockets read
//! the cached copy.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::Counters;
use crate::user::Username;

/// How many users the live `leaderboard` event carries.
pub const LIVE_SIZE: usize = 10;

/// One line of the leaderboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Ranked {
    pub username: Username,
    pub count: u64,
    pub rank: u64,
}

/// The best `limit` users (at most [`super::ranking::TOP`]) with at least
/// one click. Read from the kept ranking: no scan of all users.
pub fn top(counters: &Counters, limit: usize) -> Vec<Ranked> {
    let users = counters.top_users(limit);
    let mut ranked: Vec<Ranked> = Vec::with_capacity(users.len());
    for (i, (username, count)) in users.into_iter().enumerate() {
        let rank = match ranked.last() {
            Some(prev) if prev.count == count => prev.rank,
            _ => i as u64 + 1,
        };
        ranked.push(Ranked {
            username,
            count,
            rank,
        });
    }
    ranked
}

/// One user's line, or `None` if the user never clicked. A binary search
/// in the kept ranking: no scan of all users.
pub fn rank_of(counters: &Counters, name: &Username) -> Option<Ranked> {
    let username = counters.known_username(name)?;
    let count = counters.user_total(name)?;
    Some(Ranked {
        username,
        count,
        rank: counters.rank(count),
    })
}

/// The latest live top list, shared with connect handlers.
#[derive(Debug, Default)]
pub struct LiveLeaderboard(RwLock<Arc<Vec<Ranked>>>);

impl LiveLeaderboard {
    pub fn new(counters: &Counters) -> Self {
        LiveLeaderboard(RwLock::new(Arc::new(top(counters, LIVE_SIZE))))
    }

    pub fn get(&self) -> Arc<Vec<Ranked>> {
        crate::sync::read(&self.0).clone()
    }

    /// Stores `latest`; returns whether it differs from what was there.
    fn replace(&self, latest: Vec<Ranked>) -> Option<Arc<Vec<Ranked>>> {
        let mut current = crate::sync::write(&self.0);
        if **current == latest {
            return None;
        }
        *current = Arc::new(latest);
        Some(current.clone())
    }
}

/// Every `interval`, if a user clicked, recomputes the top list and publishes
/// it when it changed. When `cancel` fires it publishes a last change, if
/// any, and stops.
pub async fn run<P, F>(
    counters: Arc<Counters>,
    live: Arc<LiveLeaderboard>,
    interval: Duration,
    cancel: CancellationToken,
    mut publish: P,
) where
    P: FnMut(Arc<Vec<Ranked>>) -> F,
    F: Future<Output = ()>,
{
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The live list was computed before any click of this process, when
    // `user_clicks` was zero; starting from zero makes clicks made before this
    // task first runs count as a change.
    let mut seen = 0;
    loop {
        let stopping = tokio::select! {
            biased;
            () = cancel.cancelled() => true,
            _ = ticker.tick() => false,
        };
        let clicks = counters.user_clicks();
        if clicks != seen {
            seen = clicks;
            if let Some(changed) = live.replace(top(&counters, LIVE_SIZE)) {
                publish(changed).await;
            }
        }
        // On the way out the last list has just been published, if it
        // changed: shutdown stops counting before it stops this task.
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counter::CounterKey;

    fn counters(users: &[(&str, u64)]) -> Counters {
        Counters::from_totals(
            users
                .iter()
                .map(|(n, c)| (CounterKey::User(Username::parse(n).unwrap()), *c)),
        )
    }

    fn names(ranked: &[Ranked]) -> Vec<(String, u64, u64)> {
        ranked
            .iter()
            .map(|r| (r.username.to_string(), r.count, r.rank))
            .collect()
    }

    #[test]
    fn ordered_by_count_then_name_with_shared_ranks() {
        let c = counters(&[
            ("carol", 5),
            ("Bob", 7),
            ("ada", 5),
            ("dan", 1),
            ("idle", 0),
        ]);
        let expected = [("Bob", 7, 1), ("ada", 5, 2), ("carol", 5, 2), ("dan", 1, 4)]
            .map(|(n, c, r)| (n.to_string(), c, r));
        assert_eq!(names(&top(&c, 10)), expected);
        assert_eq!(names(&top(&c, 2)), expected[..2]);
        assert!(top(&c, 0).is_empty());
    }

    #[test]
    fn a_single_users_rank_matches_the_list() {
        let c = counters(&[("carol", 5), ("Bob", 7), ("ada", 5)]);
        let carol = rank_of(&c, &Username::parse("CAROL").unwrap()).unwrap();
        assert_eq!(
            (carol.username.as_str(), carol.count, carol.rank),
            ("carol", 5, 2)
        );
        assert!(rank_of(&c, &Username::parse("nobody").unwrap()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn publishes_only_when_the_top_list_changes() {
        let counters = Arc::new(counters(&[]));
        let live = Arc::new(LiveLeaderboard::new(&counters));
        let cancel = CancellationToken::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(run(
            counters.clone(),
            live.clone(),
            Duration::from_millis(500),
            cancel.clone(),
            move |list| {
                let tx = tx.clone();
                async move { tx.send(list).unwrap() }
            },
        ));
        let ada = Username::parse("ada").unwrap();
        counters.click(Some(&ada)).unwrap();
        counters.click(Some(&ada)).unwrap();
        let list = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a changed leaderboard is published")
            .unwrap();
        assert_eq!(names(&list), [("ada".to_string(), 2, 1)]);
        assert_eq!(*live.get(), *list);

        // Anonymous clicks do not touch the leaderboard.
        counters.click(None).unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(rx.try_recv().is_err());

        cancel.cancel();
        task.await.unwrap();
    }
}
