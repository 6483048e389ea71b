//! Migration: `ringmaster import nutcracker FILE.yml` turns a twemproxy
//! (nutcracker) config into the equivalent ringmaster TOML: each pool becomes
//! a memcache listener and a sharded memcache service whose shards are the
//! pool's servers, named and weighted as nutcracker names and weighs them, so
//! keys stay where the nutcracker fleet put them.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One nutcracker server pool, as its YAML says it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pool {
    listen: String,
    #[serde(default)]
    hash: Option<String>,
    #[serde(default)]
    hash_tag: Option<String>,
    #[serde(default)]
    distribution: Option<String>,
    /// Milliseconds; nutcracker waits forever without it.
    #[serde(default)]
    timeout: Option<u64>,
    #[serde(default)]
    backlog: Option<u64>,
    #[serde(default)]
    preconnect: Option<bool>,
    #[serde(default)]
    redis: Option<bool>,
    #[serde(default)]
    redis_auth: Option<String>,
    #[serde(default)]
    redis_db: Option<u64>,
    #[serde(default)]
    client_connections: Option<u64>,
    #[serde(default)]
    server_connections: Option<usize>,
    #[serde(default)]
    auto_eject_hosts: Option<bool>,
    /// Milliseconds.
    #[serde(default)]
    server_retry_timeout: Option<u64>,
    #[serde(default)]
    server_failure_limit: Option<u32>,
    #[serde(default)]
    servers: Vec<String>,
}

/// Why a nutcracker config cannot be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: not a nutcracker config: {why}")]
    Yaml { path: String, why: String },
    #[error("{path}: pool `{pool}`: {why}")]
    Pool { path: String, pool: String, why: PoolProblem },
}

/// What in a nutcracker pool has no ringmaster equivalent, or is malformed.
#[derive(Debug, thiserror::Error)]
pub enum PoolProblem {
    #[error("redis pools are not supported: the ambassador speaks the memcached protocol")]
    Redis,
    #[error("hash `{0}` is not supported; use fnv1a_64, fnv1a_32 or md5")]
    Hash(String),
    #[error("distribution `{0}` is not supported; only ketama keeps nutcracker's placement")]
    Distribution(String),
    #[error("the pool has no servers")]
    NoServers,
    #[error("an empty server line")]
    EmptyServer,
    #[error("server `{0}` is not host:port:weight")]
    NotHostPortWeight(String),
    #[error("server `{0}` has no numeric weight")]
    NoWeight(String),
    #[error("server `{0}` is not IP:port (resolve host names first)")]
    NotIpPort(String),
}

/// The ringmaster TOML for the nutcracker config `yaml` (read from `path`).
pub fn nutcracker(path: &str, yaml: &str) -> Result<String, ImportError> {
    let pools: BTreeMap<String, Pool> =
        serde_norway::from_str(yaml).map_err(|e| ImportError::Yaml { path: path.to_string(), why: e.to_string() })?;
    let mut out = format!("# Imported from the nutcracker config {path} by `ringmaster import nutcracker`.\n");
    out.push_str("# Keys are placed as nutcracker placed them (ketama_twemproxy, same hash, names and weights).\n\n");
    for (name, pool) in &pools {
        let fail = |why: PoolProblem| ImportError::Pool { path: path.to_string(), pool: name.clone(), why };
        pool_toml(&mut out, name, pool).map_err(fail)?;
    }
    Ok(out)
}

fn pool_toml(out: &mut String, name: &str, p: &Pool) -> Result<(), PoolProblem> {
    if p.redis == Some(true) || p.redis_auth.is_some() || p.redis_db.is_some() {
        return Err(PoolProblem::Redis);
    }
    let hash = match p.hash.as_deref().unwrap_or("fnv1a_64") {
        h @ ("fnv1a_64" | "fnv1a_32" | "md5") => h,
        other => return Err(PoolProblem::Hash(other.to_string())),
    };
    match p.distribution.as_deref().unwrap_or("ketama") {
        "ketama" => {}
        other => return Err(PoolProblem::Distribution(other.to_string())),
    }
    if p.servers.is_empty() {
        return Err(PoolProblem::NoServers);
    }
    let listen = match p.listen.split_whitespace().next().unwrap_or("") {
        l if l.starts_with('/') => format!("unix:{l}"),
        l => l.to_string(),
    };
    let service = toml_key(name);
    let _ = writeln!(
        out,
        "[[listeners]]\nname = {}\nlisten = {}\nprotocol = \"memcache\"\nservice = {}\n",
        quote(name),
        quote(&listen),
        quote(name)
    );
    let _ = writeln!(out, "[services.{service}]\nkind = \"sharded\"\nprotocol = \"memcache\"");
    let tag = p.hash_tag.as_deref().map(|t| format!(", hash_tag = {}", quote(t))).unwrap_or_default();
    let _ = writeln!(out, "sharder = {{ function = \"ketama_twemproxy\", hash = \"{hash}\"{tag} }}");
    if let Some(t) = p.timeout {
        let _ = writeln!(out, "timeouts = {{ connect = \"{t}ms\", request = \"{t}ms\" }}");
    }
    let _ = writeln!(out, "\n[services.{service}.memcache]");
    let _ = writeln!(out, "server_connections = {}", p.server_connections.unwrap_or(1));
    let _ = writeln!(out, "auto_eject_hosts = {}", p.auto_eject_hosts.unwrap_or(false));
    // nutcracker's defaults: retry after 30 s, eject after 2 failures (only with auto_eject_hosts).
    let _ = writeln!(out, "server_retry_timeout = \"{}ms\"", p.server_retry_timeout.unwrap_or(30_000));
    let limit = if p.auto_eject_hosts.unwrap_or(false) { p.server_failure_limit.unwrap_or(2) } else { 0 };
    let _ = writeln!(out, "server_failure_limit = {limit}");
    out.push('\n');
    for s in &p.servers {
        let (addr, weight, shard) = server(s)?;
        let _ = writeln!(
            out,
            "[services.{service}.shards.{}]\nweight = {weight}\nendpoints = [{{ address = {} }}]\n",
            toml_key(&shard),
            quote(&addr)
        );
    }
    let ignored: Vec<&str> =
        [("backlog", p.backlog.is_some()), ("preconnect", p.preconnect.is_some()), ("client_connections", p.client_connections.is_some())]
            .iter()
            .filter(|(_, set)| *set)
            .map(|(n, _)| *n)
            .collect();
    if !ignored.is_empty() {
        let _ = writeln!(out, "# not carried over (no ringmaster equivalent needed): {}\n", ignored.join(", "));
    }
    Ok(())
}

/// `host:port:weight [name]`: the address, the weight, and the shard name
/// nutcracker hashes (the name, else `host:port`).
fn server(line: &str) -> Result<(String, u32, String), PoolProblem> {
    let mut parts = line.split_whitespace();
    let spec = parts.next().ok_or(PoolProblem::EmptyServer)?;
    let name = parts.next();
    let (addr, weight) = spec.rsplit_once(':').ok_or_else(|| PoolProblem::NotHostPortWeight(line.to_string()))?;
    let weight: u32 = weight.parse().map_err(|_| PoolProblem::NoWeight(line.to_string()))?;
    if addr.parse::<std::net::SocketAddr>().is_err() {
        return Err(PoolProblem::NotIpPort(addr.to_string()));
    }
    Ok((addr.to_string(), weight, name.unwrap_or(addr).to_string()))
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A table key: bare when it can be, quoted otherwise.
fn toml_key(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        s.to_string()
    } else {
        quote(s)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_nutcracker_pool_becomes_a_listener_and_a_sharded_memcache_service() {
        let yml = "alpha:\n  listen: 127.0.0.1:22121\n  hash: fnv1a_64\n  hash_tag: \"{}\"\n  distribution: ketama\n  timeout: 400\n  auto_eject_hosts: true\n  server_retry_timeout: 2000\n  server_failure_limit: 1\n  servers:\n   - 127.0.0.1:11211:1 mc1\n   - 127.0.0.1:11212:2\n";
        let toml_text = super::nutcracker("nc.yml", yml).unwrap();
        let plan = crate::config::parse("imported.toml", &toml_text).unwrap_or_else(|e| panic!("{e}\n{toml_text}"));
        let svc = &plan.memcache[0];
        assert_eq!(svc.shards.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["127.0.0.1:11212", "mc1"]);
        assert_eq!((svc.settings.failure_limit, svc.settings.retry_timeout.as_millis()), (1, 2000));
        assert!(svc.policy.auto_eject && svc.tag == Some(*b"{}"));
        assert_eq!(svc.settings.request_timeout.as_millis(), 400);
    }

    #[test]
    fn what_cannot_be_kept_is_refused_with_the_reason() {
        let bad = [("redis: true", "redis"), ("distribution: modula", "modula"), ("hash: murmur", "murmur")];
        for (line, word) in bad {
            let yml = format!("p:\n  listen: 127.0.0.1:1\n  {line}\n  servers:\n   - 127.0.0.1:2:1\n");
            let e = super::nutcracker("nc.yml", &yml).unwrap_err().to_string();
            assert!(e.contains(word) && e.contains("pool `p`"), "{e}");
        }
        assert!(super::nutcracker("nc.yml", "p: [1, 2").is_err());
    }
}
