//! The local rate-limit store: one TAT per key, in shards each behind its own
//! short lock (never held across an await), bounded in memory. An entry whose
//! TAT has passed is the same as no entry, so idle keys are dropped freely; a
//! flood of distinct keys past the cap evicts entries rather than growing.

use super::gcra::{self, Decision, Quota};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

const SHARDS: usize = 64;

/// Keys are already hashes: use them as they are.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys")
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type Shard = HashMap<u64, u64, BuildHasherDefault<IdentityHasher>>;

pub struct LocalStore {
    shards: Vec<Mutex<Shard>>,
    cap_per_shard: usize,
    pub evicted: AtomicU64,
}

impl LocalStore {
    /// A store holding at most about `max_keys` keys.
    pub fn new(max_keys: usize) -> LocalStore {
        LocalStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            cap_per_shard: (max_keys / SHARDS).max(16),
            evicted: AtomicU64::new(0),
        }
    }

    /// Decides a request for `key` under quota `q` at `now` (ns), spending `cost`.
    pub fn decide(&self, key: u64, q: &Quota, now: u64, cost: u64) -> Decision {
        let mut shard = self.shards[(key >> 58) as usize % SHARDS].lock().expect("limit shard lock");
        // One probe for a known key.
        if let Some(tat) = shard.get_mut(&key) {
            let (d, new_tat) = gcra::decide(q, *tat, now, cost);
            *tat = new_tat;
            return d;
        }
        let (d, new_tat) = gcra::decide(q, 0, now, cost);
        if d.allowed {
            if shard.len() >= self.cap_per_shard {
                self.make_room(&mut shard, now);
            }
            shard.insert(key, new_tat);
        }
        d
    }

    /// The stored TAT of `key` (0 when unseen).
    pub fn tat(&self, key: u64) -> u64 {
        self.shards[(key >> 58) as usize % SHARDS].lock().expect("limit shard lock").get(&key).copied().unwrap_or(0)
    }

    /// Drops idle keys (TAT passed); if none, drops an eighth of the shard.
    fn make_room(&self, shard: &mut Shard, now: u64) {
        let before = shard.len();
        shard.retain(|_, tat| *tat > now);
        if shard.len() >= self.cap_per_shard {
            let mut n = 0;
            let drop_n = (self.cap_per_shard / 8).max(1);
            shard.retain(|_, _| {
                n += 1;
                n > drop_n
            });
        }
        self.evicted.fetch_add((before - shard.len()) as u64, Relaxed);
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().expect("limit shard lock").len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_flood_of_keys_stays_bounded() {
        let s = LocalStore::new(10_000);
        let q = Quota::new(1, Duration::from_secs(3600), 1);
        for k in 0..200_000u64 {
            s.decide(crate::shard::hash::mix64(k), &q, 1, 1);
        }
        assert!(s.len() <= 10_000 + 64 * 16, "{}", s.len());
        assert!(s.evicted.load(Relaxed) > 0);
    }

    #[test]
    fn keys_are_independent() {
        let s = LocalStore::new(1000);
        let q = Quota::new(2, Duration::from_secs(60), 2);
        assert!(s.decide(1, &q, 0, 1).allowed);
        assert!(s.decide(1, &q, 0, 1).allowed);
        assert!(!s.decide(1, &q, 0, 1).allowed);
        assert!(s.decide(2, &q, 0, 1).allowed);
    }
}
