//! The scaler at work: once a second, for every pool of a service with a
//! scaler, the per-replica load from its heat, a decision (`scale`), and the
//! step it asks for. A new replica joins its pool once it accepts
//! connections (the overlay gains it, the snapshot is rebuilt); a removed one
//! leaves the pool first, finishes what it has in flight (up to `drain`) and
//! is stopped after. Only replicas the scaler started are ever removed. With
//! one root and no election configured, this root leads.

use super::Shared;
use crate::scale::{local, Backend, Metric, Policy, PoolView, ShardScaler, VIEWS};
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// One pool's scaler: its decisions' memory and the replicas it started.
#[derive(Default)]
struct PoolScaler {
    scaler: ShardScaler,
    replicas: Vec<local::Replica>,
}

/// Runs until shutdown; the replicas it started are stopped then.
pub async fn run(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(super::heat::TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = shared.shutdown.clone();
    let mut pools: HashMap<String, PoolScaler> = HashMap::new();
    loop {
        tokio::select! {
            _ = every.tick() => step(&shared, &mut pools).await,
            _ = shutdown.changed() => break,
        }
    }
    // The replicas serve what is still in flight, then end with the server.
    let _ = tokio::time::timeout(shared.snapshot().grace_period, shared.tasks.wait()).await;
    let replicas: Vec<local::Replica> = pools.into_values().flat_map(|p| p.replicas).collect();
    let _ = tokio::task::spawn_blocking(move || replicas.into_iter().for_each(|mut r| r.stop(Duration::from_secs(2)))).await;
}

async fn step(shared: &Arc<Shared>, pools: &mut HashMap<String, PoolScaler>) {
    let snap = shared.snapshot();
    let now = crate::clock::now_ms();
    for svc in snap.services.values() {
        let Some(policy) = &svc.scaler else { continue };
        for pool in &svc.pools {
            let current = pool.endpoints.len();
            let load = match policy.metric {
                Metric::Rate => pool.stats.rate.get(),
                Metric::InFlight => pool.stats.in_flight.load(Relaxed) as f64,
            };
            let observed = load / current.max(1) as f64;
            let st = pools.entry(pool.name.clone()).or_default();
            let d = st.scaler.decide(now, current, observed, policy);
            let shard = pool.shard.clone().unwrap_or_else(|| svc.name.clone());
            let before = st.replicas.len();
            if d.desired > current {
                tracing::info!(pool = %pool.name, current, desired = d.desired, observed, target = policy.target, reason = d.reason, "scaling up");
                up(shared, st, &pool.name, &svc.name, &shard, d.desired - current, policy).await;
            } else if d.desired < current && !st.replicas.is_empty() {
                tracing::info!(pool = %pool.name, current, desired = d.desired, observed, target = policy.target, reason = d.reason, "scaling down");
                down(shared, st, &pool.name, current - d.desired, policy).await;
            }
            let view = PoolView {
                current: (current + st.replicas.len()).saturating_sub(before),
                desired: d.desired,
                observed,
                reason: d.reason,
                scaled: st.replicas.iter().map(|r| r.addr.to_string()).collect(),
                ..Default::default()
            };
            let mut views = VIEWS.lock().unwrap_or_else(|e| e.into_inner());
            let v = views.entry(pool.name.clone()).or_default();
            *v = PoolView { ups: v.ups, downs: v.downs, failures: v.failures, ..view };
        }
    }
}

fn count(pool: &str, f: impl FnOnce(&mut PoolView)) {
    f(VIEWS.lock().unwrap_or_else(|e| e.into_inner()).entry(pool.to_string()).or_default());
}

/// Starts `n` replicas at once; those that come up join the pool together.
async fn up(shared: &Arc<Shared>, st: &mut PoolScaler, pool: &str, service: &str, shard: &str, n: usize, p: &Policy) {
    let Backend::Local(settings) = &p.backend;
    let mut taken: Vec<u16> = st.replicas.iter().map(|r| r.addr.port()).collect();
    let mut starts = Vec::new();
    for _ in 0..n {
        let Some(port) = settings.free_port(&taken) else {
            tracing::error!(pool, ports = ?settings.ports, "scaler: no free port left in the range");
            count(pool, |v| v.failures += 1);
            break;
        };
        taken.push(port);
        starts.push(local::start(settings, service, shard, port));
    }
    let mut started = Vec::new();
    for r in futures_util::future::join_all(starts).await {
        match r {
            Ok(r) => started.push(r),
            Err(why) => {
                tracing::error!(pool, "scaler: a new replica did not start: {why}");
                count(pool, |v| v.failures += 1);
            }
        }
    }
    if started.is_empty() {
        return;
    }
    {
        let mut o = shared.scaled.lock().unwrap_or_else(|e| e.into_inner());
        started.iter().for_each(|r| o.add(pool, r.name.clone(), r.addr));
    }
    match super::reload::reload(shared).await {
        Ok(_) => {
            tracing::info!(pool, added = ?started.iter().map(|r| r.addr).collect::<Vec<_>>(), "scaler: replicas joined");
            count(pool, |v| v.ups += 1);
            st.replicas.extend(started);
            st.scaler.changed(crate::clock::now_ms());
        }
        Err(why) => {
            tracing::error!(pool, "scaler: the new replicas could not join (the config does not load: {why}); stopping them");
            let mut o = shared.scaled.lock().unwrap_or_else(|e| e.into_inner());
            started.iter().for_each(|r| o.remove(pool, r.addr));
            count(pool, |v| v.failures += 1);
        }
    }
}

/// Takes the `n` newest scaled replicas out of the pool, then stops each once
/// it has nothing in flight (or after `drain`).
async fn down(shared: &Arc<Shared>, st: &mut PoolScaler, pool: &str, n: usize, p: &Policy) {
    let Backend::Local(settings) = &p.backend;
    let n = n.min(st.replicas.len());
    let leaving: Vec<local::Replica> = st.replicas.split_off(st.replicas.len() - n);
    // The endpoints as the current snapshot has them: their in-flight counts tell when they are idle.
    let snap = shared.snapshot();
    let endpoints: Vec<_> = snap
        .services
        .values()
        .flat_map(|s| s.pools.iter())
        .filter(|pl| pl.name == pool)
        .flat_map(|pl| pl.endpoints.iter())
        .filter(|e| leaving.iter().any(|r| r.addr.to_string() == e.address))
        .cloned()
        .collect();
    {
        let mut o = shared.scaled.lock().unwrap_or_else(|e| e.into_inner());
        leaving.iter().for_each(|r| o.remove(pool, r.addr));
    }
    if let Err(why) = super::reload::reload(shared).await {
        tracing::error!(pool, "scaler: replicas could not leave (the config does not load: {why}); keeping them");
        let mut o = shared.scaled.lock().unwrap_or_else(|e| e.into_inner());
        leaving.iter().for_each(|r| o.add(pool, r.name.clone(), r.addr));
        st.replicas.extend(leaving);
        count(pool, |v| v.failures += 1);
        return;
    }
    tracing::info!(pool, removed = ?leaving.iter().map(|r| r.addr).collect::<Vec<_>>(), "scaler: replicas left the pool; draining");
    count(pool, |v| v.downs += 1);
    st.scaler.changed(crate::clock::now_ms());
    let drain = settings.drain;
    drop(snap);
    tokio::spawn(async move {
        let until = tokio::time::Instant::now() + drain;
        while tokio::time::Instant::now() < until && endpoints.iter().any(|e| e.stats.in_flight.load(Relaxed) > 0) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Stopping waits for the process: off the runtime's threads.
        let _ = tokio::task::spawn_blocking(move || leaving.into_iter().for_each(|mut r| r.stop(Duration::from_secs(5)))).await;
    });
}
