//! The `hash` balancer: consistent hashing of a request key over the pool's
//! endpoints, with bounded load (Mirrokni, Thorup and Zadimoghaddam): no
//! endpoint takes more than `balance_factor` times the mean in-flight load;
//! a key whose endpoint is full, unhealthy or already tried walks on in the
//! ring's order, as HAProxy's hash-balance-factor and Envoy's
//! hash_balance_factor do. Only the keys of an endpoint that fails or leaves move.

use super::random_ok;
use crate::config::schema::HashSpec;
use crate::hash::hash_tag;
use crate::ring::{Member, Ring};
use crate::upstream::Endpoint;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

pub struct HashBalancer {
    pub ring: Ring,
    pub spec: HashSpec,
    tag: Option<[u8; 2]>,
}

impl HashBalancer {
    pub fn new(spec: &HashSpec, members: &[Member]) -> HashBalancer {
        let tag = spec.hash_tag.as_ref().and_then(|t| <[u8; 2]>::try_from(t.get_ref().as_bytes()).ok());
        HashBalancer { ring: Ring::build(*spec.function.get_ref(), members, spec.key_hash()), spec: spec.clone(), tag }
    }

    /// The hash of a request key, hash tag applied.
    pub fn hash(&self, key: &[u8]) -> u64 {
        self.ring.hash_key(hash_tag(key, self.tag))
    }

    /// `pool_in_flight` counts this request.
    pub fn pick(&self, eps: &[Arc<Endpoint>], ok: &dyn Fn(usize) -> bool, hash: Option<u64>, pool_in_flight: usize) -> Option<usize> {
        let Some(h) = hash else { return random_ok(eps.len(), ok) };
        let factor = *self.spec.balance_factor.get_ref();
        let cap = if factor > 0.0 {
            let healthy = (0..eps.len()).filter(|&i| ok(i)).count().max(1);
            (factor * pool_in_flight.max(1) as f64 / healthy as f64).ceil() as u32
        } else {
            u32::MAX
        };
        let mut first_ok = None;
        let found = self.ring.walk(h, &mut |i| {
            if !ok(i) {
                return false;
            }
            first_ok.get_or_insert(i);
            eps[i].stats.in_flight.load(Relaxed) < cap
        });
        // Every healthy endpoint at its cap (only under bursts): the key's own one.
        found.or(first_ok)
    }
}
