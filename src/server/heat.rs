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

/// One measurement of every rate, `dt` after the last.
pub fn tick(snap: &Snapshot, dt: Duration) {
    for svc in snap.services.values() {
        let w = svc.heat.policy().window;
        for pool in &svc.pools {
            pool.stats.rate.tick(pool.stats.answers(), dt, w);
            pool.stats.error_rate.tick(pool.stats.by_class[4].load(Relaxed), dt, w);
            for ep in &pool.endpoints {
                ep.stats.rate.tick(ep.stats.requests.load(Relaxed), dt, w);
            }
        }
        svc.heat.decay(dt);
        svc.heat.refresh_hot();
    }
    for svc in snap.memcache.values() {
        let w = svc.heat.policy().window;
        for sh in &svc.shards {
            let (s, h) = (&sh.stats, &sh.stats.heat);
            h.requests.tick(s.requests.load(Relaxed), dt, w);
            h.errors.tick(s.errors.load(Relaxed), dt, w);
            h.bytes.tick(s.bytes.load(Relaxed), dt, w);
            for ep in &sh.replicas {
                ep.stats.rate.tick(ep.stats.requests.load(Relaxed), dt, w);
            }
        }
        svc.heat.decay(dt);
        svc.heat.refresh_hot();
    }
}
