//! The sharder: picks the shard of a request by a ring over the shard names and
//! a key taken from the request, or every shard (a fan-out).

use crate::balance::MissingKey;
use crate::config::schema::{Fallback, FanOutSpec, HashSpec};
use crate::hash::hash_tag;
use crate::ring::Ring;
use http::HeaderName;
use std::net::IpAddr;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// This pool (the replicated pool, or one shard).
    Pool(usize),
    /// Every shard.
    All,
}

impl Sharding {
    /// The shard (or shards) of a request among `shards`; `fan_out` is the route's setting.
    pub fn target(&self, head: &http::request::Parts, client: IpAddr, fan_out: bool, shards: usize) -> Result<Target, MissingKey> {
        if fan_out {
            return Ok(Target::All);
        }
        let spec = &self.sharder;
        let key = spec.key.extract(head, client).or_else(|| spec.fallback_key.as_ref().and_then(|k| k.extract(head, client)));
        match (key, spec.fallback.get_ref()) {
            (Some(k), _) => Ok(Target::Pool(self.ring.locate(hash_tag(&k, self.tag)).unwrap_or(0))),
            (None, Fallback::All) => Ok(Target::All),
            (None, Fallback::Reject) => Err(MissingKey(spec.key.describe())),
            (None, Fallback::Random) => Ok(Target::Pool(fastrand::usize(..shards.max(1)))),
        }
    }
}
