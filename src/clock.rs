//! The wall clock, as tally stores and shows it: milliseconds since the
//! Unix epoch, ISO 8601 strings, and the seconds tokens expire at.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Formats milliseconds since the epoch as `2026-11-25T17:18:04.123Z`.
pub fn iso_millis(unix_ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(unix_ms).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}

/// Seconds since the epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Time left until `expires_at` (seconds since the epoch), zero if past.
/// A time the system clock cannot represent is as far away as it can be,
/// never a panic: the value may come from a client's token.
pub fn time_until(expires_at: u64) -> Duration {
    UNIX_EPOCH
        .checked_add(Duration::from_secs(expires_at))
        .map_or(Duration::MAX, |at| {
            at.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_in_utc_with_milliseconds() {
        assert_eq!(iso_millis(1_732_550_284_123), "2024-11-25T15:58:04.123Z");
        assert!((now_ms() / 1000 - unix_now() as i64).abs() <= 1);
        assert_eq!(time_until(0), Duration::ZERO);
        assert!(time_until(u64::MAX) > Duration::from_secs(1 << 40));
    }
}
