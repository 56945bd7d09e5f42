//! Connection caps, and who the client is behind a proxy.
//!
//! `--max-connections` and `--max-connections-per-ip` are checked twice: by
//! `crate::http`'s early check on the request that would open a new
//! engine.io session (before engine.io spends any memory on it), and when
//! the socket joins the namespace, in the same step as it is counted
//! ([`super::Connection::admit`]). Both apply [`Caps::over`]. The client's
//! address is the TCP peer's, or, when that peer is one of
//! `--trusted-proxies`, the nearest address in `X-Forwarded-For` that is
//! not a trusted proxy. Entries may carry a port (`203.0.113.7:51234`,
//! `[2001:db8::1]:443`), as some proxies append them. An entry that is no
//! address at all ends the walk at the last trusted proxy: what lies beyond
//! it was not written by anyone trusted.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::refusal::{Code, Refusal};

/// The caps of a server (0: no cap) and the proxies it trusts.
#[derive(Debug, Clone, Default)]
pub struct Caps {
    pub max_connections: usize,
    pub max_per_ip: usize,
    pub trusted_proxies: Vec<IpNet>,
}

impl Caps {
    /// Which cap one more socket would pass, with `current` sockets in all
    /// and `from_ip` from its client's address, if any.
    pub fn over(&self, current: usize, from_ip: usize) -> Option<Capped> {
        if self.max_connections > 0 && current >= self.max_connections {
            Some(Capped::ServerFull)
        } else if self.max_per_ip > 0 && from_ip >= self.max_per_ip {
            Some(Capped::TooManyFromIp)
        } else {
            None
        }
    }

    /// The refusal of an HTTP request over a cap: its code and a message
    /// saying which cap.
    pub fn refusal(&self, capped: Capped) -> Refusal {
        match capped {
            Capped::ServerFull => capped.code().with(format!(
                "the server holds its maximum of {} connections; try again later",
                self.max_connections
            )),
            Capped::TooManyFromIp => capped.code().with(format!(
                "at most {} connections from one address",
                self.max_per_ip
            )),
        }
    }

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

/// A connection over a cap; its code is what the client receives, in
/// `connect_error` at the namespace (where the code is the message too) or
/// in a `503` before engine.io.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capped {
    /// `--max-connections` are connected.
    ServerFull,
    /// `--max-connections-per-ip` are connected from this client address.
    TooManyFromIp,
}

impl Capped {
    /// The reason, as the metric label and the refusal's code.
    pub fn code(self) -> Code {
        match self {
            Capped::ServerFull => Code::ServerFull,
            Capped::TooManyFromIp => Code::TooManyConnections,
        }
    }
}

impl From<Capped> for Refusal {
    /// The refusal of a socket joining the namespace over a cap: the
    /// message is the code, as `connect_error` has always said it.
    fn from(capped: Capped) -> Self {
        capped.code().with(capped.code().as_str())
    }
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
