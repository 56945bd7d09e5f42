//! The values options take: secrets, transports, origins, rate limits,
//! modes, and the parsers that turn their text into them. Each type lives
//! here, below every module that acts on it, so reading an option never
//! reaches up into the code it configures.

use std::time::Duration;

/// Shortest accepted `--api-key` and `--admin-token`.
pub const MIN_API_KEY_LEN: usize = 16;

/// Shortest accepted `--jwt-secret`: HS256 keys shorter than the hash output
/// (32 bytes) weaken the signature.
pub const MIN_SECRET_LEN: usize = 32;

/// A secret string that never shows up in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// A Socket.IO transport that can be switched on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    Websocket,
    Polling,
}

/// One entry of `--allowed-origins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigin {
    /// `*`: any origin may connect.
    Any,
    /// One exact origin, normalised to lower case without a trailing slash.
    Exact(String),
}

/// How Socket.IO clients must identify themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// A token, a bare `username`, or nothing (anonymous).
    Open,
    /// A valid token on every connection.
    Token,
}

/// What the Admin UI is sent (`--admin-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AdminMode {
    /// Totals every 2 s: connections, disconnections by reason, packets.
    #[default]
    Aggregated,
    /// Also every socket, room and event as it happens.
    Development,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event (colours on a terminal).
    #[default]
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// A rate and a burst, as `--click-limit 20:40` gives them; a rate of 0 is
/// no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub per_second: u32,
    pub burst: u32,
}

impl Limit {
    /// No limit at all.
    pub const NONE: Limit = Limit {
        per_second: 0,
        burst: 0,
    };
}

impl std::str::FromStr for Limit {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "`{raw}`: expected RATE:BURST (events per second and burst, e.g. 20:40), or 0 for no limit"
            )
        };
        let raw = raw.trim();
        if raw == "0" {
            return Ok(Limit::NONE);
        }
        let (rate, burst) = raw.split_once(':').ok_or_else(bad)?;
        let per_second: u32 = rate.trim().parse().map_err(|_| bad())?;
        let burst: u32 = burst.trim().parse().map_err(|_| bad())?;
        if per_second > 0 && burst == 0 {
            return Err(bad());
        }
        Ok(Limit { per_second, burst })
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.per_second == 0 {
            f.write_str("0")
        } else {
            write!(f, "{}:{}", self.per_second, self.burst)
        }
    }
}

pub(super) fn parse_origin(raw: &str) -> Result<AllowedOrigin, String> {
    let raw = raw.trim();
    if raw == "*" {
        return Ok(AllowedOrigin::Any);
    }
    let origin = raw.trim_end_matches('/').to_ascii_lowercase();
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .ok_or_else(|| format!("`{raw}` is not an origin: expected scheme://host[:port] or `*`"))?;
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ']) {
        return Err(format!(
            "`{raw}` is not an origin: expected scheme://host[:port] with no path"
        ));
    }
    Ok(AllowedOrigin::Exact(origin))
}

pub(super) fn parse_proxy(raw: &str) -> Result<ipnet::IpNet, String> {
    let raw = raw.trim();
    raw.parse::<ipnet::IpNet>()
        .or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{raw}`: expected an address or a CIDR block, e.g. 10.0.0.0/8"))
}

pub(super) fn parse_webhook_url(raw: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(raw).map_err(|e| format!("`{raw}`: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("`{raw}`: expected an http:// or https:// URL"));
    }
    Ok(url)
}

pub(super) fn parse_duration(raw: &str) -> Result<Duration, String> {
    if raw.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(raw).map_err(|e| format!("`{raw}`: {e} (examples: 10ms, 1s, 2m)"))
}

pub(super) fn parse_positive_duration(raw: &str) -> Result<Duration, String> {
    let duration = parse_duration(raw)?;
    if duration.is_zero() {
        return Err(format!("`{raw}`: must be greater than zero"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_second: u32, burst: u32) -> Limit {
        Limit { per_second, burst }
    }

    #[test]
    fn limits_parse_and_print() {
        assert_eq!("20:40".parse::<Limit>().unwrap(), limit(20, 40));
        assert_eq!("0".parse::<Limit>().unwrap(), Limit::NONE);
        assert_eq!(limit(5, 10).to_string(), "5:10");
        for bad in ["20", "a:b", "20:0", ":5", "-1:3"] {
            assert!(bad.parse::<Limit>().is_err(), "{bad}");
        }
    }
}
