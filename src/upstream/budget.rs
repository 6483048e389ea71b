//! A pool's retry budget: retries may be at most `budget_percent` of the
//! requests of the last ten seconds, plus `min_per_second` (the model of Finagle
//! and Linkerd). Over a window rather than in flight, a replica that dies with
//! its share of the requests in flight can have all of them retried, while a
//! pool that fails everything stays within a fifth more load.
//!
//! Two ten-second buckets, the current and the previous one; the previous one
//! counts for the part of it still inside the last ten seconds.

use super::policy::Retry;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const WINDOW_MS: u64 = 10_000;

#[derive(Default)]
pub struct RetryBudget {
    /// The window the current bucket counts (`now_ms / WINDOW_MS`).
    window: AtomicU64,
    requests: [AtomicU64; 2],
    retries: [AtomicU64; 2],
}

impl RetryBudget {
    /// The bucket of `now_ms`, emptying the buckets a new window leaves behind.
    fn bucket(&self, now_ms: u64) -> usize {
        let w = now_ms / WINDOW_MS;
        let seen = self.window.load(Relaxed);
        if w > seen && self.window.compare_exchange(seen, w, Relaxed, Relaxed).is_ok() {
            let stale: &[usize] = if w == seen + 1 { &[(w % 2) as usize] } else { &[0, 1] };
            for &i in stale {
                self.requests[i].store(0, Relaxed);
                self.retries[i].store(0, Relaxed);
            }
        }
        (w % 2) as usize
    }

    /// Counts a request (not a retry) sent at `now_ms`.
    pub fn request(&self, now_ms: u64) {
        let i = self.bucket(now_ms);
        self.requests[i].fetch_add(1, Relaxed);
    }

    /// Whether one more retry fits at `now_ms`; if so it is counted.
    pub fn try_retry(&self, now_ms: u64, policy: &Retry) -> bool {
        let i = self.bucket(now_ms);
        let left_of_previous = 1.0 - (now_ms % WINDOW_MS) as f64 / WINDOW_MS as f64;
        let last_ten_seconds = |c: &[AtomicU64; 2]| c[i].load(Relaxed) as f64 + c[1 - i].load(Relaxed) as f64 * left_of_previous;
        let allowed = last_ten_seconds(&self.requests) * policy.budget_percent as f64 / 100.0
            + policy.min_per_second as f64 * (WINDOW_MS / 1000) as f64;
        if last_ten_seconds(&self.retries) + 1.0 > allowed {
            return false;
        }
        self.retries[i].fetch_add(1, Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_a_share_of_recent_requests() {
        let policy = Retry { attempts: 2, budget_percent: 20, min_per_second: 1 };
        let b = RetryBudget::default();
        let t = 5 * WINDOW_MS;
        // No traffic: the floor of 1 per second over ten seconds.
        assert_eq!((0..20).filter(|_| b.try_retry(t, &policy)).count(), 10);
        // 1,000 requests: 200 more.
        (0..1000).for_each(|_| b.request(t));
        assert_eq!((0..400).filter(|_| b.try_retry(t + 1, &policy)).count(), 200);
        // Half a window later the previous bucket counts for half.
        let later = t + WINDOW_MS + WINDOW_MS / 2;
        // 500 requests and 105 retries count: 100 + 10 allowed, 5 more.
        assert_eq!((0..400).filter(|_| b.try_retry(later, &policy)).count(), 5);
        // Long idle: nothing is banked.
        assert_eq!((0..400).filter(|_| b.try_retry(later + 10 * WINDOW_MS, &policy)).count(), 10);
    }
}
