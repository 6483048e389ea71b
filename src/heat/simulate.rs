//! What a root-local cache of hot keys does to a ring's shard loads, by
//! simulation: `ringmaster ring analyze --hot-keys N`. The keys given are a
//! stream of requests; the N most requested are answered at the root, so each
//! costs its shard one refresh instead of its requests. With `--split P`, the
//! same hot keys split over P places instead (their owner and the next
//! distinct shards of their ring walk, each taking an equal share of their
//! reads). Pure: no clock, no I/O.

use super::rate::skew;
use super::{KeyHeat, Policy};
use crate::ring::Ring;
use std::collections::{HashMap, HashSet};

/// Shard loads with and without the N hottest keys answered at the root.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Mitigated {
    pub function: &'static str,
    pub shards: usize,
    pub hot_keys: usize,
    /// Share of the requests that name one of the hot keys (what the root absorbs).
    pub absorbed: f64,
    /// The least requested hot key's share: a `hot_share` at or below it, with
    /// `top_keys` at least `hot_keys`, marks these keys hot.
    pub threshold: f64,
    /// Hottest shard's load over the mean, without and with the cache.
    pub without: f64,
    pub with_cache: f64,
    /// With the hot keys split over `split` places instead (0 when not asked).
    pub split: usize,
    pub with_split: f64,
}

/// Counts each distinct key of the request stream, most requested first.
pub fn ranked(requests: &[Vec<u8>]) -> Vec<(&[u8], u64)> {
    let mut counts: HashMap<&[u8], u64> = HashMap::new();
    for k in requests {
        *counts.entry(k.as_slice()).or_default() += 1;
    }
    let mut ranked: Vec<(&[u8], u64)> = counts.into_iter().collect();
    ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    ranked
}

/// The shard loads of `ranked` keys on `ring` when the first `hot` of them are
/// cached at the root (one refresh each reaches the shard).
pub fn mitigate(function: &'static str, ring: &Ring, shards: usize, ranked: &[(&[u8], u64)], hot: usize, split: usize) -> Mitigated {
    let hot = hot.min(ranked.len());
    let set: HashSet<&[u8]> = ranked[..hot].iter().map(|r| r.0).collect();
    mitigate_set(function, ring, (shards, split), ranked, &set)
}

/// The same with the hot keys a service's heat ranking finds in the stream:
/// `requests` offered in order to a [`KeyHeat`] with `policy`, hot as it says.
pub fn ranking(function: &'static str, ring: &Ring, shards: usize, requests: &[Vec<u8>], policy: &Policy, split: usize) -> Mitigated {
    let heat = KeyHeat::new(policy.clone());
    requests.iter().for_each(|k| heat.sample(k));
    let found: Vec<Vec<u8>> = heat.top(policy.top_keys).into_iter().filter(|k| k.hot).map(|k| k.key).collect();
    let set: HashSet<&[u8]> = found.iter().map(|k| k.as_slice()).collect();
    mitigate_set(function, ring, (shards, split), &ranked(requests), &set)
}

/// The places of `key` split `n` ways: its owner and the next distinct shards of its walk.
fn places(ring: &Ring, key: &[u8], n: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(n);
    ring.walk(ring.hash_key(key), &mut |s| {
        out.push(s);
        out.len() >= n
    });
    out
}

fn mitigate_set(
    function: &'static str,
    ring: &Ring,
    (shards, split): (usize, usize),
    ranked: &[(&[u8], u64)],
    hot: &HashSet<&[u8]>,
) -> Mitigated {
    let mut without = vec![0.0; shards];
    let mut with = vec![0.0; shards];
    let mut split_loads = vec![0.0; shards];
    let total: u64 = ranked.iter().map(|r| r.1).sum();
    let (mut absorbed, mut least) = (0, u64::MAX);
    for (key, n) in ranked {
        let s = ring.locate(key).unwrap_or(0);
        without[s] += *n as f64;
        if split > 1 && hot.contains(key) {
            let at = places(ring, key, split);
            at.iter().for_each(|&p| split_loads[p] += *n as f64 / at.len() as f64);
        } else {
            split_loads[s] += *n as f64;
        }
        if hot.contains(key) {
            with[s] += 1.0;
            absorbed += n;
            least = least.min(*n);
        } else {
            with[s] += *n as f64;
        }
    }
    let threshold = if hot.is_empty() { 1.0 } else { least as f64 / total.max(1) as f64 };
    Mitigated {
        function,
        shards,
        hot_keys: hot.len(),
        absorbed: absorbed as f64 / total.max(1) as f64,
        threshold,
        without: skew(&without),
        with_cache: skew(&with),
        split,
        with_split: if split > 1 { skew(&split_loads) } else { 0.0 },
    }
}

impl std::fmt::Display for Mitigated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<17} {:>6} {:>9} {:>9} {:>10} {:>13} {:>16} {:>11}",
            self.function,
            self.shards,
            self.hot_keys,
            format!("{:.2}%", self.absorbed * 100.0),
            format!("{:.5}", self.threshold),
            format!("{:.3}", self.without),
            format!("{:.3}", self.with_cache),
            if self.split > 1 { format!("{:.3}", self.with_split) } else { "-".into() },
        )
    }
}

/// The header line matching `Mitigated`'s Display.
pub const HEADER: &str = "function          shards  hot keys  absorbed  hot_share  hottest/mean  with root cache  with split";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::KeyHash;
    use crate::ring::{Function, Member};

    #[test]
    fn caching_the_hot_keys_evens_the_shards() {
        let members: Vec<Member> = (0..10).map(|i| Member::new(format!("s{i}"), 1)).collect();
        let ring = Ring::build(Function::Maglev, &members, KeyHash::Xxh3);
        // One key takes half the requests; the rest are even.
        let mut requests: Vec<Vec<u8>> = (0..10_000).map(|i| format!("k{i}").into_bytes()).collect();
        requests.extend((0..10_000).map(|_| b"celebrity".to_vec()));
        let ranked = ranked(&requests);
        assert_eq!(ranked[0], (&b"celebrity"[..], 10_000));
        let none = mitigate("maglev", &ring, 10, &ranked, 0, 0);
        assert_eq!(none.without, none.with_cache);
        assert!(none.without > 5.0, "{none:?}");
        let one = mitigate("maglev", &ring, 10, &ranked, 1, 5);
        assert!((one.absorbed - 0.5).abs() < 1e-9 && (one.threshold - 0.5).abs() < 1e-9, "{one:?}");
        assert!(one.with_cache < 1.2, "{one:?}");
        // Split five ways, the celebrity's half of the load is a tenth on each of five shards.
        assert!(one.with_split < one.without / 3.0 && one.with_split > one.with_cache, "{one:?}");
        // The service's own ranking finds the celebrity and only it.
        let policy = Policy { sample: 4, top_keys: 16, hot_share: 0.1, mitigation: Default::default(), ..Policy::default() };
        let found = ranking("maglev", &ring, 10, &requests, &policy, 0);
        assert_eq!((found.hot_keys, found.with_cache), (1, one.with_cache), "{found:?}");
    }
}
