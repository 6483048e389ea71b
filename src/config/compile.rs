//! Compile a validated config into the immutable snapshot that requests read.
//!
//! Long-lived state is carried over from the previous snapshot by name:
//! endpoints (health, counters, pooled connections) when their key is unchanged,
//! pool counters by service, route counters by route.

use super::schema::{Config, ServiceKind};
use super::validate::parse_cidr;
use crate::accesslog::AccessLog;
use crate::admin::metrics::RouteStats;
use crate::balance::Balancer;
use crate::identity::TrustedProxies;
use crate::route::{HostMatch, Route, Router};
use crate::service::Service;
use crate::shard::ring::Member;
use crate::upstream::pool::PoolStats;
use crate::upstream::{Endpoint, EndpointKey, Pool};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Request limits applied by the parse stage.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: u64,
}

/// Everything a request needs, immutable; swapped whole on reload.
pub struct Snapshot {
    pub generation: u64,
    pub config: Config,
    pub router: Router,
    pub services: BTreeMap<String, Arc<Service>>,
    pub trusted: TrustedProxies,
    pub limits: Limits,
    pub access_log: Option<Arc<AccessLog>>,
}

/// A compiled snapshot, and the endpoints it created (whose probes must start).
pub struct Compiled {
    pub snapshot: Snapshot,
    pub new_endpoints: Vec<Arc<Endpoint>>,
}

/// Builds a snapshot from `cfg` (already validated), reusing state from `old`.
pub fn compile(cfg: Config, old: Option<&Snapshot>) -> Compiled {
    let mut old_eps: HashMap<EndpointKey, Arc<Endpoint>> = HashMap::new();
    let mut old_pool_stats: HashMap<&str, Arc<PoolStats>> = HashMap::new();
    let mut old_route_stats: HashMap<(&str, &str), Arc<RouteStats>> = HashMap::new();
    if let Some(old) = old {
        for (name, svc) in &old.services {
            old_pool_stats.insert(name, svc.pool.stats.clone());
            for ep in &svc.pool.endpoints {
                old_eps.insert(ep.key.clone(), ep.clone());
            }
        }
        for r in &old.router.routes {
            old_route_stats.insert((&r.name, &r.service.name), r.stats.clone());
        }
    }

    let mut new_endpoints = Vec::new();
    let mut services = BTreeMap::new();
    for (name, spec) in &cfg.services {
        let name = name.get_ref().clone();
        match spec.kind.get_ref() {
            ServiceKind::Replicated => {}
        }
        let mut endpoints = Vec::new();
        for e in &spec.endpoints {
            let key = EndpointKey {
                service: name.clone(),
                address: e.address.get_ref().clone(),
                protocol: spec.protocol,
                connect_timeout: spec.timeouts.connect.get_ref().0,
                idle_timeout: spec.timeouts.idle.get_ref().0,
                health: spec.health.clone(),
            };
            let ep_name = e.name.as_ref().map(|n| n.get_ref().clone());
            let weight = *e.weight.get_ref();
            let reusable = old_eps.get(&key).filter(|o| o.weight == weight && Some(&o.name) == ep_name.as_ref().or(Some(&key.address)));
            let ep = match reusable {
                Some(o) => o.clone(),
                None => {
                    let ep = Arc::new(Endpoint::new(key, ep_name, weight));
                    new_endpoints.push(ep.clone());
                    ep
                }
            };
            endpoints.push(ep);
        }
        let members: Vec<Member> = endpoints.iter().map(|e| Member::new(e.name.clone(), e.weight)).collect();
        let balancer = Balancer::new(
            *spec.balancer.get_ref(),
            &members,
            spec.hash.as_ref().map(|h| h.get_ref()),
            spec.cookie.as_ref().map(|c| c.get_ref()),
            &name,
        );
        let pool = Pool {
            name: name.clone(),
            balancer,
            endpoints,
            request_timeout: spec.timeouts.request.get_ref().0,
            passive: spec.passive.clone(),
            retry: spec.retry.clone(),
            stats: old_pool_stats.get(name.as_str()).cloned().unwrap_or_default(),
        };
        services.insert(name.clone(), Arc::new(Service { name, pool }));
    }

    let mut routes = Vec::new();
    for (i, r) in cfg.routes.iter().enumerate() {
        let name = r.name.as_ref().map(|n| n.get_ref().clone()).unwrap_or_else(|| format!("route-{i}"));
        let service = services[r.service.get_ref()].clone();
        let stats = old_route_stats.get(&(name.as_str(), service.name.as_str())).cloned().unwrap_or_default();
        routes.push(Route {
            host: r.host.as_ref().map(|h| HostMatch::parse(h.get_ref())),
            path_prefix: r.path_prefix.get_ref().clone(),
            methods: r.methods.iter().filter_map(|m| m.get_ref().parse().ok()).collect(),
            listeners: r.listeners.iter().map(|l| l.get_ref().clone()).collect(),
            service,
            stats,
            name,
        });
    }

    let trusted = TrustedProxies::new(cfg.server.trusted_proxies.iter().filter_map(|p| parse_cidr(p.get_ref())).collect());
    let limits = Limits {
        max_header_bytes: *cfg.limits.max_header_bytes.get_ref(),
        max_headers: *cfg.limits.max_headers.get_ref(),
        max_body_bytes: cfg.limits.max_body_bytes,
    };
    let access_log = cfg.access_log.as_ref().map(|spec| match old.and_then(|o| o.access_log.as_ref()) {
        Some(a) if a.spec == *spec => a.clone(),
        _ => Arc::new(AccessLog::open(spec.clone())),
    });
    let snapshot = Snapshot {
        generation: old.map(|o| o.generation + 1).unwrap_or(1),
        router: Router { routes },
        services,
        trusted,
        limits,
        access_log,
        config: cfg,
    };
    Compiled { snapshot, new_endpoints }
}
