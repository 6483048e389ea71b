//! Ketama rings: members own points on a circle; a key goes to the first point
//! at or after its hash.
//!
//! `Ketama` is ringmaster's own: 160 points per unit of weight, placed by XXH3 on
//! a 64-bit circle. `TwemproxyKetama` reproduces twemproxy's
//! `distribution: ketama` exactly (MD5 points on a 32-bit circle, points per
//! member computed in single-precision as nutcracker does), so that keys stay
//! where an existing memcached deployment put them.

use super::{Member, Visit};
use crate::hash::{md5_u32, xxh3_seeded, KeyHash};

/// Points per unit of weight.
pub const POINTS: u32 = 160;
const POINT_SEED: u64 = 0x6b65_7461_6d61_7074; // "ketamapt"

/// Points on a circle, sorted, each owned by a member.
#[derive(Clone)]
struct Continuum<P> {
    points: Vec<(P, u32)>,
    members: usize,
}

impl<P: Copy + Ord + Into<f64>> Continuum<P> {
    fn new(mut points: Vec<(P, u32)>, members: usize) -> Self {
        points.sort_unstable();
        Continuum { points, members }
    }

    /// The first point at or after `hash`, wrapping to the first.
    #[inline]
    fn first_at_or_after(&self, hash: P) -> usize {
        let i = self.points.partition_point(|&(p, _)| p < hash);
        if i == self.points.len() {
            0
        } else {
            i
        }
    }

    #[inline]
    fn locate(&self, hash: P) -> usize {
        self.points[self.first_at_or_after(hash)].1 as usize
    }

    fn walk(&self, hash: P, visit: &mut Visit) -> Option<Option<usize>> {
        let start = self.first_at_or_after(hash);
        let n = self.points.len();
        (0..n).find_map(|k| visit(self.points[(start + k) % n].1 as usize))
    }

    /// Each member's share: a point owns the arc from the previous point to
    /// itself, on a circle of size `space`.
    fn shares(&self, space: f64) -> Vec<f64> {
        let mut shares = vec![0f64; self.members];
        let Some(&(last, _)) = self.points.last() else { return shares };
        let mut prev = last.into() - space;
        for &(p, m) in &self.points {
            let p: f64 = p.into();
            shares[m as usize] += (p - prev) / space;
            prev = p;
        }
        shares
    }
}

/// A u64 point as f64 for share arithmetic (exactness is not needed there).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct P64(u64);

impl From<P64> for f64 {
    fn from(p: P64) -> f64 {
        p.0 as f64
    }
}

#[derive(Clone)]
pub struct Ketama {
    ring: Continuum<P64>,
}

impl Ketama {
    pub fn new(members: &[Member]) -> Ketama {
        let mut points = Vec::with_capacity(members.iter().map(|m| (m.weight.max(1) * POINTS) as usize).sum());
        for (i, m) in members.iter().enumerate() {
            for p in 0..m.weight.max(1) * POINTS {
                let label = format!("{}-{p}", m.name);
                points.push((P64(xxh3_seeded(label.as_bytes(), POINT_SEED)), i as u32));
            }
        }
        Ketama { ring: Continuum::new(points, members.len()) }
    }

    pub fn members(&self) -> usize {
        self.ring.members
    }

    #[inline]
    pub fn locate(&self, hash: u64) -> usize {
        self.ring.locate(P64(hash))
    }

    pub(super) fn walk(&self, hash: u64, visit: &mut Visit) -> Option<Option<usize>> {
        self.ring.walk(P64(hash), visit)
    }

    pub fn shares(&self) -> Vec<f64> {
        self.ring.shares(18_446_744_073_709_551_616.0)
    }
}

#[derive(Clone)]
pub struct TwemproxyKetama {
    ring: Continuum<u32>,
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
        TwemproxyKetama { ring: Continuum::new(points, members.len()), key_hash }
    }

    pub fn members(&self) -> usize {
        self.ring.members
    }

    #[inline]
    pub fn locate(&self, hash: u32) -> usize {
        self.ring.locate(hash)
    }

    pub(super) fn walk(&self, hash: u32, visit: &mut Visit) -> Option<Option<usize>> {
        self.ring.walk(hash, visit)
    }

    pub fn shares(&self) -> Vec<f64> {
        self.ring.shares(4_294_967_296.0)
    }
}
