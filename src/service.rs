//! Service: what a route sends to. A `replicated` service is one pool of
//! identical endpoints; a `sharded` one has a pool per shard and a sharder that
//! picks the shard of each request (or all of them, for a fan-out).

use crate::balance::MissingKey;
use crate::config::schema::{Fallback, FanOutSpec, HashSpec};
use crate::shard::hash::hash_tag;
use crate::shard::ring::Ring;
use crate::upstream::Pool;
use http::HeaderName;
use std::net::IpAddr;

pub struct Service {
    pub name: String,
    /// One pool for a replicated service; one per shard, in shard name order.
    pub pools: Vec<Pool>,
    pub sharding: Option<Sharding>,
}

/// How a sharded service spreads requests over its shards.
pub struct Sharding {
    /// Over shard names and weights.
    pub ring: Ring,
    pub sharder: HashSpec,
    pub tag: Option<[u8; 2]>,
    pub fan_out: FanOutSpec,
    /// Response header naming the shard(s) that answered.
    pub header: Option<HeaderName>,
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// This pool (the replicated pool, or one shard).
    Pool(usize),
    /// Every shard.
    All,
}

impl Service {
    /// The pool of a replicated service.
    pub fn pool(&self) -> &Pool {
        &self.pools[0]
    }

    /// The shard (or shards) of a request; `fan_out` is the route's setting.
    pub fn target(&self, head: &http::request::Parts, client: IpAddr, fan_out: bool) -> Result<Target, MissingKey> {
        let Some(s) = &self.sharding else { return Ok(Target::Pool(0)) };
        if fan_out {
            return Ok(Target::All);
        }
        let spec = &s.sharder;
        let key = spec.key.extract(head, client).or_else(|| spec.fallback_key.as_ref().and_then(|k| k.extract(head, client)));
        match (key, spec.fallback.get_ref()) {
            (Some(k), _) => Ok(Target::Pool(s.ring.locate(hash_tag(&k, s.tag)).unwrap_or(0))),
            (None, Fallback::All) => Ok(Target::All),
            (None, Fallback::Reject) => Err(MissingKey(spec.key.describe())),
            (None, Fallback::Random) => Ok(Target::Pool(fastrand::usize(..self.pools.len()))),
        }
    }
}
