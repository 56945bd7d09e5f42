//! Clicks per second over the last seconds, for the monitoring API.
//!
//! A task samples the global total once a second; a rate is the difference
//! between the newest sample and the one a window earlier. A minute of
//! samples is kept.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Samples kept: one per second for the longest window asked (60 s), plus one.
const KEPT: usize = 61;

#[derive(Debug, Default)]
pub struct Rate {
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

impl Rate {
    /// Records the total at `at`.
    pub fn sample(&self, at: Instant, total: u64) {
        let mut samples = crate::sync::lock(&self.samples);
        if samples.len() == KEPT {
            samples.pop_front();
        }
        samples.push_back((at, total));
    }

    /// Clicks per second over about the last `window` (or over what has
    /// been sampled, if less); 0 before two samples exist.
    pub fn per_second(&self, window: Duration) -> f64 {
        let samples = crate::sync::lock(&self.samples);
        let Some(&(newest_at, newest)) = samples.back() else {
            return 0.0;
        };
        let oldest = samples
            .iter()
            .find(|(at, _)| newest_at.duration_since(*at) <= window)
            .copied();
        match oldest {
            Some((at, total)) if at < newest_at => {
                (newest - total) as f64 / newest_at.duration_since(at).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_samples_inside_the_window() {
        let rate = Rate::default();
        assert_eq!(rate.per_second(Duration::from_secs(10)), 0.0);
        let start = Instant::now();
        // 100 clicks/s for 60 s, then 1,000 clicks/s for the last 10 s.
        let mut total = 0;
        for second in 0..=70 {
            rate.sample(start + Duration::from_secs(second), total);
            total += if second < 60 { 100 } else { 1_000 };
        }
        assert!((rate.per_second(Duration::from_secs(10)) - 1_000.0).abs() < 1e-6);
        let minute = rate.per_second(Duration::from_secs(60));
        assert!(
            (minute - (50.0 * 100.0 + 10.0 * 1_000.0) / 60.0).abs() < 1e-6,
            "{minute}"
        );
    }
}
