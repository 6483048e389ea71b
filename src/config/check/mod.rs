//! The one pass from a parsed config to a [`Plan`]: each value is checked where
//! it is converted into its runtime type, every problem is reported with its
//! position (all of them, not just the first, so one `ringmaster check` shows
//! all that is wrong), and each file the config names is read here, once.
//!
//! A function returns `None` only after reporting why; the plan exists only when
//! nothing was reported.

mod discovery;
mod heat;
mod identity;
mod memcache;
mod routes;
mod scale;
mod services;

use super::error::Reporter;
use super::plan::{ConnLimits, Limits, ListenerOpts, ListenerPlan, Plan};
use super::schema::{Config, ListenerProtocol, ListenerSpec};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use toml::Spanned;

/// Checks and converts `cfg`, reporting every problem in `r`.
pub fn plan(cfg: Config, r: &mut Reporter) -> Option<Plan> {
    let start = r.mark();
    let listeners = listeners(&cfg, r);
    let admin = admin(&cfg, r);
    let trusted = all(cfg.server.trusted_proxies.iter().map(|p| cidr(p, "write trusted proxies as \"10.0.0.0/8\" or \"192.0.2.7\"", r)));
    let (conn, limits) = limits(&cfg, r);
    let defs = identity::rate_limits(&cfg, r);
    let credentials = identity::credentials(&cfg, &defs, r);
    let redis = identity::redis(&cfg, r);
    let prefixes = identity::prefixes(&cfg, r);
    names(&cfg, r);
    let services = services::services(&cfg, r);
    let memcache = memcache::services(&cfg, r);
    let memcache_listeners = memcache::listeners(&cfg, r);
    let routes = routes::routes(&cfg, &defs, credentials.as_ref().and_then(Option::as_ref), r);
    let listener_opts = listener_opts(&cfg, r);
    let leader = cfg.leader.as_ref().map(|l| scale::leader(l, r));
    fallback_all_on_public_listeners(&cfg, r);
    let (ipv4_prefix, ipv6_prefix) = prefixes?;
    let plan = Plan {
        listeners: listeners?,
        listener_opts: listener_opts?,
        admin: admin?,
        grace_period: cfg.server.grace_period.0,
        conn,
        limits,
        trusted: crate::identity::TrustedProxies::new(trusted?),
        credentials: credentials?,
        ipv4_prefix,
        ipv6_prefix,
        redis: redis?,
        services: services?,
        routes: routes?,
        memcache: memcache?,
        memcache_listeners: memcache_listeners?,
        access_log: cfg.access_log.as_ref().map(|a| crate::accesslog::Settings { format: a.format, path: a.path.clone() }),
        leader: match leader {
            Some(l) => Some(l?),
            None => None,
        },
        warnings: Vec::new(),
        config: cfg,
    };
    r.clean_since(start).then_some(plan)
}

/// Service and shard names reach logs, metrics labels and the scaler's
/// commands: no control bytes (`:` and `.` stay, as nutcracker's unnamed
/// servers are named `host:port` and placement hashes the name).
fn names(cfg: &Config, r: &mut Reporter) {
    let names = cfg.services.iter().flat_map(|(name, svc)| std::iter::once(name).chain(svc.shards.keys()));
    for n in names {
        if let Some(at) = n.get_ref().bytes().position(|b| b < 0x20 || b == 0x7f) {
            r.error(
                n.span(),
                format!("the name `{}` has a control byte at byte {}", n.get_ref().escape_default(), at + 1),
                "names are printable text, such as \"users\" or \"10.0.0.1:11211\"",
            );
        }
    }
}

/// The admin listener: its address, and its token (from the config or a file,
/// read once); off loopback a token is required.
fn admin(cfg: &Config, r: &mut Reporter) -> Option<Option<crate::config::plan::AdminPlan>> {
    let a = &cfg.admin;
    if !a.enabled {
        return Some(None);
    }
    let addr = socket_addr(&a.listen, "admin listen address", r);
    let token = secret(&a.token, &a.token_file, "admin.token", r);
    let heat_token = secret(&a.heat_token, &a.heat_token_file, "admin.heat_token", r);
    if let (Some(addr), Some(None)) = (addr, &token) {
        if !addr.ip().is_loopback() {
            r.error(
                a.listen.span(),
                format!("the admin listener on {addr} is reachable from other machines, and has no token"),
                "keep it on 127.0.0.1, or set admin.token (or admin.token_file)",
            );
            return None;
        }
    }
    let mut hosts = Vec::new();
    for h in &a.hosts {
        let name = h.get_ref().trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
            r.error(
                h.span(),
                format!("`{}` is not a host name", h.get_ref()),
                "a DNS name such as \"admin.example.com\" (IP addresses are always accepted)",
            );
        } else {
            hosts.push(name);
        }
    }
    let tls = match &a.tls {
        None => Some(None),
        Some(t) => server_tls(t, r).map(Some),
    };
    let (addr, token, heat_token, tls) = (addr?, token?, heat_token?, tls?);
    let secret = |t: Option<String>| t.map(|t| crate::identity::Secret::new(&t));
    Some(Some(crate::config::plan::AdminPlan {
        addr,
        token: secret(token),
        heat_token: secret(heat_token),
        hosts,
        show_keys: a.show_keys,
        tls,
    }))
}

/// A secret given inline or in a file (read once): `Some(None)` when neither.
fn secret(inline: &Option<Spanned<String>>, file: &Option<Spanned<String>>, what: &str, r: &mut Reporter) -> Option<Option<String>> {
    match (inline, file) {
        (Some(_), Some(f)) => {
            r.error(f.span(), format!("give {what} or {what}_file, not both"), "");
            None
        }
        (Some(t), None) if t.get_ref().trim().is_empty() => {
            r.error(t.span(), format!("{what} is empty"), "use a long random string, such as the output of: openssl rand -hex 32");
            None
        }
        (Some(t), None) => Some(Some(t.get_ref().trim().to_string())),
        (None, Some(f)) => match std::fs::read_to_string(f.get_ref()) {
            Ok(t) if !t.trim().is_empty() => Some(Some(t.trim().to_string())),
            Ok(_) => {
                r.error(f.span(), format!("{what} file {} is empty", f.get_ref()), "write the token into it");
                None
            }
            Err(e) => {
                r.error(f.span(), format!("cannot read {what} file {}: {e}", f.get_ref()), "check the path and its permissions");
                None
            }
        },
        (None, None) => Some(None),
    }
}

/// Warns of a sharded service whose sharder fans a request without the key out
/// to every shard, routed from a listener other machines reach: any client can
/// multiply its load by the number of shards by leaving the key out.
fn fallback_all_on_public_listeners(cfg: &Config, r: &mut Reporter) {
    let public: Vec<&ListenerSpec> =
        cfg.listeners.iter().filter(|l| l.listen.get_ref().parse::<SocketAddr>().is_ok_and(|a| !a.ip().is_loopback())).collect();
    for route in &cfg.routes {
        let Some((_, svc)) = cfg.services.iter().find(|(k, _)| k.get_ref() == route.service.get_ref()) else { continue };
        let Some(sharder) = svc.sharder.as_ref().filter(|s| *s.get_ref().fallback.get_ref() == super::schema::Fallback::All) else {
            continue;
        };
        let reached = public.iter().find(|l| route.listeners.is_empty() || route.listeners.iter().any(|n| n.get_ref() == l.name.get_ref()));
        if let Some(l) = reached {
            r.warn(
                sharder.get_ref().fallback.span(),
                format!(
                    "fallback `all` sends a request without the key to every shard of `{}`, and listener `{}` ({}) is public",
                    route.service.get_ref(),
                    l.name.get_ref(),
                    l.listen.get_ref()
                ),
                "any client can multiply its load by leaving the key out: use `reject`, or keep fan_out.max_in_flight and rate limits tight",
            );
        }
    }
}

/// Every item's value, or `None` when any is missing; every item is checked.
fn all<T>(items: impl Iterator<Item = Option<T>>) -> Option<Vec<T>> {
    let checked: Vec<Option<T>> = items.collect();
    checked.into_iter().collect()
}

fn listeners(cfg: &Config, r: &mut Reporter) -> Option<Vec<ListenerPlan>> {
    if cfg.listeners.is_empty() {
        r.error(0..0, "no listener is configured", "add a [[listeners]] table with name and listen = \"0.0.0.0:8080\"");
    }
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    let plans = all(cfg.listeners.iter().map(|l| {
        if !names.insert(l.name.get_ref().clone()) {
            r.error(l.name.span(), format!("listener name `{}` is used twice", l.name.get_ref()), "give each listener its own name");
        }
        if *l.protocol.get_ref() == ListenerProtocol::Memcache {
            // Checked by `memcache`; its TCP address is still taken.
            if let Ok(a) = l.listen.get_ref().parse::<SocketAddr>() {
                if !addrs.insert(a) {
                    r.error(l.listen.span(), format!("address {a} is used by two listeners"), "give each listener its own address");
                }
            }
            return Some(None);
        }
        if let Some(s) = &l.service {
            r.error(s.span(), "only memcache listeners name a service", "HTTP listeners reach services through [[routes]]");
        }
        if let Some(c) = &l.clients {
            r.error(c.span(), "`clients` is for memcache listeners", "limit HTTP clients in [limits]");
        }
        let tls = listener_tls(l, r);
        let addr = socket_addr(&l.listen, "listen address", r);
        if let Some(a) = addr {
            if !addrs.insert(a) {
                r.error(l.listen.span(), format!("address {a} is used by two listeners"), "give each listener its own address");
            }
        }
        Some(Some(ListenerPlan { name: l.name.get_ref().clone(), addr: addr?, tls: tls? }))
    }))?;
    Some(plans.into_iter().flatten().collect())
}

/// An https listener's certificates, read and checked; `Some(None)` for plain HTTP.
fn listener_tls(l: &ListenerSpec, r: &mut Reporter) -> Option<Option<(crate::tls::server::Settings, crate::tls::server::Material)>> {
    match (l.protocol.get_ref(), &l.tls) {
        (ListenerProtocol::Https, None) => {
            r.error(
                l.protocol.span(),
                format!("https listener `{}` has no tls table", l.name.get_ref()),
                "add tls = { certificates = [{ cert = \"cert.pem\", key = \"key.pem\" }] }",
            );
            None
        }
        (ListenerProtocol::Http, Some(t)) => {
            r.error(t.span(), format!("listener `{}` has TLS settings but protocol http", l.name.get_ref()), "set protocol = \"https\"");
            None
        }
        (ListenerProtocol::Https, Some(t)) => server_tls(t, r).map(Some),
        (ListenerProtocol::Http | ListenerProtocol::Memcache, None) => Some(None),
        (ListenerProtocol::Memcache, Some(_)) => None,
    }
}

/// A server's TLS settings and the certificates they name, read once.
fn server_tls(
    t: &Spanned<super::schema::TlsSpec>,
    r: &mut Reporter,
) -> Option<(crate::tls::server::Settings, crate::tls::server::Material)> {
    let settings = tls_settings(t.get_ref());
    match crate::tls::server::load(&settings) {
        Ok(m) => Some((settings, m)),
        Err(why) => {
            r.error(t.span(), why.to_string(), "point cert and key at readable PEM files that belong together");
            None
        }
    }
}

fn tls_settings(t: &super::schema::TlsSpec) -> crate::tls::server::Settings {
    use crate::tls::server::{CertFiles, ClientAuth};
    crate::tls::server::Settings {
        certificates: t
            .certificates
            .iter()
            .map(|c| CertFiles { cert: c.cert.get_ref().clone(), key: c.key.get_ref().clone(), names: c.names.clone() })
            .collect(),
        client_auth: t.client_auth.as_ref().map(|c| {
            let c = c.get_ref();
            ClientAuth { ca: c.ca.get_ref().clone(), required: c.required, tier: c.tier.as_ref().map(|t| t.get_ref().clone()) }
        }),
        session_tickets: t.session_tickets,
        session_cache: t.session_cache,
        watch_interval: t.watch_interval.0,
    }
}

/// The listeners that redirect, send HSTS, normalise paths other than by
/// default, or read a PROXY protocol header.
fn listener_opts(cfg: &Config, r: &mut Reporter) -> Option<HashMap<String, ListenerOpts>> {
    let proxy = |l: &ListenerSpec| l.proxy_protocol.as_ref().is_some_and(|p| *p.get_ref());
    let special = cfg
        .listeners
        .iter()
        .filter(|l| l.redirect_to_https.is_some() || l.hsts.is_some() || !l.normalize_path || !l.merge_slashes || proxy(l));
    let opts = all(special.map(|l| {
        if let Some(p) = l.proxy_protocol.as_ref().filter(|p| *p.get_ref()) {
            if *l.protocol.get_ref() == ListenerProtocol::Memcache {
                r.error(p.span(), "memcache listeners do not read PROXY protocol headers", "remove proxy_protocol from this listener");
                return None;
            }
            if cfg.server.trusted_proxies.is_empty() {
                r.error(
                    p.span(),
                    "proxy_protocol = true needs the balancers' addresses, and [server] trusted_proxies is empty",
                    "list the L4 balancers in [server] trusted_proxies, such as [\"10.0.0.0/8\"]",
                );
                return None;
            }
        }
        let hsts = match &l.hsts {
            None => None,
            Some(h) if *l.protocol.get_ref() != ListenerProtocol::Https => {
                r.error(h.span(), "HSTS is only sent over https", "move hsts to the https listener");
                return None;
            }
            Some(h) => match http::HeaderValue::from_str(h.get_ref()) {
                Ok(v) if h.get_ref().starts_with("max-age=") => Some(v),
                _ => {
                    r.error(
                        h.span(),
                        "an HSTS value starts with max-age= and holds only printable text",
                        "for example \"max-age=31536000; includeSubDomains\"",
                    );
                    return None;
                }
            },
        };
        let path = crate::normalise::PathRules { dot_segments_and_decoding: l.normalize_path, merge_slashes: l.merge_slashes };
        Some((l.name.get_ref().clone(), ListenerOpts { redirect_to_https: l.redirect_to_https, hsts, path, proxy_protocol: proxy(l) }))
    }))?;
    Some(opts.into_iter().collect())
}

fn limits(cfg: &Config, r: &mut Reporter) -> (ConnLimits, Limits) {
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
    let conn = ConnLimits {
        max_header_bytes: *l.max_header_bytes.get_ref(),
        max_headers: *l.max_headers.get_ref(),
        header_read_timeout: l.header_read_timeout.get_ref().0,
        keepalive_timeout: l.keepalive_timeout.get_ref().0,
        max_connections: l.max_connections,
        max_connections_per_client: l.max_connections_per_client,
        h2_max_concurrent_streams: l.h2_max_concurrent_streams,
        h2_max_reset_streams: l.h2_max_reset_streams,
        own_http1: cfg.server.http1 == crate::config::schema::Http1Engine::Ringmaster,
        reuse_port: cfg.server.reuse_port,
    };
    let limits = Limits {
        max_header_bytes: *l.max_header_bytes.get_ref(),
        max_headers: *l.max_headers.get_ref(),
        max_body_bytes: l.max_body_bytes,
        body_read_timeout: l.body_read_timeout.0,
        body_min_rate: l.body_min_rate,
    };
    (conn, limits)
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

/// `10.0.0.0/8`, `::1/128` or a bare address.
fn cidr(s: &Spanned<String>, hint: &str, r: &mut Reporter) -> Option<ipnet::IpNet> {
    let t = s.get_ref();
    let net = t.parse::<ipnet::IpNet>().ok().or_else(|| t.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from));
    if net.is_none() {
        r.error(s.span(), format!("`{t}` is not an IP address or CIDR range"), hint);
    }
    net
}

/// An optional setting's value: `Some(None)` when it is absent, `None` when it
/// is present and wrong (`check` reported why).
fn optional<S, T>(setting: Option<S>, check: impl FnOnce(S) -> Option<T>) -> Option<Option<T>> {
    match setting {
        None => Some(None),
        Some(s) => check(s).map(Some),
    }
}

/// A header name written in the config.
fn header_name(s: &Spanned<String>, message: impl FnOnce(&str) -> String, hint: &str, r: &mut Reporter) -> Option<http::HeaderName> {
    match http::HeaderName::from_bytes(s.get_ref().as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            r.error(s.span(), message(s.get_ref()), hint);
            None
        }
    }
}
