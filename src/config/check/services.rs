//! Services checked and converted: each pool with its endpoints and balancer,
//! a sharded service's ring and sharder, upstream TLS read once per service.

use super::{all, header_name, optional};
use crate::balance::{CookieSettings, HashSettings};
use crate::config::error::Reporter;
use crate::config::plan::{EndpointPlan, PoolPlan, ServicePlan};
use crate::config::schema::{BalancerKind, Config, CookieSpec, EndpointSpec, Fallback, HashSpec, HealthSpec, ServiceKind, ServiceSpec};
use crate::ring::{Member, Ring};
use crate::upstream::{EndpointKey, HealthCheck, Passive, Retry};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use toml::Spanned;

/// The HTTP services (memcache services are checked by `memcache`).
pub fn services(cfg: &Config, r: &mut Reporter) -> Option<Vec<ServicePlan>> {
    all(cfg.services.iter().filter(|(_, s)| !super::memcache::is_memcache(s)).map(|(name, svc)| service(name, svc, engine(cfg), r)))
}

/// The upstream protocol of an HTTP service.
fn http_protocol(svc: &ServiceSpec) -> crate::upstream::UpstreamProtocol {
    match svc.protocol.get_ref() {
        crate::config::schema::ServiceProtocol::Http2 => crate::upstream::UpstreamProtocol::Http2,
        _ => crate::upstream::UpstreamProtocol::Http1,
    }
}

/// What every pool of a service shares.
struct Shared<'a> {
    service: &'a str,
    spec: &'a ServiceSpec,
    dns: Option<crate::discovery::DnsPolicy>,
    kubernetes: Option<crate::discovery::KubePolicy>,
    engine: crate::upstream::policy::Http1Engine,
    tls: Option<(crate::tls::client::Settings, Arc<rustls::ClientConfig>)>,
    passive: Passive,
    retry: Retry,
}

/// The parts of a service or shard table that make a pool.
struct PoolView<'a> {
    shard: Option<&'a str>,
    balancer: BalancerKind,
    hash: Option<&'a Spanned<HashSpec>>,
    cookie: Option<&'a Spanned<CookieSpec>>,
    endpoints: &'a [EndpointSpec],
    health: Option<&'a HealthSpec>,
}

/// Whose HTTP/1 client the endpoints use.
fn engine(cfg: &Config) -> crate::upstream::policy::Http1Engine {
    match cfg.server.http1 {
        crate::config::schema::Http1Engine::Ringmaster => crate::upstream::policy::Http1Engine::Own,
        crate::config::schema::Http1Engine::Hyper => crate::upstream::policy::Http1Engine::Hyper,
    }
}

fn service(
    name: &Spanned<String>,
    svc: &ServiceSpec,
    engine: crate::upstream::policy::Http1Engine,
    r: &mut Reporter,
) -> Option<ServicePlan> {
    let start = r.mark();
    timeouts(svc, r);
    let tls = optional(svc.tls.as_ref(), |t| upstream_tls(svc, t, r));
    let p = &svc.passive;
    if p.ejection_time.get_ref() > p.max_ejection_time.get_ref() {
        r.error(p.ejection_time.span(), "ejection_time is longer than max_ejection_time", "raise max_ejection_time or lower ejection_time");
    }
    if *p.max_ejection_percent.get_ref() > 100 {
        r.error(p.max_ejection_percent.span(), "max_ejection_percent must be between 0 and 100", "50 suits most services");
    }
    if *svc.retry.budget_percent.get_ref() > 100 {
        r.error(svc.retry.budget_percent.span(), "budget_percent must be between 0 and 100", "20 suits most services");
    }
    if *svc.retry.attempts.get_ref() > 10 {
        r.error(svc.retry.attempts.span(), "more than 10 retry attempts multiplies load on a failing service", "2 suits most services");
    }
    if let (Some(p), crate::upstream::UpstreamProtocol::Http2) = (&svc.send_proxy_protocol, http_protocol(svc)) {
        r.error(
            p.span(),
            "a PROXY protocol header names one client, and an HTTP/2 connection carries many clients' requests",
            "speak HTTP/1 to this service, or remove send_proxy_protocol",
        );
    }
    let dns = optional(svc.dns.as_ref(), |d| super::discovery::dns(svc, d, r));
    let kubernetes = optional(svc.kubernetes.as_ref(), |k| super::discovery::kubernetes(name, svc, k, r));
    let shared = Shared {
        service: name.get_ref(),
        spec: svc,
        dns: dns.flatten(),
        kubernetes: kubernetes.flatten(),
        engine,
        tls: tls.flatten(),
        passive: Passive {
            consecutive_failures: p.consecutive_failures,
            ejection_time: p.ejection_time.get_ref().0,
            max_ejection_time: p.max_ejection_time.get_ref().0,
            max_ejection_percent: *p.max_ejection_percent.get_ref(),
            on_5xx: p.on_5xx,
        },
        retry: Retry {
            attempts: *svc.retry.attempts.get_ref(),
            budget_percent: *svc.retry.budget_percent.get_ref(),
            min_per_second: svc.retry.min_per_second,
        },
    };
    let plan = match svc.kind.get_ref() {
        ServiceKind::Replicated => replicated(name, &shared, r),
        ServiceKind::Sharded => sharded(name, &shared, r),
    };
    if r.clean_since(start) {
        plan
    } else {
        None
    }
}

fn timeouts(svc: &ServiceSpec, r: &mut Reporter) {
    let t = &svc.timeouts;
    for d in [&t.connect, &t.request, &t.idle, &t.queue, &t.body_idle] {
        if d.get_ref().0.is_zero() {
            r.error(d.span(), "a timeout of zero would fail every request", "use a positive duration such as \"2s\"");
        }
    }
    if t.connect.get_ref() > t.request.get_ref() {
        let span = if t.connect.span().is_empty() { t.request.span() } else { t.connect.span() };
        r.error(
            span,
            format!("connect timeout {} is longer than request timeout {}", t.connect.get_ref(), t.request.get_ref()),
            "the request timeout includes connecting: make it at least as long",
        );
    }
}

/// A replicated service: one pool. It may have no endpoints (scaled to zero, or
/// waiting for discovery): its requests get 503, as HAProxy answers for an empty backend.
fn replicated(name: &Spanned<String>, s: &Shared, r: &mut Reporter) -> Option<ServicePlan> {
    let (n, svc) = (name.get_ref(), s.spec);
    if let Some(sh) = &svc.sharder {
        r.error(sh.span(), format!("replicated service `{n}` has a sharder"), "set kind = \"sharded\" or remove the sharder");
    }
    if let Some((sh, _)) = svc.shards.iter().next() {
        r.error(sh.span(), format!("replicated service `{n}` has shards"), "set kind = \"sharded\", or list endpoints instead");
    }
    let kind = *svc.balancer.get_ref();
    // Settings of a balancer the service does not use are a mistake worth naming.
    let tables = [
        (svc.hash.as_ref().map(|h| h.span()), BalancerKind::Hash, "hash"),
        (svc.cookie.as_ref().map(|c| c.span()), BalancerKind::Cookie, "cookie"),
    ];
    for (span, wanted, table) in tables {
        if let Some(span) = span.filter(|_| kind != wanted) {
            r.error(
                span,
                format!("service `{n}` has {table} settings but its balancer is not `{table}`"),
                format!("set balancer = \"{table}\" or remove the {table} table"),
            );
        }
    }
    let view = PoolView {
        shard: None,
        balancer: kind,
        hash: svc.hash.as_ref(),
        cookie: svc.cookie.as_ref(),
        endpoints: &svc.endpoints,
        health: svc.health.as_ref(),
    };
    let heat = super::heat::policy(&svc.heat, svc.hot_keys.as_ref(), false, r);
    let scaler = svc.scaler.as_ref().and_then(|sc| super::scale::policy(sc, r));
    Some(ServicePlan { name: n.clone(), pools: vec![pool(s, view, r)?], sharding: None, heat, scaler, kubernetes: s.kubernetes.clone() })
}

/// What every sharded service must have: shards, endpoints only in them, and
/// no more shards than a ring takes (HTTP and memcache services alike).
pub fn shard_layout(name: &Spanned<String>, svc: &ServiceSpec, r: &mut Reporter) {
    let n = name.get_ref();
    if svc.shards.is_empty() {
        r.error(
            name.span(),
            format!("sharded service `{n}` has no shards"),
            format!("add [services.{n}.shards.NAME] tables with endpoints"),
        );
    }
    if let Some(ep) = svc.endpoints.first() {
        r.error(
            ep.address.span(),
            format!("sharded service `{n}` lists endpoints of its own"),
            "endpoints belong in the shards: [services.NAME.shards.SHARD]",
        );
    }
    if svc.shards.len() > crate::ring::MAX_MEMBERS {
        r.error(name.span(), "too many shards", "use at most 65535 shards");
    }
}

fn sharded(name: &Spanned<String>, s: &Shared, r: &mut Reporter) -> Option<ServicePlan> {
    let (n, svc) = (name.get_ref(), s.spec);
    shard_layout(name, svc, r);
    let sharder = match &svc.sharder {
        None => {
            r.error(
                name.span(),
                format!("sharded service `{n}` has no sharder"),
                "add sharder = { key = { header = \"x-user\" } } (or another key)",
            );
            None
        }
        Some(h) => hash_spec(h.get_ref(), svc.shards.values().map(|sh| *sh.weight.get_ref()), true, r),
    };
    let mut members = Vec::new();
    let pools = all(svc.shards.iter().map(|(shard, spec)| {
        if shard.get_ref().is_empty() {
            r.error(shard.span(), "a shard needs a name", "");
        }
        if !(1..=10_000).contains(spec.weight.get_ref()) {
            r.error(spec.weight.span(), "weight must be between 1 and 10000", "");
        }
        members.push(Member::new(shard.get_ref().clone(), *spec.weight.get_ref()));
        let view = PoolView {
            shard: Some(shard.get_ref()),
            balancer: spec.balancer.as_ref().map(|b| *b.get_ref()).unwrap_or(*svc.balancer.get_ref()),
            hash: spec.hash.as_ref().or(svc.hash.as_ref()),
            cookie: spec.cookie.as_ref().or(svc.cookie.as_ref()),
            endpoints: &spec.endpoints,
            health: spec.health.as_ref().or(svc.health.as_ref()),
        };
        pool(s, view, r)
    }));
    let header = optional(svc.shard_header.as_ref(), |h| {
        header_name(h, |h| format!("`{h}` is not a valid header name"), "for example \"x-shard\"", r)
    });
    let f = &svc.fan_out;
    if *f.concurrency.get_ref() == 0 {
        r.error(f.concurrency.span(), "fan-out concurrency must be at least 1", "8 suits most services");
    }
    if f.timeout.get_ref().0.is_zero() {
        r.error(f.timeout.span(), "a fan-out timeout of zero would fail every fan-out", "use a positive duration such as \"2s\"");
    }
    if *f.max_in_flight.get_ref() == 0 {
        r.error(f.max_in_flight.span(), "max_in_flight of 0 would refuse every fan-out", "64 suits most services");
    }
    let fan_out = crate::shard::FanOut {
        policy: f.policy,
        concurrency: *f.concurrency.get_ref(),
        timeout: f.timeout.get_ref().0,
        max_body_bytes: f.max_body_bytes,
        max_total_bytes: f.max_total_bytes,
        in_flight: Arc::new(tokio::sync::Semaphore::new(*f.max_in_flight.get_ref())),
        max_in_flight: *f.max_in_flight.get_ref(),
        queue_timeout: f.queue_timeout.0,
    };
    let (sharder, header) = (sharder?, header?);
    let sharding = crate::shard::Sharding {
        ring: Ring::build(sharder.function, &members, sharder.key_hash),
        tag: sharder.tag,
        rule: sharder.rule,
        fan_out,
        header,
    };
    let heat = super::heat::policy(&svc.heat, svc.hot_keys.as_ref(), false, r);
    let scaler = svc.scaler.as_ref().and_then(|sc| super::scale::policy(sc, r));
    Some(ServicePlan { name: n.clone(), pools: pools?, sharding: Some(sharding), heat, scaler, kubernetes: s.kubernetes.clone() })
}

/// One pool: its endpoints (checked, with their TLS) and its balancer.
fn pool(s: &Shared, v: PoolView, r: &mut Reporter) -> Option<PoolPlan> {
    let name = match v.shard {
        Some(shard) => format!("{}/{shard}", s.service),
        None => s.service.to_string(),
    };
    let health = optional(v.health, |h| health(h, r));
    let endpoints = endpoints(&name, s, v.endpoints, health.as_ref().and_then(Option::as_ref), r);
    let weights = v.endpoints.iter().map(|e| *e.weight.get_ref());
    // A shard's balancer uses (and checks) the hash settings only when it hashes.
    let hashes = v.balancer == BalancerKind::Hash || v.shard.is_none();
    let hash = optional(v.hash.filter(|_| hashes), |h| hash_spec(h.get_ref(), weights, false, r));
    let cookie = optional(v.cookie, |c| cookie(c.get_ref(), r));
    let template = template(&name, s, health.as_ref().and_then(Option::as_ref));
    let (endpoints, hash, cookie, _) = (endpoints?, hash?, cookie?, health?);
    let balancing = crate::config::plan::Balancing { kind: v.balancer, hash, cookie };
    Some(PoolPlan {
        balancer: balancing.build(&endpoints, &name),
        balancing,
        service: s.service.to_string(),
        shard: v.shard.map(str::to_string),
        endpoints,
        request_timeout: s.spec.timeouts.request.get_ref().0,
        slow_start: slow_start(s.spec, r),
        body_idle: s.spec.timeouts.body_idle.get_ref().0,
        passive: s.passive.clone(),
        retry: s.retry.clone(),
        template,
        dns: s.dns.clone(),
        name,
    })
}

/// For an SRV pool or a Kubernetes one: an endpoint of the service's
/// settings, which discovered endpoints are made like (its address is theirs).
fn template(pool: &str, s: &Shared, health: Option<&HealthCheck>) -> Option<EndpointPlan> {
    if s.dns.as_ref().is_none_or(|d| d.srv.is_none()) && s.kubernetes.is_none() {
        return None;
    }
    let spec = EndpointSpec { address: Spanned::new(0..0, "srv.invalid:1".into()), weight: Spanned::new(0..0, 1), name: None };
    endpoints(pool, s, std::slice::from_ref(&spec), health, &mut Reporter::new("", "")).and_then(|mut v| v.pop())
}

fn endpoints(pool: &str, s: &Shared, eps: &[EndpointSpec], health: Option<&HealthCheck>, r: &mut Reporter) -> Option<Vec<EndpointPlan>> {
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    let spec = s.spec;
    all(eps.iter().map(|ep| {
        let address = ep.address.get_ref();
        let parsed = check_authority(address).and_then(|()| {
            address.parse().map_err(|e: http::uri::InvalidUri| EndpointError::Unparsable { a: address.clone(), why: e.to_string() })
        });
        let authority = match parsed {
            Ok(a) => Some(a),
            Err(why) => {
                r.error(ep.address.span(), why.to_string(), "write an endpoint as \"host:port\", such as \"10.0.0.5:8080\"");
                None
            }
        };
        if authority.is_some() && !addrs.insert(address.clone()) {
            r.error(
                ep.address.span(),
                format!("endpoint {address} is listed twice"),
                "list each endpoint once; use weight to send it more",
            );
        }
        if let Some(n) = &ep.name {
            if !names.insert(n.get_ref().clone()) {
                r.error(n.span(), format!("endpoint name `{}` is used twice in `{pool}`", n.get_ref()), "give each endpoint its own name");
            }
        }
        if !(1..=10_000).contains(ep.weight.get_ref()) {
            r.error(ep.weight.span(), "weight must be between 1 and 10000", "");
        }
        let tls = match &s.tls {
            None => None,
            Some((settings, config)) => match crate::tls::client::Upstream::new(config.clone(), settings.sni.as_deref(), address) {
                Ok(u) => Some(u),
                Err(why) => {
                    r.error(ep.address.span(), why.to_string(), "set tls.sni to the name in the endpoints' certificates");
                    return None;
                }
            },
        };
        let key = EndpointKey {
            service: pool.to_string(),
            address: address.clone(),
            protocol: http_protocol(spec),
            engine: s.engine,
            connect_timeout: spec.timeouts.connect.get_ref().0,
            idle_timeout: spec.timeouts.idle.get_ref().0,
            max_connections: spec.max_connections_per_endpoint,
            queue_timeout: spec.timeouts.queue.get_ref().0,
            health: health.cloned(),
            tls: s.tls.as_ref().map(|(settings, _)| settings.clone()),
            proxy_header: spec.send_proxy_protocol.as_ref().map(|p| *p.get_ref()),
        };
        Some(EndpointPlan {
            key,
            authority: authority?,
            name: ep.name.as_ref().map(|n| n.get_ref().clone()),
            weight: *ep.weight.get_ref(),
            tls,
        })
    }))
}

/// Why an endpoint's address is not `host:port`.
#[derive(Debug, thiserror::Error)]
enum EndpointError {
    #[error("endpoint `{0}` has no port")]
    NoPort(String),
    #[error("endpoint `{a}` has an invalid port `{port}`")]
    BadPort { a: String, port: String },
    #[error("endpoint `{a}` has an invalid host `{host}`")]
    BadHost { a: String, host: String },
    #[error("endpoint `{a}`: {why}")]
    Unparsable { a: String, why: String },
}

/// Checks `host:port` for an upstream endpoint.
fn check_authority(a: &str) -> Result<(), EndpointError> {
    if a.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = a.rsplit_once(':') else {
        return Err(EndpointError::NoPort(a.to_string()));
    };
    if port.parse::<u16>().map(|p| p == 0).unwrap_or(true) {
        return Err(EndpointError::BadPort { a: a.to_string(), port: port.to_string() });
    }
    let valid_host = !host.is_empty()
        && host.split('.').all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if !valid_host {
        return Err(EndpointError::BadHost { a: a.to_string(), host: host.to_string() });
    }
    Ok(())
}

/// Upstream TLS: the files, read once for the whole service.
fn upstream_tls(
    svc: &ServiceSpec,
    t: &Spanned<crate::config::schema::UpstreamTlsSpec>,
    r: &mut Reporter,
) -> Option<(crate::tls::client::Settings, Arc<rustls::ClientConfig>)> {
    let spec = t.get_ref();
    let s = |v: &Option<Spanned<String>>| v.as_ref().map(|v| v.get_ref().clone());
    let settings = crate::tls::client::Settings { ca: s(&spec.ca), sni: s(&spec.sni), cert: s(&spec.cert), key: s(&spec.key) };
    let http2 = http_protocol(svc) == crate::upstream::UpstreamProtocol::Http2;
    match crate::tls::client::client_config(&settings, http2) {
        Ok(c) => Some((settings, c)),
        Err(why) => {
            r.error(t.span(), why.to_string(), "point ca, cert and key at readable PEM files (cert and key together)");
            None
        }
    }
}

fn health(h: &HealthSpec, r: &mut Reporter) -> Option<HealthCheck> {
    let start = r.mark();
    if !h.path.get_ref().starts_with('/') {
        r.error(h.path.span(), "health path must start with `/`", "for example \"/healthz\"");
    }
    if h.interval.get_ref().0.is_zero() {
        r.error(h.interval.span(), "health interval must be positive", "for example \"2s\"");
    }
    if h.timeout.get_ref() >= h.interval.get_ref() {
        let span = if h.timeout.span().is_empty() { h.interval.span() } else { h.timeout.span() };
        r.error(
            span,
            format!("health timeout {} is not shorter than its interval {}", h.timeout.get_ref(), h.interval.get_ref()),
            "make the timeout shorter than the interval",
        );
    }
    for t in [&h.healthy_threshold, &h.unhealthy_threshold] {
        if *t.get_ref() == 0 {
            r.error(t.span(), "a threshold must be at least 1", "");
        }
    }
    r.clean_since(start).then(|| HealthCheck {
        path: h.path.get_ref().clone(),
        interval: h.interval.get_ref().0,
        timeout: h.timeout.get_ref().0,
        healthy_threshold: *h.healthy_threshold.get_ref(),
        unhealthy_threshold: *h.unhealthy_threshold.get_ref(),
        jitter: h.jitter.get_ref().0,
    })
}

fn cookie(c: &CookieSpec, r: &mut Reporter) -> Option<CookieSettings> {
    let n = c.name.get_ref();
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        r.error(c.name.span(), format!("`{n}` is not a valid cookie name"), "use letters, digits, `-`, `_` and `.`");
        return None;
    }
    Some(CookieSettings { name: n.clone(), path: c.path.clone(), ttl: c.ttl.map(|t| t.0) })
}

/// A hash balancer's or sharder's settings; `weights` are its members'.
fn hash_spec(h: &HashSpec, weights: impl Iterator<Item = u32>, sharder: bool, r: &mut Reporter) -> Option<HashSettings> {
    let start = r.mark();
    let f = *h.balance_factor.get_ref();
    if f != 0.0 && (f < 1.0 || !f.is_finite()) {
        r.error(
            h.balance_factor.span(),
            format!("balance_factor {f} is below 1, so the bound could never be met"),
            "use 0 (no bound) or a factor of at least 1, such as 1.25",
        );
    }
    let tag = match &h.hash_tag {
        None => None,
        Some(t) => match <[u8; 2]>::try_from(t.get_ref().as_bytes()) {
            Ok(pair) if pair.is_ascii() => Some(pair),
            _ => {
                r.error(t.span(), format!("hash_tag `{}` must be two characters", t.get_ref()), "for example \"{}\"");
                None
            }
        },
    };
    if let Some(k) = &h.hash {
        let twemproxy = *h.function.get_ref() == crate::ring::Function::KetamaTwemproxy;
        if !twemproxy && *k.get_ref() != crate::hash::KeyHash::Xxh3 {
            r.error(
                k.span(),
                format!("hash `{}` only applies to function `ketama_twemproxy`", k.get_ref().name()),
                "use function = \"ketama_twemproxy\" for nutcracker's placement, or drop `hash` (xxh3)",
            );
        }
    }
    let weights: Vec<u32> = weights.collect();
    if !h.function.get_ref().supports_weights() && weights.iter().any(|&w| w != 1) {
        r.error(h.function.span(), "jump hashing does not support weights", "give every member weight 1, or use maglev");
    }
    if *h.fallback.get_ref() == Fallback::All && !sharder {
        r.error(
            h.fallback.span(),
            "fallback `all` fans a request out to every shard, which only a sharded service has",
            "use `random` or `reject`",
        );
    }
    r.clean_since(start).then(|| HashSettings {
        rule: crate::key::KeyRule { key: h.key.clone(), fallback_key: h.fallback_key.clone(), fallback: *h.fallback.get_ref() },
        function: *h.function.get_ref(),
        key_hash: h.key_hash(),
        balance_factor: f,
        tag,
    })
}

/// `slow_start`: at most an hour; only where the balancer has no affinity to keep.
pub fn slow_start(spec: &ServiceSpec, r: &mut Reporter) -> std::time::Duration {
    let Some(d) = &spec.slow_start else { return std::time::Duration::ZERO };
    if d.get_ref().0 > std::time::Duration::from_secs(3600) {
        r.error(d.span(), "slow_start must be at most 1h", "\"30s\"");
    }
    if matches!(spec.balancer.get_ref(), BalancerKind::Hash | BalancerKind::Cookie) {
        r.error(
            d.span(),
            "slow_start would move keys off a new endpoint of a hash or cookie balancer",
            "use round_robin, random or least_request, or drop slow_start",
        );
    }
    d.get_ref().0
}
