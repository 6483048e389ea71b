//! Runs discovery: each pool whose service has `dns` has its names asked
//! again when their TTL runs out; what the guardrails let through becomes
//! the pool, laid over the accepted plan as the discovery overlay, by a pool
//! update (no file is read, connections and health carry over). What each
//! pool holds, and why, is published for the dashboard and the metrics.

use super::Shared;
use crate::discovery::{dns, judge, name_of, DnsPolicy, Guardrails, Hold, PoolStatus, Verdict};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A discovered pool as the plan asks for it.
struct Wanted {
    pool: String,
    policy: DnsPolicy,
    names: Vec<(String, u16)>,
    /// Endpoints the config gives as addresses: always in the pool.
    listed: Vec<SocketAddr>,
}

/// What discovery knows of one pool, whatever its source.
pub(super) struct Tracked {
    /// The set applied last (empty until the first answer).
    last: Vec<SocketAddr>,
    held: Option<(Hold, Instant)>,
    pub status: PoolStatus,
}

impl Tracked {
    pub fn new(names: Vec<String>) -> Tracked {
        Tracked { last: Vec::new(), held: None, status: PoolStatus { names, ..PoolStatus::default() } }
    }

    /// Judges `answer` under the guardrails and lays what passes over the
    /// pool as the discovery overlay; whether the pool changed.
    pub fn settle(&mut self, shared: &Shared, pool: &str, guard: &Guardrails, answer: Result<Vec<SocketAddr>, Hold>, now: Instant) -> bool {
        match judge(guard, &self.last, answer, self.held.map(|h| h.1), now) {
            Verdict::Apply(set) => {
                if let Some((why, since)) = self.held.take() {
                    tracing::info!(pool, held = why.reason(), held_ms = since.elapsed().as_millis() as u64, "discovery: the hold ends");
                }
                self.status.held = None;
                if set == self.last {
                    return false;
                }
                tracing::info!(pool, before = self.last.len(), after = set.len(), "discovery: the pool follows its source");
                self.last = set;
                self.status.updates += 1;
                self.status.endpoints = self.last.iter().map(|a| a.to_string()).collect();
                let list = self.last.iter().map(|a| (a.to_string(), *a)).collect();
                shared.discovered.lock().unwrap_or_else(|e| e.into_inner()).set(pool, list);
                true
            }
            Verdict::Hold(why) => {
                *self.status.holds.entry(why.reason()).or_default() += 1;
                if self.held.map(|h| h.0) != Some(why) {
                    tracing::warn!(
                        pool,
                        reason = why.reason(),
                        serving = self.last.len(),
                        max_stale_s = guard.max_stale.as_secs(),
                        "discovery: answer held; the last known set keeps serving"
                    );
                    // A hold of another kind starts its own clock: max_stale
                    // counts how long this answer has been the one held.
                    self.held = Some((why, now));
                }
                self.status.held = Some(why.reason());
                false
            }
        }
    }

    /// Whether a hold is on.
    #[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
    pub fn holding(&self) -> bool {
        self.held.is_some()
    }

    /// Publishes the pool's status, with the age of its hold.
    pub fn publish(&mut self, shared: &Shared, pool: &str, next: Option<Instant>) {
        self.status.held_seconds = self.held.map_or(0.0, |(_, since)| since.elapsed().as_secs_f64());
        self.status.next_in_seconds = next.map_or(0.0, |n| n.saturating_duration_since(Instant::now()).as_secs_f64());
        shared.discovery.set(pool, self.status.clone());
    }
}

/// Rebuilds the pools with the discovery overlay as it is now (a refusal
/// is logged by `update_pools`; the pools then stay as they were).
pub(super) async fn update(shared: &Arc<Shared>) {
    let _ = super::reload::update_pools(shared).await;
}

/// Takes a pool out of discovery: it goes back to what the config lists.
pub(super) fn forget(shared: &Shared, pool: &str) {
    shared.discovered.lock().unwrap_or_else(|e| e.into_inner()).0.remove(pool);
    shared.discovery.remove(pool);
}

/// What DNS discovery knows of one pool.
struct PoolState {
    policy: DnsPolicy,
    resolver: Result<dns::DnsResolver, String>,
    next: Instant,
    tracked: Tracked,
}

impl PoolState {
    fn new(policy: DnsPolicy, names: &[(String, u16)]) -> PoolState {
        let resolver = dns::resolver(&policy);
        let names = policy.srv.iter().map(|n| format!("SRV {n}")).chain(names.iter().map(|(h, p)| format!("{h}:{p}"))).collect();
        PoolState { policy, resolver, next: Instant::now(), tracked: Tracked::new(names) }
    }
}

fn wanted(shared: &Shared) -> Vec<Wanted> {
    let plan = shared.accepted.lock().unwrap_or_else(|e| e.into_inner());
    plan.services
        .iter()
        .flat_map(|s| s.pools.iter())
        .filter_map(|p| {
            let policy = p.dns.clone()?;
            let names: Vec<(String, u16)> = p.endpoints.iter().filter_map(|e| name_of(&e.key.address)).collect();
            let listed = p.endpoints.iter().filter_map(|e| e.key.address.parse().ok()).collect();
            (!names.is_empty() || policy.srv.is_some()).then(|| Wanted { pool: p.name.clone(), policy, names, listed })
        })
        .collect()
}

/// Asks, judges and updates until shutdown.
pub async fn run(shared: Arc<Shared>) {
    let mut pools: HashMap<String, PoolState> = HashMap::new();
    let mut stop = shared.shutdown.clone();
    loop {
        let want = wanted(&shared);
        // Pools no longer discovered go back to what the config lists.
        let gone: Vec<String> = pools.keys().filter(|k| !want.iter().any(|w| &w.pool == *k)).cloned().collect();
        let mut changed = !gone.is_empty();
        for k in gone {
            pools.remove(&k);
            forget(&shared, &k);
        }
        for w in want {
            let st = pools.entry(w.pool.clone()).or_insert_with(|| PoolState::new(w.policy.clone(), &w.names));
            if st.policy != w.policy || st.tracked.status.names.len() != w.names.len() + usize::from(w.policy.srv.is_some()) {
                *st = PoolState::new(w.policy.clone(), &w.names);
            }
            let now = Instant::now();
            if now >= st.next {
                changed |= ask(&shared, &w, st).await;
            }
            st.tracked.publish(&shared, &w.pool, Some(st.next));
        }
        if changed {
            update(&shared).await;
        }
        // Held pools are published with their age each second.
        let next = pools.values().map(|s| s.next).min().unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        let wait = next.saturating_duration_since(Instant::now()).min(Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Asks for one pool's names and applies what the guardrails let through;
/// whether the pool changed.
async fn ask(shared: &Shared, w: &Wanted, st: &mut PoolState) -> bool {
    let (answer, ttl) = match (&st.resolver, &w.policy.srv) {
        (Ok(r), None) => dns::lookup_all(r, &w.policy, &w.names).await,
        // An SRV name: its targets (on their ports) are asked as names are.
        (Ok(r), Some(srv)) => match dns::lookup_srv(r, &w.policy, srv).await {
            Ok((targets, srv_ttl)) => {
                let (answer, ttl) = dns::lookup_all(r, &w.policy, &[&w.names[..], &targets[..]].concat()).await;
                (answer, ttl.min(srv_ttl))
            }
            Err(why) => (Err(why), w.policy.min_ttl),
        },
        (Err(why), _) => {
            tracing::warn!(pool = %w.pool, error = %why, "discovery: no resolver");
            (Err(Hold::ResolverFailed), w.policy.min_ttl)
        }
    };
    let now = Instant::now();
    st.next = now + ttl;
    let answer = answer.map(|mut found| {
        found.extend(&w.listed);
        found
    });
    st.tracked.settle(shared, &w.pool, &w.policy.guard, answer, now)
}
