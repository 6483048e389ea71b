//! Every pool of a snapshot as one list, whatever its protocol: an HTTP
//! service's pool (or each of its shards') and each memcache shard, named by
//! a [`PoolId`] with its [`Load`] record and its endpoints. The heat tick,
//! the scaler and `/admin/heat` walk this list once instead of walking both
//! protocols' types.

use super::build::Snapshot;
use crate::heat::load::{Load, PoolId};
use crate::heat::rate::Rate;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// One pool of the snapshot.
pub struct PoolRef<'a> {
    pub id: PoolId,
    /// `http` or `memcache`.
    pub protocol: &'static str,
    pub load: &'a Load,
    /// Bytes through the pool and their rate, where the protocol counts them (memcache).
    pub bytes: Option<(&'a AtomicU64, &'a Rate)>,
    pub endpoints: Vec<EndpointRef<'a>>,
    /// Its service's scaler, when it scales.
    pub scaler: Option<&'a crate::scale::Policy>,
    /// Its service's heat window (the time constant of its rates).
    pub window: Duration,
}

/// One endpoint of a pool.
#[derive(Clone, Copy)]
pub enum EndpointRef<'a> {
    Http(&'a Arc<crate::upstream::Endpoint>),
    Memcache(&'a Arc<crate::memcache::upstream::Endpoint>),
}

impl EndpointRef<'_> {
    pub fn name(&self) -> &str {
        match self {
            EndpointRef::Http(e) => &e.name,
            EndpointRef::Memcache(e) => &e.name,
        }
    }

    pub fn address(&self) -> String {
        match self {
            EndpointRef::Http(e) => e.address.clone(),
            EndpointRef::Memcache(e) => e.addr.to_string(),
        }
    }

    /// Requests sent to it so far.
    pub fn requests(&self) -> &AtomicU64 {
        match self {
            EndpointRef::Http(e) => &e.stats.requests,
            EndpointRef::Memcache(e) => &e.stats.requests,
        }
    }

    pub fn rate(&self) -> &Rate {
        match self {
            EndpointRef::Http(e) => &e.stats.rate,
            EndpointRef::Memcache(e) => &e.stats.rate,
        }
    }

    pub fn in_flight(&self) -> usize {
        match self {
            EndpointRef::Http(e) => e.stats.in_flight.load(Relaxed) as usize,
            EndpointRef::Memcache(e) => e.stats.in_flight.load(Relaxed),
        }
    }

    /// Its in-flight count, readable after the snapshot is gone (to tell
    /// when a removed endpoint is idle).
    pub fn gauge(&self) -> Box<dyn Fn() -> usize + Send> {
        match *self {
            EndpointRef::Http(e) => {
                let e = e.clone();
                Box::new(move || e.stats.in_flight.load(Relaxed) as usize)
            }
            EndpointRef::Memcache(e) => {
                let e = e.clone();
                Box::new(move || e.stats.in_flight.load(Relaxed))
            }
        }
    }
}

impl Snapshot {
    /// Every pool, HTTP services' first (by service name, pools in order),
    /// then memcache services' shards.
    pub fn pools(&self) -> Vec<PoolRef<'_>> {
        let http = self.services.values().flat_map(|s| {
            s.pools.iter().map(move |p| PoolRef {
                id: PoolId::new(&s.name, p.shard.as_deref()),
                protocol: "http",
                load: &p.stats.load,
                bytes: None,
                endpoints: p.endpoints.iter().map(EndpointRef::Http).collect(),
                scaler: s.scaler.as_ref(),
                window: s.heat.policy().window,
            })
        });
        let memcache = self.memcache.values().flat_map(|s| {
            s.shards.iter().map(move |sh| PoolRef {
                // A replicated memcache service is one shard named as the service.
                id: PoolId::new(&s.name, Some(sh.name.as_str()).filter(|n| *n != s.name)),
                protocol: "memcache",
                load: &sh.stats.load,
                bytes: Some((&sh.stats.bytes, &sh.stats.bytes_rate)),
                endpoints: sh.replicas.iter().map(EndpointRef::Memcache).collect(),
                scaler: s.scaler.as_ref(),
                window: s.heat.policy().window,
            })
        });
        http.chain(memcache).collect()
    }

    /// The pool `id`, if the snapshot has it.
    pub fn pool(&self, id: &PoolId) -> Option<PoolRef<'_>> {
        self.pools().into_iter().find(|p| p.id == *id)
    }

    /// Every service's key ranking, HTTP and memcache.
    pub fn key_heats(&self) -> impl Iterator<Item = &crate::heat::KeyHeat> {
        self.services.values().map(|s| &*s.heat).chain(self.memcache.values().map(|s| &*s.heat))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "[[listeners]]\nname = \"main\"\nlisten = \"127.0.0.1:8080\"\n\n\
        [[listeners]]\nname = \"mc\"\nlisten = \"127.0.0.1:11311\"\nprotocol = \"memcache\"\nservice = \"sessions\"\n\n\
        [[routes]]\nservice = \"users\"\n\n[[routes]]\nservice = \"web\"\n\n\
        [services.web]\nkind = \"replicated\"\nendpoints = [{ address = \"127.0.0.1:9000\" }]\n\n\
        [services.users]\nkind = \"sharded\"\nsharder = { key = \"path\" }\n\
        [services.users.shards.a]\nendpoints = [{ address = \"127.0.0.1:9001\" }, { address = \"127.0.0.1:9002\" }]\n\
        [services.users.shards.b]\nendpoints = [{ address = \"127.0.0.1:9003\" }]\n\n\
        [services.sessions]\nkind = \"replicated\"\nprotocol = \"memcache\"\nendpoints = [{ address = \"127.0.0.1:11411\" }]\n";

    /// HTTP pools and memcache shards are one list, named alike: a replicated
    /// service's pool by the service alone, whatever its protocol.
    #[test]
    fn every_pool_of_both_protocols_is_one_list() {
        let built = crate::config::build::build(crate::config::parse("t.toml", CFG).unwrap(), None);
        let pools = built.snapshot.pools();
        let ids: Vec<(String, &str, usize)> = pools.iter().map(|p| (p.id.to_string(), p.protocol, p.endpoints.len())).collect();
        assert_eq!(
            ids,
            [("users/a".into(), "http", 2), ("users/b".into(), "http", 1), ("web".into(), "http", 1), ("sessions".into(), "memcache", 1)]
        );
        let sessions = built.snapshot.pool(&PoolId::new("sessions", None)).unwrap();
        assert!(sessions.bytes.is_some());
        assert_eq!(sessions.endpoints[0].address(), "127.0.0.1:11411");
        sessions.load.record(true, Duration::from_millis(1));
        assert_eq!(
            built.snapshot.memcache["sessions"].shards[0].stats.load.errors.load(Relaxed),
            1,
            "the view reads the shard's own record"
        );
    }
}
