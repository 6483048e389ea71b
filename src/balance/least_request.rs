//! Least request by the power of two choices: draw two endpoints at random and
//! send to the one with fewer requests in flight per unit of weight.

use super::{random_ok, Members};

pub struct LeastRequest;

impl LeastRequest {
    pub fn pick<M: Members + ?Sized>(&self, eps: &M, ok: &dyn Fn(usize) -> bool) -> Option<usize> {
        let a = random_ok(eps.count(), ok)?;
        let Some(b) = random_ok(eps.count(), &|i| i != a && ok(i)) else {
            return Some(a);
        };
        // Compare in_flight/weight without division.
        let load = |i: usize| eps.load(i) as u64;
        let (la, lb) = (load(a) * eps.weight(b) as u64, load(b) * eps.weight(a) as u64);
        Some(if lb < la { b } else { a })
    }
}
