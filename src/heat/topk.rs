//! The hottest keys of a service in bounded memory: Space-Saving (Metwally,
//! Agrawal, El Abbadi, ICDT 2005). `capacity` counters; a key not yet counted
//! takes over the smallest counter and inherits its count as its possible
//! overestimate, so every key whose true count exceeds total/capacity is
//! present. Counts decay by a factor at each heat tick, so the ranking follows
//! the recent traffic rather than all of it. Pure: no clock, no I/O.

use std::collections::HashMap;

/// Keys are counted by their first bytes only, so memory stays bounded however
/// long a hostile key is.
pub const MAX_KEY: usize = 250;

struct Counter {
    key: Box<[u8]>,
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

/// A Space-Saving summary.
pub struct SpaceSaving {
    capacity: usize,
    counters: Vec<Counter>,
    /// Key -> its counter. SipHash-keyed: keys come from clients.
    index: HashMap<Box<[u8]>, usize>,
    /// Everything offered, decayed like the counts.
    total: f64,
}

impl SpaceSaving {
    pub fn new(capacity: usize) -> SpaceSaving {
        SpaceSaving { capacity, counters: Vec::with_capacity(capacity), index: HashMap::with_capacity(capacity), total: 0.0 }
    }

    /// Counts one occurrence of `key`.
    pub fn offer(&mut self, key: &[u8]) {
        if self.capacity == 0 {
            return;
        }
        let key = &key[..key.len().min(MAX_KEY)];
        self.total += 1.0;
        if let Some(&i) = self.index.get(key) {
            self.counters[i].count += 1.0;
            return;
        }
        if self.counters.len() < self.capacity {
            self.index.insert(key.into(), self.counters.len());
            self.counters.push(Counter { key: key.into(), count: 1.0, error: 0.0 });
            return;
        }
        // The smallest counter changes hands.
        let (i, _) = self.counters.iter().enumerate().min_by(|a, b| a.1.count.total_cmp(&b.1.count)).expect("capacity > 0");
        let c = &mut self.counters[i];
        self.index.remove(&c.key);
        let min = c.count;
        *c = Counter { key: key.into(), count: min + 1.0, error: min };
        self.index.insert(key.into(), i);
    }

    /// Multiplies every count by `factor` (0..=1): older traffic weighs less.
    pub fn decay(&mut self, factor: f64) {
        self.total *= factor;
        for c in &mut self.counters {
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
        let mut all: Vec<&Counter> = self.counters.iter().collect();
        let sure = |c: &Counter| c.count - c.error;
        all.sort_by(|a, b| sure(b).total_cmp(&sure(a)).then_with(|| a.key.cmp(&b.key)));
        all.into_iter().take(n).map(|c| Hot { key: c.key.to_vec(), count: c.count, error: c.error }).collect()
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
        assert_eq!(s.counters.len(), 3);
        assert_eq!(s.index.len(), 3);
        assert!(s.counters.iter().all(|c| c.key.len() == MAX_KEY));
        let mut none = SpaceSaving::new(0);
        none.offer(b"k");
        assert!(none.top(5).is_empty());
    }
}
