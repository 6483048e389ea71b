//! The discovery tables of a service checked and converted: `dns` (names
//! re-resolved, SRV pools) and `kubernetes` (EndpointSlices), with the
//! guardrails both share.

use crate::config::duration::Dur;
use crate::config::error::Reporter;
use crate::config::schema::discovery::{KubeDiscoverySpec, PortRef};
use crate::config::schema::scale::KubernetesSpec;
use crate::config::schema::{ServiceKind, ServiceSpec};
use crate::discovery::{Guardrails, KubePolicy, KubePort};
use std::net::SocketAddr;
use toml::Spanned;

/// `max_drop` and `max_stale`, as either table has them.
fn guardrails(max_drop: &Spanned<f64>, max_stale: &Spanned<Dur>, r: &mut Reporter) -> Guardrails {
    if !(0.0..=1.0).contains(max_drop.get_ref()) {
        r.error(max_drop.span(), "max_drop is a share of the pool, from 0 to 1", "0.5: one answer takes at most half a pool away");
    }
    Guardrails { max_drop: *max_drop.get_ref(), max_stale: max_stale.get_ref().0 }
}

/// `dns = { ... }`: the resolver's address, TTL bounds and guardrails; and a
/// name among the endpoints to resolve.
pub(super) fn dns(
    svc: &ServiceSpec,
    d: &Spanned<crate::config::schema::discovery::DnsSpec>,
    r: &mut Reporter,
) -> Option<crate::discovery::DnsPolicy> {
    let start = r.mark();
    let spec = d.get_ref();
    let resolver = match &spec.resolver {
        None => None,
        Some(a) => match a.get_ref().parse::<SocketAddr>() {
            Ok(at) => Some(at),
            Err(_) => {
                r.error(a.span(), format!("`{}` is not a resolver address", a.get_ref()), "write IP:PORT, such as \"10.96.0.10:53\"");
                None
            }
        },
    };
    let (min_ttl, max_ttl) = (spec.min_ttl.get_ref().0, spec.max_ttl.get_ref().0);
    if min_ttl.is_zero() || min_ttl > max_ttl {
        r.error(spec.min_ttl.span(), "min_ttl must be above zero and at most max_ttl", "\"1s\" and \"300s\" suit most pools");
    }
    let guard = guardrails(&spec.max_drop, &spec.max_stale, r);
    let shard_endpoints = svc.shards.values().flat_map(|s| s.endpoints.iter());
    let named = svc.endpoints.iter().chain(shard_endpoints).any(|e| crate::discovery::name_of(e.address.get_ref()).is_some());
    match &spec.srv {
        Some(n) if *svc.kind.get_ref() != crate::config::schema::ServiceKind::Replicated => {
            r.error(n.span(), "an SRV name makes one pool: a replicated service's", "give each shard its endpoints by name instead");
        }
        Some(n) if !n.get_ref().starts_with('_') => {
            r.error(n.span(), format!("`{}` is not an SRV name", n.get_ref()), "write it as \"_http._tcp.app.internal\"");
        }
        Some(_) => {}
        None if !named => {
            r.error(
                d.span(),
                "dns is set, but no endpoint is given by a name",
                "give an endpoint as \"app.internal:8080\", or an srv name, or remove dns",
            );
        }
        None => {}
    }
    r.clean_since(start).then(|| crate::discovery::DnsPolicy {
        srv: spec.srv.as_ref().map(|n| n.get_ref().clone()),
        resolver,
        min_ttl,
        max_ttl,
        guard,
    })
}

/// `kubernetes = { ... }`: which slices (a Service's, or a selector's with
/// the shard in a label), the port, the API server, and the guardrails.
pub(super) fn kubernetes(
    name: &Spanned<String>,
    svc: &ServiceSpec,
    k: &Spanned<KubeDiscoverySpec>,
    r: &mut Reporter,
) -> Option<KubePolicy> {
    let start = r.mark();
    let spec = k.get_ref();
    if !cfg!(feature = "kubernetes") {
        r.error(
            k.span(),
            "this ringmaster was built without Kubernetes discovery",
            "build it with `cargo build --release --features kubernetes`, or use dns = { ... }",
        );
        return None;
    }
    if let Some(d) = &svc.dns {
        r.error(d.span(), "a service's pools come from dns or from kubernetes, not both", "keep one of the two tables");
    }
    let selector = match (&spec.service, &spec.selector) {
        (Some(s), None) => {
            let n = s.get_ref();
            let label = !n.is_empty()
                && n.len() <= 63
                && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !n.starts_with('-')
                && !n.ends_with('-');
            if !label {
                r.error(s.span(), format!("`{n}` is not a Service name"), "lower-case letters, digits and `-`, such as \"app\"");
            }
            format!("kubernetes.io/service-name={n}")
        }
        (None, Some(sel)) => {
            if sel.get_ref().trim().is_empty() {
                r.error(sel.span(), "an empty selector would watch every slice in the namespace", "selector = \"app=cache\"");
            }
            sel.get_ref().clone()
        }
        (Some(_), Some(sel)) => {
            r.error(sel.span(), "the slices are a Service's or a selector's, not both", "keep service or selector");
            String::new()
        }
        (None, None) => {
            r.error(k.span(), "which slices: no service and no selector", "service = \"app\"");
            String::new()
        }
    };
    let sharded = *svc.kind.get_ref() == ServiceKind::Sharded;
    match (&spec.shard_label, sharded) {
        (None, true) => r.error(
            k.span(),
            format!("sharded service `{}` needs the label that names a slice's shard", name.get_ref()),
            "shard_label = \"ringmaster.dev/shard\", on each shard's Service",
        ),
        (Some(l), false) => r.error(l.span(), "shard_label is for a sharded service", "remove it, or set kind = \"sharded\""),
        (Some(l), true) if l.get_ref().is_empty() => r.error(l.span(), "an empty label name", "\"ringmaster.dev/shard\""),
        _ => {}
    }
    let listed = svc.endpoints.first().or_else(|| svc.shards.values().flat_map(|s| s.endpoints.iter()).next());
    if let Some(ep) = listed {
        r.error(
            ep.address.span(),
            "the pools are the slices' endpoints: the config lists none",
            "remove endpoints from the service and its shards",
        );
    }
    let port = spec.port.as_ref().and_then(|p| match p.get_ref() {
        PortRef::Number(n) => match u16::try_from(*n) {
            Ok(n) if n > 0 => Some(KubePort::Number(n)),
            _ => {
                r.error(p.span(), format!("{n} is not a port"), "1 to 65535, or the slice port's name");
                None
            }
        },
        PortRef::Name(s) if s.is_empty() => {
            r.error(p.span(), "an empty port name", "the slice port's name, such as \"http\"");
            None
        }
        PortRef::Name(s) => Some(KubePort::Name(s.clone())),
    });
    let conn = KubernetesSpec {
        object: None,
        lease: None,
        api_server: spec.api_server.clone(),
        namespace: spec.namespace.clone(),
        token_file: spec.token_file.clone(),
        ca: spec.ca.clone(),
    };
    let cluster = super::scale::cluster(&conn, k.span(), r);
    let guard = guardrails(&spec.max_drop, &spec.max_stale, r);
    let cluster = cluster?;
    r.clean_since(start).then(|| KubePolicy {
        api_server: cluster.api.base,
        namespace: cluster.namespace,
        token_file: cluster.api.token,
        ca: cluster.ca,
        selector,
        shard_label: spec.shard_label.as_ref().map(|l| l.get_ref().clone()),
        port,
        guard,
    })
}
