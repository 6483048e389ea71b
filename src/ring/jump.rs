//! Jump consistent hash (Lamping and Veach, 2014): no state at all, perfect
//! balance and minimal movement, but members can only be appended or removed at
//! the end, and weights are not supported.

use super::Visit;
use crate::hash::mix64;

#[derive(Clone)]
pub struct Jump {
    n: usize,
}

/// The bucket of `key` among `n` buckets.
#[inline]
pub fn jump(mut key: u64, n: usize) -> usize {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < n as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as usize
}

impl Jump {
    pub fn new(n: usize) -> Jump {
        Jump { n }
    }

    pub fn members(&self) -> usize {
        self.n
    }

    #[inline]
    pub fn locate(&self, hash: u64) -> usize {
        jump(hash, self.n)
    }

    /// Preference order: the owner, then the owners of the key rehashed.
    pub(super) fn walk(&self, hash: u64, visit: &mut Visit) -> Option<Option<usize>> {
        if let Some(r) = visit(jump(hash, self.n)) {
            return Some(r);
        }
        for k in 1..(4 * self.n as u64 + 8) {
            if let Some(r) = visit(jump(mix64(hash ^ k), self.n)) {
                return Some(r);
            }
        }
        None
    }
}
