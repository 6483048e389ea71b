//! Discovery: where a pool's endpoints come from past one machine. An
//! endpoint given by name is re-resolved (A/AAAA, `dns.rs`) within its TTL's
//! floor and ceiling, and the pool becomes the addresses the name has now, as
//! a pool update (no reload); an SRV name can make a whole pool. With the
//! `kubernetes` feature, a service's pools (one per shard, named by a label)
//! follow the EndpointSlices of a Kubernetes Service (`kubernetes.rs`).
//! The guardrails are here, one for both: an answer that would
//! take more than `max_drop` of a pool away, an empty answer, NXDOMAIN, a
//! failing resolver or API server is held while the last known set keeps serving (a
//! shrink is applied once it has held for `max_stale`), and discovery alone
//! never empties a pool. Every hold is counted, logged and shown with its age.

pub mod dns;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A pool's discovery settings (`dns = { ... }` on its service).
#[derive(Clone, Debug, PartialEq)]
pub struct DnsPolicy {
    /// An SRV name whose targets (and their ports) are the whole pool.
    pub srv: Option<String>,
    /// The resolver asked; the system's (`/etc/resolv.conf`) when `None`.
    pub resolver: Option<SocketAddr>,
    /// A name is asked again after its TTL, but not sooner than `min_ttl`
    /// nor later than `max_ttl`; after a failure, after `min_ttl`.
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    pub guard: Guardrails,
}

impl Default for DnsPolicy {
    fn default() -> Self {
        DnsPolicy {
            srv: None,
            resolver: None,
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(300),
            guard: Guardrails::default(),
        }
    }
}

/// What one answer may change of a pool, whatever it came from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Guardrails {
    /// The largest share of a pool one answer may take away at once (0.5).
    pub max_drop: f64,
    /// How long a held shrink waits before it is applied anyway.
    pub max_stale: Duration,
}

impl Default for Guardrails {
    fn default() -> Self {
        Guardrails { max_drop: 0.5, max_stale: Duration::from_secs(300) }
    }
}

/// A service's pools from the EndpointSlices of a Kubernetes Service
/// (`kubernetes = { ... }` on the service).
#[derive(Clone, Debug, PartialEq)]
pub struct KubePolicy {
    /// `http(s)://HOST:PORT` of the API server.
    pub api_server: http::Uri,
    pub namespace: String,
    /// A bearer token file, re-read as it rotates.
    pub token_file: Option<std::path::PathBuf>,
    /// The API server's CA bundle (PEM).
    pub ca: Option<std::path::PathBuf>,
    /// The slices watched: `kubernetes.io/service-name=NAME`, or the
    /// selector given.
    pub selector: String,
    /// A sharded service: the label whose value names a slice's shard.
    pub shard_label: Option<String>,
    /// The slice port endpoints are reached on; the slice's only port when `None`.
    pub port: Option<KubePort>,
    pub guard: Guardrails,
}

/// A slice port by name (`"http"`) or by number.
#[derive(Clone, Debug, PartialEq)]
pub enum KubePort {
    Name(String),
    Number(u16),
}

/// Why an answer was not applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// The name does not exist (NXDOMAIN).
    NoSuchName,
    /// The resolver failed or did not answer (SERVFAIL, timeout).
    ResolverFailed,
    /// The name exists with no address.
    Empty,
    /// The answer would take more than `max_drop` of the pool away.
    TooLargeADrop,
    /// The Kubernetes API server failed or did not answer.
    ApiFailed,
}

impl Hold {
    pub const ALL: [Hold; 5] = [Hold::NoSuchName, Hold::ResolverFailed, Hold::Empty, Hold::TooLargeADrop, Hold::ApiFailed];

    pub fn reason(self) -> &'static str {
        match self {
            Hold::NoSuchName => "nxdomain",
            Hold::ResolverFailed => "resolver_failed",
            Hold::Empty => "empty",
            Hold::TooLargeADrop => "max_drop",
            Hold::ApiFailed => "api_failed",
        }
    }
}

/// What one answer does to a pool.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// The pool becomes this set.
    Apply(Vec<SocketAddr>),
    /// The last set keeps serving.
    Hold(Hold),
}

/// Judges `answer` (the addresses the pool's names have now, or why there
/// are none) against the `last` set applied; `held_since` is when the
/// current hold began, if one is on.
pub fn judge(
    p: &Guardrails,
    last: &[SocketAddr],
    answer: Result<Vec<SocketAddr>, Hold>,
    held_since: Option<Instant>,
    now: Instant,
) -> Verdict {
    let mut new = match answer {
        Err(why) => return Verdict::Hold(why),
        Ok(v) if v.is_empty() => return Verdict::Hold(Hold::Empty),
        Ok(v) => v,
    };
    new.sort();
    new.dedup();
    if last.is_empty() {
        return Verdict::Apply(new);
    }
    let kept = last.iter().filter(|a| new.contains(a)).count();
    let dropped = (last.len() - kept) as f64 / last.len() as f64;
    if dropped > p.max_drop && held_since.is_none_or(|t| now.duration_since(t) < p.max_stale) {
        return Verdict::Hold(Hold::TooLargeADrop);
    }
    Verdict::Apply(new)
}

/// What the dashboard and the metrics show of one pool's discovery.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PoolStatus {
    /// The names asked, as `host:port`.
    pub names: Vec<String>,
    /// The addresses serving now.
    pub endpoints: Vec<String>,
    pub updates: u64,
    /// Holds by reason.
    pub holds: BTreeMap<&'static str, u64>,
    /// The hold on now and how long it has lasted.
    pub held: Option<&'static str>,
    pub held_seconds: f64,
    /// Seconds until the next question.
    pub next_in_seconds: f64,
}

/// Every discovered pool's status, by pool (`service` or `service/shard`):
/// written by the discovery task, read by the admin listener.
#[derive(Default)]
pub struct Statuses(Mutex<BTreeMap<String, PoolStatus>>);

impl Statuses {
    pub fn set(&self, pool: &str, status: PoolStatus) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(pool.to_string(), status);
    }

    pub fn remove(&self, pool: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(pool);
    }

    /// A copy of every pool's status.
    pub fn all(&self) -> BTreeMap<String, PoolStatus> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// `host:port` when `address` names a host rather than an IP address.
pub fn name_of(address: &str) -> Option<(String, u16)> {
    if address.parse::<SocketAddr>().is_ok() {
        return None;
    }
    let (host, port) = address.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty() && host.parse::<std::net::IpAddr>().is_err()).then(|| (host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn failures_and_empty_answers_hold_and_small_changes_apply() {
        let p = Guardrails::default();
        let now = Instant::now();
        let last = [a("10.0.0.1:80"), a("10.0.0.2:80"), a("10.0.0.3:80"), a("10.0.0.4:80")];
        assert_eq!(judge(&p, &last, Err(Hold::NoSuchName), None, now), Verdict::Hold(Hold::NoSuchName));
        assert_eq!(judge(&p, &last, Err(Hold::ResolverFailed), None, now), Verdict::Hold(Hold::ResolverFailed));
        assert_eq!(judge(&p, &last, Ok(vec![]), None, now), Verdict::Hold(Hold::Empty));
        // Two of four gone: 50%, not more than max_drop.
        let half = vec![a("10.0.0.2:80"), a("10.0.0.1:80"), a("10.0.0.9:80")];
        assert_eq!(judge(&p, &last, Ok(half), None, now), Verdict::Apply(vec![a("10.0.0.1:80"), a("10.0.0.2:80"), a("10.0.0.9:80")]));
        // The first answer is applied whatever it is.
        assert_eq!(judge(&p, &[], Ok(vec![a("10.0.0.5:80")]), None, now), Verdict::Apply(vec![a("10.0.0.5:80")]));
    }

    #[test]
    fn a_large_drop_holds_until_max_stale_and_never_empties() {
        let p = Guardrails { max_stale: Duration::from_secs(60), ..Guardrails::default() };
        let now = Instant::now();
        let last = [a("10.0.0.1:80"), a("10.0.0.2:80"), a("10.0.0.3:80"), a("10.0.0.4:80")];
        let one = || Ok(vec![a("10.0.0.1:80")]);
        assert_eq!(judge(&p, &last, one(), None, now), Verdict::Hold(Hold::TooLargeADrop));
        assert_eq!(judge(&p, &last, one(), Some(now), now + Duration::from_secs(59)), Verdict::Hold(Hold::TooLargeADrop));
        assert_eq!(judge(&p, &last, one(), Some(now), now + Duration::from_secs(60)), Verdict::Apply(vec![a("10.0.0.1:80")]));
        // However long it lasts, an empty answer is never applied.
        assert_eq!(judge(&p, &last, Ok(vec![]), Some(now), now + Duration::from_secs(3600)), Verdict::Hold(Hold::Empty));
    }

    #[test]
    fn names_are_told_from_addresses() {
        assert_eq!(name_of("app.internal:8080"), Some(("app.internal".into(), 8080)));
        assert_eq!(name_of("10.0.0.1:80"), None);
        assert_eq!(name_of("[::1]:80"), None);
        assert_eq!(name_of("app.internal"), None);
    }
}
