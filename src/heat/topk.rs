//! The hottest keys of a service in bounded memory: Space-Saving (Metwally,
//! Agrawal, El Abbadi, ICDT 2005). `capacity` counters; a key not yet counted
//! takes over the smallest counter and inherits its count as its possible
//! overestimate, so every key whose true count exceeds total/capacity is
//! present. Counts decay by a factor at each heat tick, so the ranking follows
//! the recent traffic rather than all of it. Pure: no clock, no I/O.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

/// Keys are indexed by a 64-bit hash under a seed drawn once per process, so
/// clients cannot aim collisions at it; a collision (two keys sharing a hash)
/// only drops the later key's samples.
fn key_hash(key: &[u8]) -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    crate::hash::xxh3_seeded(key, *SEED.get_or_init(|| fastrand::u64(..)))
}

/// The index's hasher: its keys are hashes already.
#[derive(Default)]
struct Pass(u64);

impl Hasher for Pass {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys")
    }
    fn write_u64(&mut self, h: u64) {
        self.0 = h;
    }
}

/// Keys are counted by their first bytes only, so memory stays bounded however
/// long a hostile key is.
pub const MAX_KEY: usize = 250;

struct Counter {
    /// The key; its buffer is reused when another key takes the counter over.
    key: Vec<u8>,
    hash: u64,
    count: f64,
    /// How much of `count` may belong to the keys this counter held before.
    error: f64,
}

/// One key of the ranking.
#[derive(Debug, Clone, PartialEq)]
pub struct Hot {
    pub key: Vec<u8>,
    /// Its estimated count (an overestimate by at most `error`).
    pub count: f64,
    pub error: f64,
}

/// A Space-Saving summary. Counters sit in a binary min-heap by count, so a
/// counted key costs O(log capacity) and the smallest counter, the one a new
/// key takes over, is always at the root.
pub struct SpaceSaving {
    capacity: usize,
    /// The counters, each in a fixed slot.
    slots: Vec<Counter>,
    /// Slot numbers in heap order (smallest count first).
    heap: Vec<usize>,
    /// Each slot's place in `heap`.
    place: Vec<usize>,
    /// Key hash -> its slot.
    index: HashMap<u64, usize, BuildHasherDefault<Pass>>,
    /// Everything offered, decayed like the counts.
    total: f64,
}

impl SpaceSaving {
    pub fn new(capacity: usize) -> SpaceSaving {
        SpaceSaving {
            capacity,
            slots: Vec::with_capacity(capacity),
            heap: Vec::with_capacity(capacity),
            place: Vec::with_capacity(capacity),
            index: HashMap::with_capacity_and_hasher(capacity, Default::default()),
            total: 0.0,
        }
    }

    /// Counts one occurrence of `key`.
    pub fn offer(&mut self, key: &[u8]) {
        if self.capacity == 0 {
            return;
        }
        let key = &key[..key.len().min(MAX_KEY)];
        self.total += 1.0;
        let hash = key_hash(key);
        if let Some(&slot) = self.index.get(&hash) {
            if self.slots[slot].key == key {
                self.slots[slot].count += 1.0;
                self.sift_down(self.place[slot]);
            }
            return;
        }
        if self.slots.len() < self.capacity {
            let slot = self.slots.len();
            self.index.insert(hash, slot);
            self.slots.push(Counter { key: key.to_vec(), hash, count: 1.0, error: 0.0 });
            self.heap.push(slot);
            self.place.push(slot);
            self.sift_up(slot);
            return;
        }
        // The smallest counter changes hands.
        let slot = self.heap[0];
        let c = &mut self.slots[slot];
        self.index.remove(&c.hash);
        c.key.clear();
        c.key.extend_from_slice(key);
        (c.hash, c.error, c.count) = (hash, c.count, c.count + 1.0);
        self.index.insert(hash, slot);
        self.sift_down(0);
    }

    fn count_at(&self, i: usize) -> f64 {
        self.slots[self.heap[i]].count
    }

    fn swap(&mut self, i: usize, j: usize) {
        self.heap.swap(i, j);
        self.place[self.heap[i]] = i;
        self.place[self.heap[j]] = j;
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.count_at(parent) <= self.count_at(i) {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut least = i;
            if l < self.heap.len() && self.count_at(l) < self.count_at(least) {
                least = l;
            }
            if r < self.heap.len() && self.count_at(r) < self.count_at(least) {
                least = r;
            }
            if least == i {
                return;
            }
            self.swap(i, least);
            i = least;
        }
    }

    /// Multiplies every count by `factor` (0..=1): older traffic weighs less.
    /// Scaling keeps the heap's order.
    pub fn decay(&mut self, factor: f64) {
        self.total *= factor;
        for c in &mut self.slots {
            c.count *= factor;
            c.error *= factor;
        }
    }

    /// What was offered, decayed.
    pub fn total(&self) -> f64 {
        self.total
    }

    /// The `n` keys with the highest guaranteed counts (count less error),
    /// highest first: a key that only just took over a counter inherits a high
    /// count but no guarantee, so it does not outrank a steadily heavy key.
    pub fn top(&self, n: usize) -> Vec<Hot> {
        let mut all: Vec<&Counter> = self.slots.iter().collect();
        let sure = |c: &Counter| c.count - c.error;
        all.sort_by(|a, b| sure(b).total_cmp(&sure(a)).then_with(|| a.key.cmp(&b.key)));
        all.into_iter().take(n).map(|c| Hot { key: c.key.clone(), count: c.count, error: c.error }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_while_the_keys_fit() {
        let mut s = SpaceSaving::new(4);
        for k in ["a", "b", "a", "c", "a", "b"] {
            s.offer(k.as_bytes());
        }
        let top = s.top(2);
        assert_eq!(top[0], Hot { key: b"a".to_vec(), count: 3.0, error: 0.0 });
        assert_eq!(top[1], Hot { key: b"b".to_vec(), count: 2.0, error: 0.0 });
        assert_eq!(s.total(), 6.0);
    }

    #[test]
    fn finds_heavy_keys_among_many_light_ones() {
        let mut s = SpaceSaving::new(64);
        let mut rng = fastrand::Rng::with_seed(7);
        for i in 0..100_000u32 {
            // Two planted keys take 10% and 5%; the rest are spread over 50,000 keys.
            let key = match i % 20 {
                0 | 1 => "planted-1".to_string(),
                2 => "planted-2".to_string(),
                _ => format!("k{}", rng.u32(..50_000)),
            };
            s.offer(key.as_bytes());
        }
        let top = s.top(2);
        assert_eq!((top[0].key.as_slice(), top[1].key.as_slice()), (&b"planted-1"[..], &b"planted-2"[..]), "{top:?}");
        // Space-Saving overestimates by at most total/capacity.
        for (t, truth) in top.iter().zip([10_000.0, 5_000.0]) {
            assert!(t.count >= truth && t.count - t.error <= truth, "{t:?}");
            assert!(t.error <= 100_000.0 / 64.0, "{t:?}");
        }
    }

    #[test]
    fn the_heap_keeps_the_smallest_counter_at_its_root() {
        let mut s = SpaceSaving::new(32);
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..20_000 {
            s.offer(format!("k{}", rng.u32(..100)).as_bytes());
            let min = s.slots.iter().map(|c| c.count).fold(f64::MAX, f64::min);
            assert_eq!(s.count_at(0), min);
            assert!((0..s.heap.len()).all(|i| s.place[s.heap[i]] == i));
        }
    }

    #[test]
    fn decay_lets_new_heat_overtake_old() {
        let mut s = SpaceSaving::new(8);
        (0..1000).for_each(|_| s.offer(b"old"));
        for _ in 0..10 {
            s.decay(0.5);
            (0..100).for_each(|_| s.offer(b"new"));
        }
        assert_eq!(s.top(1)[0].key, b"new");
        assert!(s.total() < 300.0, "{}", s.total());
    }

    #[test]
    fn memory_is_bounded_by_capacity_and_key_length() {
        let mut s = SpaceSaving::new(3);
        for i in 0..1000 {
            s.offer(format!("{i}{}", "x".repeat(10_000)).as_bytes());
        }
        assert_eq!(s.slots.len(), 3);
        assert_eq!(s.index.len(), 3);
        assert!(s.slots.iter().all(|c| c.key.len() == MAX_KEY));
        let mut none = SpaceSaving::new(0);
        none.offer(b"k");
        assert!(none.top(5).is_empty());
    }
}
