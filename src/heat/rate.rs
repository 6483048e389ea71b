//! A rate measured off the hot path: requests only bump the counters they
//! already had, and the heat tick, once a second, turns each counter's growth
//! into an exponentially weighted moving average with the configured window
//! as its time constant.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The weight a new sample gets after `dt` with time constant `window`.
pub fn alpha(dt: Duration, window: Duration) -> f64 {
    1.0 - (-dt.as_secs_f64() / window.as_secs_f64().max(1e-3)).exp()
}

/// An EWMA of a counter's growth per second. Written by the heat tick only.
#[derive(Default)]
pub struct Rate {
    /// The rate per second, as f64 bits.
    per_s: AtomicU64,
    /// The counter at the last tick, once `started`.
    last: AtomicU64,
    started: std::sync::atomic::AtomicBool,
}

impl Rate {
    /// Folds the counter's value `total` after `dt` into the average.
    pub fn tick(&self, total: u64, dt: Duration, window: Duration) {
        let last = self.last.swap(total, Relaxed);
        if !self.started.swap(true, Relaxed) || dt.is_zero() {
            return;
        }
        let now = total.saturating_sub(last) as f64 / dt.as_secs_f64();
        let old = self.get();
        self.per_s.store((old + alpha(dt, window) * (now - old)).to_bits(), Relaxed);
    }

    /// Per second, over about the window.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.per_s.load(Relaxed))
    }
}

/// The hottest of `rates` over their mean (1 when even, 0 when idle).
pub fn skew(rates: &[f64]) -> f64 {
    let sum: f64 = rates.iter().sum();
    if rates.is_empty() || sum <= 0.0 {
        return 0.0;
    }
    rates.iter().copied().fold(0.0, f64::max) / (sum / rates.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converges_to_a_steady_rate_and_follows_a_change() {
        let (r, s, w) = (Rate::default(), Duration::from_secs(1), Duration::from_secs(5));
        let mut total = 0;
        for _ in 0..60 {
            total += 100;
            r.tick(total, s, w);
        }
        assert!((r.get() - 100.0).abs() < 1.0, "{}", r.get());
        // After one window at 0, about 1/e of it is left.
        for _ in 0..5 {
            r.tick(total, s, w);
        }
        assert!((30.0..45.0).contains(&r.get()), "{}", r.get());
    }

    #[test]
    fn the_first_tick_only_sets_the_base() {
        let r = Rate::default();
        r.tick(1_000_000, Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(r.get(), 0.0);
    }

    #[test]
    fn skew_is_hottest_over_mean() {
        assert_eq!(skew(&[10.0, 10.0, 10.0]), 1.0);
        assert_eq!(skew(&[30.0, 0.0, 0.0]), 3.0);
        assert_eq!(skew(&[0.0, 0.0]), 0.0);
        assert_eq!(skew(&[]), 0.0);
    }
}
