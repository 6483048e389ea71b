//! The endpoints the scaler added, laid over the config's pools on every
//! build: a scale step changes the overlay and rebuilds the snapshot from the
//! accepted plan (a pool update: no file is read), and a reload by hand keeps
//! the scaled replicas; everything else (connections, health, counters) is
//! carried over as on any build.
//! A scaled endpoint is reached like the first endpoint the config lists for
//! its pool (timeouts, health check, TLS, weight).

use crate::config::plan::{EndpointPlan, Plan};
use crate::upstream::EndpointKey;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Pool (its [`PoolId`](crate::heat::load::PoolId) as text: `service` or
/// `service/shard`) -> what the scaler made of it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overlay(pub BTreeMap<String, Scaled>);

/// One pool's scaled endpoints.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scaled {
    /// The pool is exactly `endpoints` (the command back-end's list); else
    /// they are added to the config's.
    pub replace: bool,
    pub endpoints: Vec<(String, SocketAddr)>,
}

impl Overlay {
    pub fn add(&mut self, pool: &str, name: String, addr: SocketAddr) {
        self.0.entry(pool.to_string()).or_default().endpoints.push((name, addr));
    }

    pub fn remove(&mut self, pool: &str, addr: SocketAddr) {
        if let Some(v) = self.0.get_mut(pool) {
            v.endpoints.retain(|e| e.1 != addr);
        }
    }

    /// Makes the pool exactly `endpoints`.
    pub fn set(&mut self, pool: &str, endpoints: Vec<(String, SocketAddr)>) {
        self.0.insert(pool.to_string(), Scaled { replace: true, endpoints });
    }

    /// Lays the overlay over `plan`'s HTTP pools and memcache shards; pools the
    /// config no longer has are left out, and an added address the config
    /// lists itself is not added twice.
    pub fn apply(&self, plan: &mut Plan) {
        for pool in plan.services.iter_mut().flat_map(|s| s.pools.iter_mut()) {
            let template = pool.endpoints.first().or(pool.template.as_ref()).cloned();
            let (Some(scaled), Some(template)) = (self.0.get(&pool.name), template) else { continue };
            let reached = |name: &str, addr: &SocketAddr| {
                let address = addr.to_string();
                let authority = address.parse().ok()?;
                Some(EndpointPlan {
                    key: EndpointKey { address, ..template.key.clone() },
                    authority,
                    name: Some(name.to_string()),
                    weight: template.weight,
                    tls: template.tls.clone(),
                })
            };
            let listed = |e: &EndpointPlan, addr: &SocketAddr| e.key.address == addr.to_string();
            if scaled.replace {
                let config = std::mem::take(&mut pool.endpoints);
                pool.endpoints = scaled
                    .endpoints
                    .iter()
                    .filter_map(|(n, a)| config.iter().find(|e| listed(e, a)).cloned().or_else(|| reached(n, a)))
                    .collect();
            } else {
                let extra: Vec<EndpointPlan> = scaled
                    .endpoints
                    .iter()
                    .filter(|(_, a)| !pool.endpoints.iter().any(|e| listed(e, a)))
                    .filter_map(|(n, a)| reached(n, a))
                    .collect();
                pool.endpoints.extend(extra);
            }
            pool.balancer = pool.balancing.build(&pool.endpoints, &pool.name);
        }
        for svc in &mut plan.memcache {
            for shard in &mut svc.shards {
                // A replicated memcache service is one shard named as the service.
                let id = crate::heat::load::PoolId::new(&svc.name, Some(shard.name.as_str()).filter(|n| *n != svc.name));
                let Some(scaled) = self.0.get(&id.to_string()) else { continue };
                if scaled.replace {
                    shard.endpoints = scaled.endpoints.clone();
                } else {
                    let extra: Vec<_> =
                        scaled.endpoints.iter().filter(|(_, a)| !shard.endpoints.iter().any(|e| e.1 == *a)).cloned().collect();
                    shard.endpoints.extend(extra);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "[[listeners]]\nname = \"main\"\nlisten = \"127.0.0.1:8080\"\n\n[[routes]]\nservice = \"users\"\n\n\
        [services.users]\nkind = \"sharded\"\nsharder = { key = \"path\" }\nhealth = { path = \"/healthz\" }\n\n\
        [services.users.shards.a]\nendpoints = [{ address = \"127.0.0.1:9001\" }]\n\
        [services.users.shards.b]\nendpoints = [{ address = \"127.0.0.1:9002\" }]\n";

    #[test]
    fn scaled_endpoints_join_their_pool_reached_like_its_first() {
        let mut plan = crate::config::parse("t.toml", CFG).unwrap();
        let mut o = Overlay::default();
        o.add("users/a", "a-9101".into(), "127.0.0.1:9101".parse().unwrap());
        o.add("users/a", "dup".into(), "127.0.0.1:9001".parse().unwrap());
        o.add("users/gone", "x".into(), "127.0.0.1:9102".parse().unwrap());
        o.apply(&mut plan);
        let pools = &plan.services[0].pools;
        let a = pools.iter().find(|p| p.name == "users/a").unwrap();
        let addrs: Vec<&str> = a.endpoints.iter().map(|e| e.key.address.as_str()).collect();
        assert_eq!(addrs, ["127.0.0.1:9001", "127.0.0.1:9101"]);
        assert_eq!(a.endpoints[1].key.health, a.endpoints[0].key.health);
        assert_eq!(a.endpoints[1].name.as_deref(), Some("a-9101"));
        assert_eq!(pools.iter().find(|p| p.name == "users/b").unwrap().endpoints.len(), 1);
        o.remove("users/a", "127.0.0.1:9101".parse().unwrap());
        let mut again = crate::config::parse("t.toml", CFG).unwrap();
        o.apply(&mut again);
        assert_eq!(again.services[0].pools.iter().find(|p| p.name == "users/a").unwrap().endpoints.len(), 1);
    }

    #[test]
    fn a_listed_pool_is_exactly_its_list() {
        let mut plan = crate::config::parse("t.toml", CFG).unwrap();
        let mut o = Overlay::default();
        o.set("users/b", vec![("b2".into(), "127.0.0.1:9202".parse().unwrap()), ("b1".into(), "127.0.0.1:9002".parse().unwrap())]);
        o.apply(&mut plan);
        let b = plan.services[0].pools.iter().find(|p| p.name == "users/b").unwrap();
        let names: Vec<_> = b.endpoints.iter().map(|e| (e.name.clone(), e.key.address.as_str())).collect();
        assert_eq!(
            names,
            [(Some("b2".to_string()), "127.0.0.1:9202"), (None, "127.0.0.1:9002")],
            "the config's own endpoint keeps its settings"
        );
        o.set("users/b", vec![("b2".into(), "127.0.0.1:9202".parse().unwrap())]);
        let mut again = crate::config::parse("t.toml", CFG).unwrap();
        o.apply(&mut again);
        assert_eq!(again.services[0].pools.iter().find(|p| p.name == "users/b").unwrap().endpoints.len(), 1);
    }

    #[test]
    fn memcache_shards_take_scaled_replicas_too() {
        let cfg = "[[listeners]]\nname = \"mc\"\nlisten = \"127.0.0.1:11311\"\nprotocol = \"memcache\"\nservice = \"c\"\n\n\
            [services.c]\nkind = \"sharded\"\nprotocol = \"memcache\"\n\
            [services.c.shards.a]\nendpoints = [{ address = \"127.0.0.1:11411\" }]\n";
        let mut plan = crate::config::parse("t.toml", cfg).unwrap();
        let mut o = Overlay::default();
        o.add("c/a", "a-11412".into(), "127.0.0.1:11412".parse().unwrap());
        o.apply(&mut plan);
        assert_eq!(plan.memcache[0].shards[0].endpoints.len(), 2);
    }
}
