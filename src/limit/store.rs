//! The local rate-limit store: one TAT per key, in shards each behind its own
//! short lock (never held across an await), bounded in memory. An entry whose
//! TAT has passed is the same as no entry, so idle keys are overwritten
//! freely; a flood of distinct keys past the capacity evicts the entry closest
//! to expiry rather than growing.
//!
//! Each shard is an open-addressing table of (key, TAT) pairs with linear
//! probing inside a window of 16 slots: a known key costs one cache line in the
//! common case, where a general hash map touches its control bytes and then its
//! bucket (two misses with a million keys). Keys are already hashes. Slots are
//! never emptied, only overwritten, so a probe may stop at the first empty slot.

use super::gcra::{self, Decision, Quota};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

const SHARDS: usize = 64;
/// Slots a key may sit away from its home slot.
const PROBE: usize = 16;

struct Table {
    /// (key, TAT); key 0 marks an empty slot.
    slots: Box<[(u64, u64)]>,
    mask: usize,
    used: usize,
}

impl Table {
    fn new(size: usize) -> Table {
        Table { slots: vec![(0, 0); size].into_boxed_slice(), mask: size - 1, used: 0 }
    }

    /// The slot of `key`, or where it may go: the first empty or expired slot,
    /// else the live one closest to expiry (`true`: an eviction).
    fn find(&self, key: u64, now: u64) -> Result<usize, (usize, bool)> {
        let home = key as usize & self.mask;
        let mut free = None;
        let mut oldest = (u64::MAX, home);
        for i in 0..PROBE {
            let at = (home + i) & self.mask;
            let (k, tat) = self.slots[at];
            if k == key {
                return Ok(at);
            }
            if k == 0 {
                return Err((free.unwrap_or(at), false));
            }
            if tat <= now && free.is_none() {
                free = Some(at);
            }
            if tat < oldest.0 {
                oldest = (tat, at);
            }
        }
        Err(free.map_or((oldest.1, true), |f| (f, false)))
    }
}

pub struct LocalStore {
    shards: Vec<Mutex<Table>>,
    slots_per_shard: usize,
    pub evicted: AtomicU64,
}

/// Key 0 marks empty slots.
fn nonzero(key: u64) -> u64 {
    key.max(1)
}

impl LocalStore {
    /// A store for about `max_keys` keys: twice as many slots, rounded up to a
    /// power of two per shard, allocated zeroed (pages are touched as keys come).
    pub fn new(max_keys: usize) -> LocalStore {
        let slots_per_shard = (max_keys * 2 / SHARDS).max(PROBE).next_power_of_two();
        LocalStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Table::new(slots_per_shard))).collect(),
            slots_per_shard,
            evicted: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: u64) -> &Mutex<Table> {
        &self.shards[(key >> 58) as usize % SHARDS]
    }

    /// Decides a request for `key` under quota `q` at `now` (ns), spending `cost`.
    pub fn decide(&self, key: u64, q: &Quota, now: u64, cost: u64) -> Decision {
        let key = nonzero(key);
        let mut t = self.shard(key).lock().expect("limit shard lock");
        match t.find(key, now) {
            Ok(at) => {
                let (d, new_tat) = gcra::decide(q, t.slots[at].1, now, cost);
                t.slots[at].1 = new_tat;
                d
            }
            Err((at, evicts)) => {
                let (d, new_tat) = gcra::decide(q, 0, now, cost);
                if d.allowed {
                    if evicts {
                        self.evicted.fetch_add(1, Relaxed);
                    } else if t.slots[at].0 == 0 {
                        t.used += 1;
                    }
                    t.slots[at] = (key, new_tat);
                }
                d
            }
        }
    }

    /// The stored TAT of `key` (0 when unseen).
    pub fn tat(&self, key: u64) -> u64 {
        let key = nonzero(key);
        let t = self.shard(key).lock().expect("limit shard lock");
        t.find(key, 0).map(|at| t.slots[at].1).unwrap_or(0)
    }

    /// Slots in use (keys tracked, idle ones included until overwritten).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().expect("limit shard lock").used).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slots in all: the most keys the store can hold.
    pub fn capacity(&self) -> usize {
        self.slots_per_shard * SHARDS
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
            s.decide(crate::hash::mix64(k), &q, 1, 1);
        }
        assert!(s.len() <= s.capacity() && s.capacity() <= 4 * 10_000, "{} of {}", s.len(), s.capacity());
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

    #[test]
    fn expired_entries_are_reused_and_colliding_keys_stay_apart() {
        let s = LocalStore::new(64 * 8);
        let q = Quota::new(1, Duration::from_secs(1), 1);
        // Keys sharing a shard and a home slot.
        let keys: Vec<u64> = (1..=10u64).map(|i| i << 20 | 5).collect();
        for &k in &keys {
            assert!(s.decide(k, &q, 10, 1).allowed);
            assert!(!s.decide(k, &q, 10, 1).allowed, "each key has its own counter");
        }
        let used = s.len();
        // Much later every entry has expired: new keys take their slots.
        let later = 10 + 5_000_000_000;
        for i in 11..=20u64 {
            assert!(s.decide(i << 20 | 5, &q, later, 1).allowed);
        }
        assert_eq!(s.len(), used, "expired slots are reused");
        assert_eq!(s.evicted.load(Relaxed), 0);
    }
}
