//! Connection caps, and who the client is behind a proxy.
//!
//! `--max-connections` and `--max-connections-per-ip` count engine.io
//! sessions ([`super::places`]): `crate::http`'s early check takes a place
//! for the request that would open one (before engine.io spends any memory
//! on it), and a socket whose session came without one takes it when it
//! joins the namespace ([`super::Connection::admit`]). Both apply
//! [`Caps::over`]. The client's
//! address is the TCP peer's, or, when that peer is one of
//! `--trusted-proxies`, the nearest address in `X-Forwarded-For` that is
//! not a trusted proxy. Entries may carry a port (`203.0.113.7:51234`,
//! `[2001:db8::1]:443`), as some proxies append them. An entry that is no
//! address at all ends the walk at the last trusted proxy: what lies beyond
//! it was not written by anyone trusted.
//!
//! Every address is canonical before it is looked at: an IPv4 peer of a
//! dual-stack listener (`[::]:3000`) arrives as `::ffff:a.b.c.d`, which no
//! IPv4 network in `--trusted-proxies` would contain. The per-address caps
//! and limits count by [`Caps::key`]: an IPv4 address, or the IPv6 network
//! of `--ipv6-prefix` bits (a /64 by default) that one host is usually
//! given whole.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::refusal::{Code, Refusal};

/// The caps of a server (0: no cap), the proxies it trusts, and how
/// addresses are grouped.
#[derive(Debug, Clone)]
pub struct Caps {
    pub max_connections: usize,
    pub max_per_ip: usize,
    pub trusted_proxies: Vec<IpNet>,
    /// IPv6 addresses sharing this many leading bits are one client.
    pub ipv6_prefix: u8,
    /// How long an engine.io session may wait before joining a namespace:
    /// until then it holds a place of its own under the caps.
    pub connect_timeout: Duration,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            max_connections: 0,
            max_per_ip: 0,
            trusted_proxies: Vec::new(),
            ipv6_prefix: 64,
            connect_timeout: Duration::from_secs(10),
        }
    }
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

    /// Whether any cap is set, so that addresses must be counted at all.
    pub fn any(&self) -> bool {
        self.max_connections > 0 || self.max_per_ip > 0
    }

    /// What the per-address caps and limits count `ip` under: itself for
    /// IPv4, its network of `ipv6_prefix` bits for IPv6.
    pub fn key(&self, ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => {
                let bits = u32::from(self.ipv6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(v6.to_bits() & mask))
            }
        }
    }

    /// The client's address: see the module's documentation.
    pub fn client_ip(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?.ip().to_canonical();
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
            let Some(ip) = forwarded_ip(entry).map(|ip| ip.to_canonical()) else {
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
    fn mapped_addresses_are_ipv4_and_ipv6_counts_by_network() {
        let caps = Caps {
            trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
            ..Caps::default()
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "::ffff:203.0.113.7".parse().unwrap());
        let mapped_proxy: SocketAddr = "[::ffff:127.0.0.1]:4000".parse().unwrap();
        assert_eq!(
            caps.client_ip(Some(mapped_proxy), &headers),
            Some("203.0.113.7".parse().unwrap()),
            "a mapped proxy is trusted and a mapped entry is its IPv4 address"
        );
        let key = |ip: &str| caps.key(ip.parse().unwrap()).to_string();
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key("192.0.2.1"), "192.0.2.1");
        assert_eq!(key("::ffff:192.0.2.1"), "192.0.2.1");
        let whole = Caps {
            ipv6_prefix: 128,
            ..Caps::default()
        };
        assert_eq!(
            whole.key("2001:db8::1".parse().unwrap()).to_string(),
            "2001:db8::1"
        );
    }

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
