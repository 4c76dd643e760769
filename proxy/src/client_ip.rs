//! Who the client is, behind load balancers the operator trusts.
//!
//! The connection's peer is the client unless it is one of
//! `server.trusted_proxies`; then `server.client_ip_header` (by default
//! `X-Forwarded-For`) is read from its right end, one hop at a time, for
//! as long as each hop is itself trusted: the first address a trusted hop
//! vouches for that is not trusted is the client. What an untrusted peer
//! sends in the header is never read, and entries left of the client
//! (which the client wrote itself) never count.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderName};
use ipnet::IpNet;

/// `server.trusted_proxies` and the header they name clients in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIp {
    pub trusted_proxies: Vec<IpNet>,
    pub header: HeaderName,
}

impl Default for ClientIp {
    fn default() -> Self {
        ClientIp {
            trusted_proxies: Vec::new(),
            header: HeaderName::from_static("x-forwarded-for"),
        }
    }
}

impl ClientIp {
    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// The client's address for a request from `peer` with `headers`.
    pub fn of(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if self.trusted_proxies.is_empty() || !self.trusts(peer) {
            return peer;
        }
        let hops: Vec<&str> = headers
            .get_all(&self.header)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        let mut client = peer;
        for hop in hops.into_iter().rev() {
            if !self.trusts(client) {
                break;
            }
            match parse_hop(hop) {
                Some(ip) => client = ip.to_canonical(),
                // Garbage is where the trusted chain ends: the last
                // address vouched for stands.
                None => break,
            }
        }
        client
    }
}

/// One entry: an address, with or without a port (`[::1]:80`, `1.2.3.4:5`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(nets: &[&str]) -> ClientIp {
        ClientIp {
            trusted_proxies: nets.iter().map(|n| n.parse().unwrap()).collect(),
            ..ClientIp::default()
        }
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", v.parse().unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let r = resolver(&["10.0.0.0/8"]);
        assert_eq!(r.of(ip("203.0.113.9"), &xff(&["1.2.3.4"])), ip("203.0.113.9"));
        assert_eq!(resolver(&[]).of(ip("10.0.0.1"), &xff(&["1.2.3.4"])), ip("10.0.0.1"));
    }

    #[test]
    fn trusted_hops_are_walked_from_the_right() {
        let r = resolver(&["10.0.0.0/8", "192.168.0.0/16"]);
        // The client forged the leftmost entry; the balancers appended the rest.
        let headers = xff(&["6.6.6.6, 198.51.100.7", "192.168.1.1"]);
        assert_eq!(r.of(ip("10.0.0.1"), &headers), ip("198.51.100.7"));
        // All trusted: the leftmost vouched-for address.
        assert_eq!(r.of(ip("10.0.0.1"), &xff(&["10.1.1.1"])), ip("10.1.1.1"));
        // No header: the balancer itself.
        assert_eq!(r.of(ip("10.0.0.1"), &HeaderMap::new()), ip("10.0.0.1"));
        // Garbage stops the walk at the last good hop.
        assert_eq!(r.of(ip("10.0.0.1"), &xff(&["1.1.1.1, junk, 10.2.2.2"])), ip("10.2.2.2"));
        // Ports and brackets.
        assert_eq!(r.of(ip("10.0.0.1"), &xff(&["[2001:db8::1]:443"])), ip("2001:db8::1"));
        assert_eq!(
            r.of(ip("::ffff:10.0.0.1"), &xff(&["198.51.100.7:1234"])),
            ip("198.51.100.7")
        );
    }
}
