//! Balancers: pick an endpoint of a pool for one request.
//!
//! A balancer sees the pool's endpoints and a filter (healthy and not yet tried
//! by this request) and returns an index. Each keeps only atomics, so picks from
//! every worker thread run without locks.

mod least_request;
mod random;
mod round_robin;

pub use least_request::LeastRequest;
pub use random::WeightedRandom;
pub use round_robin::RoundRobin;

use crate::config::schema::BalancerKind;
use crate::upstream::Endpoint;
use std::sync::Arc;

pub enum Balancer {
    RoundRobin(RoundRobin),
    Random(WeightedRandom),
    LeastRequest(LeastRequest),
}

impl Balancer {
    pub fn new(kind: BalancerKind, weights: &[u32]) -> Balancer {
        match kind {
            BalancerKind::RoundRobin => Balancer::RoundRobin(RoundRobin::new(weights)),
            BalancerKind::Random => Balancer::Random(WeightedRandom::new(weights)),
            BalancerKind::LeastRequest => Balancer::LeastRequest(LeastRequest),
        }
    }

    /// Picks an endpoint index among those for which `ok(i)` holds.
    pub fn pick(&self, eps: &[Arc<Endpoint>], ok: &dyn Fn(usize) -> bool) -> Option<usize> {
        match self {
            Balancer::RoundRobin(b) => b.pick(ok),
            Balancer::Random(b) => b.pick(ok),
            Balancer::LeastRequest(b) => b.pick(eps, ok),
        }
    }
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
