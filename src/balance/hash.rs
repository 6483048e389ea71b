//! The `hash` balancer: consistent hashing of a request key over the pool's
//! endpoints, with bounded load (Mirrokni, Thorup and Zadimoghaddam): no
//! endpoint takes more than `balance_factor` times the mean in-flight load;
//! a key whose endpoint is full, unhealthy or already tried walks on in the
//! ring's order, as HAProxy's hash-balance-factor and Envoy's
//! hash_balance_factor do. Only the keys of an endpoint that fails or leaves move.

use super::{random_ok, Members};
use crate::hash::hash_tag;
use crate::hash::KeyHash;
use crate::key::{Fallback, KeyRule, KeySpec};
use crate::ring::Function;
use crate::ring::{Member, Ring};

/// The settings of a hash balancer (or of a sharder's ring): the key, the ring
/// function and key hash, the load bound, and the hash tag.
#[derive(Debug, Clone, PartialEq)]
pub struct HashSettings {
    pub rule: KeyRule,
    pub function: Function,
    pub key_hash: KeyHash,
    /// No endpoint takes more than this factor of the mean load; 0 for no bound.
    pub balance_factor: f64,
    /// Two characters such as `{}`: only the text between them is hashed.
    pub tag: Option<[u8; 2]>,
}

impl Default for HashSettings {
    fn default() -> Self {
        HashSettings {
            rule: KeyRule { key: KeySpec::ClientIp, fallback_key: None, fallback: Fallback::Random },
            function: Function::Maglev,
            key_hash: KeyHash::Xxh3,
            balance_factor: 1.25,
            tag: None,
        }
    }
}

pub struct HashBalancer {
    pub ring: Ring,
    pub spec: HashSettings,
}

impl HashBalancer {
    pub fn new(spec: &HashSettings, members: &[Member]) -> HashBalancer {
        HashBalancer { ring: Ring::build(spec.function, members, spec.key_hash), spec: spec.clone() }
    }

    /// The hash of a request key, hash tag applied.
    pub fn hash(&self, key: &[u8]) -> u64 {
        self.ring.hash_key(hash_tag(key, self.spec.tag))
    }

    /// `pool_in_flight` counts this request.
    pub fn pick<M: Members + ?Sized>(
        &self,
        eps: &M,
        ok: &dyn Fn(usize) -> bool,
        hash: Option<u64>,
        pool_in_flight: usize,
    ) -> Option<usize> {
        let Some(h) = hash else { return random_ok(eps.count(), ok) };
        let factor = self.spec.balance_factor;
        let cap = if factor > 0.0 {
            let healthy = (0..eps.count()).filter(|&i| ok(i)).count().max(1);
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
            eps.load(i) < cap
        });
        // Every healthy endpoint at its cap (only under bursts): the key's own one.
        found.or(first_ok)
    }
}
