//! The scaler at work: once a second, for every pool of a service with a
//! scaler (an HTTP pool or a memcache shard), the per-replica load from its
//! heat, a decision (`scale`), and, on the leader only, the step it asks for
//! from the back-end:
//! - `local`: a new replica joins its pool once it accepts connections (the
//!   overlay gains it, the snapshot is rebuilt); a removed one leaves the
//!   pool first, finishes what it has in flight (up to `drain`) and is
//!   stopped after. Only replicas the scaler started are ever removed.
//! - `command`: the operator's command scales the shard and lists its
//!   endpoints; the pool becomes that list.
//! - `kubernetes`: the shard's workload is asked for the new count
//!   (compare-and-set); an object an HPA owns is left to the HPA.

use super::Shared;
use crate::config::Snapshot;
use crate::scale::leader::Leadership;
use crate::scale::{command, local, Backend, Decision, Metric, Policy, PoolView, ScaleError, ShardScaler, StepError};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// One pool's scaler: its decisions' memory and the replicas it started.
#[derive(Default)]
struct PoolScaler {
    scaler: ShardScaler,
    replicas: Vec<local::Replica>,
    /// kubernetes: the workload as last read, and when (ms).
    seen: Option<(u64, crate::scale::kube::Observed)>,
}

/// How long a workload read from the API server is trusted for a decision;
/// a step re-reads it before it writes. Keeps the calls per shard to one in
/// 15 s (the HPA's own sync period) while nothing changes.
const KUBE_SYNC_MS: u64 = 15_000;

/// A pool a scaler watches, as the snapshot has it.
struct Watched {
    /// `service` or `service/shard`, as the overlay and the views key it.
    pool: String,
    service: String,
    shard: String,
    /// Endpoints in the pool now.
    endpoints: usize,
    /// The pool's load in the policy's metric.
    load: f64,
    policy: Policy,
}

/// Every pool of every scaled service, from the snapshot's one list.
fn watched(snap: &Snapshot) -> Vec<Watched> {
    snap.pools()
        .into_iter()
        .filter_map(|p| {
            let policy = p.scaler?;
            let load = match policy.metric {
                Metric::Rate => p.load.rate.get(),
                Metric::InFlight => p.load.in_flight() as f64,
            };
            Some(Watched {
                pool: p.id.to_string(),
                service: p.id.service.clone(),
                shard: p.id.shard_or_service().to_string(),
                endpoints: p.endpoints.len(),
                load,
                policy: policy.clone(),
            })
        })
        .collect()
}

/// The in-flight gauges of `addrs` in `pool`, to tell when they are idle.
fn gauges(snap: &Snapshot, pool: &str, addrs: &[SocketAddr]) -> Vec<Box<dyn Fn() -> usize + Send>> {
    let wanted: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    snap.pools()
        .into_iter()
        .filter(|p| p.id.to_string() == pool)
        .flat_map(|p| p.endpoints.into_iter().filter(|e| wanted.contains(&e.address())).map(|e| e.gauge()).collect::<Vec<_>>())
        .collect()
}

/// The scaler at work, a value owning what it remembers: each pool's
/// decisions and replicas, and which peers failed to answer.
struct Scaler {
    shared: Arc<Shared>,
    pools: HashMap<String, Arc<tokio::sync::Mutex<PoolScaler>>>,
    /// The peers whose heat could not be read at the last tick: each failure
    /// and each recovery is logged once.
    failing: Vec<String>,
}

/// Runs until shutdown; the replicas it started are stopped then.
pub async fn run(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(super::heat::TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = shared.shutdown.clone();
    let mut scaler = Scaler { shared, pools: HashMap::new(), failing: Vec::new() };
    loop {
        tokio::select! {
            _ = every.tick() => scaler.tick().await,
            _ = shutdown.changed() => break,
        }
    }
    scaler.stop().await;
}

impl Scaler {
    /// One tick: the peers' load read once, then each pool's step on a task of
    /// its own, so a slow one (a long command, a slow API server) never delays
    /// another; a pool whose last step still runs is skipped this tick.
    async fn tick(&mut self) {
        let shared = self.shared.clone();
        let leads = shared.scaling.leadership.leads();
        let (peers, factor) = match shared.leader.as_ref().filter(|l| leads && !l.peers.is_empty()) {
            Some(l) => (self.peers_load(&l.peers).await, l.peer_load_factor),
            None => (Vec::new(), 0.0),
        };
        for mut w in watched(&shared.snapshot()) {
            let own = w.load;
            for &(rate, in_flight) in peers.iter().filter_map(|p| p.get(&w.pool)) {
                let reported = if w.policy.metric == Metric::Rate { rate } else { in_flight };
                w.load += peer_share(reported, own, w.policy.target, factor);
            }
            let Ok(st) = self.pools.entry(w.pool.clone()).or_default().clone().try_lock_owned() else {
                tracing::debug!(pool = %w.pool, "scaler: the pool's last step still runs; this tick skips it");
                continue;
            };
            tokio::spawn(pool_step(shared.clone(), st, w, leads));
        }
    }

    /// The replicas serve what is still in flight, then end with the server.
    async fn stop(self) {
        let _ = tokio::time::timeout(self.shared.snapshot().grace_period, self.shared.tasks.wait()).await;
        let mut replicas: Vec<local::Replica> = Vec::new();
        for p in self.pools.into_values() {
            // Waits for a step still running.
            replicas.append(&mut p.lock().await.replicas);
        }
        let _ = tokio::task::spawn_blocking(move || replicas.into_iter().for_each(|mut r| r.stop(Duration::from_secs(2)))).await;
    }

    fn peer_state(&mut self, peer: &http::Uri, failure: Option<String>) {
        let name = peer.to_string();
        let was = self.failing.contains(&name);
        match failure {
            Some(why) if !was => {
                tracing::warn!(peer = %name, "scaler: a peer's heat is not counted until it answers: {why}");
                self.failing.push(name);
            }
            None if was => {
                tracing::info!(peer = %name, "scaler: a peer's heat is counted again");
                self.failing.retain(|p| *p != name);
            }
            _ => {}
        }
    }

    /// The load each other root forwards, by pool, in both metrics (rate, in
    /// flight), as it reports it (checked by [`peer_share`]).
    async fn peers_load(&mut self, peers: &[crate::scale::api::Api]) -> Vec<HashMap<String, (f64, f64)>> {
        let calls = peers.iter().map(|p| p.call(http::Method::GET, "/admin/heat", None));
        let mut out = Vec::new();
        for (p, a) in peers.iter().zip(futures_util::future::join_all(calls).await) {
            let mut load: HashMap<String, (f64, f64)> = HashMap::new();
            match a {
                Ok((s, heat)) if s.is_success() => match serde_json::from_value::<crate::admin::heat::HeatView>(heat) {
                    Ok(view) => {
                        self.peer_state(&p.base, None);
                        for svc in &view.services {
                            for sh in &svc.shards {
                                // A replicated service's one pool is named as the service (as a PoolId shows it).
                                let shard = Some(sh.shard.as_str()).filter(|s| *s != svc.service);
                                let e = load.entry(crate::heat::load::PoolId::new(&svc.service, shard).to_string()).or_default();
                                e.0 += sh.rate;
                                e.1 += sh.in_flight as f64;
                            }
                        }
                    }
                    Err(e) => self.peer_state(&p.base, Some(format!("its /admin/heat is not heat: {e}"))),
                },
                Ok(a) => self.peer_state(&p.base, Some(crate::scale::api::refusal(&a))),
                Err(e) => self.peer_state(&p.base, Some(e.to_string())),
            }
            out.push(load);
        }
        out
    }
}

/// What one peer's reported load `reported` may add to a pool whose own load
/// is `own`: peers are data, not authority, so at most `factor` times the
/// larger of `own` and the scaler's `target`, and never below zero (a NaN or
/// a negative number counts as none).
fn peer_share(reported: f64, own: f64, target: f64, factor: f64) -> f64 {
    let most = factor * own.max(target).max(0.0);
    if reported.is_nan() {
        return 0.0;
    }
    reported.clamp(0.0, most)
}

/// One pool's decision and, when it asks for a change, its step.
async fn pool_step(shared: Arc<Shared>, mut st: tokio::sync::OwnedMutexGuard<PoolScaler>, w: Watched, leads: bool) {
    let (shared, st) = (&shared, &mut *st);
    let lead = &*shared.scaling.leadership;
    let count = |pool: &str, f: &dyn Fn(&mut PoolView)| shared.scaling.update(pool, f);
    let now = crate::clock::now_ms();
    // What the pool has: its endpoints, or what its workload asks for.
    let (current, kube) = match &w.policy.backend {
        Backend::Kubernetes(k) => match st.seen.as_ref().filter(|s| now.saturating_sub(s.0) < KUBE_SYNC_MS) {
            Some((_, o)) => (o.spec, Some(o.clone())),
            None => match k.read(&w.service, &w.shard).await {
                Ok(o) => {
                    st.seen = Some((now, o.clone()));
                    (o.spec, Some(o))
                }
                Err(why) => {
                    tracing::warn!(pool = %w.pool, "scaler: {why}");
                    count(&w.pool, &|v| v.failures += 1);
                    return;
                }
            },
        },
        _ => (w.endpoints, None),
    };
    let observed = w.load / current.max(1) as f64;
    let mut d = st.scaler.decide(now, current, observed, &w.policy);
    if let Some(hpa) = kube.as_ref().and_then(|o| o.hpa.as_ref()) {
        tracing::debug!(pool = %w.pool, hpa, "scaler: an HPA owns the workload; heat is exported only");
        d = Decision { desired: current, reason: "an HPA owns the workload: metrics only", ..d };
    } else if !leads && d.desired != current {
        d = Decision { desired: current, reason: "another root leads and scales", ..d };
    }
    let before = st.replicas.len();
    if d.desired != current {
        let dir = if d.desired > current { "up" } else { "down" };
        tracing::info!(pool = %w.pool, current, desired = d.desired, observed, target = w.policy.target, reason = d.reason, "scaling {dir}");
        let done = match &w.policy.backend {
            Backend::Local(s) if d.desired > current => up(shared, st, &w, s, d.desired - current).await,
            Backend::Local(s) => down(shared, st, &w.pool, s, current - d.desired).await,
            Backend::Command(s) => listed(shared, &w, s, current, d.desired).await,
            Backend::Kubernetes(k) => {
                // Read again now (the decision may rest on a read up to 15 s old), then compare-and-set.
                st.seen = None;
                let step = async {
                    let o = fenced(lead, k.read(&w.service, &w.shard)).await?;
                    match &o.hpa {
                        Some(hpa) => Err(StepError::Backend(ScaleError::HpaOwns(hpa.clone()))),
                        None => fenced(lead, k.write(&w.service, &w.shard, d.desired, &o.resource_version)).await,
                    }
                };
                step.await.map_err(|why| tracing::error!(pool = %w.pool, "scaler: {why}")).is_ok()
            }
        };
        if done {
            st.scaler.changed(crate::clock::now_ms());
            count(&w.pool, &|v| if d.desired > current { v.ups += 1 } else { v.downs += 1 });
        } else {
            count(&w.pool, &|v| v.failures += 1);
        }
    }
    let current = match w.policy.backend {
        Backend::Local(_) => (current + st.replicas.len()).saturating_sub(before),
        _ => current,
    };
    let view = PoolView {
        current,
        desired: d.desired,
        observed,
        reason: d.reason.into(),
        scaled: st.replicas.iter().map(|r| r.addr.to_string()).collect(),
        ..Default::default()
    };
    shared.scaling.update(&w.pool, |v| *v = PoolView { ups: v.ups, downs: v.downs, failures: v.failures, ..view });
}

/// Runs `effect` only if this root leads now (by `lead`), and no longer than
/// it goes on leading (fencing: a step never outlives the lease it was taken under).
async fn fenced<T>(lead: &Leadership, effect: impl std::future::Future<Output = Result<T, ScaleError>>) -> Result<T, StepError> {
    if lead.remaining().is_none() {
        return Err(StepError::NotLeading);
    }
    tokio::select! {
        r = effect => r.map_err(StepError::Backend),
        _ = lead.lapsed() => Err(StepError::Lapsed),
    }
}

/// Runs the command back-end and makes the pool the list it prints.
async fn listed(shared: &Arc<Shared>, w: &Watched, s: &command::Settings, current: usize, desired: usize) -> bool {
    let step = command::Step { service: &w.service, shard: &w.shard, pool: &w.pool, current, desired };
    // Fenced: run only while this root leads, and killed when its lead ends.
    let lead = &shared.scaling.leadership;
    let run = match lead.remaining() {
        Some(_) => command::run(s, &step, lead.lapsed()).await.map_err(StepError::from),
        None => Err(StepError::NotLeading),
    };
    let list = match run {
        Ok(l) => l,
        Err(why) => {
            tracing::error!(pool = %w.pool, "scaler: {why}");
            return false;
        }
    };
    let before = shared.scaled.lock().unwrap_or_else(|e| e.into_inner()).0.get(&w.pool).cloned();
    shared.scaled.lock().unwrap_or_else(|e| e.into_inner()).set(&w.pool, list.clone());
    match super::reload::update_pools(shared).await {
        Ok(_) => {
            tracing::info!(pool = %w.pool, endpoints = ?list.iter().map(|e| e.1).collect::<Vec<_>>(), "scaler: the pool is the command's list");
            true
        }
        Err(why) => {
            tracing::error!(pool = %w.pool, "scaler: the command's endpoints could not join ({why})");
            let mut o = shared.scaled.lock().unwrap_or_else(|e| e.into_inner());
            match before {
                Some(b) => drop(o.0.insert(w.pool.clone(), b)),
                None => drop(o.0.remove(&w.pool)),
            }
            false
        }
    }
}

/// Starts `n` replicas at once; those that come up join the pool together.
async fn up(shared: &Arc<Shared>, st: &mut PoolScaler, w: &Watched, settings: &local::Settings, n: usize) -> bool {
    let pool = w.pool.as_str();
    let mut taken: Vec<u16> = st.replicas.iter().map(|r| r.addr.port()).collect();
    let mut starts = Vec::new();
    for _ in 0..n {
        let Some(port) = settings.free_port(&taken) else {
            tracing::error!(pool, ports = ?settings.ports, "scaler: no free port left in the range");
            break;
        };
        taken.push(port);
        starts.push(local::start(settings, &w.service, &w.shard, port));
    }
    let mut started = Vec::new();
    // Fenced: a replica still starting when the lead ends is stopped (dropped).
    let all = fenced(&shared.scaling.leadership, async { Ok(futures_util::future::join_all(starts).await) }).await;
    match all {
        Ok(all) => {
            for r in all {
                match r {
                    Ok(r) => started.push(r),
                    Err(why) => tracing::error!(pool, "scaler: a new replica did not start: {why}"),
                }
            }
        }
        Err(why) => tracing::error!(pool, "scaler: a new replica did not start: {why}"),
    }
    if started.is_empty() {
        return false;
    }
    {
        let mut o = shared.scaled.lock().unwrap_or_else(|e| e.into_inner());
        started.iter().for_each(|r| o.add(pool, r.name.clone(), r.addr));
    }
    match super::reload::update_pools(shared).await {
        Ok(_) => {
            tracing::info!(pool, added = ?started.iter().map(|r| r.addr).collect::<Vec<_>>(), "scaler: replicas joined");
            st.replicas.extend(started);
            true
        }
        Err(why) => {
            tracing::error!(pool, "scaler: the new replicas could not join ({why}); stopping them");
            let mut o = shared.scaled.lock().unwrap_or_else(|e| e.into_inner());
            started.iter().for_each(|r| o.remove(pool, r.addr));
            false
        }
    }
}

/// Takes the `n` newest scaled replicas out of the pool, then stops each once
/// it has nothing in flight (or after `drain`).
async fn down(shared: &Arc<Shared>, st: &mut PoolScaler, pool: &str, settings: &local::Settings, n: usize) -> bool {
    let n = n.min(st.replicas.len());
    if n == 0 || shared.scaling.leadership.remaining().is_none() {
        return false;
    }
    let leaving: Vec<local::Replica> = st.replicas.split_off(st.replicas.len() - n);
    let addrs: Vec<SocketAddr> = leaving.iter().map(|r| r.addr).collect();
    // The endpoints as the current snapshot has them: their in-flight counts tell when they are idle.
    let busy = gauges(&shared.snapshot(), pool, &addrs);
    {
        let mut o = shared.scaled.lock().unwrap_or_else(|e| e.into_inner());
        addrs.iter().for_each(|a| o.remove(pool, *a));
    }
    if let Err(why) = super::reload::update_pools(shared).await {
        tracing::error!(pool, "scaler: replicas could not leave ({why}); keeping them");
        let mut o = shared.scaled.lock().unwrap_or_else(|e| e.into_inner());
        leaving.iter().for_each(|r| o.add(pool, r.name.clone(), r.addr));
        st.replicas.extend(leaving);
        return false;
    }
    tracing::info!(pool, removed = ?addrs, "scaler: replicas left the pool; draining");
    let drain = settings.drain;
    tokio::spawn(async move {
        let until = tokio::time::Instant::now() + drain;
        while tokio::time::Instant::now() < until && busy.iter().any(|g| g() > 0) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Stopping waits for the process: off the runtime's threads.
        let _ = tokio::task::spawn_blocking(move || leaving.into_iter().for_each(|mut r| r.stop(Duration::from_secs(5)))).await;
    });
    true
}

#[cfg(test)]
mod tests {
    use super::peer_share;

    #[test]
    fn a_peers_share_is_clamped_to_a_multiple_of_what_this_root_sees() {
        assert_eq!(peer_share(30.0, 50.0, 20.0, 10.0), 30.0, "an honest peer counts whole");
        assert_eq!(peer_share(1e6, 50.0, 20.0, 10.0), 500.0);
        assert_eq!(peer_share(1e6, 0.0, 20.0, 2.0), 40.0, "with no own load, the target is the measure");
        assert_eq!(peer_share(-1e6, 50.0, 20.0, 10.0), 0.0);
        assert_eq!(peer_share(f64::NAN, 50.0, 20.0, 10.0), 0.0);
        assert_eq!(peer_share(f64::INFINITY, 50.0, 20.0, 10.0), 500.0);
    }
}
