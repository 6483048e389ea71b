//! Weighted random choice.

use super::random_ok;

pub struct WeightedRandom {
    /// Cumulative weights; the last one is the total.
    cumulative: Vec<u64>,
}

impl WeightedRandom {
    pub fn new(weights: &[u32]) -> WeightedRandom {
        let mut sum = 0u64;
        let cumulative = weights
            .iter()
            .map(|&w| {
                sum += w as u64;
                sum
            })
            .collect();
        WeightedRandom { cumulative }
    }

    pub fn pick(&self, ok: &dyn Fn(usize) -> bool) -> Option<usize> {
        let total = *self.cumulative.last()?;
        let r = fastrand::u64(..total);
        let i = self.cumulative.partition_point(|&c| c <= r);
        if ok(i) {
            return Some(i);
        }
        random_ok(self.cumulative.len(), ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn respects_weights() {
        let b = WeightedRandom::new(&[1, 3]);
        let mut counts = [0u32; 2];
        for _ in 0..40_000 {
            counts[b.pick(&|_| true).unwrap()] += 1;
        }
        let share = counts[1] as f64 / 40_000.0;
        assert!((0.72..0.78).contains(&share), "{counts:?}");
    }
}
