//! memcache services and listeners checked and converted: the ring over the
//! shards, each shard's endpoints (IP:port), the replication and failure
//! policy, and each memcache listener's address (IP:port or `unix:PATH`) and
//! service.

use super::all;
use crate::config::error::Reporter;
use crate::config::plan::{McAddr, McListenerPlan, McServicePlan, McShardPlan};
use crate::config::schema::{Config, ListenerProtocol, ListenerSpec, ServiceKind, ServiceProtocol, ServiceSpec};
use crate::memcache::upstream::Settings;
use crate::memcache::Policy;
use crate::ring::{Function, Member, Ring};
use std::collections::HashSet;
use std::net::SocketAddr;
use toml::Spanned;

pub fn is_memcache(s: &ServiceSpec) -> bool {
    *s.protocol.get_ref() == ServiceProtocol::Memcache
}

pub fn services(cfg: &Config, r: &mut Reporter) -> Option<Vec<McServicePlan>> {
    all(cfg.services.iter().filter(|(_, s)| is_memcache(s)).map(|(name, svc)| service(name, svc, r)))
}

fn service(name: &Spanned<String>, svc: &ServiceSpec, r: &mut Reporter) -> Option<McServicePlan> {
    let start = r.mark();
    let n = name.get_ref();
    let m = &svc.memcache;
    let t = &svc.timeouts;
    for d in [&t.connect, &t.request, &m.server_retry_timeout, &m.command_timeout] {
        if d.get_ref().0.is_zero() {
            r.error(d.span(), "a timeout of zero would fail every command", "use a positive duration such as \"1s\"");
        }
    }
    if !(1..=64).contains(m.server_connections.get_ref()) {
        r.error(m.server_connections.span(), "server_connections must be between 1 and 64", "1 (nutcracker's default) suits most services");
    }
    if !(1..=128 * 1024 * 1024).contains(m.max_value_bytes.get_ref()) {
        r.error(m.max_value_bytes.span(), "max_value_bytes must be between 1 and 134217728", "1048576, memcached's default item size");
    }
    if *m.max_keys_per_get.get_ref() == 0 {
        r.error(m.max_keys_per_get.span(), "max_keys_per_get of 0 would refuse every get", "1024 suits most clients");
    }
    let discovery = [(svc.dns.as_ref().map(|d| d.span()), "dns"), (svc.kubernetes.as_ref().map(|k| k.span()), "kubernetes")];
    for (span, table) in discovery {
        if let Some(span) = span {
            r.error(
                span,
                format!("memcache service `{n}` has a {table} table: discovery is for HTTP services"),
                "list the memcached servers as endpoints",
            );
        }
    }
    // A replicated memcache service is one shard of replicas.
    let shards: Vec<(String, &[crate::config::schema::EndpointSpec], u32)> = match svc.kind.get_ref() {
        ServiceKind::Replicated => vec![(n.clone(), &svc.endpoints[..], 1)],
        ServiceKind::Sharded => {
            super::services::shard_layout(name, svc, r);
            svc.shards.iter().map(|(k, s)| (k.get_ref().clone(), &s.endpoints[..], *s.weight.get_ref())).collect()
        }
    };
    let sharder = svc.sharder.as_ref().map(|s| s.get_ref());
    let function = sharder.map(|s| *s.function.get_ref()).unwrap_or(Function::KetamaTwemproxy);
    let key_hash = match sharder {
        Some(s) => s.key_hash(),
        None => crate::hash::KeyHash::Fnv1a64,
    };
    if let Some(k) = sharder.and_then(|s| s.hash.as_ref()) {
        if function != Function::KetamaTwemproxy && *k.get_ref() != crate::hash::KeyHash::Xxh3 {
            r.error(k.span(), format!("hash `{}` only applies to function `ketama_twemproxy`", k.get_ref().name()), "drop `hash` (xxh3)");
        }
    }
    let tag = sharder.and_then(|s| s.hash_tag.as_ref()).and_then(|t| match <[u8; 2]>::try_from(t.get_ref().as_bytes()) {
        Ok(pair) if pair.is_ascii() => Some(pair),
        _ => {
            r.error(t.span(), format!("hash_tag `{}` must be two characters", t.get_ref()), "for example \"{}\"");
            None
        }
    });
    if !function.supports_weights() && shards.iter().any(|s| s.2 != 1) {
        r.error(name.span(), "jump hashing does not support weights", "give every shard weight 1, or use maglev");
    }
    let mut names = HashSet::new();
    let shard_plans = all(shards.iter().map(|(shard, eps, _)| {
        if eps.is_empty() {
            r.error(
                name.span(),
                format!("shard `{shard}` of `{n}` has no endpoints"),
                "list its memcached servers as endpoints = [{ address = \"IP:port\" }]",
            );
        }
        let endpoints = all(eps.iter().map(|ep| {
            let addr = ep.address.get_ref().parse::<SocketAddr>().ok();
            if addr.is_none() {
                r.error(
                    ep.address.span(),
                    format!("`{}` is not IP:port", ep.address.get_ref()),
                    "write a memcached server as \"10.0.0.5:11211\"",
                );
            }
            let ep_name = ep.name.as_ref().map(|x| x.get_ref().clone()).unwrap_or_else(|| ep.address.get_ref().clone());
            if !names.insert(ep.address.get_ref().clone()) {
                r.error(ep.address.span(), format!("endpoint {} is listed twice in `{n}`", ep.address.get_ref()), "list each server once");
            }
            Some((ep_name, addr?))
        }));
        Some(McShardPlan { name: shard.clone(), endpoints: endpoints? })
    }));
    let members: Vec<Member> = shards.iter().map(|(s, _, w)| Member::new(s.clone(), *w)).collect();
    let settings = Settings {
        connect_timeout: t.connect.get_ref().0,
        request_timeout: t.request.get_ref().0,
        max_value: *m.max_value_bytes.get_ref(),
        failure_limit: m.server_failure_limit,
        retry_timeout: m.server_retry_timeout.get_ref().0,
        connections: *m.server_connections.get_ref(),
    };
    let policy = Policy {
        writes: m.writes,
        reads: m.reads,
        miss_failover: m.miss_failover,
        auto_eject: m.auto_eject_hosts,
        max_keys: *m.max_keys_per_get.get_ref(),
        slow_start: super::services::slow_start(svc, r),
        warm_up: m.warm_up.as_ref().map_or(std::time::Duration::ZERO, |w| {
            if w.get_ref().0 > std::time::Duration::from_secs(86_400) {
                r.error(w.span(), "warm_up must be at most 24h", "\"5m\"");
            }
            w.get_ref().0
        }),
        allow_flush_all: m.allow_flush_all,
        stats_detail: m.stats_detail,
    };
    let shards = shard_plans?;
    let heat = super::heat::policy(&svc.heat, svc.hot_keys.as_ref(), true, r);
    let scaler = svc.scaler.as_ref().and_then(|sc| super::scale::policy(sc, r));
    r.clean_since(start).then(|| McServicePlan {
        name: n.clone(),
        ring: Ring::build(function, &members, key_hash),
        tag,
        shards,
        policy,
        settings,
        command_timeout: m.command_timeout.get_ref().0,
        heat,
        scaler,
    })
}

/// The memcache listeners, each with its address and service.
pub fn listeners(cfg: &Config, r: &mut Reporter) -> Option<Vec<McListenerPlan>> {
    all(cfg.listeners.iter().filter(|l| *l.protocol.get_ref() == ListenerProtocol::Memcache).map(|l| listener(cfg, l, r)))
}

fn listener(cfg: &Config, l: &ListenerSpec, r: &mut Reporter) -> Option<McListenerPlan> {
    let name = l.name.get_ref();
    if let Some(t) = &l.tls {
        r.error(
            t.span(),
            format!("memcache listener `{name}` has TLS settings"),
            "the ambassador speaks plain memcached protocol; remove tls",
        );
    }
    let listen = l.listen.get_ref();
    let addr = match listen.strip_prefix("unix:") {
        Some(path) if !path.is_empty() => Some(McAddr::Unix(path.into())),
        _ => match listen.parse::<SocketAddr>() {
            Ok(a) => Some(McAddr::Tcp(a)),
            Err(_) => {
                r.error(
                    l.listen.span(),
                    format!("`{listen}` is not a valid listen address"),
                    "write \"IP:port\" such as \"127.0.0.1:11211\", or \"unix:/run/ringmaster/mc.sock\"",
                );
                None
            }
        },
    };
    let service = match &l.service {
        None => {
            r.error(
                l.name.span(),
                format!("memcache listener `{name}` names no service"),
                "add service = \"NAME\" of a service with protocol = \"memcache\"",
            );
            None
        }
        Some(s) => match cfg.services.iter().find(|(k, _)| k.get_ref() == s.get_ref()) {
            Some((_, spec)) if is_memcache(spec) => Some(s.get_ref().clone()),
            Some(_) => {
                r.error(s.span(), format!("service `{}` is not a memcache service", s.get_ref()), "set protocol = \"memcache\" on it");
                None
            }
            None => {
                r.error(
                    s.span(),
                    format!("memcache listener `{name}` sends to service `{}`, which is not defined", s.get_ref()),
                    "define it in a [services.NAME] table with protocol = \"memcache\"",
                );
                None
            }
        },
    };
    let clients = clients(l.clients.as_ref().map(|c| c.get_ref()).unwrap_or(&Default::default()), r);
    Some(McListenerPlan { name: name.clone(), addr: addr?, service: service?, clients: clients? })
}

/// A memcache listener's client limits, checked.
fn clients(c: &crate::config::schema::McClientsSpec, r: &mut Reporter) -> Option<crate::memcache::client::Limits> {
    let start = r.mark();
    if *c.max_connections.get_ref() == 0 {
        r.error(c.max_connections.span(), "max_connections of 0 would refuse every client", "1024, memcached's default (-c)");
    }
    if !(1..=65_536).contains(c.max_in_flight.get_ref()) {
        r.error(c.max_in_flight.span(), "max_in_flight must be between 1 and 65536", "256 suits pipelining clients");
    }
    if *c.max_pending_bytes.get_ref() < 4096 {
        r.error(c.max_pending_bytes.span(), "max_pending_bytes must be at least 4096", "1048576 (1 MiB)");
    }
    if c.max_total_pending_bytes.get_ref() < c.max_pending_bytes.get_ref() {
        r.error(c.max_total_pending_bytes.span(), "max_total_pending_bytes must be at least max_pending_bytes", "268435456 (256 MiB)");
    }
    if c.write_timeout.get_ref().0.is_zero() {
        r.error(c.write_timeout.span(), "a write_timeout of zero would close every client with answers waiting", "\"30s\"");
    }
    let idle = c.idle_timeout.get_ref().0;
    r.clean_since(start).then(|| crate::memcache::client::Limits {
        max_connections: *c.max_connections.get_ref(),
        max_per_address: c.max_per_address,
        idle_timeout: (!idle.is_zero()).then_some(idle),
        write_timeout: c.write_timeout.get_ref().0,
        max_pending_bytes: *c.max_pending_bytes.get_ref(),
        max_in_flight: *c.max_in_flight.get_ref(),
        max_total_pending_bytes: *c.max_total_pending_bytes.get_ref(),
    })
}

#[cfg(test)]
mod tests {
    fn errors(text: &str) -> String {
        crate::config::parse("t.toml", text).map(|_| String::new()).unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn memcache_listeners_and_services_are_checked_with_positions() {
        let svc = "[services.c]\nkind = \"sharded\"\nprotocol = \"memcache\"\n[services.c.shards.a]\nendpoints = [{ address = \"127.0.0.1:1\" }]\n";
        let ok = format!("[[listeners]]\nname = \"m\"\nlisten = \"unix:/tmp/x.sock\"\nprotocol = \"memcache\"\nservice = \"c\"\n{svc}");
        assert_eq!(errors(&ok), "");
        let cases = [
            ("[[listeners]]\nname = \"m\"\nlisten = \"127.0.0.1:1\"\nprotocol = \"memcache\"\n", "names no service"),
            (
                "[[listeners]]\nname = \"m\"\nlisten = \"127.0.0.1:1\"\nprotocol = \"memcache\"\nservice = \"nope\"\n",
                "which is not defined",
            ),
            ("[[listeners]]\nname = \"m\"\nlisten = \"nowhere\"\nprotocol = \"memcache\"\nservice = \"c\"\n", "not a valid listen address"),
            ("[[listeners]]\nname = \"h\"\nlisten = \"127.0.0.1:2\"\n[[routes]]\nservice = \"c\"\n", "a memcache service"),
            ("[[listeners]]\nname = \"h\"\nlisten = \"127.0.0.1:2\"\nservice = \"c\"\n", "only memcache listeners name a service"),
        ];
        for (listener, want) in cases {
            let e = errors(&format!("{listener}{svc}"));
            assert!(e.contains(want) && e.contains("t.toml:"), "want {want:?} in:\n{e}");
        }
        let bad = format!("[[listeners]]\nname = \"m\"\nlisten = \"127.0.0.1:1\"\nprotocol = \"memcache\"\nservice = \"c\"\n{svc}[services.c.memcache]\nserver_connections = 0\nmax_keys_per_get = 0\n");
        let e = errors(&bad);
        assert!(e.contains("server_connections must be between 1 and 64") && e.contains("max_keys_per_get of 0"), "{e}");
        let bad = format!("[[listeners]]\nname = \"m\"\nlisten = \"127.0.0.1:1\"\nprotocol = \"memcache\"\nservice = \"c\"\nclients = {{ max_connections = 0, max_in_flight = 0, max_pending_bytes = 10, write_timeout = \"0s\" }}\n{svc}");
        let e = errors(&bad);
        for want in ["t.toml:6:", "max_connections of 0", "max_in_flight must be", "max_pending_bytes must be", "write_timeout of zero"] {
            assert!(e.contains(want), "want {want:?} in:\n{e}");
        }
        let e = errors(&format!("[[listeners]]\nname = \"h\"\nlisten = \"127.0.0.1:2\"\nclients = {{ max_connections = 5 }}\n{svc}"));
        assert!(e.contains("`clients` is for memcache listeners") && e.contains("t.toml:4:"), "{e}");
    }
}
