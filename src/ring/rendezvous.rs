//! Rendezvous (highest random weight) hashing: every member scores every key;
//! the highest score wins. Weighted by the logarithmic method (Schindelhauer
//! and Schomaker), so a member's share is its weight over the total.

use super::{Member, Visit};
use crate::hash::{mix64, xxh3_seeded};

const SEED: u64 = 0x7265_6e64_657a_766f; // "rendezvo"

#[derive(Clone)]
pub struct Rendezvous {
    /// Per member: its name's hash and its weight.
    members: Vec<(u64, f64)>,
}

impl Rendezvous {
    pub fn new(members: &[Member]) -> Rendezvous {
        Rendezvous { members: members.iter().map(|m| (xxh3_seeded(m.name.as_bytes(), SEED), m.weight.max(1) as f64)).collect() }
    }

    pub fn members(&self) -> usize {
        self.members.len()
    }

    #[inline]
    fn score(&self, i: usize, hash: u64) -> f64 {
        let (h, w) = self.members[i];
        // A uniform value in (0, 1) from 53 bits of the mixed hash.
        let u = ((mix64(hash ^ h) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        -w / u.ln()
    }

    #[inline]
    pub fn locate(&self, hash: u64) -> usize {
        let mut best = (0, f64::MIN);
        for i in 0..self.members.len() {
            let s = self.score(i, hash);
            if s > best.1 {
                best = (i, s);
            }
        }
        best.0
    }

    pub(super) fn walk(&self, hash: u64, visit: &mut Visit) -> Option<Option<usize>> {
        let mut order: Vec<(f64, usize)> = (0..self.members.len()).map(|i| (self.score(i, hash), i)).collect();
        order.sort_by(|a, b| b.0.total_cmp(&a.0));
        order.into_iter().find_map(|(_, i)| visit(i))
    }
}
