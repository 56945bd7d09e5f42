//! Logging setup: human-readable lines or JSON lines, with a filter.
//!
//! socketioxide and engineioxide log handshake payloads at debug level and
//! below, and a handshake's `auth` carries the client's token. Their logs
//! are therefore capped at `info` whatever the filter asks for: no log
//! level of tally prints a token.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub use crate::config::LogFormat;

/// Crates whose debug logs would print secrets.
const CAPPED: [&str; 2] = ["socketioxide", "engineioxide"];

/// The filter to install: `filter` (from `--log`), else `RUST_LOG`, else
/// `info`, with socketioxide and engineioxide held at `info` at most.
pub fn filter(filter: Option<&str>) -> anyhow::Result<EnvFilter> {
    let requested = match filter {
        Some(filter) => filter.to_string(),
        None => std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
    };
    // The user's own directives for the capped crates are dropped, so the
    // caps below are the only ones that apply to them.
    let kept: Vec<&str> = requested
        .split(',')
        .map(str::trim)
        .filter(|directive| !CAPPED.iter().any(|krate| directive.starts_with(krate)))
        .collect();
    let mut env_filter = EnvFilter::try_new(kept.join(","))
        .map_err(|err| anyhow::anyhow!("invalid value `{requested}` for --log: {err}"))?;
    for krate in CAPPED {
        let cap = format!("{krate}=info").parse().expect("a valid directive");
        env_filter = env_filter.add_directive(cap);
    }
    Ok(env_filter)
}

/// Installs the global subscriber.
pub fn init(filter_spec: Option<&str>, format: LogFormat) -> anyhow::Result<()> {
    let env_filter = filter(filter_spec)?;
    let installed = match format {
        LogFormat::Human => tracing_subscriber::fmt()
            .with_env_filter(env_filter)
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(env_filter)
            .try_init(),
    };
    installed.map_err(|err| anyhow::anyhow!("cannot install the logger: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socketioxide_stays_at_info_whatever_is_asked() {
        for asked in ["trace", "socketioxide=trace,debug", "engineioxide=debug"] {
            let filter = filter(Some(asked)).unwrap().to_string();
            assert!(filter.contains("socketioxide=info"), "{asked} → {filter}");
            assert!(filter.contains("engineioxide=info"), "{asked} → {filter}");
            assert!(!filter.contains("socketioxide=trace"), "{asked} → {filter}");
        }
        assert!(filter(Some("tally=nonsense=1")).is_err());
    }
}
