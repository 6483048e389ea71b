//! Pools from the EndpointSlices of a Kubernetes Service, watched with kube's
//! runtime watcher (list, then watch from the list's resourceVersion; a 410
//! relists). This file turns a set of slices into each pool's endpoints:
//! an endpoint serves when its slice says it is ready; when none of a pool's
//! is, the ones still serving while they terminate do (kube-proxy's
//! fallback, so a pool whose every pod is rolling still answers). A sharded
//! service's slices name their shard in a label.

use super::{KubePolicy, KubePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// What a set of slices makes of a service's pools.
#[derive(Debug, Default, PartialEq)]
pub struct Found {
    /// By shard (`None` for a replicated service's one pool).
    pub pools: BTreeMap<Option<String>, Vec<SocketAddr>>,
    /// Slices left out, and why (logged once each by the caller).
    pub skipped: Vec<String>,
}

/// One pool's endpoints while its slices are read.
#[derive(Default)]
struct Sorting {
    ready: Vec<SocketAddr>,
    draining: Vec<SocketAddr>,
}

/// The pools `slices` make under `p`.
pub fn pools_of<'a>(slices: impl IntoIterator<Item = &'a EndpointSlice>, p: &KubePolicy) -> Found {
    let mut sorting: BTreeMap<Option<String>, Sorting> = BTreeMap::new();
    let mut skipped = Vec::new();
    for slice in slices {
        let name = slice.metadata.name.as_deref().unwrap_or("?");
        let shard = match &p.shard_label {
            None => None,
            Some(label) => match slice.metadata.labels.as_ref().and_then(|l| l.get(label)) {
                Some(v) => Some(v.clone()),
                None => {
                    skipped.push(format!("slice {name} has no label {label}"));
                    continue;
                }
            },
        };
        if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
            skipped.push(format!("slice {name} holds {} addresses; only IPv4 and IPv6 are reached", slice.address_type));
            continue;
        }
        let ports = slice.ports.as_deref().unwrap_or_default();
        let port = match &p.port {
            Some(KubePort::Number(n)) => Some(i32::from(*n)),
            Some(KubePort::Name(want)) => ports.iter().find(|sp| sp.name.as_deref() == Some(want.as_str())).and_then(|sp| sp.port),
            None if ports.len() == 1 => ports[0].port,
            None => None,
        };
        let Some(port) = port.and_then(|n| u16::try_from(n).ok()).filter(|n| *n > 0) else {
            let names: Vec<&str> = ports.iter().map(|sp| sp.name.as_deref().unwrap_or("")).collect();
            skipped.push(format!("slice {name} has no port to use among {names:?}: set port"));
            continue;
        };
        let pool = sorting.entry(shard).or_default();
        for ep in &slice.endpoints {
            // Every address of an endpoint is the same pod: the first is used.
            let Some(ip) = ep.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else { continue };
            let c = ep.conditions.as_ref();
            // Unset, ready means ready; serving means ready; terminating means not.
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            let at = SocketAddr::new(ip, port);
            if ready && !terminating {
                pool.ready.push(at);
            } else if serving && terminating {
                pool.draining.push(at);
            }
        }
    }
    let pools = sorting
        .into_iter()
        .map(|(shard, s)| {
            let mut v = if s.ready.is_empty() { s.draining } else { s.ready };
            v.sort();
            v.dedup();
            (shard, v)
        })
        .collect();
    Found { pools, skipped }
}

/// A client of the policy's API server (its CA file re-read as it rotates).
/// The bearer token is ours to send: kube would send a token file's
/// trailing newline as part of the token, and every call would fail.
pub fn client(p: &KubePolicy) -> Result<kube::Client, kube::Error> {
    let mut cfg = kube::Config::new(p.api_server.clone());
    cfg.default_namespace = p.namespace.clone();
    cfg.root_cert_file = p.ca.clone();
    cfg.connect_timeout = Some(std::time::Duration::from_secs(5));
    let builder = kube::client::ClientBuilder::try_from(cfg)?;
    Ok(match &p.token_file {
        None => builder.build(),
        Some(file) => {
            let token = std::sync::Arc::new(Token::new(file.clone()));
            let layer = tower::util::MapRequestLayer::new(move |mut req: http::Request<kube::client::Body>| {
                if let Some(v) = token.value() {
                    req.headers_mut().insert(http::header::AUTHORIZATION, v);
                }
                req
            });
            builder.with_layer(&layer).build()
        }
    })
}

/// A bearer token file, read again at most once a minute (service-account
/// tokens rotate), its surrounding whitespace trimmed.
struct Token {
    file: std::path::PathBuf,
    read: std::sync::Mutex<Option<(std::time::Instant, http::HeaderValue)>>,
}

impl Token {
    fn new(file: std::path::PathBuf) -> Token {
        Token { file, read: std::sync::Mutex::new(None) }
    }

    /// The Authorization value; the last one read when the file is gone.
    fn value(&self) -> Option<http::HeaderValue> {
        let mut read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = read.as_ref().is_some_and(|(at, _)| at.elapsed() < std::time::Duration::from_secs(60));
        if !fresh {
            // A small file (tmpfs in a pod), read once a minute at most.
            let text = std::fs::read_to_string(&self.file).ok();
            match text.and_then(|t| http::HeaderValue::try_from(format!("Bearer {}", t.trim())).ok()) {
                Some(mut v) => {
                    v.set_sensitive(true);
                    *read = Some((std::time::Instant::now(), v));
                }
                None => tracing::warn!(file = %self.file.display(), "discovery: the token file cannot be read; the last token is sent"),
            }
        }
        read.as_ref().map(|(_, v)| v.clone())
    }
}

/// The watch over the policy's slices. A failure ends it for the caller
/// (who holds the pools and starts over with a backoff); a 410 relists
/// within it.
pub fn watch(
    client: kube::Client,
    p: &KubePolicy,
) -> impl futures_util::Stream<Item = Result<kube::runtime::watcher::Event<EndpointSlice>, kube::runtime::watcher::Error>> + Send {
    let api: kube::Api<EndpointSlice> = kube::Api::namespaced(client, &p.namespace);
    let config = kube::runtime::watcher::Config::default().labels(&p.selector);
    kube::runtime::watcher(api, config)
}

/// Whether a watch error is the server saying the watch is too old (410
/// Gone): the watcher relists, nothing is wrong with the API server.
pub fn is_gone(e: &kube::runtime::watcher::Error) -> bool {
    matches!(e, kube::runtime::watcher::Error::WatchError(s) if s.code == 410)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::Guardrails;

    fn policy(shard_label: Option<&str>, port: Option<KubePort>) -> KubePolicy {
        KubePolicy {
            api_server: "http://127.0.0.1:1".parse().unwrap(),
            namespace: "default".into(),
            token_file: None,
            ca: None,
            selector: "kubernetes.io/service-name=app".into(),
            shard_label: shard_label.map(str::to_string),
            port,
            guard: Guardrails::default(),
        }
    }

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }

    fn ep(ip: &str, ready: Option<bool>, serving: Option<bool>, terminating: Option<bool>) -> serde_json::Value {
        serde_json::json!({ "addresses": [ip], "conditions": { "ready": ready, "serving": serving, "terminating": terminating } })
    }

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ready_endpoints_serve_and_terminating_ones_only_when_none_is_ready() {
        let s = slice(serde_json::json!({
            "metadata": { "name": "app-1" }, "addressType": "IPv4",
            "ports": [{ "name": "http", "port": 8080 }, { "name": "metrics", "port": 9090 }],
            "endpoints": [ep("10.0.0.1", Some(true), None, None), ep("10.0.0.2", None, None, None),
                          ep("10.0.0.3", Some(false), Some(false), None), ep("10.0.0.4", Some(false), Some(true), Some(true))]
        }));
        let found = pools_of([&s], &policy(None, Some(KubePort::Name("http".into()))));
        assert_eq!(found.pools[&None], [a("10.0.0.1:8080"), a("10.0.0.2:8080")]);
        let rolling = slice(serde_json::json!({
            "metadata": { "name": "app-1" }, "addressType": "IPv4", "ports": [{ "port": 8080 }],
            "endpoints": [ep("10.0.0.3", Some(false), Some(false), Some(true)), ep("10.0.0.4", Some(false), Some(true), Some(true))]
        }));
        assert_eq!(pools_of([&rolling], &policy(None, None)).pools[&None], [a("10.0.0.4:8080")]);
    }

    #[test]
    fn shards_come_from_a_label_and_unusable_slices_are_told() {
        let a1 = slice(serde_json::json!({
            "metadata": { "name": "cache-a-x", "labels": { "ringmaster.dev/shard": "a" } }, "addressType": "IPv4",
            "ports": [{ "port": 11211 }], "endpoints": [ep("10.0.1.1", Some(true), None, None)]
        }));
        let b1 = slice(serde_json::json!({
            "metadata": { "name": "cache-b-x", "labels": { "ringmaster.dev/shard": "b" } }, "addressType": "IPv6",
            "ports": [{ "port": 11211 }], "endpoints": [ep("fd00::1", None, None, None)]
        }));
        let unlabelled = slice(serde_json::json!({
            "metadata": { "name": "stray" }, "addressType": "IPv4", "ports": [{ "port": 1 }], "endpoints": []
        }));
        let fqdn = slice(serde_json::json!({
            "metadata": { "name": "named", "labels": { "ringmaster.dev/shard": "a" } }, "addressType": "FQDN",
            "ports": [{ "port": 1 }], "endpoints": [ep("db.example", None, None, None)]
        }));
        let two_ports = slice(serde_json::json!({
            "metadata": { "name": "twoports", "labels": { "ringmaster.dev/shard": "c" } }, "addressType": "IPv4",
            "ports": [{ "name": "x", "port": 1 }, { "name": "y", "port": 2 }], "endpoints": [ep("10.0.3.1", None, None, None)]
        }));
        let found = pools_of([&a1, &b1, &unlabelled, &fqdn, &two_ports], &policy(Some("ringmaster.dev/shard"), None));
        assert_eq!(found.pools.len(), 2);
        assert_eq!(found.pools[&Some("a".into())], [a("10.0.1.1:11211")]);
        assert_eq!(found.pools[&Some("b".into())], [a("[fd00::1]:11211")]);
        assert_eq!(found.skipped.len(), 3, "{:?}", found.skipped);
        assert!(found.skipped.iter().any(|s| s.contains("stray") && s.contains("no label")));
        assert!(found.skipped.iter().any(|s| s.contains("twoports") && s.contains("set port")));
    }
}
