//! The order of users by count, kept up to date click by click, so ranking
//! never scans every user.
//!
//! Two structures, both exact because counts only ever grow:
//! - every user's count in one ascending array: a user's rank is one plus
//!   the number of larger counts, found by binary search. When a user's count
//!   goes from `c` to `c + 1`, the *last* `c` in the array becomes `c + 1`,
//!   which keeps it sorted (everything after it is already larger), so an
//!   update is a binary search too. New users enter at the front (count 1,
//!   the smallest a user can have).
//! - the first [`TOP`] users in leaderboard order (count descending, then
//!   username case-insensitively). A user outside it can only enter by
//!   growing past its last entry, and nobody in it ever drops in order
//!   except by being pushed out, so updating it on each click is enough.
//!
//! With a million users the array is 8 MB and an update or a rank lookup is
//! about twenty comparisons.

use std::cmp::Ordering;
use std::collections::VecDeque;

use crate::user::Username;

/// How many users the kept top list holds: the most `/api/leaderboard`
/// serves.
pub const TOP: usize = 100;

/// Leaderboard order: count descending, then username case-insensitively.
pub fn by_rank(a: &(Username, u64), b: &(Username, u64)) -> Ordering {
    b.1.cmp(&a.1).then_with(|| a.0.cmp_folded(&b.0))
}

/// Counts in order, and the top users.
#[derive(Debug, Default)]
pub struct Ranking {
    /// Every user's count (users with at least one click), ascending.
    counts: VecDeque<u64>,
    /// The first [`TOP`] users in leaderboard order.
    top: Vec<(Username, u64)>,
}

impl Ranking {
    /// The ranking of users with these counts (zero counts are left out).
    pub fn new(users: impl IntoIterator<Item = (Username, u64)>) -> Self {
        let mut counts = Vec::new();
        let mut top = Vec::new();
        for (name, count) in users {
            if count == 0 {
                continue;
            }
            counts.push(count);
            top.push((name, count));
            // Keep the candidates bounded while loading a million users.
            if top.len() >= 4 * TOP {
                keep_first(&mut top, TOP);
            }
        }
        counts.sort_unstable();
        keep_first(&mut top, TOP);
        Ranking {
            counts: counts.into(),
            top,
        }
    }

    /// Records that `user`'s count went from `count - 1` to `count`.
    pub fn bump(&mut self, user: &Username, count: u64) {
        let old = count - 1;
        if old == 0 {
            self.counts.push_front(1);
        } else {
            let last_old = self.counts.partition_point(|&c| c <= old) - 1;
            debug_assert_eq!(self.counts[last_old], old, "the old count is ranked");
            self.counts[last_old] = count;
        }
        self.enter_top(user, count);
    }

    /// Records that `user`'s count went from `old` to a larger `new` at
    /// once (another node's clicks, learnt from the database). The counts
    /// between the two move down one place, so the cost is the number of
    /// users passed.
    pub fn raise(&mut self, user: &Username, old: u64, new: u64) {
        debug_assert!(new > old, "counts only grow");
        if old == 0 {
            let at = self.counts.partition_point(|&c| c < new);
            self.counts.insert(at, new);
        } else {
            let last_old = self.counts.partition_point(|&c| c <= old) - 1;
            debug_assert_eq!(self.counts[last_old], old, "the old count is ranked");
            let end = self.counts.partition_point(|&c| c < new);
            let counts = self.counts.make_contiguous();
            counts[last_old..end].rotate_left(1);
            counts[end - 1] = new;
        }
        self.enter_top(user, new);
    }

    fn enter_top(&mut self, user: &Username, count: u64) {
        let entry = (user.clone(), count);
        if let Some(i) = self.top.iter().position(|(name, _)| name == user) {
            self.top.remove(i);
        } else if self.top.len() >= TOP
            && self
                .top
                .last()
                .is_some_and(|last| by_rank(&entry, last) != Ordering::Less)
        {
            return;
        }
        let at = self
            .top
            .partition_point(|other| by_rank(other, &entry) == Ordering::Less);
        self.top.insert(at, entry);
        self.top.truncate(TOP);
    }

    /// One plus the number of users with a larger count than `count`.
    pub fn rank(&self, count: u64) -> u64 {
        let larger = self.counts.len() - self.counts.partition_point(|&c| c <= count);
        larger as u64 + 1
    }

    /// The first `limit` users (at most [`TOP`]) in leaderboard order.
    pub fn top(&self, limit: usize) -> &[(Username, u64)] {
        &self.top[..limit.min(self.top.len())]
    }
}

/// Keeps the first `n` of `users` in leaderboard order, sorted.
fn keep_first(users: &mut Vec<(Username, u64)>, n: usize) {
    if users.len() > n {
        users.select_nth_unstable_by(n - 1, by_rank);
        users.truncate(n);
    }
    users.sort_unstable_by(by_rank);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(i: usize) -> Username {
        Username::parse(&format!("user{i}")).unwrap()
    }

    /// The first [`TOP`] users of `counts` (user `i` has `counts[i]`),
    /// sorted the slow way.
    fn brute_force_top(counts: &[u64]) -> Vec<(Username, u64)> {
        let mut all: Vec<(Username, u64)> = counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, &c)| (name(i), c))
            .collect();
        all.sort_by(by_rank);
        all.truncate(TOP);
        all
    }

    /// The next pseudo-random number (a 64-bit LCG), repeatable per seed.
    fn next(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *seed
    }

    #[test]
    fn a_raise_by_many_keeps_every_rank_exact() {
        let mut counts: Vec<u64> = vec![0, 3, 3, 5, 9, 12];
        let mut ranking = Ranking::new(counts.iter().enumerate().map(|(i, &c)| (name(i), c)));
        let mut step = 7u64;
        for _ in 0..500 {
            next(&mut step);
            let user = (step >> 33) as usize % counts.len();
            let by = 1 + (step >> 40) % 9;
            let old = counts[user];
            counts[user] += by;
            ranking.raise(&name(user), old, counts[user]);
            for &count in &counts {
                let larger = counts.iter().filter(|&&other| other > count).count() as u64;
                assert_eq!(ranking.rank(count), larger + 1);
            }
            assert_eq!(ranking.top(TOP), &brute_force_top(&counts)[..]);
        }
    }

    /// Replays pseudo-random clicks on a few hundred users and compares
    /// every rank and the top list with a brute-force ranking.
    #[test]
    fn matches_a_brute_force_ranking_click_by_click() {
        let mut counts: Vec<u64> = (0..300).map(|i| (i * 7 % 13) as u64).collect();
        let mut ranking = Ranking::new(counts.iter().enumerate().map(|(i, &c)| (name(i), c)));
        let mut seed = 42u64;
        for step in 0..20_000 {
            next(&mut seed);
            // Skewed towards low ids, so the top changes hands often.
            let user = ((seed >> 33) % 300).min((seed >> 20) % 300) as usize;
            counts[user] += 1;
            ranking.bump(&name(user), counts[user]);
            if step % 500 != 0 {
                continue;
            }
            for (i, &count) in counts.iter().enumerate() {
                if count == 0 {
                    continue;
                }
                let expected = 1 + counts.iter().filter(|&&other| other > count).count() as u64;
                assert_eq!(
                    ranking.rank(count),
                    expected,
                    "rank of user{i} at step {step}"
                );
            }
            assert_eq!(
                ranking.top(TOP),
                &brute_force_top(&counts)[..],
                "top list at step {step}"
            );
        }
    }

    #[test]
    fn new_users_enter_at_the_bottom() {
        let mut ranking = Ranking::new([(name(0), 5)]);
        ranking.bump(&name(1), 1);
        assert_eq!(ranking.rank(1), 2);
        assert_eq!(ranking.rank(5), 1);
        assert_eq!(ranking.top(10).len(), 2);
    }
}
