//! The heat tick: once a second, off the request path, turns the counters of
//! every shard and endpoint of the current snapshot into rates and ages the
//! key rankings. Requests pay nothing for it; a reload changes nothing
//! either, since the counters and rankings are carried over by name.

use crate::config::Snapshot;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// How often rates are measured.
pub const TICK: Duration = Duration::from_secs(1);

/// Ticks until shutdown.
pub async fn run(snapshot: impl Fn() -> Arc<Snapshot>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::select! {
            now = every.tick() => {
                tick(&snapshot(), now - last);
                last = now;
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// One measurement of every rate, `dt` after the last: each pool's load
/// and each endpoint's, whatever the protocol, then the key rankings aged.
pub fn tick(snap: &Snapshot, dt: Duration) {
    for pool in snap.pools() {
        pool.load.tick(dt, pool.window);
        if let Some((n, r)) = pool.bytes {
            r.tick(n.load(Relaxed), dt, pool.window);
        }
        for ep in &pool.endpoints {
            ep.rate().tick(ep.requests().load(Relaxed), dt, pool.window);
        }
    }
    for heat in snap.key_heats() {
        heat.decay(dt);
        heat.refresh_hot();
    }
}
