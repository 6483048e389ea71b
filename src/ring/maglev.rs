//! Maglev (Eisenbud et al., NSDI 2016): each member fills slots of a lookup
//! table of prime size in the order of its own permutation, taking turns in
//! proportion to its weight. A key goes to `table[hash]`.

use super::{Member, Visit};
use crate::hash::{reduce, xxh3_seeded};

const OFFSET_SEED: u64 = 0x6d61_676c_6576_6f66; // "maglevof"
const SKIP_SEED: u64 = 0x6d61_676c_6576_736b; // "maglevsk"

/// Most members a maglev ring takes (16-bit table entries).
pub const MAX_MEMBERS: usize = u16::MAX as usize;

#[derive(Clone)]
pub struct Maglev {
    table: Vec<u16>,
    members: usize,
}

/// The smallest prime at least `n`.
pub fn next_prime(mut n: usize) -> usize {
    fn is_prime(n: usize) -> bool {
        if n < 2 {
            return false;
        }
        let mut d = 2;
        while d * d <= n {
            if n.is_multiple_of(d) {
                return false;
            }
            d += 1;
        }
        true
    }
    while !is_prime(n) {
        n += 1;
    }
    n
}

impl Maglev {
    /// Table size: the first prime above a power of two, from 2^16 to 2^18,
    /// aiming at 1000 slots per member (fewer slots per member move more keys
    /// when membership changes) and never under 100 for up to 2621 members, so
    /// shares differ by at most one slot in a hundred. Sizes come from this
    /// fixed ladder, so a membership change resizes the table (and so moves
    /// every key) only when it crosses a power of two. Entries are 16 bits, so
    /// the largest table (512 KiB) stays in cache.
    pub fn table_size(members: usize) -> usize {
        let want = (members * 1000).clamp(1 << 16, 1 << 18);
        next_prime(want.next_power_of_two())
    }

    pub fn new(members: &[Member]) -> Maglev {
        let n = members.len();
        if n == 0 {
            return Maglev { table: Vec::new(), members: 0 };
        }
        let m = Self::table_size(n);
        let perm: Vec<(u64, u64)> = members
            .iter()
            .map(|mb| {
                let offset = xxh3_seeded(mb.name.as_bytes(), OFFSET_SEED) % m as u64;
                let skip = xxh3_seeded(mb.name.as_bytes(), SKIP_SEED) % (m as u64 - 1) + 1;
                (offset, skip)
            })
            .collect();
        let max_w = members.iter().map(|mb| mb.weight.max(1)).max().unwrap_or(1) as f64;
        let step: Vec<f64> = members.iter().map(|mb| mb.weight.max(1) as f64 / max_w).collect();
        let mut credit = vec![0f64; n];
        let mut next = vec![0u64; n];
        assert!(n <= MAX_MEMBERS, "maglev takes at most {MAX_MEMBERS} members");
        let mut table = vec![u16::MAX; m];
        let mut filled = 0;
        'fill: loop {
            for i in 0..n {
                credit[i] += step[i];
                while credit[i] >= 1.0 {
                    credit[i] -= 1.0;
                    let (offset, skip) = perm[i];
                    let mut c = (offset + next[i] * skip) % m as u64;
                    while table[c as usize] != u16::MAX {
                        next[i] += 1;
                        c = (offset + next[i] * skip) % m as u64;
                    }
                    table[c as usize] = i as u16;
                    next[i] += 1;
                    filled += 1;
                    if filled == m {
                        break 'fill;
                    }
                }
            }
        }
        Maglev { table, members: n }
    }

    pub fn members(&self) -> usize {
        self.members
    }

    #[inline]
    pub fn locate(&self, hash: u64) -> usize {
        self.table[reduce(hash, self.table.len())] as usize
    }

    pub(super) fn walk(&self, hash: u64, visit: &mut Visit) -> Option<Option<usize>> {
        let m = self.table.len();
        let start = reduce(hash, m);
        for k in 0..m {
            if let Some(r) = visit(self.table[(start + k) % m] as usize) {
                return Some(r);
            }
        }
        None
    }

    pub fn shares(&self) -> Vec<f64> {
        let mut c = vec![0usize; self.members];
        for &i in &self.table {
            c[i as usize] += 1;
        }
        c.into_iter().map(|x| x as f64 / self.table.len() as f64).collect()
    }
}
