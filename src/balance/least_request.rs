//! Least request by the power of two choices: draw two endpoints at random and
//! send to the one with fewer requests in flight per unit of weight.

use super::random_ok;
use crate::upstream::Endpoint;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

pub struct LeastRequest;

impl LeastRequest {
    pub fn pick(&self, eps: &[Arc<Endpoint>], ok: &dyn Fn(usize) -> bool) -> Option<usize> {
        let a = random_ok(eps.len(), ok)?;
        let Some(b) = random_ok(eps.len(), &|i| i != a && ok(i)) else {
            return Some(a);
        };
        // Compare in_flight/weight without division.
        let load = |i: usize| eps[i].stats.in_flight.load(Relaxed) as u64;
        let (la, lb) = (load(a) * eps[b].weight as u64, load(b) * eps[a].weight as u64);
        Some(if lb < la { b } else { a })
    }
}
