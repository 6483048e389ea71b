//! The build step: an accepted [`Plan`] becomes the immutable snapshot that
//! requests read. This is where state is made or carried over from the previous
//! snapshot by name: endpoints (health, counters, pooled connections) when their
//! key is unchanged, pool counters by pool, route counters by route, cache
//! contents by route, fan-outs in flight by service, rate-limit counters, the Redis client while its settings
//! are unchanged, the access-log writer while its settings are unchanged.

use super::plan::{AdminPlan, ConnLimits, Limits, ListenerOpts, ListenerPlan, Plan, PoolPlan};
use super::schema::Config;
use crate::accesslog::AccessLog;
use crate::identity::TrustedProxies;
use crate::metrics::RouteStats;
use crate::route::{Route, Router};
use crate::service::Service;
use crate::upstream::pool::PoolStats;
use crate::upstream::{Endpoint, EndpointKey, Pool};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Everything a request needs, immutable; swapped whole on reload.
pub struct Snapshot {
    pub generation: u64,
    /// Per-listener answers: redirect to https, HSTS. Empty when none is set.
    pub listener_opts: HashMap<String, ListenerOpts>,
    /// API keys, when configured.
    pub credentials: Option<crate::identity::Credentials>,
    /// Rate-limit counters (local, carried over every reload; shared through Redis when configured).
    pub limiter: crate::limit::Limiter,
    pub config: Config,
    pub router: Router,
    pub services: BTreeMap<String, Arc<Service>>,
    pub trusted: TrustedProxies,
    pub limits: Limits,
    /// Connection limits (the server builds its connection settings from them).
    pub conn: ConnLimits,
    /// The listeners to run.
    pub listeners: Vec<ListenerPlan>,
    /// The admin listener's address, when enabled (read at start only).
    pub admin: Option<AdminPlan>,
    /// How long shutdown waits for requests in flight.
    pub grace_period: std::time::Duration,
    pub access_log: Option<Arc<AccessLog>>,
    /// memcache services by name, and the listeners of the ambassador.
    pub memcache: BTreeMap<String, Arc<crate::memcache::Service>>,
    pub memcache_listeners: Vec<super::plan::McListenerPlan>,
}

/// A built snapshot, and the endpoints it created (whose probes must start).
pub struct Built {
    pub snapshot: Snapshot,
    pub new_endpoints: Vec<Arc<Endpoint>>,
}

/// State of the previous snapshot, by name, for the next one to carry over.
#[derive(Default)]
struct Carried<'a> {
    /// Whether there was a snapshot before this one.
    reload: bool,
    endpoints: HashMap<EndpointKey, Arc<Endpoint>>,
    pool_stats: HashMap<String, Arc<PoolStats>>,
    route_stats: HashMap<(&'a str, &'a str), Arc<RouteStats>>,
    caches: HashMap<String, Arc<crate::cache::store::Store>>,
    /// Each HTTP service's hot-key cache store.
    hot_caches: HashMap<String, Arc<crate::cache::store::Store>>,
    /// Each sharded service's fan-out permits and their cap.
    fan_outs: HashMap<String, (Arc<tokio::sync::Semaphore>, usize)>,
    /// Each service's key heat (HTTP and memcache).
    key_heat: HashMap<String, Arc<crate::heat::KeyHeat>>,
}

impl<'a> Carried<'a> {
    fn from(old: Option<&'a Snapshot>) -> Carried<'a> {
        let mut c = Carried { reload: old.is_some(), ..Carried::default() };
        if let Some(old) = old {
            for svc in old.services.values() {
                if let Some(sh) = &svc.sharding {
                    c.fan_outs.insert(svc.name.clone(), (sh.fan_out.in_flight.clone(), sh.fan_out.max_in_flight));
                }
                c.key_heat.insert(svc.name.clone(), svc.heat.clone());
                if let Some(hc) = &svc.hot_cache {
                    c.hot_caches.insert(svc.name.clone(), hc.store.clone());
                }
                for pool in &svc.pools {
                    c.pool_stats.insert(pool.name.clone(), pool.stats.clone());
                    for ep in &pool.endpoints {
                        c.endpoints.insert(ep.key.clone(), ep.clone());
                    }
                }
            }
            for r in &old.router.routes {
                c.route_stats.insert((&r.name, &r.service.name), r.stats.clone());
                if let Some(rc) = &r.cache {
                    c.caches.insert(r.name.clone(), rc.store.clone());
                }
            }
        }
        c
    }
}

/// Builds the snapshot of `plan`, carrying state over from `old`.
pub fn build(plan: Plan, old: Option<&Snapshot>) -> Built {
    let carried = Carried::from(old);
    let mut new_endpoints = Vec::new();
    // A hot key's answers are kept out of the shared cache when they carry
    // credentials, as a route cache's are.
    let id = plan.credentials.as_ref();
    let hot_credentials = crate::cache::flow::Credentials {
        header: id.and_then(|c| c.header.clone()),
        query: id.and_then(|c| c.query.clone()),
        cookies_in_key: false,
    };
    let services: Vec<Arc<Service>> = plan
        .services
        .into_iter()
        .map(|s| {
            let pools = s.pools.into_iter().map(|p| pool(p, &carried, &mut new_endpoints)).collect();
            let mut sharding = s.sharding;
            // Fan-outs in flight keep counting across a reload while the cap is unchanged.
            if let (Some(new), Some(old)) = (sharding.as_mut(), carried.fan_outs.get(s.name.as_str())) {
                if new.fan_out.max_in_flight == old.1 {
                    new.fan_out.in_flight = old.0.clone();
                }
            }
            // The hot-key cache's store is kept while its size is.
            let hot_cache = s.heat.mitigation.cache.as_ref().map(|c| {
                let store = kept_store(&carried.hot_caches, &s.name, c.max_bytes as u64);
                let rules =
                    crate::cache::flow::Rules::hot_keys(c.ttl.as_secs().max(1), (c.max_bytes / 8).max(1024), hot_credentials.clone());
                Arc::new(crate::cache::flow::RouteCache { rules, store })
            });
            let heat = crate::heat::KeyHeat::carried(carried.key_heat.get(s.name.as_str()), s.heat);
            Arc::new(Service { name: s.name, pools, sharding, heat, scaler: s.scaler, hot_cache })
        })
        .collect();
    let routes = plan
        .routes
        .into_iter()
        .map(|r| {
            let service = services[r.service].clone();
            let stats = carried.route_stats.get(&(r.name.as_str(), service.name.as_str())).cloned().unwrap_or_default();
            let cache = r.cache.map(|(rules, memory_bytes)| {
                let store = kept_store(&carried.caches, &r.name, memory_bytes);
                Arc::new(crate::cache::flow::RouteCache { rules, store })
            });
            Route {
                name: r.name,
                host: r.host,
                path_prefix: r.path_prefix,
                methods: r.methods,
                listeners: r.listeners,
                service,
                stats,
                fan_out: r.fan_out,
                cache,
                limits: r.limits,
                upgrades: r.upgrades,
            }
        })
        .collect();
    let access_log = plan.access_log.map(|settings| match old.and_then(|o| o.access_log.as_ref()) {
        Some(a) if a.settings == settings => a.clone(),
        _ => Arc::new(AccessLog::open(settings)),
    });
    let redis = plan.redis.map(|settings| {
        let unchanged = old.filter(|o| o.config.rate_limit_store == plan.config.rate_limit_store);
        match unchanged.and_then(|o| o.limiter.redis.clone()) {
            Some(store) => store,
            None => {
                let store = Arc::new(crate::limit::redis::RedisStore::new(settings));
                store.connect();
                store
            }
        }
    });
    let memcache = memcache(plan.memcache, old);
    let snapshot = Snapshot {
        memcache,
        memcache_listeners: plan.memcache_listeners,
        admin: plan.admin,
        grace_period: plan.grace_period,
        conn: plan.conn,
        listeners: plan.listeners,
        listener_opts: plan.listener_opts,
        limiter: crate::limit::Limiter {
            local: old.map(|o| o.limiter.local.clone()).unwrap_or_else(|| Arc::new(crate::limit::store::LocalStore::new(1_000_000))),
            redis,
            ipv4_prefix: plan.ipv4_prefix,
            ipv6_prefix: plan.ipv6_prefix,
        },
        credentials: plan.credentials,
        generation: old.map(|o| o.generation + 1).unwrap_or(1),
        router: Router { routes },
        services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
        trusted: plan.trusted,
        limits: plan.limits,
        access_log,
        config: plan.config,
    };
    Built { snapshot, new_endpoints }
}

/// The cache store `name` had, while its memory budget is unchanged (its
/// contents survive the reload); else a new one of `bytes`.
fn kept_store(old: &HashMap<String, Arc<crate::cache::store::Store>>, name: &str, bytes: u64) -> Arc<crate::cache::store::Store> {
    old.get(name).filter(|s| s.capacity == bytes).cloned().unwrap_or_else(|| Arc::new(crate::cache::store::Store::new(bytes)))
}

/// A pool with its endpoints: each carried over when its key, name and weight
/// are unchanged, else new (and listed in `new_endpoints`).
fn pool(p: PoolPlan, carried: &Carried, new_endpoints: &mut Vec<Arc<Endpoint>>) -> Pool {
    let endpoints = p
        .endpoints
        .into_iter()
        .map(|e| {
            let reusable =
                carried.endpoints.get(&e.key).filter(|o| o.weight == e.weight && Some(&o.name) == e.name.as_ref().or(Some(&e.key.address)));
            match reusable {
                Some(o) => o.clone(),
                None => {
                    let ep = Arc::new(Endpoint::new(e.key, e.authority, e.name, e.weight, e.tls));
                    // Endpoints of the first build are there from the start: no slow start.
                    if carried.reload {
                        ep.stats.joined_ms.store(crate::clock::now_ms().max(1), Relaxed);
                    }
                    new_endpoints.push(ep.clone());
                    ep
                }
            }
        })
        .collect();
    Pool {
        stats: carried.pool_stats.get(&p.name).cloned().unwrap_or_default(),
        name: p.name,
        service: p.service,
        shard: p.shard,
        balancer: p.balancer,
        endpoints,
        request_timeout: p.request_timeout,
        slow_start: p.slow_start,
        body_idle: p.body_idle,
        passive: p.passive,
        retry: p.retry,
    }
}

/// The memcache services, keeping from `old` each endpoint (its connections,
/// health and counters) whose service, address and settings are unchanged, and
/// the counters of shards and services by name.
fn memcache(plans: Vec<super::plan::McServicePlan>, old: Option<&Snapshot>) -> BTreeMap<String, Arc<crate::memcache::Service>> {
    use crate::memcache::{upstream::Endpoint as McEndpoint, Service as McService, Shard};
    let old_services = old.map(|o| &o.memcache);
    plans
        .into_iter()
        .map(|p| {
            let before = old_services.and_then(|m| m.get(&p.name));
            let shards = p
                .shards
                .into_iter()
                .map(|sh| {
                    let old_shard = before.and_then(|b| b.shards.iter().find(|s| s.name == sh.name));
                    let replicas = sh
                        .endpoints
                        .into_iter()
                        .map(|(name, addr)| {
                            let kept = before
                                .into_iter()
                                .flat_map(|b| b.endpoints())
                                .find(|e| e.addr == addr && e.name == name && e.settings == p.settings);
                            match kept {
                                Some(e) => e.clone(),
                                None => {
                                    let e = Arc::new(McEndpoint::new(name, addr, p.settings.clone(), Default::default()));
                                    if old.is_some() {
                                        e.stats.joined_ms.store(crate::clock::now_ms().max(1), Relaxed);
                                    }
                                    e
                                }
                            }
                        })
                        .collect();
                    Shard::new(sh.name, replicas, old_shard.map(|s| s.stats.clone()).unwrap_or_default())
                })
                .collect();
            // The hot-key cache is kept while its policy is.
            let hot_cache = p.heat.mitigation.cache.clone().map(|c| match before.and_then(|b| b.hot_cache.as_ref()) {
                Some(old) if old.policy == c => old.clone(),
                _ => Arc::new(crate::memcache::hotcache::HotCache::new(c)),
            });
            let svc = McService {
                hot_cache,
                stats: before.map(|b| b.stats.clone()).unwrap_or_default(),
                heat: crate::heat::KeyHeat::carried(before.map(|b| &b.heat), p.heat),
                name: p.name.clone(),
                ring: p.ring,
                tag: p.tag,
                shards,
                max_value: p.settings.max_value,
                policy: p.policy,
                command_timeout: p.command_timeout,
                scaler: p.scaler,
            };
            (p.name, Arc::new(svc))
        })
        .collect()
}
