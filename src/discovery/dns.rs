//! Names re-resolved with hickory-resolver: A and AAAA (and SRV for a
//! whole pool), the answer's TTL
//! kept within the pool's floor and ceiling, and a failure told apart as
//! NXDOMAIN, an empty answer, or a resolver that failed.

use super::{DnsPolicy, Hold};
use hickory_resolver::config::{ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::Resolver;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

pub type DnsResolver = Resolver<TokioRuntimeProvider>;

/// A resolver for `p`: the given server (UDP, then TCP for a truncated
/// answer), or the system's. Answers are not cached beyond their TTL.
pub fn resolver(p: &DnsPolicy) -> Result<DnsResolver, String> {
    let mut builder = match p.resolver {
        Some(at) => {
            let mut udp = ConnectionConfig::udp();
            udp.port = at.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = at.port();
            let mut server = NameServerConfig::udp_and_tcp(at.ip());
            server.connections = vec![udp, tcp];
            Resolver::builder_with_config(ResolverConfig::from_name_servers(vec![server]), TokioRuntimeProvider::default())
        }
        None => Resolver::builder(TokioRuntimeProvider::default()).map_err(|e| format!("the system's resolver configuration: {e}"))?,
    };
    let o = builder.options_mut();
    o.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    o.timeout = Duration::from_secs(2);
    o.attempts = 2;
    // Each pool asks when the TTL says: a cache would only answer for it.
    o.cache_size = 0;
    builder.build().map_err(|e| e.to_string())
}

/// The addresses `host` has now, and how long the answer holds (within the
/// pool's floor and ceiling).
pub async fn lookup(r: &DnsResolver, p: &DnsPolicy, host: &str) -> Result<(Vec<IpAddr>, Duration), Hold> {
    match r.lookup_ip(absolute(host).as_str()).await {
        Ok(found) => {
            let ips: Vec<IpAddr> = found.iter().collect();
            let ttl = ttl(p, found.valid_until());
            if ips.is_empty() {
                Err(Hold::Empty)
            } else {
                Ok((ips, ttl))
            }
        }
        Err(e) => Err(hold(&e)),
    }
}

/// With a trailing dot: the name is absolute, no search domain is tried.
fn absolute(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

/// How long an answer valid until `until` holds, within the pool's bounds.
fn ttl(p: &DnsPolicy, until: Instant) -> Duration {
    until.saturating_duration_since(Instant::now()).clamp(p.min_ttl, p.max_ttl)
}

/// What a failed question holds the pool for.
fn hold(e: &hickory_resolver::net::NetError) -> Hold {
    if e.is_nx_domain() {
        Hold::NoSuchName
    } else if e.is_no_records_found() {
        Hold::Empty
    } else {
        Hold::ResolverFailed
    }
}

/// The addresses of every name, on their ports: one failure fails the
/// whole answer (a pool is never judged on half its names).
pub async fn lookup_all(r: &DnsResolver, p: &DnsPolicy, names: &[(String, u16)]) -> (Result<Vec<SocketAddr>, Hold>, Duration) {
    let mut all = Vec::new();
    let mut ttl = p.max_ttl;
    for (host, port) in names {
        match lookup(r, p, host).await {
            Ok((ips, t)) => {
                ttl = ttl.min(t);
                all.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, *port)));
            }
            Err(why) => return (Err(why), p.min_ttl),
        }
    }
    (Ok(all), ttl)
}

/// The targets and ports an SRV name lists now, and how long the answer holds.
pub async fn lookup_srv(r: &DnsResolver, p: &DnsPolicy, name: &str) -> Result<(Vec<(String, u16)>, Duration), Hold> {
    use hickory_resolver::proto::rr::RData;
    match r.srv_lookup(absolute(name).as_str()).await {
        Ok(found) => {
            let targets: Vec<(String, u16)> = found
                .answers()
                .iter()
                .filter_map(|rec| match &rec.data {
                    RData::SRV(srv) => Some((srv.target.to_string(), srv.port)),
                    _ => None,
                })
                .collect();
            if targets.is_empty() {
                Err(Hold::Empty)
            } else {
                Ok((targets, ttl(p, found.valid_until())))
            }
        }
        Err(e) => Err(hold(&e)),
    }
}
