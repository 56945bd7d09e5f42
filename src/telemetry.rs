//! Logging setup: human-readable lines or JSON lines, with a filter.
//!
//! Only tally's own code may log below `info`. Other crates log what they
//! carry at debug and trace: socketioxide and engineioxide the handshake's
//! `auth` (a token), tungstenite every WebSocket message, tower-http every
//! request URI (a polling session's `sid`, which is enough to speak as that
//! socket). So every directive of `--log` for anything but tally is held at
//! `info` at most: an allow-list, so a crate added later cannot start
//! printing secrets. tally's own lines name a socket by [`log_id`], never
//! by its whole id, and its request lines carry the path without the query.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

pub use crate::config::LogFormat;

/// The one target allowed below `info`.
const ALLOWED: &str = "tally";

/// The most any other target may log.
const CAP: LevelFilter = LevelFilter::INFO;

/// The filter to install: `filter` (from `--log`), else `RUST_LOG`, else
/// `info`, with every target but tally's held at `info` at most.
pub fn filter(filter: Option<&str>) -> anyhow::Result<EnvFilter> {
    let requested = match filter {
        Some(filter) => filter.to_string(),
        None => std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
    };
    let invalid = |err: &dyn std::fmt::Display| {
        anyhow::anyhow!("invalid value `{requested}` for --log: {err}")
    };
    let mut directives = Vec::new();
    for directive in requested.split(',').map(str::trim) {
        if directive.is_empty() {
            continue;
        }
        // A bare level is the default for every target: tally's gets it
        // whole, the others at most the cap.
        if let Ok(level) = directive.parse::<LevelFilter>() {
            directives.push(format!("{ALLOWED}={level}"));
            directives.push(level.min(CAP).to_string());
            continue;
        }
        let (selector, level) = match directive.rsplit_once('=') {
            Some((selector, level)) => (
                selector,
                level.parse::<LevelFilter>().map_err(|err| invalid(&err))?,
            ),
            // A target alone means everything it logs.
            None => (directive, LevelFilter::TRACE),
        };
        let ours = selector == ALLOWED
            || selector.starts_with("tally::")
            || selector.starts_with("tally[");
        let level = if ours { level } else { level.min(CAP) };
        directives.push(format!("{selector}={level}"));
    }
    EnvFilter::try_new(directives.join(",")).map_err(|err| invalid(&err))
}

/// How tally's log lines name a socket: the first characters of its id,
/// enough to follow one socket through a log, too few to be its polling
/// session's `sid` (which anyone holding could speak as the socket with).
pub fn log_id(id: impl std::fmt::Display) -> String {
    let id = id.to_string();
    let shown: String = id.chars().take(6).collect();
    format!("{shown}…")
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
    fn only_tally_logs_below_info_whatever_is_asked() {
        for asked in [
            "trace",
            "debug",
            "socketioxide=trace,debug",
            "engineioxide=debug",
            "tungstenite=trace",
            "tower_http=debug,tally=trace",
            "hyper",
        ] {
            let filter = filter(Some(asked)).unwrap().to_string();
            for verbose in ["=trace", "=debug"] {
                for part in filter.split(',') {
                    assert!(
                        !part.ends_with(verbose) || part.starts_with("tally"),
                        "{asked} → {filter}"
                    );
                }
            }
            assert!(
                !filter
                    .split(',')
                    .any(|part| part == "trace" || part == "debug")
            );
        }
        let all = filter(Some("trace")).unwrap().to_string();
        assert!(all.contains("tally=trace"), "{all}");
        assert!(filter(Some("tally=nonsense=1")).is_err());
        assert!(filter(Some("tally=loud")).is_err());
    }

    #[test]
    fn sockets_are_named_by_a_prefix_of_their_id() {
        assert_eq!(log_id("AbCdEfGhIjKlMnOp"), "AbCdEf…");
    }
}
