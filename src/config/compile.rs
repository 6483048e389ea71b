//! Compile a validated config into the immutable snapshot that requests read.
//!
//! Long-lived state is carried over from the previous snapshot by name:
//! endpoints (health, counters, pooled connections) when their key is unchanged,
//! pool counters by service, route counters by route.

use super::schema::{BalancerKind, Config, CookieSpec, EndpointSpec, HashSpec, HealthSpec, ServiceKind, ServiceSpec};
use super::validate::parse_cidr;
use crate::accesslog::AccessLog;
use crate::balance::Balancer;
use crate::identity::TrustedProxies;
use crate::metrics::RouteStats;
use crate::ring::Member;
use crate::ring::Ring;
use crate::route::{HostMatch, Route, Router};
use crate::service::Service;
use crate::shard::Sharding;
use crate::upstream::pool::PoolStats;
use crate::upstream::{Endpoint, EndpointKey, Pool};
use http::HeaderName;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use toml::Spanned;

/// What a listener adds to or does with every request.
pub struct ListenerOpts {
    pub redirect_to_https: Option<u16>,
    pub hsts: Option<http::HeaderValue>,
    pub path: crate::normalise::PathRules,
}

/// A listener as the server runs it.
pub struct ListenerPlan {
    pub name: String,
    pub addr: std::net::SocketAddr,
    /// An https listener's certificates; `None` for plain HTTP.
    pub tls: Option<crate::tls::server::Settings>,
}

/// What a client connection is held to, read at accept time.
#[derive(Clone, Debug)]
pub struct ConnLimits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// From a request head's first byte (from accept for the first request).
    pub header_read_timeout: std::time::Duration,
    /// Idle time between requests before the connection is closed.
    pub keepalive_timeout: std::time::Duration,
    /// Connections over all listeners (read at start only).
    pub max_connections: usize,
    /// Connections from one client address; 0 for no limit.
    pub max_connections_per_client: usize,
    pub h2_max_concurrent_streams: u32,
    pub h2_max_reset_streams: usize,
}

/// Request limits applied by the parse stage.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: u64,
    /// The longest gap between two reads of a request body.
    pub body_read_timeout: std::time::Duration,
    /// Bytes per second a request body must average after a grace period; 0 for none.
    pub body_min_rate: u64,
}

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
    pub admin: Option<std::net::SocketAddr>,
    /// How long shutdown waits for requests in flight.
    pub grace_period: std::time::Duration,
    pub access_log: Option<Arc<AccessLog>>,
}

/// A compiled snapshot, and the endpoints it created (whose probes must start).
pub struct Compiled {
    pub snapshot: Snapshot,
    pub new_endpoints: Vec<Arc<Endpoint>>,
}

/// Builds a snapshot from `cfg` (already validated), reusing state from `old`.
/// State of the previous snapshot, by name, for the next one to carry over.
#[derive(Default)]
struct Carried<'a> {
    endpoints: HashMap<EndpointKey, Arc<Endpoint>>,
    pool_stats: HashMap<String, Arc<PoolStats>>,
    route_stats: HashMap<(&'a str, &'a str), Arc<RouteStats>>,
    caches: HashMap<String, Arc<crate::cache::store::Store>>,
}

impl<'a> Carried<'a> {
    fn from(old: Option<&'a Snapshot>) -> Carried<'a> {
        let mut c = Carried::default();
        if let Some(old) = old {
            for svc in old.services.values() {
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

pub fn compile(cfg: Config, old: Option<&Snapshot>) -> Compiled {
    let carried = Carried::from(old);
    let mut ctx = PoolCtx { old_eps: carried.endpoints, old_pool_stats: carried.pool_stats, new_endpoints: Vec::new() };
    let services = services(&cfg, &mut ctx);
    let routes = routes(&cfg, &services, &carried.route_stats, &carried.caches);
    let trusted = TrustedProxies::new(cfg.server.trusted_proxies.iter().filter_map(|p| parse_cidr(p.get_ref())).collect());
    let limits = Limits {
        max_header_bytes: *cfg.limits.max_header_bytes.get_ref(),
        max_headers: *cfg.limits.max_headers.get_ref(),
        max_body_bytes: cfg.limits.max_body_bytes,
        body_read_timeout: cfg.limits.body_read_timeout.0,
        body_min_rate: cfg.limits.body_min_rate,
    };
    let access_log =
        cfg.access_log.as_ref().map(super::convert::access_log).map(|settings| match old.and_then(|o| o.access_log.as_ref()) {
            Some(a) if a.settings == settings => a.clone(),
            _ => Arc::new(AccessLog::open(settings)),
        });
    let (listener_opts, listeners, conn) = listeners(&cfg);
    let snapshot = Snapshot {
        admin: cfg.admin.enabled.then(|| cfg.admin.listen.get_ref().parse().expect("validated")),
        grace_period: cfg.server.grace_period.0,
        conn,
        listeners,
        listener_opts,
        limiter: crate::limit::Limiter {
            local: old.map(|o| o.limiter.local.clone()).unwrap_or_else(|| Arc::new(crate::limit::store::LocalStore::new(1_000_000))),
            redis: redis(&cfg, old),
            ipv4_prefix: *cfg.identity.ipv4_prefix.get_ref(),
            ipv6_prefix: *cfg.identity.ipv6_prefix.get_ref(),
        },
        credentials: credentials(&cfg),
        generation: old.map(|o| o.generation + 1).unwrap_or(1),
        router: Router { routes },
        services,
        trusted,
        limits,
        access_log,
        config: cfg,
    };
    Compiled { snapshot, new_endpoints: ctx.new_endpoints }
}

/// The services, each with its pools (one, or one per shard) and its sharder.
fn services(cfg: &Config, ctx: &mut PoolCtx) -> BTreeMap<String, Arc<Service>> {
    let mut services = BTreeMap::new();
    for (name, spec) in &cfg.services {
        let name = name.get_ref().clone();
        let service = match spec.kind.get_ref() {
            ServiceKind::Replicated => {
                let view = PoolView {
                    balancer: *spec.balancer.get_ref(),
                    hash: spec.hash.as_ref(),
                    cookie: spec.cookie.as_ref(),
                    endpoints: &spec.endpoints,
                    health: &spec.health,
                };
                Service { pools: vec![ctx.build(&name, None, spec, view)], sharding: None, name }
            }
            ServiceKind::Sharded => {
                let mut pools = Vec::new();
                let mut members = Vec::new();
                for (shard, s) in &spec.shards {
                    let view = PoolView {
                        balancer: s.balancer.as_ref().map(|b| *b.get_ref()).unwrap_or(*spec.balancer.get_ref()),
                        hash: s.hash.as_ref().or(spec.hash.as_ref()),
                        cookie: s.cookie.as_ref().or(spec.cookie.as_ref()),
                        endpoints: &s.endpoints,
                        health: if s.health.is_some() { &s.health } else { &spec.health },
                    };
                    pools.push(ctx.build(&name, Some(shard.get_ref()), spec, view));
                    members.push(Member::new(shard.get_ref().clone(), *s.weight.get_ref()));
                }
                let sharder = spec.sharder.as_ref().map(|h| super::convert::hash(h.get_ref())).unwrap_or_default();
                let sharding = Sharding {
                    ring: Ring::build(sharder.function, &members, sharder.key_hash),
                    tag: sharder.tag,
                    rule: sharder.rule,
                    fan_out: super::convert::fan_out(&spec.fan_out),
                    header: spec.shard_header.as_ref().and_then(|h| HeaderName::from_bytes(h.get_ref().as_bytes()).ok()),
                };
                Service { pools, sharding: Some(sharding), name }
            }
        };
        services.insert(service.name.clone(), Arc::new(service));
    }
    services
}

/// The routes in config order, each with its service, policies, cache and carried counters.
fn routes(
    cfg: &Config,
    services: &BTreeMap<String, Arc<Service>>,
    old_route_stats: &HashMap<(&str, &str), Arc<RouteStats>>,
    old_caches: &HashMap<String, Arc<crate::cache::store::Store>>,
) -> Vec<Route> {
    let mut routes = Vec::new();
    for (i, r) in cfg.routes.iter().enumerate() {
        let name = r.name.as_ref().map(|n| n.get_ref().clone()).unwrap_or_else(|| format!("route-{i}"));
        let service = services[r.service.get_ref()].clone();
        let svc_spec = cfg.services.iter().find(|(k, _)| k.get_ref() == r.service.get_ref()).map(|(_, v)| v).expect("validated");
        let svc_name = service.name.clone();
        let stats = old_route_stats.get(&(name.as_str(), service.name.as_str())).cloned().unwrap_or_default();
        routes.push(Route {
            host: r.host.as_ref().map(|h| HostMatch::parse(h.get_ref())),
            path_prefix: r.path_prefix.get_ref().clone(),
            methods: r.methods.iter().filter_map(|m| m.get_ref().parse().ok()).collect(),
            listeners: r.listeners.iter().map(|l| l.get_ref().clone()).collect(),
            service,
            stats,
            fan_out: r.fan_out,
            limits: crate::limit::RoutePolicies {
                all: policies(cfg, &r.rate_limit, &name, &svc_spec.rate_limit, &svc_name),
                tiers: {
                    let tiers: std::collections::BTreeSet<&String> =
                        r.rate_limit_tiers.keys().chain(svc_spec.rate_limit_tiers.keys()).collect();
                    let none = Vec::new();
                    tiers
                        .into_iter()
                        .map(|tier| {
                            let (own, svc) =
                                (r.rate_limit_tiers.get(tier).unwrap_or(&none), svc_spec.rate_limit_tiers.get(tier).unwrap_or(&none));
                            (tier.clone(), policies(cfg, own, &name, svc, &svc_name))
                        })
                        .collect()
                },
            },
            cache: r.cache.as_ref().filter(|c| c.get_ref().enabled).map(|c| {
                let spec = c.get_ref();
                // Contents survive a reload when the memory budget is unchanged.
                let store = old_caches
                    .get(name.as_str())
                    .filter(|s| s.capacity == *spec.memory_bytes.get_ref())
                    .cloned()
                    .unwrap_or_else(|| Arc::new(crate::cache::store::Store::new(*spec.memory_bytes.get_ref())));
                Arc::new(super::convert::cache(spec, store))
            }),
            name,
        });
    }

    routes
}

/// API keys and bearer-token verification, when configured.
fn credentials(cfg: &Config) -> Option<crate::identity::Credentials> {
    let no_source = super::schema::ApiKeySource::default();
    let with_credentials = cfg.identity.api_key.is_some() || cfg.identity.jwt.is_some();
    with_credentials.then(|| cfg.identity.api_key.as_ref().unwrap_or(&no_source)).map(|src| crate::identity::Credentials {
        header: src.header.as_ref().and_then(|h| http::HeaderName::from_bytes(h.get_ref().as_bytes()).ok()),
        query: src.query.clone(),
        jwt: cfg.identity.jwt.as_ref().map(|j| {
            let j = j.get_ref();
            crate::jwt::JwtVerifier {
                keys: crate::jwt::load_keys(super::convert::jwt_keys(j)).unwrap_or_default(),
                issuer: j.issuer.clone(),
                audience: j.audience.clone(),
                leeway_secs: j.leeway.0.as_secs(),
                tier_claim: j.tier_claim.clone(),
                owner_claim: j.owner_claim.clone(),
            }
        }),
        reject_invalid: cfg.identity.invalid_credentials == super::schema::InvalidCredentials::Reject,
        keys: cfg
            .identity
            .keys
            .iter()
            .filter_map(|k| {
                let digest = match (&k.key, &k.sha256) {
                    (Some(plain), _) => crate::identity::key_digest(plain.get_ref().as_bytes()),
                    (None, Some(hex)) => super::validate::parse_sha256(hex.get_ref())?,
                    (None, None) => return None,
                };
                let overrides = k.rate_limit.as_ref().map(|names| names.iter().filter_map(|n| policy(cfg, n.get_ref(), "")).collect());
                let info = crate::identity::KeyInfo { tier: k.tier.get_ref().clone(), owner: k.owner.get_ref().clone(), overrides };
                Some((digest, Arc::new(info)))
            })
            .collect(),
    })
}

/// The shared rate-limit store: the previous one while its settings are unchanged.
fn redis(cfg: &Config, old: Option<&Snapshot>) -> Option<Arc<crate::limit::redis::RedisStore>> {
    cfg.rate_limit_store.as_ref().and_then(|s| {
        if let Some(old) =
            old.and_then(|o| o.limiter.redis.as_ref()).filter(|_| old.and_then(|o| o.config.rate_limit_store.as_ref()) == Some(s))
        {
            return Some(old.clone());
        }
        let mode = match s.on_failure {
            super::schema::FailMode::Open => crate::limit::redis::OnFailure::Open,
            super::schema::FailMode::Closed => crate::limit::redis::OnFailure::Closed,
        };
        crate::limit::redis::RedisStore::new(s.redis.get_ref(), s.cluster, s.timeout.0, mode, &s.prefix).ok().map(Arc::new)
    })
}

/// The listeners to run, their own policies, and the connection limits.
fn listeners(cfg: &Config) -> (HashMap<String, ListenerOpts>, Vec<ListenerPlan>, ConnLimits) {
    let listener_opts = cfg
        .listeners
        .iter()
        .filter(|l| l.redirect_to_https.is_some() || l.hsts.is_some() || !l.normalize_path || !l.merge_slashes)
        .map(|l| {
            let hsts = l.hsts.as_ref().and_then(|h| http::HeaderValue::from_str(h.get_ref()).ok());
            let path = crate::normalise::PathRules { dot_segments_and_decoding: l.normalize_path, merge_slashes: l.merge_slashes };
            (l.name.get_ref().clone(), ListenerOpts { redirect_to_https: l.redirect_to_https, hsts, path })
        })
        .collect();
    let l = &cfg.limits;
    let conn = ConnLimits {
        max_header_bytes: *l.max_header_bytes.get_ref(),
        max_headers: *l.max_headers.get_ref(),
        header_read_timeout: l.header_read_timeout.get_ref().0,
        keepalive_timeout: l.keepalive_timeout.get_ref().0,
        max_connections: l.max_connections,
        max_connections_per_client: l.max_connections_per_client,
        h2_max_concurrent_streams: l.h2_max_concurrent_streams,
        h2_max_reset_streams: l.h2_max_reset_streams,
    };
    let listeners = cfg
        .listeners
        .iter()
        .map(|l| ListenerPlan {
            name: l.name.get_ref().clone(),
            addr: l.listen.get_ref().parse().expect("validated"),
            tls: match (&l.tls, *l.protocol.get_ref()) {
                (Some(t), super::schema::ListenerProtocol::Https) => Some(super::convert::tls(t.get_ref())),
                _ => None,
            },
        })
        .collect();
    (listener_opts, listeners, conn)
}

/// The parts of a service or shard table that make a pool.
struct PoolView<'a> {
    balancer: BalancerKind,
    hash: Option<&'a Spanned<HashSpec>>,
    cookie: Option<&'a Spanned<CookieSpec>>,
    endpoints: &'a [EndpointSpec],
    health: &'a Option<HealthSpec>,
}

/// State carried from the previous snapshot while pools are built.
struct PoolCtx {
    old_eps: HashMap<EndpointKey, Arc<Endpoint>>,
    old_pool_stats: HashMap<String, Arc<PoolStats>>,
    new_endpoints: Vec<Arc<Endpoint>>,
}

impl PoolCtx {
    fn build(&mut self, service: &str, shard: Option<&str>, spec: &ServiceSpec, v: PoolView) -> Pool {
        let name = match shard {
            Some(s) => format!("{service}/{s}"),
            None => service.to_string(),
        };
        let tls_settings = spec.tls.as_ref().map(|t| super::convert::upstream_tls(t.get_ref()));
        let http2 = spec.protocol == crate::upstream::UpstreamProtocol::Http2;
        let tls = tls_settings.as_ref().map(|t| {
            crate::tls::client::client_config(t, http2).map_err(|e| {
                tracing::error!(pool = %name, error = %e, "upstream TLS cannot be set up; connections to the pool fail");
                Arc::<str>::from(e)
            })
        });
        let mut endpoints = Vec::new();
        for e in v.endpoints {
            let key = EndpointKey {
                service: name.clone(),
                address: e.address.get_ref().clone(),
                protocol: spec.protocol,
                connect_timeout: spec.timeouts.connect.get_ref().0,
                idle_timeout: spec.timeouts.idle.get_ref().0,
                health: v.health.as_ref().map(super::convert::health),
                tls: tls_settings.clone(),
            };
            let ep_name = e.name.as_ref().map(|n| n.get_ref().clone());
            let weight = *e.weight.get_ref();
            let reusable =
                self.old_eps.get(&key).filter(|o| o.weight == weight && Some(&o.name) == ep_name.as_ref().or(Some(&key.address)));
            let ep = match reusable {
                Some(o) => o.clone(),
                None => {
                    let ep = Arc::new(Endpoint::new(key, ep_name, weight, tls.clone()));
                    self.new_endpoints.push(ep.clone());
                    ep
                }
            };
            endpoints.push(ep);
        }
        let members: Vec<Member> = endpoints.iter().map(|e| Member::new(e.name.clone(), e.weight)).collect();
        let hash = v.hash.map(|h| super::convert::hash(h.get_ref()));
        let cookie = v.cookie.map(|c| super::convert::cookie(c.get_ref()));
        let balancer = Balancer::new(v.balancer, &members, hash.as_ref(), cookie.as_ref(), &name);
        Pool {
            stats: self.old_pool_stats.get(&name).cloned().unwrap_or_default(),
            name,
            service: service.to_string(),
            shard: shard.map(str::to_string),
            balancer,
            endpoints,
            request_timeout: spec.timeouts.request.get_ref().0,
            passive: super::convert::passive(&spec.passive),
            retry: super::convert::retry(&spec.retry),
        }
    }
}

/// A route's policies: its own (`route_names`, ceilings per route) then its
/// service's (`service_names`, ceilings over the whole service). A per-client
/// policy named twice counts once.
fn policies(
    cfg: &Config,
    route_names: &[Spanned<String>],
    route: &str,
    service_names: &[Spanned<String>],
    service: &str,
) -> Vec<crate::limit::Policy> {
    let mut out: Vec<crate::limit::Policy> = route_names.iter().filter_map(|n| policy(cfg, n.get_ref(), route)).collect();
    for p in service_names.iter().filter_map(|n| policy(cfg, n.get_ref(), &format!("service:{service}"))) {
        if !out.iter().any(|o| o.seed == p.seed) {
            out.push(p);
        }
    }
    out
}

/// The compiled rate-limit policy `name` as applied on route `route`. A client's
/// counter is shared by every route applying the policy; a route ceiling is the
/// route's own.
fn policy(cfg: &Config, name: &str, route: &str) -> Option<crate::limit::Policy> {
    let spec = cfg.rate_limits.iter().find(|(k, _)| k.get_ref() == name)?.1;
    let rate = *spec.rate.get_ref();
    let (scope, seed_text) = match spec.scope {
        super::schema::LimitScope::Client => (crate::limit::Scope::Client, name.to_string()),
        super::schema::LimitScope::Route => (crate::limit::Scope::Route, format!("{route}/{name}")),
    };
    Some(crate::limit::Policy {
        name: name.into(),
        quota: crate::limit::gcra::Quota::new(rate, spec.period.get_ref().0, spec.burst.as_ref().map(|b| *b.get_ref()).unwrap_or(rate)),
        scope,
        seed: crate::hash::xxh3(seed_text.as_bytes()),
    })
}
