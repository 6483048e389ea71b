//! Balancers: pick an endpoint of a pool for one request.
//!
//! A balancer sees the pool's endpoints and a filter (healthy and not yet tried
//! by this request) and returns an index. Each keeps only atomics, so picks from
//! every worker thread run without locks.

pub mod cookie;
pub mod hash;
mod least_request;
mod random;
mod round_robin;

pub use cookie::CookieBalancer;
pub use hash::HashBalancer;
pub use least_request::LeastRequest;
pub use random::WeightedRandom;
pub use round_robin::RoundRobin;

pub use crate::key::MissingKey;
pub use cookie::CookieSettings;
pub use hash::HashSettings;

use crate::key::Fallback;
use crate::ring::Member;

/// The balancer of a pool, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BalancerKind {
    RoundRobin,
    Random,
    LeastRequest,
    /// Consistent hashing of a request key, with bounded load.
    Hash,
    /// Affinity by a cookie the proxy sets.
    Cookie,
}

/// The least share a new endpoint gets during slow start (as Envoy's default 10%).
const RAMP_FLOOR: f64 = 0.1;

/// Slow start: whether an endpoint that joined at `joined_ms` (0: from the
/// start) takes a pick at `now_ms`, its chance growing linearly from 10% to
/// 100% over `slow_ms`, as HAProxy's `slowstart` grows a server's weight.
pub fn ramp_passes(joined_ms: u64, now_ms: u64, slow_ms: u64) -> bool {
    let age = now_ms.saturating_sub(joined_ms);
    if joined_ms == 0 || age >= slow_ms {
        return true;
    }
    fastrand::f64() < (age as f64 / slow_ms as f64).max(RAMP_FLOOR)
}

/// What a balancer reads of a pool's endpoints, by index: how many there are,
/// their weights and the requests each has in flight.
pub trait Members {
    fn count(&self) -> usize;
    fn weight(&self, i: usize) -> u32;
    fn load(&self, i: usize) -> u32;
}

pub enum Balancer {
    RoundRobin(RoundRobin),
    Random(WeightedRandom),
    LeastRequest(LeastRequest),
    Hash(HashBalancer),
    Cookie(CookieBalancer, CookieSettings),
}

/// What a request brings to an affinity balancer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Affinity {
    /// The hash of the request's key (hash balancer).
    pub hash: Option<u64>,
    /// The value of the affinity cookie (cookie balancer).
    pub cookie: Option<u64>,
    /// No affinity at all: any available endpoint at random (a hot key's
    /// reads spread over every replica of its shard).
    pub spread: bool,
}

impl Balancer {
    /// The balancer of a pool whose endpoints are `members` (stable names, weights);
    /// `salt` is the service name, which keys cookie values.
    pub fn new(
        kind: BalancerKind,
        members: &[Member],
        hash: Option<&HashSettings>,
        cookie: Option<&CookieSettings>,
        salt: &str,
    ) -> Balancer {
        let weights: Vec<u32> = members.iter().map(|m| m.weight).collect();
        match kind {
            BalancerKind::RoundRobin => Balancer::RoundRobin(RoundRobin::new(&weights)),
            BalancerKind::Random => Balancer::Random(WeightedRandom::new(&weights)),
            BalancerKind::LeastRequest => Balancer::LeastRequest(LeastRequest),
            BalancerKind::Hash => Balancer::Hash(HashBalancer::new(&hash.cloned().unwrap_or_default(), members)),
            BalancerKind::Cookie => {
                let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
                Balancer::Cookie(CookieBalancer::new(&names, &weights, salt), cookie.cloned().unwrap_or_default())
            }
        }
    }

    /// Picks an endpoint index among those for which `ok(i)` holds; the bool
    /// asks for the affinity cookie to be set on the response.
    pub fn pick<M: Members + ?Sized>(
        &self,
        eps: &M,
        ok: &dyn Fn(usize) -> bool,
        a: &Affinity,
        pool_in_flight: usize,
    ) -> Option<(usize, bool)> {
        if a.spread {
            return random_ok(eps.count(), ok).map(|i| (i, false));
        }
        match self {
            Balancer::RoundRobin(b) => b.pick(ok).map(|i| (i, false)),
            Balancer::Random(b) => b.pick(ok).map(|i| (i, false)),
            Balancer::LeastRequest(b) => b.pick(eps, ok).map(|i| (i, false)),
            Balancer::Hash(b) => b.pick(eps, ok, a.hash, pool_in_flight).map(|i| (i, false)),
            Balancer::Cookie(b, _) => b.pick(ok, a.cookie),
        }
    }
}

/// Takes from a request what `balancer` needs: the hash of its key, or its
/// affinity cookie.
pub fn affinity(balancer: &Balancer, head: &http::request::Parts, client: std::net::IpAddr) -> Result<Affinity, MissingKey> {
    match balancer {
        Balancer::Hash(b) => {
            let rule = &b.spec.rule;
            if rule.key == crate::key::KeySpec::ClientIp {
                // The common case, hashed from the stack.
                let h = match client {
                    std::net::IpAddr::V4(v4) => b.hash(&v4.octets()),
                    std::net::IpAddr::V6(v6) => b.hash(&v6.octets()),
                };
                return Ok(Affinity { hash: Some(h), ..Affinity::default() });
            }
            match (rule.extract(head, client), rule.fallback) {
                (Some(k), _) => Ok(Affinity { hash: Some(b.hash(&k)), ..Affinity::default() }),
                (None, Fallback::Reject) => Err(rule.missing()),
                (None, _) => Ok(Affinity::default()),
            }
        }
        Balancer::Cookie(_, spec) => {
            let cookie = crate::key::cookie(&head.headers, &spec.name).and_then(CookieBalancer::parse);
            Ok(Affinity { cookie, ..Affinity::default() })
        }
        _ => Ok(Affinity::default()),
    }
}

/// The Set-Cookie value that pins a client to endpoint `index`, if `balancer` pins.
pub fn pin_cookie(balancer: &Balancer, index: usize, secure: bool) -> Option<http::HeaderValue> {
    let Balancer::Cookie(b, spec) = balancer else { return None };
    let mut v = format!("{}={}; Path={}; HttpOnly", spec.name, CookieBalancer::format(b.values[index]), spec.path);
    if let Some(ttl) = spec.ttl {
        v.push_str(&format!("; Max-Age={}", ttl.as_secs()));
    }
    if secure {
        v.push_str("; Secure");
    }
    http::HeaderValue::from_str(&v).ok()
}

/// A random index in `0..n` for which `ok` holds: a few random draws, then a
/// scan from a random start so that a mostly-filtered pool still finds one.
pub fn random_ok(n: usize, ok: &dyn Fn(usize) -> bool) -> Option<usize> {
    if n == 0 {
        return None;
    }
    for _ in 0..4 {
        let i = fastrand::usize(..n);
        if ok(i) {
            return Some(i);
        }
    }
    let start = fastrand::usize(..n);
    (0..n).map(|k| (start + k) % n).find(|&i| ok(i))
}
