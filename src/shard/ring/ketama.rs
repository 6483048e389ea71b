//! Ketama rings: members own points on a circle; a key goes to the first point
//! at or after its hash.
//!
//! `Ketama` is ringmaster's own: 160 points per unit of weight, placed by XXH3 on
//! a 64-bit circle. `TwemproxyKetama` reproduces twemproxy's
//! `distribution: ketama` exactly (MD5 points on a 32-bit circle, points per
//! member computed in single-precision as nutcracker does), so that keys stay
//! where an existing memcached deployment put them.

use super::{Member, Visit};
use crate::shard::hash::{md5_u32, xxh3_seeded, KeyHash};

/// Points per unit of weight.
pub const POINTS: u32 = 160;
const POINT_SEED: u64 = 0x6b65_7461_6d61_7074; // "ketamapt"

pub struct Ketama {
    /// (point, member), sorted by point.
    points: Vec<(u64, u32)>,
    members: usize,
}

impl Ketama {
    pub fn new(members: &[Member]) -> Ketama {
        let mut points = Vec::with_capacity(members.iter().map(|m| (m.weight.max(1) * POINTS) as usize).sum());
        for (i, m) in members.iter().enumerate() {
            for p in 0..m.weight.max(1) * POINTS {
                let label = format!("{}-{p}", m.name);
                points.push((xxh3_seeded(label.as_bytes(), POINT_SEED), i as u32));
            }
        }
        points.sort_unstable();
        Ketama { points, members: members.len() }
    }

    pub fn members(&self) -> usize {
        self.members
    }

    #[inline]
    fn first_at_or_after(&self, hash: u64) -> usize {
        let i = self.points.partition_point(|&(p, _)| p < hash);
        if i == self.points.len() {
            0
        } else {
            i
        }
    }

    #[inline]
    pub fn locate(&self, hash: u64) -> usize {
        self.points[self.first_at_or_after(hash)].1 as usize
    }

    pub(super) fn walk(&self, hash: u64, visit: &mut Visit) -> Option<Option<usize>> {
        let start = self.first_at_or_after(hash);
        let n = self.points.len();
        (0..n).find_map(|k| visit(self.points[(start + k) % n].1 as usize))
    }

    pub fn shares(&self) -> Vec<f64> {
        arc_shares(self.points.iter().map(|&(p, m)| (p as f64, m)), self.members, 18_446_744_073_709_551_616.0)
    }
}

/// Shares of a circle of size `space` owned through sorted `(point, member)`
/// pairs: each point owns the arc from the previous point to itself.
fn arc_shares(points: impl Iterator<Item = (f64, u32)> + Clone, members: usize, space: f64) -> Vec<f64> {
    let mut shares = vec![0f64; members];
    let last = points.clone().last().map(|p| p.0);
    let mut prev = match last {
        Some(l) => l - space,
        None => return shares,
    };
    for (p, m) in points {
        shares[m as usize] += (p - prev) / space;
        prev = p;
    }
    shares
}

pub struct TwemproxyKetama {
    /// (point, member), sorted by point.
    points: Vec<(u32, u32)>,
    members: usize,
    pub key_hash: KeyHash,
}

impl TwemproxyKetama {
    /// Builds the continuum as nutcracker's `ketama_update` does with every
    /// server live. Member names are twemproxy's server names: the name given in
    /// its config, or `host:port` (just `host` when the port is 11211).
    pub fn new(members: &[Member], key_hash: KeyHash) -> TwemproxyKetama {
        let total: u32 = members.iter().map(|m| m.weight).sum();
        let live = members.len() as f32;
        let mut points = Vec::new();
        for (i, m) in members.iter().enumerate() {
            let pct = m.weight as f32 / total as f32;
            // (uint32_t)(floorf((float)(pct * 160 / 4 * (float)nlive + 1e-10)) * 4)
            let per = ((((pct * POINTS as f32 / 4.0 * live) as f64 + 0.000_000_000_1) as f32).floor() * 4.0) as u32;
            for index in 1..=per / 4 {
                let label = format!("{}-{}", m.name, index - 1);
                for x in 0..4 {
                    points.push((md5_u32(label.as_bytes(), x), i as u32));
                }
            }
        }
        // nutcracker sorts by value alone (qsort); ties between members are
        // vanishingly rare on a 32-bit circle and resolved here by member index.
        points.sort_unstable();
        TwemproxyKetama { points, members: members.len(), key_hash }
    }

    pub fn members(&self) -> usize {
        self.members
    }

    #[inline]
    fn first_at_or_after(&self, hash: u32) -> usize {
        let i = self.points.partition_point(|&(p, _)| p < hash);
        if i == self.points.len() {
            0
        } else {
            i
        }
    }

    #[inline]
    pub fn locate(&self, hash: u32) -> usize {
        self.points[self.first_at_or_after(hash)].1 as usize
    }

    pub(super) fn walk(&self, hash: u32, visit: &mut Visit) -> Option<Option<usize>> {
        let start = self.first_at_or_after(hash);
        let n = self.points.len();
        (0..n).find_map(|k| visit(self.points[(start + k) % n].1 as usize))
    }

    pub fn shares(&self) -> Vec<f64> {
        arc_shares(self.points.iter().map(|&(p, m)| (p as f64, m)), self.members, 4_294_967_296.0)
    }
}
