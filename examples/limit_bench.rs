//! The cost of one local rate-limit decision with a million distinct keys
//! tracked, and the memory each tracked key takes. The store is sized for KEYS
//! keys, as the proxy sizes its own (for a million).
//!
//!     cargo run --release --example limit_bench [KEYS]

use ringmaster::hash::mix64;
use ringmaster::limit::gcra::Quota;
use ringmaster::limit::store::LocalStore;
use std::time::{Duration, Instant};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    let keys: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let store = LocalStore::new(keys as usize);
    let q = Quota::new(1000, Duration::from_secs(3600), 1000);
    let before = rss_kib();
    for k in 0..keys {
        store.decide(mix64(k), &q, 1, 1);
    }
    let after = rss_kib();
    println!("tracked keys: {}", store.len());
    println!("memory per tracked key: {:.1} bytes", (after - before) as f64 * 1024.0 / keys as f64);
    let rounds = 5_000_000u64;
    let t = Instant::now();
    let mut allowed = 0u64;
    for i in 0..rounds {
        let k = mix64(i % keys);
        allowed += store.decide(k, &q, 2 + i, 1).allowed as u64;
    }
    let ns = t.elapsed().as_nanos() as f64 / rounds as f64;
    println!("decision over {keys} keys: {ns:.1} ns ({allowed} allowed of {rounds})");
}
