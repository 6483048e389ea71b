//! What heat tracking costs a request, measured in process: ns per
//! `KeyHeat::sample` call (the only heat work on the request path; rates are
//! computed by the heat tick from counters the path keeps anyway), for the
//! default and the largest summaries, sampling never (the loop and the draw),
//! 1 in 8 (the default) and every request, over
//! Zipf (s = 1) and uniform keys. Run by bench/heat.sh.
//! usage: cargo run --release --example heat_cost

use ringmaster::heat::{KeyHeat, Policy};
use std::time::Instant;

fn zipf(n: usize, universe: usize, rng: &mut fastrand::Rng) -> Vec<Vec<u8>> {
    let mut cdf = Vec::with_capacity(universe);
    let mut sum = 0.0;
    for r in 1..=universe {
        sum += 1.0 / r as f64;
        cdf.push(sum);
    }
    (0..n).map(|_| format!("user:{}", cdf.partition_point(|&c| c < rng.f64() * sum)).into_bytes()).collect()
}

fn main() {
    let mut rng = fastrand::Rng::with_seed(1);
    let n = 2_000_000;
    let streams = [
        ("zipf 1.0 over 1M keys", zipf(n, 1_000_000, &mut rng)),
        ("uniform over 1M keys", (0..n).map(|_| format!("user:{}", rng.u32(..1_000_000)).into_bytes()).collect()),
    ];
    println!("{:<24} {:>8} {:>7} {:>12}", "keys", "top_keys", "sample", "ns/request");
    for (name, keys) in &streams {
        for top_keys in [64, 4096] {
            for sample in [u32::MAX, 8, 1] {
                let heat = KeyHeat::new(Policy { top_keys, sample, ..Policy::default() });
                keys.iter().take(100_000).for_each(|k| heat.sample(k));
                let t = Instant::now();
                for k in keys {
                    heat.sample(std::hint::black_box(k));
                }
                let ns = t.elapsed().as_nanos() as f64 / keys.len() as f64;
                let sample = if sample == u32::MAX { "never".to_string() } else { format!("1/{sample}") };
                println!("{name:<24} {top_keys:>8} {sample:>7} {ns:>12.1}");
            }
        }
    }
}
