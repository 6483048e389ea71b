//! Routes checked and converted: what each matches, the service it sends to,
//! its rate-limit policies and its cache rules.

use super::identity::{policy, Defs};
use super::{all, cidr};
use crate::config::error::Reporter;
use crate::config::plan::RoutePlan;
use crate::config::schema::{CacheSpec, Config, RouteSpec, ServiceKind, ServiceSpec};
use crate::identity::Credentials;
use crate::limit::{Policy, RoutePolicies};
use std::collections::{BTreeSet, HashSet};
use toml::Spanned;

/// `id`: the API-key and bearer-token settings (what a cache must not store answers to).
pub fn routes(cfg: &Config, defs: &Defs, id: Option<&Credentials>, r: &mut Reporter) -> Option<Vec<RoutePlan>> {
    let listener_names: HashSet<&str> = cfg.listeners.iter().map(|l| l.name.get_ref().as_str()).collect();
    let mut names = HashSet::new();
    all(cfg.routes.iter().enumerate().map(|(i, route)| {
        if let Some(n) = &route.name {
            if !names.insert(n.get_ref().clone()) {
                r.error(n.span(), format!("route name `{}` is used twice", n.get_ref()), "give each route its own name");
            }
        }
        for l in &route.listeners {
            if !listener_names.contains(l.get_ref().as_str()) {
                r.error(
                    l.span(),
                    format!("route names listener `{}`, which is not defined", l.get_ref()),
                    "use the name of a [[listeners]] entry",
                );
            }
        }
        let name = route.name.as_ref().map(|n| n.get_ref().clone()).unwrap_or_else(|| format!("route-{i}"));
        self::route(cfg, route, name, defs, id, r)
    }))
}

fn route(cfg: &Config, route: &RouteSpec, name: String, defs: &Defs, id: Option<&Credentials>, r: &mut Reporter) -> Option<RoutePlan> {
    let target = service(cfg, route, r);
    let methods = all(route.methods.iter().map(|m| match http::Method::from_bytes(m.get_ref().as_bytes()) {
        Ok(method) if !m.get_ref().is_empty() => Some(method),
        _ => {
            r.error(m.span(), format!("`{}` is not an HTTP method", m.get_ref()), "write methods in capitals, such as \"GET\"");
            None
        }
    }));
    // A disabled cache is checked too, so enabling it later holds no surprise.
    let cache = match &route.cache {
        None => Some(None),
        Some(c) => cache(c.get_ref(), id, r).map(|rules| c.get_ref().enabled.then_some(rules)),
    };
    if !route.path_prefix.get_ref().starts_with('/') {
        r.error(route.path_prefix.span(), "path_prefix must start with `/`", "for example \"/api/\"");
    }
    let host = match &route.host {
        Some(h) if h.get_ref().is_empty() || h.get_ref().contains('/') => {
            r.error(
                h.span(),
                format!("`{}` is not a host name", h.get_ref()),
                "write a host such as \"api.example.com\" or \"*.example.com\"",
            );
            None
        }
        h => Some(h.as_ref().map(|h| crate::route::HostMatch::parse(h.get_ref()))),
    };
    let limits = target.and_then(|(_, svc_name, svc)| limits(defs, route, &name, svc, svc_name, r));
    let upgrades = upgrades(route, r);
    Some(RoutePlan {
        service: target?.0,
        host: host?,
        path_prefix: route.path_prefix.get_ref().clone(),
        methods: methods?,
        listeners: route.listeners.iter().map(|l| l.get_ref().clone()).collect(),
        fan_out: route.fan_out,
        limits: limits?,
        cache: cache?,
        upgrades: upgrades?,
        name,
    })
}

/// The upgrade protocols a route forwards: WebSocket unless it says; never h2c
/// (a tunnel to the origin past every route, limit and credential check).
fn upgrades(route: &RouteSpec, r: &mut Reporter) -> Option<Vec<String>> {
    let Some(list) = &route.upgrades else { return Some(vec!["websocket".to_string()]) };
    let checked = list.iter().map(|u| {
        let name = u.get_ref().to_ascii_lowercase();
        if name == "h2c" {
            r.error(u.span(), "h2c upgrades are never forwarded", "remove \"h2c\"; clients that offer it are served over HTTP/1.1");
            None
        } else if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&b)) {
            r.error(u.span(), format!("`{}` is not an upgrade protocol", u.get_ref()), "a token such as \"websocket\"");
            None
        } else {
            Some(name)
        }
    });
    all(checked)
}

/// The route's service: its index among the services, its name and its table.
fn service<'a>(cfg: &'a Config, route: &RouteSpec, r: &mut Reporter) -> Option<(usize, &'a str, &'a ServiceSpec)> {
    let svc = route.service.get_ref();
    // Indexes count the HTTP services only, as the plan lists them.
    let http = cfg.services.iter().filter(|(_, s)| !super::memcache::is_memcache(s));
    if let Some((_, spec)) = cfg.services.iter().find(|(k, s)| k.get_ref() == svc && super::memcache::is_memcache(s)) {
        r.error(
            route.service.span(),
            format!("route sends HTTP to `{svc}`, a memcache service"),
            "memcache services are reached through a listener with protocol = \"memcache\" and service = \"NAME\"",
        );
        let _ = spec;
        return None;
    }
    let Some((i, (name, spec))) = http.enumerate().find(|(_, (k, _))| k.get_ref() == svc) else {
        let known: Vec<&str> = cfg.services.keys().map(|k| k.get_ref().as_str()).collect();
        r.error(
            route.service.span(),
            format!("route sends to service `{svc}`, which is not defined"),
            if known.is_empty() {
                "define it in a [services.NAME] table".to_string()
            } else {
                format!("define [services.{svc}] or use one of: {}", known.join(", "))
            },
        );
        return None;
    };
    if route.fan_out && *spec.kind.get_ref() != ServiceKind::Sharded {
        r.error(route.service.span(), format!("route fans out to `{svc}`, which is not sharded"), "fan_out needs a sharded service");
    }
    Some((i, name.get_ref(), spec))
}

/// A route's policies, for every request and by tier: its own first (ceilings
/// per route), then its service's (ceilings over the whole service).
fn limits(defs: &Defs, route: &RouteSpec, name: &str, svc: &ServiceSpec, svc_name: &str, r: &mut Reporter) -> Option<RoutePolicies> {
    let own =
        all(route.rate_limit.iter().map(|n| policy(defs, n, name, r, |n| format!("route applies rate limit `{n}`, which is not defined"))));
    let all_requests = policies(defs, own, &svc.rate_limit, svc_name, r);
    let tiers: BTreeSet<&String> = route.rate_limit_tiers.keys().chain(svc.rate_limit_tiers.keys()).collect();
    let none = Vec::new();
    let tiers = all(tiers.into_iter().map(|tier| {
        let (own, of_service) = (route.rate_limit_tiers.get(tier).unwrap_or(&none), svc.rate_limit_tiers.get(tier).unwrap_or(&none));
        let own = all(own.iter().map(|n| policy(defs, n, name, r, |n| format!("rate limit `{n}` is not defined"))));
        Some((tier.clone(), policies(defs, own, of_service, svc_name, r)?))
    }));
    Some(RoutePolicies { all: all_requests?, tiers: tiers?.into_iter().collect() })
}

/// `own` followed by the service's policies `of_service`; a per-client policy
/// named twice counts once.
fn policies(defs: &Defs, own: Option<Vec<Policy>>, of_service: &[Spanned<String>], service: &str, r: &mut Reporter) -> Option<Vec<Policy>> {
    let scope = format!("service:{service}");
    let of_service = all(of_service.iter().map(|n| policy(defs, n, &scope, r, |n| format!("rate limit `{n}` is not defined"))));
    let mut out = own?;
    for p in of_service? {
        if !out.iter().any(|o| o.seed == p.seed) {
            out.push(p);
        }
    }
    Some(out)
}

/// A route's cache rules and memory budget.
fn cache(c: &CacheSpec, id: Option<&Credentials>, r: &mut Reporter) -> Option<(crate::cache::flow::Rules, u64)> {
    let start = r.mark();
    if *c.memory_bytes.get_ref() < 64 * 1024 {
        r.error(
            c.memory_bytes.span(),
            "a cache of less than 64 KiB holds almost nothing",
            "give it at least a few MiB, such as 268435456 (256 MiB)",
        );
    }
    if c.max_object_bytes.get_ref() > c.memory_bytes.get_ref() {
        r.error(
            c.max_object_bytes.span(),
            "max_object_bytes is larger than the cache's memory",
            "lower max_object_bytes or raise memory_bytes",
        );
    }
    let methods = all(c.methods.iter().map(|m| match m.get_ref().as_str() {
        "GET" => Some(http::Method::GET),
        "HEAD" => Some(http::Method::HEAD),
        other => {
            r.error(m.span(), format!("`{other}` cannot be answered from a cache"), "cacheable methods are GET and HEAD");
            None
        }
    }));
    let purge_from = all(c.purge_from.iter().map(|p| cidr(p, "write it as \"127.0.0.1\" or \"10.0.0.0/8\"", r)));
    let tag_header = match &c.tag_header {
        None => Some(None),
        Some(h) => match http::HeaderName::from_bytes(h.as_bytes()) {
            Ok(name) => Some(Some(name)),
            Err(_) => {
                r.error(c.memory_bytes.span(), format!("tag_header `{h}` is not a header name"), "for example \"surrogate-key\"");
                None
            }
        },
    };
    if !(1..=1024).contains(c.max_variants.get_ref()) {
        r.error(c.max_variants.span(), "max_variants must be between 1 and 1024", "16 suits most sites");
    }
    let own = super::optional(c.targeted_field.as_ref(), |f| {
        super::header_name(f, |f| format!("`{f}` is not a header name"), "for example \"ringmaster-cache-control\"", r)
    });
    let mut targeted: Vec<http::HeaderName> = own?.into_iter().collect();
    if c.cdn_cache_control {
        targeted.push(http::HeaderName::from_static("cdn-cache-control"));
    }
    let credentials = crate::cache::flow::Credentials {
        header: id.and_then(|c| c.header.clone()),
        query: id.and_then(|c| c.query.clone()),
        cookies_in_key: !c.key.cookies.is_empty(),
    };
    let rules = crate::cache::flow::Rules {
        settings: crate::cache::policy::Settings {
            default_ttl: c.default_ttl.0.as_secs(),
            max_ttl: c.max_ttl.0.as_secs(),
            heuristic_cap: c.heuristic_cap.0.as_secs(),
            store_set_cookie: c.store_set_cookie,
            stale_while_revalidate: c.stale_while_revalidate.0.as_secs(),
            stale_if_error: c.stale_if_error.0.as_secs(),
            targeted,
        },
        no_cache: c.request_no_cache,
        max_variants: *c.max_variants.get_ref(),
        credentials,
        key: c.key.clone(),
        methods: methods?,
        coalesce_timeout: c.coalesce_timeout.0,
        max_object_bytes: *c.max_object_bytes.get_ref() as usize,
        purge_from: purge_from?,
        tag_header: tag_header?,
    };
    r.clean_since(start).then_some((rules, *c.memory_bytes.get_ref()))
}
