//! Smooth weighted round robin.
//!
//! nginx's smooth algorithm needs a lock per pick; here its order is computed
//! once per config (a schedule of `sum(weights)/gcd` slots, interleaved as nginx
//! interleaves them) and an atomic cursor walks it.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

pub struct RoundRobin {
    schedule: Vec<u32>,
    cursor: AtomicUsize,
}

impl RoundRobin {
    pub fn new(weights: &[u32]) -> RoundRobin {
        RoundRobin { schedule: smooth_schedule(weights), cursor: AtomicUsize::new(0) }
    }

    pub fn pick(&self, ok: &dyn Fn(usize) -> bool) -> Option<usize> {
        let n = self.schedule.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Relaxed);
        for k in 0..n {
            let i = self.schedule[(start + k) % n] as usize;
            if ok(i) {
                return Some(i);
            }
        }
        None
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The order nginx's smooth weighted round robin visits endpoints, one cycle long.
pub fn smooth_schedule(weights: &[u32]) -> Vec<u32> {
    if weights.is_empty() {
        return Vec::new();
    }
    let g = weights.iter().copied().fold(0, gcd).max(1);
    let w: Vec<i64> = weights.iter().map(|&x| (x / g) as i64).collect();
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_like_nginx() {
        // nginx's documented example: weights 5,1,1 give a a b a c a a (interleaved).
        assert_eq!(smooth_schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_schedule(&[1, 1, 1]), vec![0, 1, 2]);
        assert_eq!(smooth_schedule(&[2, 2]), vec![0, 1]);
    }

    #[test]
    fn skips_filtered() {
        let rr = RoundRobin::new(&[1, 1, 1]);
        let picks: Vec<usize> = (0..6).map(|_| rr.pick(&|i| i != 1).unwrap()).collect();
        assert!(!picks.contains(&1));
        assert!(picks.contains(&0) && picks.contains(&2));
        assert_eq!(rr.pick(&|_| false), None);
    }
}
