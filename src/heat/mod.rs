//! Heat: how much of a sharded service's traffic each shard, endpoint and key
//! takes, measured where the root sees every request. Shard and endpoint rates
//! are EWMAs the heat tick computes from counters the request path keeps
//! anyway ([`rate`]); keys are sampled into a bounded Space-Saving summary
//! ([`topk`]), one request in `sample`, so a request pays one random draw and,
//! when drawn, an uncontended lock it never waits for.

pub mod rate;
pub mod topk;

use std::sync::Mutex;
use std::time::Duration;

/// A service's heat settings (`[services.NAME.heat]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Time constant of the rates and of the key counts' decay.
    pub window: Duration,
    /// Keys tracked; 0 tracks none.
    pub top_keys: usize,
    /// One request in this many feeds the key summary.
    pub sample: u32,
    /// A key whose share of the service's requests reaches this is hot.
    pub hot_share: f64,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy { window: Duration::from_secs(10), top_keys: 64, sample: 8, hot_share: 0.05 }
    }
}

/// A key of the ranking with its share of the service's traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyShare {
    pub key: Vec<u8>,
    /// Estimated share of the requests (an overestimate by at most `error`).
    pub share: f64,
    pub error: f64,
    pub hot: bool,
}

/// The sampled key summary of one service, carried over a reload by name.
pub struct KeyHeat {
    policy: Policy,
    summary: Mutex<topk::SpaceSaving>,
}

impl KeyHeat {
    pub fn new(policy: Policy) -> KeyHeat {
        let summary = Mutex::new(topk::SpaceSaving::new(policy.top_keys));
        KeyHeat { policy, summary }
    }

    /// Keeps this summary when `policy` sizes it the same; else a fresh one.
    pub fn carried(old: Option<&std::sync::Arc<KeyHeat>>, policy: Policy) -> std::sync::Arc<KeyHeat> {
        match old {
            Some(o) if o.policy.top_keys == policy.top_keys && o.policy.sample == policy.sample => {
                if o.policy == policy {
                    return o.clone();
                }
                // Same summary, new thresholds: move the counts over.
                let summary = std::mem::replace(&mut *o.summary.lock().unwrap_or_else(|e| e.into_inner()), topk::SpaceSaving::new(0));
                std::sync::Arc::new(KeyHeat { policy, summary: Mutex::new(summary) })
            }
            _ => std::sync::Arc::new(KeyHeat::new(policy)),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Counts a request for `key`, if it is drawn. Never waits: a drawn sample
    /// that finds the summary busy is dropped.
    #[inline]
    pub fn sample(&self, key: &[u8]) {
        if self.policy.top_keys == 0 || fastrand::u32(..self.policy.sample) != 0 {
            return;
        }
        if let Ok(mut s) = self.summary.try_lock() {
            s.offer(key);
        }
    }

    /// Ages the counts by `dt` (called by the heat tick).
    pub fn decay(&self, dt: Duration) {
        let factor = 1.0 - rate::alpha(dt, self.policy.window);
        self.summary.lock().unwrap_or_else(|e| e.into_inner()).decay(factor);
    }

    /// The `n` hottest keys with their shares.
    pub fn top(&self, n: usize) -> Vec<KeyShare> {
        let s = self.summary.lock().unwrap_or_else(|e| e.into_inner());
        let total = s.total();
        if total <= 0.0 {
            return Vec::new();
        }
        s.top(n)
            .into_iter()
            .map(|h| {
                let share = h.count / total;
                // Hot only on the guaranteed share, so churn among light keys never raises one.
                let hot = (h.count - h.error) / total >= self.policy.hot_share;
                KeyShare { key: h.key, share, error: h.error / total, hot }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_shares_find_the_planted_key() {
        let h = KeyHeat::new(Policy { sample: 4, top_keys: 16, ..Policy::default() });
        for i in 0..40_000u32 {
            let key = if i % 10 == 0 { "hot".to_string() } else { format!("k{}", i % 5000) };
            h.sample(key.as_bytes());
        }
        let top = h.top(3);
        assert_eq!(top[0].key, b"hot");
        assert!(top[0].hot && (0.08..0.2).contains(&top[0].share), "{top:?}");
        assert!(!top[1].hot, "{top:?}");
    }

    #[test]
    fn a_reload_that_keeps_the_size_keeps_the_counts() {
        let old = std::sync::Arc::new(KeyHeat::new(Policy { sample: 1, ..Policy::default() }));
        (0..10).for_each(|_| old.sample(b"k"));
        let same = KeyHeat::carried(Some(&old), old.policy().clone());
        assert!(std::sync::Arc::ptr_eq(&same, &old));
        let stricter = KeyHeat::carried(Some(&old), Policy { hot_share: 0.5, ..old.policy().clone() });
        assert_eq!(stricter.top(1)[0].share, 1.0);
        let bigger = KeyHeat::carried(Some(&stricter), Policy { top_keys: 128, ..stricter.policy().clone() });
        assert!(bigger.top(1).is_empty());
    }
}
