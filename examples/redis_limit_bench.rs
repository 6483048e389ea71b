//! Throughput of the shared rate-limit store: decisions per second through one
//! Redis, from 64 concurrent requests, each one atomic script call.
//!
//!     cargo run --release --example redis_limit_bench redis://127.0.0.1:6379 [SECONDS]

use ringmaster::limit::gcra::Quota;
use ringmaster::limit::redis::{OnFailure, RedisStore, Settings};
use ringmaster::limit::{Policy, Scope};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let url = std::env::args().nth(1).unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let secs: u64 = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let client = redis::Client::open(url.as_str()).expect("a Redis URL");
    let settings =
        Settings { client, url, cluster: false, timeout: Duration::from_secs(1), on_failure: OnFailure::Closed, prefix: "bench:".into() };
    let store = Arc::new(RedisStore::new(settings));
    let policy = Policy {
        name: "bench".into(),
        quota: Quota::new(1_000_000, Duration::from_secs(1), 1_000_000),
        scope: Scope::Client,
        seed: 7,
        denied: Default::default(),
    };
    // Connect first.
    for _ in 0..50 {
        if store.check(&[&policy], 1, 1).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for t in 0..64u128 {
        let (store, policy, done) = (store.clone(), policy.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u128;
            while Instant::now() < end {
                let s = Instant::now();
                store.check(&[&policy], t * 1_000_000 + i % 10_000, 1).await.expect("redis answers");
                lat.push(s.elapsed().as_micros() as u64);
                done.fetch_add(1, Relaxed);
                i += 1;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    let n = done.load(Relaxed);
    println!(
        "shared store: {:.0} decisions/s over {secs} s (64 concurrent), p50 {} us, p99 {} us",
        n as f64 / secs as f64,
        all[all.len() / 2],
        all[all.len() * 99 / 100]
    );
}
