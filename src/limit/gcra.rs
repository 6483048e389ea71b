//! GCRA (the generic cell rate algorithm): a rate limit kept as one number per
//! key, the theoretical arrival time (TAT) of the next request. Exact: the
//! numbers reported to a caller (remaining, reset, retry-after) follow from it.

/// A policy: `rate` requests per `period`, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Nanoseconds between requests at the sustained rate.
    pub interval: u64,
    /// Requests allowed at once.
    pub burst: u64,
    /// For reporting: requests per window, and the window in seconds.
    pub rate: u64,
    pub window_secs: u64,
}

impl Quota {
    pub fn new(rate: u64, period: std::time::Duration, burst: u64) -> Quota {
        let rate = rate.max(1);
        Quota { interval: (period.as_nanos() as u64 / rate).max(1), burst: burst.max(1), rate, window_secs: period.as_secs().max(1) }
    }

    /// Span of the whole burst in nanoseconds.
    fn tolerance(&self) -> u64 {
        self.interval * self.burst
    }
}

/// The outcome of one decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests still allowed right now after this one.
    pub remaining: u64,
    /// Nanoseconds until the full burst is available again.
    pub reset_ns: u64,
    /// When denied: nanoseconds until one request is allowed.
    pub retry_after_ns: u64,
}

/// Decides one request at `now` (ns) for a key whose TAT is `tat` (0 = unseen);
/// returns the decision and the TAT to store (unchanged when denied).
pub fn decide(q: &Quota, tat: u64, now: u64, cost: u64) -> (Decision, u64) {
    let base = tat.max(now);
    let new_tat = base + q.interval * cost;
    let tol = q.tolerance();
    if new_tat - now > tol {
        let retry = new_tat - now - tol;
        let reset = base - now;
        let remaining = (tol - reset.min(tol)) / q.interval;
        return (Decision { allowed: false, remaining, reset_ns: reset, retry_after_ns: retry }, tat);
    }
    let reset = new_tat - now;
    let remaining = (tol - reset) / q.interval;
    (Decision { allowed: true, remaining, reset_ns: reset, retry_after_ns: 0 }, new_tat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const S: u64 = 1_000_000_000;

    #[test]
    fn burst_then_sustained_rate() {
        // 10 per 10 s (one a second), burst 3.
        let q = Quota::new(10, Duration::from_secs(10), 3);
        let (mut tat, now) = (0, 100 * S);
        let mut remaining = Vec::new();
        for _ in 0..3 {
            let (d, t) = decide(&q, tat, now, 1);
            assert!(d.allowed);
            remaining.push(d.remaining);
            tat = t;
        }
        assert_eq!(remaining, vec![2, 1, 0]);
        let (d, t) = decide(&q, tat, now, 1);
        assert!(!d.allowed);
        assert_eq!(t, tat, "a denied request spends nothing");
        assert_eq!(d.retry_after_ns, S);
        assert_eq!(d.reset_ns, 3 * S);
        // One second later exactly one more is allowed.
        let (d, t) = decide(&q, tat, now + S, 1);
        assert!(d.allowed && d.remaining == 0);
        let (d, _) = decide(&q, t, now + S, 1);
        assert!(!d.allowed);
        // After the reset the whole burst is back.
        let (d, _) = decide(&q, tat, now + 3 * S, 1);
        assert_eq!((d.allowed, d.remaining), (true, 2));
    }
}
