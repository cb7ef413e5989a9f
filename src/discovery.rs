//! Endpoint discovery: which addresses an upstream's balancer spreads calls over.
//!
//! Each entry of `STOCKMESH_<SVC>_ADDRS` is either an address (`host:port`, optionally
//! `http://host:port`), one endpoint for good, or `dns:///name:port`: the name is resolved
//! to **every** A and AAAA record, each address one endpoint, and resolved again every
//! `STOCKMESH_DISCOVERY_REFRESH_MS` and soon after an endpoint could not be reached (so a
//! replica that moved is found without waiting for the timer). On Kubernetes a headless
//! Service name gives one record per ready pod, which is how a client balances across
//! replicas instead of pinning one HTTP/2 connection to a ClusterIP.
//!
//! An address that disappears from the answer leaves the balancer: calls already on it
//! finish, no new ones go there ([`Endpoints::set_addrs`]). A failed resolution keeps the
//! last known addresses of that name: a DNS hiccup must not empty a healthy upstream.
//!
//! The resolver is `hickory-resolver` rather than the system's `getaddrinfo`: it is async
//! (no blocking thread per lookup), honours record TTLs without a process-wide cache of
//! its own, and can be pointed at a given name server (`STOCKMESH_DNS_NAMESERVER`), which
//! is what lets the scale-out drill serve a changing record set from a DNS server on
//! loopback. By default it reads `/etc/resolv.conf`, like the system resolver.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use crate::resilience::DiscoverySettings;
use crate::resilience::balance::{Endpoint, Endpoints};

/// Shortest time between two resolutions triggered by unreachable endpoints.
const MIN_RESOLVE_GAP: Duration = Duration::from_millis(200);

/// One entry of an upstream's address list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A fixed endpoint, as a URI (`http://host:port`).
    Fixed(String),
    /// A name resolved to every address it has, each with `port`.
    Dns { name: String, port: u16 },
}

impl Entry {
    /// Parses `dns:///name:port`, `http(s)://host:port` or `host:port`.
    pub fn parse(entry: &str) -> crate::Result<Self> {
        let entry = entry.trim();
        if let Some(rest) = entry.strip_prefix("dns://") {
            let Some(target) = rest.strip_prefix('/') else {
                return Err(bad(
                    entry,
                    "dns names take no authority: write dns:///name:port",
                ));
            };
            let (name, port) = target
                .rsplit_once(':')
                .ok_or_else(|| bad(entry, "a port is required: dns:///name:port"))?;
            let name = name.trim_start_matches('[').trim_end_matches(']');
            if name.is_empty() {
                return Err(bad(entry, "the name is empty"));
            }
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad(entry, "the port must be 1-65535"))?;
            return Ok(Entry::Dns {
                name: name.to_string(),
                port,
            });
        }
        if entry.is_empty() {
            return Err(bad(entry, "empty address"));
        }
        Ok(Entry::Fixed(if entry.contains("://") {
            entry.to_string()
        } else {
            format!("http://{entry}")
        }))
    }
}

fn bad(entry: &str, why: &str) -> crate::Error {
    crate::Error::Config(format!("bad upstream address {entry:?}: {why}"))
}

/// The URI of an endpoint at `addr`.
pub fn uri_of(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(ip) => format!("http://{ip}:{}", addr.port()),
        IpAddr::V6(ip) => format!("http://[{ip}]:{}", addr.port()),
    }
}

/// `addr` as a `&'static str`, leaked once per distinct address: every call carries its
/// endpoint's address (for error messages, and so that a retry can avoid it), and a shared
/// `Arc<str>` would cost two atomic operations on one cache line per call. Addresses come
/// from configuration and DNS, so the set grows only with the distinct endpoints a process
/// ever sees (a few dozen bytes per pod IP on Kubernetes).
pub fn intern(addr: &str) -> &'static str {
    static ADDRS: std::sync::Mutex<BTreeSet<&'static str>> = std::sync::Mutex::new(BTreeSet::new());
    let mut addrs = ADDRS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(known) = addrs.get(addr) {
        return known;
    }
    let leaked: &'static str = Box::leak(addr.to_owned().into_boxed_str());
    addrs.insert(leaked);
    leaked
}

/// A resolver for `dns:///` entries: the configured name server, else the system's.
pub fn resolver(settings: &DiscoverySettings) -> crate::Result<TokioResolver> {
    let mut builder = match settings.nameserver {
        Some(ns) => {
            let mut server = NameServerConfig::udp_and_tcp(ns.ip());
            for c in &mut server.connections {
                c.port = ns.port();
            }
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, Vec::new(), vec![server]),
                TokioRuntimeProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio().map_err(|e| {
            crate::Error::Config(format!(
                "cannot read the system's DNS configuration for dns:/// upstreams: {e}"
            ))
        })?,
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    // Never keep an answer longer than the refresh period: a scale-out must be seen
    // within it whatever TTL the records carry.
    opts.positive_max_ttl = Some(settings.refresh);
    opts.negative_max_ttl = Some(settings.refresh);
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 2;
    builder
        .build()
        .map_err(|e| crate::Error::Config(format!("cannot build the DNS resolver: {e}")))
}

/// Fills `endpoints` from `entries` and keeps it current: fixed entries once, `dns:///`
/// entries by a task that re-resolves them (see the module docs) until the endpoint set
/// is dropped. `make` builds an endpoint for an address seen for the first time.
pub fn start<S>(
    endpoints: &Arc<Endpoints<S>>,
    entries: Vec<Entry>,
    settings: &DiscoverySettings,
    make: impl FnMut(&'static str) -> Endpoint<S> + Send + 'static,
) -> crate::Result<()>
where
    S: Send + Sync + 'static,
{
    let names: Vec<(String, u16)> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Dns { name, port } => Some((name.clone(), *port)),
            Entry::Fixed(_) => None,
        })
        .collect();
    let fixed: Vec<&'static str> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Fixed(uri) => Some(intern(uri)),
            Entry::Dns { .. } => None,
        })
        .collect();
    let mut make = make;
    if names.is_empty() {
        endpoints.set_addrs(&fixed, &mut make);
        return Ok(());
    }
    let resolver = resolver(settings)?;
    let refresh = settings.refresh;
    let weak = Arc::downgrade(endpoints);
    let wake = endpoints.unreachable_signal();
    tokio::spawn(async move {
        let mut known: Vec<Vec<&'static str>> = vec![Vec::new(); names.len()];
        let mut last = Instant::now();
        loop {
            for (i, (name, port)) in names.iter().enumerate() {
                match resolver.lookup_ip(name.as_str()).await {
                    Ok(lookup) => {
                        let mut addrs: Vec<&'static str> = lookup
                            .iter()
                            .map(|ip| intern(&uri_of(SocketAddr::new(ip, *port))))
                            .collect();
                        addrs.sort_unstable();
                        addrs.dedup();
                        known[i] = addrs;
                    }
                    Err(e) => tracing::warn!(
                        name = %name,
                        error = %e,
                        kept = known[i].len(),
                        "cannot resolve upstream name; keeping the addresses it had"
                    ),
                }
            }
            let Some(table) = Weak::upgrade(&weak) else {
                return;
            };
            let mut all = fixed.clone();
            for addrs in &known {
                for a in addrs {
                    if !all.contains(a) {
                        all.push(a);
                    }
                }
            }
            let (added, removed) = table.set_addrs(&all, &mut make);
            if !added.is_empty() || !removed.is_empty() {
                tracing::info!(
                    upstream = table.upstream(),
                    ?added,
                    ?removed,
                    endpoints = all.len(),
                    "upstream endpoints changed"
                );
            }
            drop(table);
            // Until the timer, or an unreachable endpoint (but not more often than
            // MIN_RESOLVE_GAP); a dropped endpoint set ends the task at the next round.
            let next = last + refresh;
            tokio::select! {
                () = tokio::time::sleep_until(next.into()) => {}
                () = wake.notified() => {
                    tokio::time::sleep_until((last + MIN_RESOLVE_GAP).into()).await;
                }
            }
            last = Instant::now();
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse() {
        assert_eq!(
            Entry::parse("dns:///products-headless.stockmesh.svc:50052").unwrap(),
            Entry::Dns {
                name: "products-headless.stockmesh.svc".into(),
                port: 50052
            }
        );
        assert_eq!(
            Entry::parse(" 127.0.0.1:50052 ").unwrap(),
            Entry::Fixed("http://127.0.0.1:50052".into())
        );
        assert_eq!(
            Entry::parse("http://[::1]:50052").unwrap(),
            Entry::Fixed("http://[::1]:50052".into())
        );
        for bad in [
            "dns:///name",
            "dns:///:80",
            "dns:///name:0",
            "dns:///name:99999",
            "dns://8.8.8.8/name:80",
            "",
        ] {
            let err = Entry::parse(bad).unwrap_err().to_string();
            assert!(err.contains("bad upstream address"), "{bad}: {err}");
        }
    }

    #[test]
    fn uris_bracket_ipv6() {
        assert_eq!(
            uri_of("[fd00::1]:50052".parse().unwrap()),
            "http://[fd00::1]:50052"
        );
        assert_eq!(uri_of("10.0.0.7:1".parse().unwrap()), "http://10.0.0.7:1");
    }

    #[test]
    fn interning_returns_one_copy() {
        let a = intern(&String::from("http://10.1.2.3:4"));
        let b = intern("http://10.1.2.3:4");
        assert!(std::ptr::eq(a, b));
    }
}
