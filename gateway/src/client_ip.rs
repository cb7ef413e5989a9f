//! Who the client is, by address: the TCP peer, or — when that peer is a trusted proxy
//! (`STOCKMESH_TRUSTED_PROXIES`) — the address it reports in `X-Forwarded-For`.
//!
//! * **Trusted proxies** are IPs or CIDRs (`10.0.0.0/8`, `fd00::/8`, `127.0.0.1`), parsed
//!   at start; a bad entry is a configuration error naming the variable. None by default:
//!   then `X-Forwarded-For` is ignored, since any client can send one.
//! * **Rightmost untrusted.** Each proxy appends the address it saw, so only the entries
//!   added by trusted proxies are reliable: the list is walked from the right, trusted
//!   addresses are skipped, and the first untrusted one is the client. When every entry is
//!   trusted the leftmost is taken. A header a trusted proxy passes on that cannot be read
//!   (not an address where one is needed) is not guessed at: the peer is used.
//! * **Rate-limit key** ([`rate_key`]): an IPv4 address as is, an IPv6 one by its /64 —
//!   one host usually owns a whole /64, so keying by full address would let it take as
//!   many buckets as it likes.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use http::HeaderMap;

/// The environment variable the trusted proxies come from (named in errors).
pub const TRUSTED_PROXIES_VAR: &str = "STOCKMESH_TRUSTED_PROXIES";

/// The client address of a request, as resolved at the start of dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// One trusted network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    fn parse(entry: &str) -> Result<Self, String> {
        let (addr, prefix) = match entry.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (entry, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{entry:?} is not an IP address or CIDR"))?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("{entry:?}: prefix length must be 0..={max}")),
            },
        };
        Ok(Self { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<Net>);

impl TrustedProxies {
    /// Parses the configured entries; blank ones are ignored.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> stockmesh::Result<Self> {
        let mut nets = Vec::new();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry.is_empty() {
                continue;
            }
            let net = Net::parse(entry)
                .map_err(|why| stockmesh::Error::Config(format!("{TRUSTED_PROXIES_VAR}: {why}")))?;
            nets.push(net);
        }
        Ok(Self(nets))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(ip))
    }

    /// The client address of a request that came from `peer` with `headers`.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        let mut values = Vec::new();
        for v in headers.get_all("x-forwarded-for") {
            match v.to_str() {
                Ok(v) => values.push(v),
                Err(_) => return peer,
            }
        }
        // Several header lines form one list, in order.
        let mut leftmost = None;
        for entry in values.iter().rev().flat_map(|v| v.rsplit(',')) {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let Some(ip) = parse_forwarded(entry) else {
                return peer;
            };
            if !self.contains(ip) {
                return ip;
            }
            leftmost = Some(ip);
        }
        leftmost.unwrap_or(peer)
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5`,
/// `[::1]:5`), as some proxies write it.
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    let ip = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .and_then(|e| e.parse::<Ipv6Addr>().ok())
                .map(IpAddr::V6)
        })?;
    Some(ip.to_canonical())
}

/// The address a client's anonymous rate-limit bucket is keyed by (see the module docs).
pub fn rate_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let masked = u128::from(v6) & (u128::MAX << 64);
            IpAddr::V6(Ipv6Addr::from(masked))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn trusted(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(entries).unwrap()
    }

    #[test]
    fn parses_ips_and_cidrs_and_names_the_variable_on_errors() {
        let t = trusted(&["127.0.0.1", " 10.0.0.0/8 ", "", "fd00::/8", "0.0.0.0/0"]);
        assert_eq!(t.0.len(), 4);
        assert!(TrustedProxies::parse::<&str>(&[]).unwrap().is_empty());
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "example.com",
            "10.0.0.1/x",
            "/8",
            "1.2.3",
        ] {
            let err = TrustedProxies::parse(&[bad]).unwrap_err().to_string();
            assert!(err.contains(TRUSTED_PROXIES_VAR), "{bad}: {err}");
        }
    }

    #[test]
    fn cidr_membership() {
        let t = trusted(&["10.0.0.0/8", "192.168.1.7", "fd00::/8"]);
        assert!(t.contains(ip("10.255.0.1")));
        assert!(!t.contains(ip("11.0.0.1")));
        assert!(t.contains(ip("192.168.1.7")));
        assert!(!t.contains(ip("192.168.1.8")));
        assert!(t.contains(ip("fd12::1")));
        assert!(!t.contains(ip("fe80::1")));
        // IPv4-mapped IPv6 peers (dual-stack sockets) count as their IPv4 address.
        assert!(t.contains(ip("::ffff:10.1.2.3")));
        assert!(trusted(&["0.0.0.0/0"]).contains(ip("8.8.8.8")));
        assert!(!trusted(&["0.0.0.0/0"]).contains(ip("::1")));
        assert!(trusted(&["::/0"]).contains(ip("2001:db8::1")));
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let h = xff(&["203.0.113.9"]);
        assert_eq!(
            TrustedProxies::default().resolve(ip("198.51.100.1"), &h),
            ip("198.51.100.1")
        );
        let t = trusted(&["10.0.0.1"]);
        assert_eq!(t.resolve(ip("198.51.100.1"), &h), ip("198.51.100.1"));
    }

    #[test]
    fn rightmost_untrusted_entry_is_the_client() {
        let t = trusted(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.1");
        // A client-supplied (spoofed) left part is never taken.
        let h = xff(&["1.1.1.1, 203.0.113.9, 10.0.0.5"]);
        assert_eq!(t.resolve(peer, &h), ip("203.0.113.9"));
        // Several header lines are one list.
        let h = xff(&["1.1.1.1", "203.0.113.9", "10.0.0.5"]);
        assert_eq!(t.resolve(peer, &h), ip("203.0.113.9"));
        // Ports and brackets are tolerated.
        let h = xff(&["203.0.113.9:4711"]);
        assert_eq!(t.resolve(peer, &h), ip("203.0.113.9"));
        let h = xff(&["[2001:db8::7]:443"]);
        assert_eq!(t.resolve(peer, &h), ip("2001:db8::7"));
        let h = xff(&["[2001:db8::8]"]);
        assert_eq!(t.resolve(peer, &h), ip("2001:db8::8"));
        // Every entry trusted: the leftmost one.
        let h = xff(&["10.0.0.9, 10.0.0.5"]);
        assert_eq!(t.resolve(peer, &h), ip("10.0.0.9"));
        // No header, or an empty one: the peer itself.
        assert_eq!(t.resolve(peer, &HeaderMap::new()), peer);
        assert_eq!(t.resolve(peer, &xff(&[" , "])), peer);
    }

    #[test]
    fn malformed_forwarded_for_falls_back_to_the_peer() {
        let t = trusted(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.1");
        assert_eq!(t.resolve(peer, &xff(&["not-an-ip"])), peer);
        assert_eq!(t.resolve(peer, &xff(&["203.0.113.9, garbage"])), peer);
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"\xff1.2.3.4").unwrap(),
        );
        assert_eq!(t.resolve(peer, &h), peer);
        // Garbage left of the client is never looked at.
        assert_eq!(
            t.resolve(peer, &xff(&["garbage, 203.0.113.9"])),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        assert_eq!(rate_key(ip("203.0.113.9")), ip("203.0.113.9"));
        assert_eq!(rate_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            rate_key(ip("2001:db8:1:2:aaaa::1")),
            rate_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
        );
        assert_ne!(
            rate_key(ip("2001:db8:1:2::1")),
            rate_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(rate_key(ip("::ffff:203.0.113.9")), ip("203.0.113.9"));
    }
}
