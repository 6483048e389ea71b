//! Service: what a route sends to. A `replicated` service is one pool of
//! identical endpoints; a `sharded` one has a pool per shard and a sharder that
//! picks the shard of each request (or all of them, for a fan-out).

use crate::key::MissingKey;
use crate::shard::{Sharding, Target};
use crate::upstream::Pool;
use http::HeaderName;
use std::net::IpAddr;
use std::sync::Arc;

pub struct Service {
    pub name: String,
    /// One pool for a replicated service; one per shard, in shard name order.
    pub pools: Vec<Pool>,
    pub sharding: Option<Sharding>,
    /// The service's hottest keys (sharded services sample them).
    pub heat: Arc<crate::heat::KeyHeat>,
    /// Its autoscaling, if any (`server/scale.rs` acts on it).
    pub scaler: Option<crate::scale::Policy>,
    /// Hot keys' answers at the root (`[hot_keys] cache = true`).
    pub hot_cache: Option<Arc<crate::cache::flow::RouteCache>>,
}

impl Service {
    /// The pool of a replicated service.
    pub fn pool(&self) -> &Pool {
        &self.pools[0]
    }

    /// The shard (or shards) of a request; `fan_out` is the route's setting.
    pub fn target(&self, head: &http::request::Parts, client: IpAddr, fan_out: bool) -> Result<Target, MissingKey> {
        match &self.sharding {
            None => Ok(Target::Pool(0)),
            Some(s) => s.target(head, client, fan_out, self.pools.len(), &self.heat),
        }
    }

    /// The request's shard key when it is hot now (only asked while some key
    /// of a service that mitigates is: one atomic load otherwise).
    pub fn hot_key<'h>(&self, head: &'h http::request::Parts, client: IpAddr) -> Option<std::borrow::Cow<'h, [u8]>> {
        match &self.sharding {
            Some(s) if self.heat.is_hot_any() => s.rule.extract(head, client).filter(|k| self.heat.is_hot(k)),
            _ => None,
        }
    }

    /// The response header that names the shard(s) that answered, if configured.
    pub fn shard_header(&self) -> Option<&HeaderName> {
        self.sharding.as_ref().and_then(|s| s.header.as_ref())
    }
}
