//! Checks that span more than one value: names that must be unique, references
//! that must resolve, addresses that must parse, timeouts that must make sense.
//!
//! Every problem is collected, not just the first, so one `ringmaster check`
//! shows all that is wrong.

use super::error::Reporter;
use super::schema::{BalancerKind, Config, EndpointSpec, Fallback, HashSpec, HealthSpec, ServiceKind, ServiceSpec};
use std::collections::HashSet;
use std::net::SocketAddr;
use toml::Spanned;

/// Validates a parsed config, recording every problem in `r`.
pub fn validate(cfg: &Config, r: &mut Reporter) {
    listeners(cfg, r);
    if cfg.admin.enabled {
        socket_addr(&cfg.admin.listen, "admin listen address", r);
    }
    for p in &cfg.server.trusted_proxies {
        if parse_cidr(p.get_ref()).is_none() {
            r.error(
                p.span(),
                format!("`{}` is not an IP address or CIDR range", p.get_ref()),
                "write trusted proxies as \"10.0.0.0/8\" or \"192.0.2.7\"",
            );
        }
    }
    limits(cfg, r);
    identity(cfg, r);
    if let Some(s) = &cfg.rate_limit_store {
        if redis::Client::open(s.redis.get_ref().as_str()).is_err() {
            r.error(s.redis.span(), format!("`{}` is not a Redis URL", s.redis.get_ref()), "write it as \"redis://127.0.0.1:6379\"");
        }
    }
    for spec in cfg.rate_limits.values() {
        if *spec.rate.get_ref() == 0 {
            r.error(spec.rate.span(), "a rate of 0 would refuse every request", "use at least 1");
        }
        if spec.period.get_ref().0.is_zero() {
            r.error(spec.period.span(), "a rate-limit period must be positive", "for example \"1m\" or \"1h\"");
        }
        if let Some(b) = &spec.burst {
            if *b.get_ref() == 0 {
                r.error(b.span(), "a burst of 0 would refuse every request", "use at least 1");
            }
        }
    }
    if *cfg.identity.ipv4_prefix.get_ref() > 32 {
        r.error(cfg.identity.ipv4_prefix.span(), "an IPv4 prefix is at most 32", "");
    }
    if *cfg.identity.ipv6_prefix.get_ref() > 128 {
        r.error(cfg.identity.ipv6_prefix.span(), "an IPv6 prefix is at most 128", "");
    }
    routes(cfg, r);
    for (name, svc) in &cfg.services {
        service(name, svc, r);
    }
}

fn listeners(cfg: &Config, r: &mut Reporter) {
    if cfg.listeners.is_empty() {
        r.error(0..0, "no listener is configured", "add a [[listeners]] table with name and listen = \"0.0.0.0:8080\"");
    }
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    for l in &cfg.listeners {
        if !names.insert(l.name.get_ref().clone()) {
            r.error(l.name.span(), format!("listener name `{}` is used twice", l.name.get_ref()), "give each listener its own name");
        }
        if let Some(h) = &l.hsts {
            if *l.protocol.get_ref() != super::schema::ListenerProtocol::Https {
                r.error(h.span(), "HSTS is only sent over https", "move hsts to the https listener");
            } else if !h.get_ref().starts_with("max-age=") || http::HeaderValue::from_str(h.get_ref()).is_err() {
                r.error(
                    h.span(),
                    "an HSTS value starts with max-age= and holds only printable text",
                    "for example \"max-age=31536000; includeSubDomains\"",
                );
            }
        }
        match (l.protocol.get_ref(), &l.tls) {
            (super::schema::ListenerProtocol::Https, None) => r.error(
                l.protocol.span(),
                format!("https listener `{}` has no tls table", l.name.get_ref()),
                "add tls = { certificates = [{ cert = \"cert.pem\", key = \"key.pem\" }] }",
            ),
            (super::schema::ListenerProtocol::Http, Some(t)) => {
                r.error(t.span(), format!("listener `{}` has TLS settings but protocol http", l.name.get_ref()), "set protocol = \"https\"")
            }
            (super::schema::ListenerProtocol::Https, Some(t)) => {
                if let Err(why) = crate::tls::server::check(&super::convert::tls(t.get_ref())) {
                    r.error(t.span(), why, "point cert and key at readable PEM files that belong together");
                }
            }
            _ => {}
        }
        if let Some(a) = socket_addr(&l.listen, "listen address", r) {
            if !addrs.insert(a) {
                r.error(l.listen.span(), format!("address {a} is used by two listeners"), "give each listener its own address");
            }
        }
    }
}

fn limits(cfg: &Config, r: &mut Reporter) {
    let l = &cfg.limits;
    if !(1024..=1024 * 1024).contains(l.max_header_bytes.get_ref()) {
        r.error(l.max_header_bytes.span(), "max_header_bytes must be between 1024 and 1048576", "16384 suits most traffic");
    }
    if *l.max_headers.get_ref() == 0 {
        r.error(l.max_headers.span(), "max_headers must be at least 1", "100 suits most traffic");
    }
    for t in [&l.header_read_timeout, &l.keepalive_timeout] {
        if t.get_ref().0.is_zero() {
            r.error(t.span(), "a timeout of zero would close every connection", "use a positive duration such as \"10s\"");
        }
    }
}

fn routes(cfg: &Config, r: &mut Reporter) {
    let listener_names: HashSet<&str> = cfg.listeners.iter().map(|l| l.name.get_ref().as_str()).collect();
    let mut route_names = HashSet::new();
    for route in &cfg.routes {
        if let Some(n) = &route.name {
            if !route_names.insert(n.get_ref().clone()) {
                r.error(n.span(), format!("route name `{}` is used twice", n.get_ref()), "give each route its own name");
            }
        }
        let svc = route.service.get_ref();
        let target = cfg.services.iter().find(|(k, _)| k.get_ref() == svc).map(|(_, v)| v);
        if route.fan_out && target.map(|t| *t.kind.get_ref() != ServiceKind::Sharded).unwrap_or(false) {
            r.error(route.service.span(), format!("route fans out to `{svc}`, which is not sharded"), "fan_out needs a sharded service");
        }
        if target.is_none() {
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
        for m in &route.methods {
            if http::Method::from_bytes(m.get_ref().as_bytes()).is_err() || m.get_ref().is_empty() {
                r.error(m.span(), format!("`{}` is not an HTTP method", m.get_ref()), "write methods in capitals, such as \"GET\"");
            }
        }
        for l in &route.rate_limit {
            if !cfg.rate_limits.keys().any(|k| k.get_ref() == l.get_ref()) {
                r.error(
                    l.span(),
                    format!("route applies rate limit `{}`, which is not defined", l.get_ref()),
                    "define it in a [rate_limits.NAME] table",
                );
            }
        }
        if let Some(c) = &route.cache {
            cache(c.get_ref(), r);
        }
        if !route.path_prefix.get_ref().starts_with('/') {
            r.error(route.path_prefix.span(), "path_prefix must start with `/`", "for example \"/api/\"");
        }
        if let Some(h) = &route.host {
            if h.get_ref().is_empty() || h.get_ref().contains('/') {
                r.error(
                    h.span(),
                    format!("`{}` is not a host name", h.get_ref()),
                    "write a host such as \"api.example.com\" or \"*.example.com\"",
                );
            }
        }
    }
}

fn service(name: &Spanned<String>, svc: &ServiceSpec, r: &mut Reporter) {
    // A replicated service may have no endpoints (scaled to zero, or waiting for
    // discovery): its requests get 503, as HAProxy answers for an empty backend.
    let n = name.get_ref();
    match svc.kind.get_ref() {
        ServiceKind::Replicated => {
            if let Some(s) = &svc.sharder {
                r.error(s.span(), format!("replicated service `{n}` has a sharder"), "set kind = \"sharded\" or remove the sharder");
            }
            if let Some((s, _)) = svc.shards.iter().next() {
                r.error(s.span(), format!("replicated service `{n}` has shards"), "set kind = \"sharded\", or list endpoints instead");
            }
            endpoints(n, &svc.endpoints, r);
            balancer(name, svc, r);
        }
        ServiceKind::Sharded => sharded(name, svc, r),
    }
    let t = &svc.timeouts;
    for d in [&t.connect, &t.request, &t.idle] {
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
    if let Some(h) = &svc.health {
        health(h, r);
    }
    if let Some(t) = &svc.tls {
        upstream_tls(svc, t, r);
    }
    let p = &svc.passive;
    if p.ejection_time.get_ref() > p.max_ejection_time.get_ref() {
        r.error(p.ejection_time.span(), "ejection_time is longer than max_ejection_time", "raise max_ejection_time or lower ejection_time");
    }
    if *svc.retry.budget_percent.get_ref() > 100 {
        r.error(svc.retry.budget_percent.span(), "budget_percent must be between 0 and 100", "20 suits most services");
    }
    if *svc.retry.attempts.get_ref() > 10 {
        r.error(svc.retry.attempts.span(), "more than 10 retry attempts multiplies load on a failing service", "2 suits most services");
    }
}

/// Upstream TLS: the files load, and every endpoint has a name to verify.
fn upstream_tls(svc: &ServiceSpec, t: &Spanned<super::schema::UpstreamTlsSpec>, r: &mut Reporter) {
    let spec = t.get_ref();
    let http2 = svc.protocol == crate::upstream::UpstreamProtocol::Http2;
    if let Err(why) = crate::tls::client::client_config(&super::convert::upstream_tls(spec), http2) {
        r.error(t.span(), why, "point ca, cert and key at readable PEM files (cert and key together)");
    }
    let sni = spec.sni.as_ref().map(|s| s.get_ref().as_str());
    let eps = svc.endpoints.iter().chain(svc.shards.values().flat_map(|s| s.endpoints.iter()));
    for e in eps {
        if let Err(why) = crate::tls::client::server_name(sni, e.address.get_ref()) {
            r.error(e.address.span(), why, "set tls.sni to the name in the endpoints' certificates");
        }
    }
}

fn health(h: &HealthSpec, r: &mut Reporter) {
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
}

fn socket_addr(s: &Spanned<String>, what: &str, r: &mut Reporter) -> Option<SocketAddr> {
    match s.get_ref().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            r.error(
                s.span(),
                format!("`{}` is not a valid {what}", s.get_ref()),
                "write it as \"IP:port\", such as \"0.0.0.0:8080\" or \"[::1]:8080\"",
            );
            None
        }
    }
}

/// Checks `host:port` for an upstream endpoint.
pub fn check_authority(a: &str) -> Result<(), String> {
    if a.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = a.rsplit_once(':') else {
        return Err(format!("endpoint `{a}` has no port"));
    };
    if port.parse::<u16>().map(|p| p == 0).unwrap_or(true) {
        return Err(format!("endpoint `{a}` has an invalid port `{port}`"));
    }
    let valid_host = !host.is_empty()
        && host.split('.').all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if !valid_host {
        return Err(format!("endpoint `{a}` has an invalid host `{host}`"));
    }
    Ok(())
}

/// Parses `10.0.0.0/8`, `::1/128` or a bare address.
pub fn parse_cidr(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>().ok().or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

fn balancer(name: &Spanned<String>, svc: &ServiceSpec, r: &mut Reporter) {
    let kind = *svc.balancer.get_ref();
    if let Some(h) = &svc.hash {
        if kind != BalancerKind::Hash {
            r.error(
                h.span(),
                format!("service `{}` has hash settings but its balancer is not `hash`", name.get_ref()),
                "set balancer = \"hash\" or remove the hash table",
            );
        }
        hash_spec(h.get_ref(), svc.endpoints.iter().map(|e| *e.weight.get_ref()), false, r);
    }
    if let Some(c) = &svc.cookie {
        if kind != BalancerKind::Cookie {
            r.error(
                c.span(),
                format!("service `{}` has cookie settings but its balancer is not `cookie`", name.get_ref()),
                "set balancer = \"cookie\" or remove the cookie table",
            );
        }
        let n = c.get_ref().name.get_ref();
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            r.error(c.get_ref().name.span(), format!("`{n}` is not a valid cookie name"), "use letters, digits, `-`, `_` and `.`");
        }
    }
}

/// Checks a hash balancer's or sharder's settings; `weights` are its members'.
pub fn hash_spec(h: &HashSpec, weights: impl Iterator<Item = u32>, sharder: bool, r: &mut Reporter) {
    let f = *h.balance_factor.get_ref();
    if f != 0.0 && (f < 1.0 || !f.is_finite()) {
        r.error(
            h.balance_factor.span(),
            format!("balance_factor {f} is below 1, so the bound could never be met"),
            "use 0 (no bound) or a factor of at least 1, such as 1.25",
        );
    }
    if let Some(t) = &h.hash_tag {
        if t.get_ref().len() != 2 || !t.get_ref().is_ascii() {
            r.error(t.span(), format!("hash_tag `{}` must be two characters", t.get_ref()), "for example \"{}\"");
        }
    }
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
}

fn endpoints(owner: &str, eps: &[EndpointSpec], r: &mut Reporter) {
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    for ep in eps {
        if let Err(why) = check_authority(ep.address.get_ref()) {
            r.error(ep.address.span(), why, "write an endpoint as \"host:port\", such as \"10.0.0.5:8080\"");
        } else if !addrs.insert(ep.address.get_ref().clone()) {
            r.error(
                ep.address.span(),
                format!("endpoint {} is listed twice", ep.address.get_ref()),
                "list each endpoint once; use weight to send it more",
            );
        }
        if let Some(n) = &ep.name {
            if !names.insert(n.get_ref().clone()) {
                r.error(n.span(), format!("endpoint name `{}` is used twice in `{owner}`", n.get_ref()), "give each endpoint its own name");
            }
        }
        if !(1..=10_000).contains(ep.weight.get_ref()) {
            r.error(ep.weight.span(), "weight must be between 1 and 10000", "");
        }
    }
}

fn sharded(name: &Spanned<String>, svc: &ServiceSpec, r: &mut Reporter) {
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
    match &svc.sharder {
        None => r.error(
            name.span(),
            format!("sharded service `{n}` has no sharder"),
            "add sharder = { key = { header = \"x-user\" } } (or another key)",
        ),
        Some(s) => hash_spec(s.get_ref(), svc.shards.values().map(|sh| *sh.weight.get_ref()), true, r),
    }
    if svc.shards.len() > crate::ring::MAX_MEMBERS {
        r.error(name.span(), "too many shards", "use at most 65535 shards");
    }
    for (shard, spec) in &svc.shards {
        let owner = format!("{n}/{}", shard.get_ref());
        if shard.get_ref().is_empty() {
            r.error(shard.span(), "a shard needs a name", "");
        }
        if !(1..=10_000).contains(spec.weight.get_ref()) {
            r.error(spec.weight.span(), "weight must be between 1 and 10000", "");
        }
        endpoints(&owner, &spec.endpoints, r);
        let kind = spec.balancer.as_ref().map(|b| *b.get_ref()).unwrap_or(*svc.balancer.get_ref());
        if let Some(h) = spec.hash.as_ref().or(svc.hash.as_ref()) {
            if kind == BalancerKind::Hash {
                hash_spec(h.get_ref(), spec.endpoints.iter().map(|e| *e.weight.get_ref()), false, r);
            }
        }
        if let Some(h) = &spec.health {
            health(h, r);
        }
    }
    if let Some(h) = &svc.shard_header {
        if http::HeaderName::from_bytes(h.get_ref().as_bytes()).is_err() {
            r.error(h.span(), format!("`{}` is not a valid header name", h.get_ref()), "for example \"x-shard\"");
        }
    }
    if *svc.fan_out.concurrency.get_ref() == 0 {
        r.error(svc.fan_out.concurrency.span(), "fan-out concurrency must be at least 1", "8 suits most services");
    }
    if svc.fan_out.timeout.get_ref().0.is_zero() {
        r.error(svc.fan_out.timeout.span(), "a fan-out timeout of zero would fail every fan-out", "use a positive duration such as \"2s\"");
    }
}

fn cache(c: &super::schema::CacheSpec, r: &mut Reporter) {
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
    for m in &c.methods {
        if !matches!(m.get_ref().as_str(), "GET" | "HEAD") {
            r.error(m.span(), format!("`{}` cannot be answered from a cache", m.get_ref()), "cacheable methods are GET and HEAD");
        }
    }
    for p in &c.purge_from {
        if parse_cidr(p.get_ref()).is_none() {
            r.error(
                p.span(),
                format!("`{}` is not an IP address or CIDR range", p.get_ref()),
                "write it as \"127.0.0.1\" or \"10.0.0.0/8\"",
            );
        }
    }
    if let Some(h) = &c.tag_header {
        if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
            r.error(c.memory_bytes.span(), format!("tag_header `{h}` is not a header name"), "for example \"surrogate-key\"");
        }
    }
}

/// A SHA-256 digest written as 64 hex digits.
pub fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn identity(cfg: &Config, r: &mut Reporter) {
    let known = |n: &Spanned<String>, r: &mut Reporter| {
        if !cfg.rate_limits.keys().any(|k| k.get_ref() == n.get_ref()) {
            r.error(n.span(), format!("rate limit `{}` is not defined", n.get_ref()), "define it in a [rate_limits.NAME] table");
        }
    };
    if let Some(h) = cfg.identity.api_key.as_ref().and_then(|s| s.header.as_ref()) {
        if http::HeaderName::from_bytes(h.get_ref().as_bytes()).is_err() {
            r.error(h.span(), format!("`{}` is not a header name", h.get_ref()), "for example \"x-api-key\"");
        }
    }
    let mut seen = HashSet::new();
    for k in &cfg.identity.keys {
        match (&k.key, &k.sha256) {
            (Some(_), Some(h)) => r.error(h.span(), "give an API key or its sha256, not both", ""),
            (None, Some(h)) if parse_sha256(h.get_ref()).is_none() => {
                r.error(h.span(), "sha256 must be 64 hex digits", "compute it with: printf %s KEY | sha256sum")
            }
            (None, None) => r.error(k.tier.span(), "an API key needs `key` or `sha256`", ""),
            _ => {}
        }
        let digest = k
            .key
            .as_ref()
            .map(|p| crate::identity::key_digest(p.get_ref().as_bytes()))
            .or_else(|| k.sha256.as_ref().and_then(|h| parse_sha256(h.get_ref())));
        if let Some(d) = digest {
            if !seen.insert(d) {
                r.error(k.owner.span(), "this API key is listed twice", "list each key once");
            }
        }
        for n in k.rate_limit.iter().flatten() {
            known(n, r);
        }
    }
    if let Some(j) = &cfg.identity.jwt {
        match crate::jwt::load_keys(super::convert::jwt_keys(j.get_ref())) {
            Ok(keys) if keys.is_empty() => {
                r.error(j.span(), "JWT verification has no key", "give hs256_secret, rsa_public_key, ec_public_key or jwks_file")
            }
            Ok(_) => {}
            Err(why) => r.error(j.span(), why, "point it at a readable PEM or JWKS file"),
        }
    }
    if !cfg.identity.keys.is_empty() && cfg.identity.api_key.is_none() {
        r.error(
            cfg.identity.keys[0].owner.span(),
            "API keys are listed but no `api_key` source says where clients present them",
            "add [identity] api_key = { header = \"x-api-key\" }",
        );
    }
    for route in &cfg.routes {
        for names in route.rate_limit_tiers.values() {
            for n in names {
                known(n, r);
            }
        }
    }
    for svc in cfg.services.values() {
        for n in svc.rate_limit.iter().chain(svc.rate_limit_tiers.values().flatten()) {
            known(n, r);
        }
    }
}
