//! `ringmaster ring analyze`: how good a sharding function is for a set of
//! shards: balance of the key space, keys moved when a shard is added or
//! removed (against the ideal), and lookup cost.

use super::{Function, Member, Ring};
use crate::hash::{mix64, xxh3, KeyHash};
use std::io::Write;
use std::time::Instant;

/// Ranks drawn with Zipf's law over `1..=universe` (rank 1 the most likely).
#[derive(Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// `s` is the exponent (1.0 is the classic shape); `universe` at least 1.
    pub fn new(s: f64, universe: usize) -> Zipf {
        let mut sum = 0.0;
        let cdf = (1..=universe.max(1))
            .map(|r| {
                sum += 1.0 / (r as f64).powf(s);
                sum
            })
            .collect();
        Zipf { cdf }
    }

    /// A rank from 0 (the most likely) to universe - 1.
    pub fn sample(&self, rng: &mut fastrand::Rng) -> usize {
        let total = *self.cdf.last().expect("at least one rank");
        let u = rng.f64() * total;
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// Where the keys come from.
pub enum Keys {
    Uniform(usize),
    /// `count` draws from a Zipf distribution (exponent `s`) over `universe` keys.
    Zipf {
        count: usize,
        universe: usize,
        s: f64,
    },
    /// Given keys, one per line.
    List(Vec<Vec<u8>>),
}

impl Keys {
    /// Materialises the keys; deterministic (fixed RNG seed).
    pub fn generate(&self) -> Vec<Vec<u8>> {
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        match self {
            Keys::Uniform(n) => (0..*n).map(|i| format!("key:{i}").into_bytes()).collect(),
            Keys::Zipf { count, universe, s } => {
                let zipf = Zipf::new(*s, *universe);
                (0..*count).map(|_| format!("key:{}", zipf.sample(&mut rng)).into_bytes()).collect()
            }
            Keys::List(v) => v.clone(),
        }
    }
}

/// Figures of one analysis.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub function: &'static str,
    pub shards: usize,
    pub keys: usize,
    /// max/mean and coefficient of variation of each shard's share of the key space,
    /// where the function defines it exactly.
    pub intrinsic_max_over_mean: Option<f64>,
    pub intrinsic_cv: Option<f64>,
    /// The same over the keys given.
    pub keys_max_over_mean: f64,
    pub keys_cv: f64,
    /// Fraction of keys that moved when a shard was added, and its ratio to the ideal 1/(N+1).
    pub moved_on_add: f64,
    pub moved_on_add_vs_ideal: f64,
    /// Fraction moved when a shard was removed (the last one, for jump), and ratio to 1/N.
    pub moved_on_remove: f64,
    pub moved_on_remove_vs_ideal: f64,
    pub lookup_ns: f64,
    pub lookup_with_hash_ns: f64,
}

fn stats(counts: &[f64]) -> (f64, f64) {
    let n = counts.len() as f64;
    let mean = counts.iter().sum::<f64>() / n;
    let max = counts.iter().cloned().fold(0.0, f64::max);
    let var = counts.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / n;
    (max / mean, var.sqrt() / mean)
}

/// A progress line on stderr, for long runs.
pub struct Progress {
    label: String,
    total: usize,
    shown: usize,
    enabled: bool,
}

impl Progress {
    pub fn new(label: &str, total: usize, enabled: bool) -> Progress {
        Progress { label: label.to_string(), total: total.max(1), shown: usize::MAX, enabled }
    }

    pub fn set(&mut self, done: usize) {
        if !self.enabled {
            return;
        }
        let pct = done * 100 / self.total;
        if pct != self.shown {
            self.shown = pct;
            let bar = "#".repeat(pct / 4) + &" ".repeat(25 - pct / 4);
            eprint!("\r{:<12} [{bar}] {pct:>3}%", self.label);
            let _ = std::io::stderr().flush();
        }
    }

    pub fn finish(&mut self) {
        if self.enabled {
            eprintln!();
        }
    }
}

/// Analyses `function` over `members` with `keys`.
pub fn analyze(function: Function, members: &[Member], key_hash: KeyHash, keys: &[Vec<u8>], progress: bool) -> Report {
    let n = members.len();
    let ring = Ring::build(function, members, key_hash);
    let hashes: Vec<u64> = keys.iter().map(|k| ring.hash_key(k)).collect();
    let mut p = Progress::new(function.name(), 4 * hashes.len(), progress);

    let (intrinsic_max_over_mean, intrinsic_cv) = match ring.intrinsic_shares() {
        Some(s) => {
            let (m, cv) = stats(&s);
            (Some(m), Some(cv))
        }
        None => (None, None),
    };
    let mut counts = vec![0f64; n];
    let mut before = Vec::with_capacity(hashes.len());
    for (i, &h) in hashes.iter().enumerate() {
        let s = ring.locate_hash(h).unwrap_or(0);
        counts[s] += 1.0;
        before.push(s);
        if i % 4096 == 0 {
            p.set(i);
        }
    }
    let (keys_max_over_mean, keys_cv) = stats(&counts);

    // Add a shard.
    let mut grown = members.to_vec();
    grown.push(Member::new(format!("{}-added", members.last().map(|m| m.name.as_str()).unwrap_or("shard")), 1));
    let added = Ring::build(function, &grown, key_hash);
    let mut moved = 0usize;
    for (i, &h) in hashes.iter().enumerate() {
        let (a, b) = (before[i], added.locate_hash(h).unwrap_or(0));
        if grown[b].name != members[a].name {
            moved += 1;
        }
        if i % 4096 == 0 {
            p.set(hashes.len() + i);
        }
    }
    let moved_on_add = moved as f64 / hashes.len().max(1) as f64;

    // Remove a shard: the last for jump (the only removal it supports), else the middle one.
    let gone = if function == Function::Jump { n - 1 } else { n / 2 };
    let mut shrunk = members.to_vec();
    shrunk.remove(gone);
    let removed = Ring::build(function, &shrunk, key_hash);
    let mut moved = 0usize;
    for (i, &h) in hashes.iter().enumerate() {
        let (a, b) = (before[i], removed.locate_hash(h).unwrap_or(0));
        if shrunk.get(b).map(|m| &m.name) != Some(&members[a].name) {
            moved += 1;
        }
        if i % 4096 == 0 {
            p.set(2 * hashes.len() + i);
        }
    }
    let moved_on_remove = moved as f64 / hashes.len().max(1) as f64;

    // Lookup cost, over pre-hashed keys and with hashing.
    let probe: Vec<u64> = (0..1_000_000u64).map(mix64).collect();
    let t = Instant::now();
    let mut acc = 0usize;
    for &h in &probe {
        acc = acc.wrapping_add(ring.locate_hash(std::hint::black_box(h)).unwrap_or(0));
    }
    let lookup_ns = t.elapsed().as_nanos() as f64 / probe.len() as f64;
    p.set(3 * hashes.len() + hashes.len() / 2);
    let sample: Vec<&Vec<u8>> = keys.iter().cycle().take(1_000_000.min(keys.len() * 16).max(keys.len())).collect();
    let t = Instant::now();
    for k in &sample {
        acc = acc.wrapping_add(ring.locate(std::hint::black_box(k)).unwrap_or(0));
    }
    let lookup_with_hash_ns = t.elapsed().as_nanos() as f64 / sample.len().max(1) as f64;
    std::hint::black_box(acc);
    std::hint::black_box(xxh3(b""));
    p.set(4 * hashes.len());
    p.finish();

    Report {
        function: function.name(),
        shards: n,
        keys: keys.len(),
        intrinsic_max_over_mean,
        intrinsic_cv,
        keys_max_over_mean,
        keys_cv,
        moved_on_add,
        moved_on_add_vs_ideal: moved_on_add * (n + 1) as f64,
        moved_on_remove,
        moved_on_remove_vs_ideal: moved_on_remove * n as f64,
        lookup_ns,
        lookup_with_hash_ns,
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
        write!(
            f,
            "{:<17} {:>6} {:>9} {:>10} {:>8} {:>9} {:>8} {:>12} {:>13} {:>8} {:>9}",
            self.function,
            self.shards,
            self.keys,
            opt(self.intrinsic_max_over_mean),
            format!("{:.4}", self.keys_max_over_mean),
            format!("{:.4}", self.keys_cv),
            format!("{:.2}%", self.moved_on_add * 100.0),
            format!("{:.2}x ideal", self.moved_on_add_vs_ideal),
            format!("{:.2}% {:.2}x", self.moved_on_remove * 100.0, self.moved_on_remove_vs_ideal),
            format!("{:.1}", self.lookup_ns),
            format!("{:.1}", self.lookup_with_hash_ns),
        )
    }
}

/// The header line matching `Report`'s Display.
pub const HEADER: &str =
    "function          shards      keys  share max  keys max   keys cv    added   added/ideal removed/ideal  lookup  +hash ns";
