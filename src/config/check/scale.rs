//! A service's scaler checked and converted into `scale::Policy`, and the
//! `[leader]` election into `scale::leader::Settings`.

use crate::config::error::Reporter;
use crate::config::schema::scale::{CommandSpec, KubernetesSpec, LeaderSpec, ScalerSpec};
use crate::scale::{command, kube, leader, local, Backend, Policy};
use std::time::Duration;
use toml::Spanned;

pub fn policy(spec: &Spanned<ScalerSpec>, r: &mut Reporter) -> Option<Policy> {
    let s = spec.get_ref();
    let target = *s.target.get_ref();
    if !(target.is_finite() && target > 0.0) {
        r.error(s.target.span(), "scaler target must be above 0: the load one replica should carry", "target = 100");
    }
    let (min, max) = (*s.min_replicas.get_ref(), *s.max_replicas.get_ref());
    if min < 1 || min > max || max > 1000 {
        r.error(
            s.max_replicas.span(),
            format!("min_replicas {min} and max_replicas {max} must satisfy 1 <= min <= max <= 1000"),
            "min_replicas = 1, max_replicas = 10",
        );
    }
    let tolerance = *s.tolerance.get_ref();
    if !(0.0..1.0).contains(&tolerance) {
        r.error(s.tolerance.span(), "tolerance must be at least 0 and below 1", "0.1, as the Kubernetes HPA");
    }
    for d in [&s.scale_up_window, &s.scale_down_window, &s.cooldown] {
        if d.get_ref().0 > Duration::from_secs(3600) {
            r.error(d.span(), "scaler windows and cooldown must be at most 1h", "\"30s\"");
        }
    }
    let backend = match (&s.local, &s.command, &s.kubernetes) {
        (Some(l), None, None) => Backend::Local(local_settings(l, r)?),
        (None, Some(c), None) => Backend::Command(command_settings(c, r)?),
        (None, None, Some(k)) => Backend::Kubernetes(kube_settings(k, r)?),
        (None, None, None) => {
            r.error(
                spec.span(),
                "a scaler needs a back-end that adds and removes replicas",
                "local = { command = \"...\", ports = \"29100-29199\" }, command = { run = \"...\" } or kubernetes = { object = \"statefulset/{service}-{shard}\" }",
            );
            return None;
        }
        _ => {
            r.error(spec.span(), "a scaler has one back-end: local, command or kubernetes", "keep one of them");
            return None;
        }
    };
    Some(Policy {
        metric: s.metric,
        target,
        min_replicas: min,
        max_replicas: max,
        tolerance,
        up_window: s.scale_up_window.get_ref().0,
        down_window: s.scale_down_window.get_ref().0,
        cooldown: s.cooldown.get_ref().0,
        backend,
    })
}

fn local_settings(spec: &Spanned<crate::config::schema::scale::LocalSpec>, r: &mut Reporter) -> Option<local::Settings> {
    let l = spec.get_ref();
    if !l.command.get_ref().contains("{port}") && !l.command.get_ref().contains("{address}") {
        r.error(
            l.command.span(),
            "the command must say where the replica listens: {address} or {port}",
            "\"ringmaster backend --listen {address} --name {name}\"",
        );
    }
    let host = l
        .host
        .get_ref()
        .parse()
        .map_err(|_| r.error(l.host.span(), format!("`{}` is not an IP address", l.host.get_ref()), "\"127.0.0.1\""))
        .ok();
    let ports = l.ports.get_ref().split_once('-').and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)));
    let ports = match ports {
        Some((a, b)) if a >= 1 && a <= b => Some((a, b)),
        _ => {
            r.error(l.ports.span(), format!("`{}` is not a port range", l.ports.get_ref()), "\"29100-29199\"");
            None
        }
    };
    let ready_timeout = l.ready_timeout.get_ref().0;
    if ready_timeout.is_zero() {
        r.error(l.ready_timeout.span(), "ready_timeout must be above 0", "\"10s\"");
    }
    Some(local::Settings { command: l.command.get_ref().clone(), host: host?, ports: ports?, ready_timeout, drain: l.drain.get_ref().0 })
}

fn command_settings(spec: &Spanned<CommandSpec>, r: &mut Reporter) -> Option<command::Settings> {
    let c = spec.get_ref();
    if c.run.get_ref().trim().is_empty() {
        r.error(c.run.span(), "the command is empty", "run = \"./scale-shard {service} {shard} {desired}\"");
    }
    let timeout = c.timeout.get_ref().0;
    if timeout.is_zero() || timeout > Duration::from_secs(3600) {
        r.error(c.timeout.span(), "timeout must be above 0 and at most 1h", "\"60s\"");
    }
    let run = Some(c.run.get_ref().clone()).filter(|r| !r.trim().is_empty())?;
    Some(command::Settings { run, endpoints_file: c.endpoints_file.as_ref().map(|f| f.get_ref().into()), timeout })
}

fn kube_settings(spec: &Spanned<KubernetesSpec>, r: &mut Reporter) -> Option<kube::Scale> {
    let k = spec.get_ref();
    if let Some(l) = &k.lease {
        r.error(
            l.span(),
            "lease names an election's Lease; a scaler's kubernetes table names its workload",
            "object = \"statefulset/{service}-{shard}\", and the Lease under [leader]",
        );
    }
    let object = k.object.as_ref().map_or("statefulset/{service}-{shard}", |o| o.get_ref());
    if kube::parse_object(object).is_none() {
        r.error(
            k.object.as_ref().map_or(spec.span(), |o| o.span()),
            format!("`{object}` is not a workload"),
            "\"statefulset/NAME\" or \"deployment/NAME\"; NAME may hold {service} and {shard}",
        );
    }
    let cluster = cluster(k, spec.span(), r)?;
    kube::parse_object(object)?;
    Some(kube::Scale { cluster, object: object.to_string() })
}

/// Where the service account's files are, inside a pod.
const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A cluster from its table, with in-cluster defaults; the CA is read here, once.
pub(super) fn cluster(c: &KubernetesSpec, at: std::ops::Range<usize>, r: &mut Reporter) -> Option<kube::Cluster> {
    let in_cluster = || {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").ok()?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        Some(if host.contains(':') { format!("https://[{host}]:{port}") } else { format!("https://{host}:{port}") })
    };
    let Some(server) = c.api_server.as_ref().map(|s| s.get_ref().clone()).or_else(in_cluster) else {
        r.error(at, "no Kubernetes API server: not in a pod, and api_server is not set", "api_server = \"https://10.96.0.1:443\"");
        return None;
    };
    let span = || c.api_server.as_ref().map(|s| s.span()).unwrap_or(at.clone());
    let base: http::Uri = match server.parse::<http::Uri>() {
        Ok(u) if u.authority().is_some() && matches!(u.scheme_str(), Some("http" | "https")) && u.path() == "/" => u,
        _ => {
            r.error(span(), format!("`{server}` is not an API server address"), "\"https://HOST:PORT\" with no path");
            return None;
        }
    };
    let sa = std::path::Path::new(SERVICE_ACCOUNT);
    let namespace = c
        .namespace
        .as_ref()
        .map(|n| n.get_ref().clone())
        .or_else(|| std::fs::read_to_string(sa.join("namespace")).ok().map(|s| s.trim().to_string()))
        .unwrap_or_else(|| "default".into());
    if namespace.is_empty() || !namespace.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        r.error(
            c.namespace.as_ref().map(|n| n.span()).unwrap_or(at.clone()),
            format!("`{namespace}` is not a namespace name"),
            "\"default\"",
        );
        return None;
    }
    let token = c.token_file.as_ref().map(|t| t.get_ref().into()).or_else(|| Some(sa.join("token")).filter(|p| p.exists()));
    let ca =
        c.ca.as_ref()
            .map(|c| c.get_ref().clone())
            .or_else(|| Some(sa.join("ca.crt")).filter(|p| p.exists()).map(|p| p.display().to_string()));
    let tls = if base.scheme_str() == Some("https") {
        let settings = crate::tls::client::Settings { ca: ca.clone(), sni: None, cert: None, key: None };
        let made = crate::tls::client::client_config(&settings, false)
            .and_then(|cfg| crate::tls::client::Upstream::new(cfg, None, base.authority().map(|a| a.as_str()).unwrap_or("")));
        match made {
            Ok(u) => Some(u),
            Err(e) => {
                r.error(c.ca.as_ref().map(|c| c.span()).unwrap_or_else(span), format!("TLS to {server}: {e}"), "ca = \"/path/to/ca.crt\"");
                return None;
            }
        }
    } else {
        None
    };
    let ca = ca.filter(|_| tls.is_some()).map(std::path::PathBuf::from);
    Some(kube::Cluster { api: crate::scale::api::Api { base, tls, token, timeout: Duration::from_secs(5) }, namespace, ca })
}

/// `[leader]`: one election, its TTL and this root's name in it.
pub fn leader(spec: &Spanned<LeaderSpec>, r: &mut Reporter) -> Option<leader::Settings> {
    let l = spec.get_ref();
    let ttl = l.ttl.get_ref().0;
    if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(300) {
        r.error(l.ttl.span(), "ttl must be from 1s to 5m", "\"10s\"");
    }
    let identity = match &l.identity {
        Some(i) if i.get_ref().trim().is_empty() || i.get_ref().len() > 128 => {
            r.error(i.span(), "identity must be 1 to 128 characters", "leave it out: host name and pid");
            None
        }
        Some(i) => Some(i.get_ref().clone()),
        None => Some(default_identity()),
    };
    // TLS towards https peers and etcd, built once per address (its name is verified).
    let tls_for = |u: &http::Uri, at: std::ops::Range<usize>, r: &mut Reporter| -> Option<Option<crate::tls::client::Upstream>> {
        if u.scheme_str() != Some("https") {
            return Some(None);
        }
        let spec = l.tls.as_ref().map(|t| t.get_ref().clone()).unwrap_or_default();
        if spec.cert.is_some() != spec.key.is_some() {
            r.error(
                l.tls.as_ref().map_or(at.clone(), |t| t.span()),
                "a client certificate needs both cert and key",
                "tls = { cert = \"root.crt\", key = \"root.key\" }",
            );
            return None;
        }
        let settings = crate::tls::client::Settings { ca: spec.ca, sni: None, cert: spec.cert, key: spec.key };
        let made = crate::tls::client::client_config(&settings, false)
            .and_then(|cfg| crate::tls::client::Upstream::new(cfg, None, u.authority().map(|a| a.as_str()).unwrap_or("")));
        match made {
            Ok(t) => Some(Some(t)),
            Err(e) => {
                r.error(l.tls.as_ref().map_or(at, |t| t.span()), format!("TLS to {u}: {e}"), "tls = { ca = \"/path/to/ca.crt\" }");
                None
            }
        }
    };
    let peers = l
        .peers
        .iter()
        .filter_map(|p| match p.get_ref().parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() && u.path() == "/" => {
                let token = l.peers_token_file.as_ref().map(|t| t.get_ref().into());
                let tls = tls_for(&u, p.span(), r)?;
                Some(crate::scale::api::Api { base: u, tls, token, timeout: Duration::from_millis(800) })
            }
            _ => {
                r.error(p.span(), format!("`{}` is not a peer's admin address", p.get_ref()), "\"https://10.0.0.2:9901\"");
                None
            }
        })
        .collect();
    let election = match (&l.etcd, &l.kubernetes) {
        (Some(e), None) => {
            let ep = e.get_ref();
            let base = match ep.endpoint.get_ref().parse::<http::Uri>() {
                Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() && u.path() == "/" => Some(u),
                _ => {
                    r.error(
                        ep.endpoint.span(),
                        format!("`{}` is not an etcd endpoint", ep.endpoint.get_ref()),
                        "\"http://127.0.0.1:2379\"",
                    );
                    None
                }
            };
            if ep.key.get_ref().is_empty() {
                r.error(ep.key.span(), "the key is empty", "\"/ringmaster/leader\"");
            }
            let base = base?;
            let tls = tls_for(&base, ep.endpoint.span(), r)?;
            let api = crate::scale::api::Api { base, tls, token: None, timeout: Duration::from_secs(3) };
            leader::Election::Etcd { api, key: ep.key.get_ref().clone() }
        }
        (None, Some(k)) => {
            let ks = k.get_ref();
            if let Some(o) = &ks.object {
                r.error(
                    o.span(),
                    "object names a scaler's workload; an election's kubernetes table names its Lease",
                    "lease = \"ringmaster\"",
                );
            }
            let lease = ks.lease.as_ref().map_or("ringmaster", |l| l.get_ref()).to_string();
            leader::Election::Kubernetes { cluster: cluster(ks, k.span(), r)?, lease }
        }
        _ => {
            r.error(spec.span(), "an election needs one of etcd or kubernetes", "etcd = { endpoint = \"http://127.0.0.1:2379\" }");
            return None;
        }
    };
    let factor = *l.peer_load_factor.get_ref();
    if !(factor > 0.0 && factor <= 1000.0) {
        r.error(l.peer_load_factor.span(), "peer_load_factor must be above 0 and at most 1000", "10");
    }
    Some(leader::Settings { identity: identity?, ttl, election, peers, peer_load_factor: factor })
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "ringmaster".into());
    format!("{host}-{}", std::process::id())
}
