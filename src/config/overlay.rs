//! The endpoints the scaler added, laid over the config's pools on every
//! build: a scale step changes the overlay and rebuilds the snapshot from the
//! config file, so a reload by hand keeps the scaled replicas and everything
//! else (connections, health, counters) is carried over as on any reload.
//! A scaled endpoint is reached like the first endpoint the config lists for
//! its pool (timeouts, health check, TLS, weight).

use crate::config::plan::{EndpointPlan, Plan};
use crate::upstream::EndpointKey;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Pool name (`service` or `service/shard`) -> the endpoints added to it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overlay(pub BTreeMap<String, Vec<(String, SocketAddr)>>);

impl Overlay {
    pub fn add(&mut self, pool: &str, name: String, addr: SocketAddr) {
        self.0.entry(pool.to_string()).or_default().push((name, addr));
    }

    pub fn remove(&mut self, pool: &str, addr: SocketAddr) {
        if let Some(v) = self.0.get_mut(pool) {
            v.retain(|e| e.1 != addr);
        }
    }

    /// Adds the overlay's endpoints to `plan`; those of pools the config no
    /// longer has, or whose address the config now lists itself, are left out.
    pub fn apply(&self, plan: &mut Plan) {
        for pool in plan.services.iter_mut().flat_map(|s| s.pools.iter_mut()) {
            let (Some(added), Some(template)) = (self.0.get(&pool.name), pool.endpoints.first()) else { continue };
            let mut extra = Vec::new();
            for (name, addr) in added {
                let address = addr.to_string();
                let (Ok(authority), false) = (address.parse(), pool.endpoints.iter().any(|e| e.key.address == address)) else { continue };
                extra.push(EndpointPlan {
                    key: EndpointKey { address, ..template.key.clone() },
                    authority,
                    name: Some(name.clone()),
                    weight: template.weight,
                    tls: template.tls.clone(),
                });
            }
            if !extra.is_empty() {
                pool.endpoints.extend(extra);
                pool.balancer = pool.balancing.build(&pool.endpoints, &pool.name);
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
}
