//! Test support: stub memcached endpoints on loopback that answer every
//! command with a canned answer (or close at once), and a one-shard service
//! over them built from the ambassador's own types, for in-process tests of
//! each phase.

use super::service::{Service, Writes};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a stub endpoint does with each command it reads.
#[derive(Clone, Copy)]
pub enum Stub {
    /// Answers every command line with this (its opaque echoed for meta commands).
    Answer(&'static str),
    /// Closes every connection at once.
    Close,
}

pub async fn stub(how: Stub) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Stub::Answer(text) = how else { return };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n) = s.read(&mut chunk).await {
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(nl) = buf.iter().position(|&c| c == b'\n') {
                        let line: Vec<u8> = buf.drain(..=nl).collect();
                        let line = String::from_utf8_lossy(&line);
                        if line.starts_with("set ") {
                            // Its data block follows on the next line: skip it too.
                            continue;
                        }
                        let opaque = line.split_whitespace().find(|t| t.starts_with('O')).map(|o| format!(" {o}")).unwrap_or_default();
                        let mut answer = text.to_string();
                        if line.starts_with('m') {
                            answer = answer.replacen("\r\n", &format!("{opaque}\r\n"), 1);
                        }
                        if s.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A one-shard service over `replicas` (built from the ambassador's own
/// types: the config module is above this one).
pub fn service(replicas: &[SocketAddr], writes: Writes, reads: super::Reads) -> Arc<Service> {
    Arc::new(service_with(replicas, writes, reads, crate::heat::KeyHeat::new(Default::default())))
}

/// As [`service`], with `heat` (and a hot-key cache when its policy asks for one).
pub fn service_with(replicas: &[SocketAddr], writes: Writes, reads: super::Reads, heat: crate::heat::KeyHeat) -> Service {
    use super::upstream::{Endpoint, Settings};
    use std::time::Duration;
    let settings = Settings {
        connect_timeout: Duration::from_millis(200),
        request_timeout: Duration::from_millis(300),
        max_value: 1 << 20,
        failure_limit: 0,
        retry_timeout: Duration::from_secs(30),
        connections: 1,
    };
    let eps = replicas.iter().map(|a| Arc::new(Endpoint::new(a.to_string(), *a, settings.clone(), Default::default()))).collect();
    let ring = crate::ring::Ring::build(crate::ring::Function::Maglev, &[crate::ring::Member::new("s", 1)], crate::hash::KeyHash::Xxh3);
    let policy = super::Policy {
        writes,
        reads,
        miss_failover: false,
        auto_eject: false,
        max_keys: 1024,
        slow_start: Duration::ZERO,
        warm_up: Duration::ZERO,
        allow_flush_all: false,
        stats_detail: false,
    };
    Service {
        name: "cache".into(),
        ring,
        tag: None,
        shards: vec![super::Shard::new("s".into(), eps, Default::default())],
        policy,
        max_value: 1 << 20,
        command_timeout: Duration::from_secs(10),
        stats: Default::default(),
        hot_cache: heat.policy().mitigation.cache.clone().map(|c| Arc::new(super::hotcache::HotCache::new(c))),
        heat: Arc::new(heat),
        scaler: None,
    }
}
