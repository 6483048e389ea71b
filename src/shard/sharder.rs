//! The sharder: picks the shard of a request by a ring over the shard names and
//! a key taken from the request, or every shard (a fan-out).

use super::fanout::FanOut;
use crate::hash::hash_tag;
use crate::heat::KeyHeat;
use crate::key::{Fallback, KeyRule, MissingKey};
use crate::ring::Ring;
use http::HeaderName;
use std::net::IpAddr;

/// How a sharded service spreads requests over its shards.
#[derive(Clone)]
pub struct Sharding {
    /// Over shard names and weights.
    pub ring: Ring,
    /// The key that picks a shard, and what to do without it.
    pub rule: KeyRule,
    pub tag: Option<[u8; 2]>,
    pub fan_out: FanOut,
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
    /// The shard (or shards) of a request among `shards`; `fan_out` is the
    /// route's setting. The key, when there is one, is offered to `heat`.
    pub fn target(
        &self,
        head: &http::request::Parts,
        client: IpAddr,
        fan_out: bool,
        shards: usize,
        heat: &KeyHeat,
    ) -> Result<Target, MissingKey> {
        if fan_out {
            return Ok(Target::All);
        }
        match (self.rule.extract(head, client), self.rule.fallback) {
            (Some(k), _) => {
                heat.sample(&k);
                Ok(Target::Pool(self.ring.locate(hash_tag(&k, self.tag)).unwrap_or(0)))
            }
            (None, Fallback::All) => Ok(Target::All),
            (None, Fallback::Reject) => Err(self.rule.missing()),
            (None, Fallback::Random) => Ok(Target::Pool(fastrand::usize(..shards.max(1)))),
        }
    }
}
