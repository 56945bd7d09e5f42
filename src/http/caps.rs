//! Connection caps, and who the client is behind a proxy.
//!
//! `--max-connections` and `--max-connections-per-ip` are checked on the
//! request that would open a new engine.io session (one without a `sid`),
//! before engine.io spends any memory on it: over a cap the answer is
//! `503` with a JSON reason. The client's address is the TCP peer's, or,
//! when that peer is one of `--trusted-proxies`, the nearest address in
//! `X-Forwarded-For` that is not a trusted proxy.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;

use super::ApiError;
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
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|entry| entry.trim().parse::<IpAddr>().ok())
            .collect::<Vec<_>>();
        Some(
            forwarded
                .into_iter()
                .rev()
                .find(|ip| !self.trusts(*ip))
                .unwrap_or(peer),
        )
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
    if caps.max_connections > 0 && state.connections.current() >= caps.max_connections {
        return Some(ApiError::Unavailable {
            code: "server_full",
            message: format!(
                "the server holds its maximum of {} connections; try again later",
                caps.max_connections
            ),
        });
    }
    if caps.max_per_ip > 0 {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0);
        let ip = caps.client_ip(peer, request.headers())?;
        if state.connections.from_ip(ip) >= caps.max_per_ip {
            return Some(ApiError::Unavailable {
                code: "too_many_connections",
                message: format!("at most {} connections from one address", caps.max_per_ip),
            });
        }
    }
    None
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
}
