//! Runs Kubernetes discovery: one watch per service with `kubernetes = {...}`
//! over its EndpointSlices (kube's runtime watcher: list, watch, relist on
//! 410). Each change is judged per pool by the same guardrails as DNS and
//! laid over the plan as the discovery overlay by a pool update (no reload).
//! A failing API server holds every pool of the service on its last known
//! set; the watch then starts over with a fresh list, with a backoff.

use super::discovery::{forget, update, Tracked};
use super::Shared;
use crate::discovery::kubernetes::{client, is_gone, pools_of, watch};
use crate::discovery::{Hold, KubePolicy};
use futures_util::StreamExt as _;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::Event;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A watched service as the plan asks for it: its policy and its pools by shard.
#[derive(Clone, PartialEq)]
struct Wanted {
    policy: KubePolicy,
    pools: Vec<(Option<String>, String)>,
}

fn wanted(shared: &Shared) -> HashMap<String, Wanted> {
    let plan = shared.accepted.lock().unwrap_or_else(|e| e.into_inner());
    plan.services
        .iter()
        .filter_map(|s| {
            let policy = s.kubernetes.clone()?;
            let pools = s.pools.iter().map(|p| (p.shard.clone(), p.name.clone())).collect();
            Some((s.name.clone(), Wanted { policy, pools }))
        })
        .collect()
}

/// Starts and stops the watches as reloads change the services, until shutdown.
pub async fn run(shared: Arc<Shared>) {
    let mut running: HashMap<String, (Wanted, tokio::task::JoinHandle<()>)> = HashMap::new();
    let mut stop = shared.shutdown.clone();
    loop {
        let want = wanted(&shared);
        let stale: Vec<String> = running.iter().filter(|(k, (w, _))| want.get(*k) != Some(w)).map(|(k, _)| k.clone()).collect();
        // A watch started again keeps its pools' last set until it lists;
        // a pool no watch follows any more goes back to what the config lists.
        let followed: HashSet<&String> = want.values().flat_map(|w| w.pools.iter().map(|(_, pool)| pool)).collect();
        let mut released = false;
        for k in stale {
            if let Some((w, task)) = running.remove(&k) {
                task.abort();
                for (_, pool) in w.pools.iter().filter(|(_, pool)| !followed.contains(pool)) {
                    forget(&shared, pool);
                    released = true;
                }
            }
        }
        if released {
            update(&shared).await;
        }
        for (service, w) in want {
            if let std::collections::hash_map::Entry::Vacant(e) = running.entry(service) {
                let task = tokio::spawn(watch_service(shared.clone(), e.key().clone(), w.clone()));
                e.insert((w, task));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|s| *s) => {
                running.values().for_each(|(_, task)| task.abort());
                return;
            }
        }
    }
}

/// One service's pools and the slices they come from.
struct Service {
    name: String,
    want: Wanted,
    pools: BTreeMap<String, Tracked>,
    slices: BTreeMap<String, EndpointSlice>,
    /// Slices already said to be unusable (said once each).
    told: HashSet<String>,
}

impl Service {
    /// Judges every pool against the slices (or against an outage) and
    /// updates the pools when one changed.
    async fn settle(&mut self, shared: &Arc<Shared>, outage: bool) {
        let found = pools_of(self.slices.values(), &self.want.policy);
        for why in &found.skipped {
            if self.told.insert(why.clone()) {
                tracing::warn!(service = %self.name, "discovery: {why}");
            }
        }
        let now = Instant::now();
        let mut changed = false;
        for (shard, pool) in &self.want.pools {
            let answer = if outage { Err(Hold::ApiFailed) } else { Ok(found.pools.get(shard).cloned().unwrap_or_default()) };
            let t = self.pools.get_mut(pool).expect("a tracked pool per wanted pool");
            changed |= t.settle(shared, pool, &self.want.policy.guard, answer, now);
        }
        for shard in found.pools.keys().flatten() {
            if !self.want.pools.iter().any(|(s, _)| s.as_ref() == Some(shard)) && self.told.insert(format!("shard {shard}")) {
                tracing::warn!(service = %self.name, shard, "discovery: slices name a shard the service does not have; they are left out");
            }
        }
        if changed {
            update(shared).await;
        }
        self.publish(shared);
    }

    fn publish(&mut self, shared: &Shared) {
        for (pool, t) in &mut self.pools {
            t.publish(shared, pool, None);
        }
    }
}

/// Watches one service's slices until aborted.
async fn watch_service(shared: Arc<Shared>, name: String, want: Wanted) {
    let sel = &want.policy.selector;
    let pools = want
        .pools
        .iter()
        .map(|(shard, pool)| {
            let source = match (shard, &want.policy.shard_label) {
                (Some(s), Some(label)) => format!("EndpointSlices {sel}, {label}={s}"),
                _ => format!("EndpointSlices {sel}"),
            };
            (pool.clone(), Tracked::new(vec![source]))
        })
        .collect();
    let mut svc = Service { name, want, pools, slices: BTreeMap::new(), told: HashSet::new() };
    let mut backoff = Duration::from_millis(500);
    loop {
        let fresh = match client(&svc.want.policy) {
            Ok(c) => follow(&shared, &mut svc, c).await,
            Err(e) => {
                tracing::warn!(service = %svc.name, error = %e, "discovery: no client of the Kubernetes API");
                false
            }
        };
        // An outage: the pools hold their last known set, and the watch
        // starts over with a list once the API server answers.
        svc.settle(&shared, true).await;
        backoff = if fresh { Duration::from_millis(500) } else { (backoff * 2).min(Duration::from_secs(10)) };
        let until = Instant::now() + backoff;
        while Instant::now() < until {
            svc.publish(&shared);
            tokio::time::sleep(Duration::from_secs(1).min(until.saturating_duration_since(Instant::now()))).await;
        }
    }
}

/// Follows the watch until it fails; whether it had listed before failing.
async fn follow(shared: &Arc<Shared>, svc: &mut Service, client: kube::Client) -> bool {
    let stream = watch(client, &svc.want.policy);
    futures_util::pin_mut!(stream);
    let mut listing: Option<BTreeMap<String, EndpointSlice>> = None;
    let mut listed = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            event = stream.next() => {
                let key = |s: &EndpointSlice| s.metadata.name.clone().unwrap_or_default();
                match event {
                    None => return listed,
                    Some(Ok(Event::Init)) => listing = Some(BTreeMap::new()),
                    Some(Ok(Event::InitApply(s))) => {
                        listing.get_or_insert_with(BTreeMap::new).insert(key(&s), s);
                    }
                    Some(Ok(Event::InitDone)) => {
                        svc.slices = listing.take().unwrap_or_default();
                        // What a listing leaves out is said again after the next.
                        svc.told.clear();
                        listed = true;
                        svc.settle(shared, false).await;
                    }
                    Some(Ok(Event::Apply(s))) => {
                        svc.slices.insert(key(&s), s);
                        svc.settle(shared, false).await;
                    }
                    Some(Ok(Event::Delete(s))) => {
                        svc.slices.remove(&key(&s));
                        svc.settle(shared, false).await;
                    }
                    // The server forgot the watch's version: the watcher relists.
                    Some(Err(e)) if is_gone(&e) => tracing::info!(service = %svc.name, "discovery: the watch expired (410); listing again"),
                    Some(Err(e)) => {
                        tracing::warn!(service = %svc.name, error = %e, "discovery: the Kubernetes API failed; the pools keep their last known set");
                        return listed;
                    }
                }
            }
            _ = tick.tick() => {
                // A held shrink is judged again so max_stale can pass.
                if listed && svc.pools.values().any(Tracked::holding) {
                    svc.settle(shared, false).await;
                }
                svc.publish(shared);
            }
        }
    }
}
