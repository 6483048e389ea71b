//! Heat: how much of a sharded service's traffic each shard, endpoint and key
//! takes, measured where the root sees every request. Shard and endpoint rates
//! are EWMAs the heat tick computes from counters the request path keeps
//! anyway ([`rate`]); keys are sampled into a bounded Space-Saving summary
//! ([`topk`]), one request in `sample`, so a request pays one random draw and,
//! when drawn, an uncontended lock it never waits for.

pub mod load;
pub mod rate;
pub mod simulate;
pub mod topk;

use arc_swap::ArcSwap;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
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
    /// What is done for hot keys.
    pub mitigation: Mitigation,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy { window: Duration::from_secs(10), top_keys: 64, sample: 8, hot_share: 0.05, mitigation: Mitigation::default() }
    }
}

/// What a service does for its hot keys (`[services.NAME.hot_keys]`); nothing by default.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Mitigation {
    /// Hot keys' read answers kept at the root for a short time.
    pub cache: Option<CachePolicy>,
    /// Reads of a hot key go to the shard's replicas in turn, whatever the read policy.
    pub spread: bool,
    /// A hot key's places (memcache key-split): 0 or 1 is off.
    pub split: usize,
    /// How long a split key's copy lives (whole seconds, at least 1).
    pub split_ttl: u64,
}

impl Mitigation {
    pub fn any(&self) -> bool {
        self.cache.is_some() || self.spread || self.split > 1
    }
}

/// The root-local cache of hot keys' answers.
#[derive(Clone, Debug, PartialEq)]
pub struct CachePolicy {
    /// How long an answer is served from the root.
    pub ttl: Duration,
    /// Bytes of answers held at most.
    pub max_bytes: usize,
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

/// The sampled key summary of one service, carried over a reload by name,
/// and the set of its hot keys the request path asks about when the service
/// mitigates them (rebuilt by each heat tick, swapped whole).
pub struct KeyHeat {
    policy: Policy,
    summary: Mutex<topk::SpaceSaving>,
    hot: ArcSwap<HashSet<Box<[u8]>>>,
    /// Whether `hot` holds any key: most requests stop at this load.
    any_hot: AtomicBool,
    /// Mitigation turned off for now by the operator (`POST
    /// /admin/heat/mitigation`): no key is hot until it is turned on again.
    paused: AtomicBool,
}

impl KeyHeat {
    pub fn new(policy: Policy) -> KeyHeat {
        let summary = topk::SpaceSaving::new(policy.top_keys);
        KeyHeat::with(policy, summary)
    }

    fn with(policy: Policy, summary: topk::SpaceSaving) -> KeyHeat {
        KeyHeat {
            policy,
            summary: Mutex::new(summary),
            hot: ArcSwap::default(),
            any_hot: AtomicBool::new(false),
            paused: AtomicBool::new(false),
        }
    }

    /// Keeps this summary when `policy` sizes it the same; else a fresh one.
    pub fn carried(old: Option<&Arc<KeyHeat>>, policy: Policy) -> Arc<KeyHeat> {
        match old {
            Some(o) if o.policy.top_keys == policy.top_keys && o.policy.sample == policy.sample => {
                if o.policy == policy {
                    return o.clone();
                }
                // Same summary, new thresholds: move the counts over.
                let summary = std::mem::replace(&mut *o.summary.lock().unwrap_or_else(|e| e.into_inner()), topk::SpaceSaving::new(0));
                let new = KeyHeat::with(policy, summary);
                new.paused.store(o.paused.load(Relaxed), Relaxed);
                Arc::new(new)
            }
            _ => Arc::new(KeyHeat::new(policy)),
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

    /// Whether `key` was hot at the last heat tick (never, unless the service
    /// mitigates hot keys).
    #[inline]
    /// Whether any key is hot now (one atomic load).
    pub fn is_hot_any(&self) -> bool {
        self.any_hot.load(Relaxed)
    }

    pub fn is_hot(&self, key: &[u8]) -> bool {
        self.any_hot.load(Relaxed) && self.hot.load().contains(&key[..key.len().min(topk::MAX_KEY)])
    }

    /// Rebuilds the hot set from the ranking (called by the heat tick).
    pub fn refresh_hot(&self) {
        if !self.policy.mitigation.any() || self.paused.load(Relaxed) {
            return;
        }
        let now: HashSet<Box<[u8]>> = self.top(self.policy.top_keys).into_iter().filter(|k| k.hot).map(|k| k.key.into()).collect();
        if **self.hot.load() != now {
            self.any_hot.store(!now.is_empty(), Relaxed);
            self.hot.store(Arc::new(now));
        }
    }

    /// Turns mitigation off (no key is hot from now on) or back on (at the
    /// next heat tick); whether the service mitigates at all.
    pub fn set_mitigating(&self, on: bool) -> bool {
        self.paused.store(!on, Relaxed);
        if !on {
            self.any_hot.store(false, Relaxed);
            self.hot.store(Arc::default());
        }
        self.policy.mitigation.any()
    }

    pub fn mitigating(&self) -> bool {
        self.policy.mitigation.any() && !self.paused.load(Relaxed)
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
    fn the_hot_set_follows_the_ranking_only_when_mitigating() {
        let plain = KeyHeat::new(Policy { sample: 1, hot_share: 0.3, ..Policy::default() });
        (0..10).for_each(|_| plain.sample(b"k"));
        plain.refresh_hot();
        assert!(!plain.is_hot(b"k"), "nothing is mitigated, so nothing is asked");
        let m = Mitigation { spread: true, ..Mitigation::default() };
        let h = KeyHeat::new(Policy { sample: 1, hot_share: 0.3, mitigation: m, ..Policy::default() });
        (0..10).for_each(|_| h.sample(b"k"));
        (0..5).for_each(|i| h.sample(format!("cold{i}").as_bytes()));
        assert!(!h.is_hot(b"k"), "not before a tick");
        h.refresh_hot();
        assert!(h.is_hot(b"k") && !h.is_hot(b"cold0") && !h.is_hot(b"other"));
        (0..100).for_each(|_| h.sample(b"new"));
        h.refresh_hot();
        assert!(h.is_hot(b"new") && !h.is_hot(b"k"));
    }

    #[test]
    fn a_reload_that_keeps_the_size_keeps_the_counts() {
        let old = Arc::new(KeyHeat::new(Policy { sample: 1, ..Policy::default() }));
        (0..10).for_each(|_| old.sample(b"k"));
        let same = KeyHeat::carried(Some(&old), old.policy().clone());
        assert!(Arc::ptr_eq(&same, &old));
        let stricter = KeyHeat::carried(Some(&old), Policy { hot_share: 0.5, ..old.policy().clone() });
        assert_eq!(stricter.top(1)[0].share, 1.0);
        let bigger = KeyHeat::carried(Some(&stricter), Policy { top_keys: 128, ..stricter.policy().clone() });
        assert!(bigger.top(1).is_empty());
    }
}
