//! Connection caps, and who the client is behind a proxy.
//!
//! `--max-connections` and `--max-connections-per-ip` are checked on the
//! request that would open a new engine.io session (one without a `sid`),
//! before engine.io spends any memory on it: over a cap the answer is
//! `503` with a JSON reason. The client's address is the TCP peer's, or,
//! when that peer is one of `--trusted-proxies`, the nearest address in
//! `X-Forwarded-For` that is not a trusted proxy. Entries may carry a port
//! (`203.0.113.7:51234`, `[2001:db8::1]:443`), as some proxies append them.
//! An entry that is no address at all ends the walk at the last trusted
//! proxy: what lies beyond it was not written by anyone trusted.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;

use super::ApiError;
use crate::realtime::connections::Capped;
use crate::state::AppState;

/// The caps of a server (0: no cap) and the proxies it trusts.
#[derive(Debug, Clone, Default)]
pub struct Caps {
    pub max_connections: usize,
    pub max_per_ip: usize,
    pub trusted_proxies: Vec<IpNet>,
}

impl Caps {
    /// The client's address: see the module's documentation.
    pub fn client_ip(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?.ip();
        if !self.trusts(peer) {
            return Some(peer);
        }
        // Right to left: each trusted proxy appended the address it saw.
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|value| value.to_str().unwrap_or_default())
            .flat_map(|value| value.split(','))
            .collect::<Vec<_>>();
        let mut nearest = peer;
        for entry in forwarded.into_iter().rev() {
            let Some(ip) = forwarded_ip(entry) else {
                // Skipping it would let an entry the client wrote further
                // left stand for the client.
                return Some(nearest);
            };
            if !self.trusts(ip) {
                return Some(ip);
            }
            nearest = ip;
        }
        Some(nearest)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

/// Refuses a new Socket.IO connection over a cap, before engine.io sees it.
pub async fn admit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let opens_session = crate::realtime::detach::opens_session(request.uri());
    if opens_session && let Some(refusal) = refusal(&state, &request) {
        state.metrics.connection_refused(refusal.code());
        return refusal.into_response();
    }
    next.run(request).await
}

fn refusal(state: &AppState, request: &Request) -> Option<ApiError> {
    let caps = &state.caps;
    // The client's address is only worked out when a per-address cap needs it.
    let client_ip = if caps.max_per_ip > 0 {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0);
        caps.client_ip(peer, request.headers())
    } else {
        None
    };
    let capped = state
        .connections
        .capped(client_ip, (caps.max_connections, caps.max_per_ip))?;
    let message = match capped {
        Capped::ServerFull => format!(
            "the server holds its maximum of {} connections; try again later",
            caps.max_connections
        ),
        Capped::TooManyFromIp => {
            format!("at most {} connections from one address", caps.max_per_ip)
        }
    };
    Some(ApiError::Unavailable {
        code: capped.code(),
        message,
    })
}

/// The address of one `X-Forwarded-For` entry, with or without a port.
fn forwarded_ip(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|addr| addr.ip()))
        .or_else(|| {
            let bracketed = entry.strip_prefix('[')?.strip_suffix(']')?;
            bracketed.parse::<IpAddr>().ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let caps = Caps {
            trusted_proxies: vec![
                "10.0.0.0/8".parse().unwrap(),
                "127.0.0.1/32".parse().unwrap(),
            ],
            ..Caps::default()
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "203.0.113.7, 10.1.2.3".parse().unwrap());
        let proxy: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let stranger: SocketAddr = "198.51.100.1:4000".parse().unwrap();
        assert_eq!(
            caps.client_ip(Some(proxy), &headers),
            Some("203.0.113.7".parse().unwrap()),
            "the nearest untrusted address"
        );
        assert_eq!(
            caps.client_ip(Some(stranger), &headers),
            Some(stranger.ip()),
            "a client cannot choose its address by sending the header"
        );
        assert_eq!(
            caps.client_ip(Some(proxy), &HeaderMap::new()),
            Some(proxy.ip())
        );
    }

    #[test]
    fn forwarded_entries_with_ports_name_the_client_and_garbage_ends_the_walk() {
        let caps = Caps {
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
            ..Caps::default()
        };
        let proxy: SocketAddr = "10.0.0.1:4000".parse().unwrap();
        let client = |header: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("x-forwarded-for", header.parse().unwrap());
            caps.client_ip(Some(proxy), &headers)
        };
        // A proxy that appends the port it saw.
        assert_eq!(
            client("198.51.100.9, 203.0.113.7:51234, 10.1.2.3:80"),
            Some("203.0.113.7".parse().unwrap())
        );
        assert_eq!(
            client("[2001:db8::1]:443"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            client("[2001:db8::2]"),
            Some("2001:db8::2".parse().unwrap())
        );
        // What a client wrote left of an entry that is no address is not
        // believed: the nearest trusted proxy stands for it.
        assert_eq!(
            client("198.51.100.9, unknown, 10.1.2.3"),
            Some("10.1.2.3".parse().unwrap())
        );
        assert_eq!(client("unknown"), Some(proxy.ip()));
    }
}
