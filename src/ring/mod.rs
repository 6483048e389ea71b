//! Rings: the consistent-hashing functions behind hash balancing and sharding.
//!
//! Each is a pure function of its members (stable names and weights, never
//! addresses) and of the key's hash, so every process maps a key to the same
//! member with no coordination. Besides the member of a key, each gives an order
//! of preference over all members (`walk`), used to skip unhealthy or overloaded
//! ones while moving as few keys as possible.

pub mod analyze;
mod jump;
mod ketama;
mod maglev;
mod rendezvous;

pub use jump::Jump;
pub use ketama::{Ketama, TwemproxyKetama};
pub use maglev::{Maglev, MAX_MEMBERS};
pub use rendezvous::Rendezvous;

use crate::hash::KeyHash;
use serde::{Deserialize, Serialize};

/// A member of a ring: a shard or an endpoint, by its stable name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub weight: u32,
}

impl Member {
    pub fn new(name: impl Into<String>, weight: u32) -> Member {
        Member { name: name.into(), weight }
    }
}

/// Which function a ring uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Function {
    /// Maglev lookup table (the default): near-perfect balance, O(1) lookups.
    Maglev,
    /// Ketama ring, 160 points per unit of weight.
    Ketama,
    /// Ketama placed exactly as twemproxy's `distribution: ketama` places it.
    KetamaTwemproxy,
    /// Jump consistent hash: for members only ever appended or removed at the end.
    Jump,
    /// Rendezvous (highest random weight) hashing.
    Rendezvous,
}

impl Function {
    pub const ALL: [Function; 5] = [Function::Maglev, Function::Ketama, Function::KetamaTwemproxy, Function::Jump, Function::Rendezvous];

    pub fn name(self) -> &'static str {
        match self {
            Function::Maglev => "maglev",
            Function::Ketama => "ketama",
            Function::KetamaTwemproxy => "ketama_twemproxy",
            Function::Jump => "jump",
            Function::Rendezvous => "rendezvous",
        }
    }

    /// Whether the function honours member weights.
    pub fn supports_weights(self) -> bool {
        !matches!(self, Function::Jump)
    }
}

/// A built ring.
#[derive(Clone)]
pub enum Ring {
    Maglev(Maglev),
    Ketama(Ketama),
    Twemproxy(TwemproxyKetama),
    Jump(Jump),
    Rendezvous(Rendezvous),
}

impl Ring {
    /// Builds a ring of `function` over `members`; `key_hash` is the key hash function
    /// (only twemproxy mode uses one other than XXH3).
    pub fn build(function: Function, members: &[Member], key_hash: KeyHash) -> Ring {
        match function {
            Function::Maglev => Ring::Maglev(Maglev::new(members)),
            Function::Ketama => Ring::Ketama(Ketama::new(members)),
            Function::KetamaTwemproxy => Ring::Twemproxy(TwemproxyKetama::new(members, key_hash)),
            Function::Jump => Ring::Jump(Jump::new(members.len())),
            Function::Rendezvous => Ring::Rendezvous(Rendezvous::new(members)),
        }
    }

    /// The function this ring was built with.
    pub fn function(&self) -> Function {
        match self {
            Ring::Maglev(_) => Function::Maglev,
            Ring::Ketama(_) => Function::Ketama,
            Ring::Twemproxy(_) => Function::KetamaTwemproxy,
            Ring::Jump(_) => Function::Jump,
            Ring::Rendezvous(_) => Function::Rendezvous,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Ring::Maglev(r) => r.members(),
            Ring::Ketama(r) => r.members(),
            Ring::Twemproxy(r) => r.members(),
            Ring::Jump(r) => r.members(),
            Ring::Rendezvous(r) => r.members(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The hash of `key` as this ring hashes keys.
    #[inline]
    pub fn hash_key(&self, key: &[u8]) -> u64 {
        match self {
            Ring::Twemproxy(r) => r.key_hash.hash(key),
            _ => crate::hash::xxh3(key),
        }
    }

    /// The member index owning a key hash. `None` only for an empty ring.
    #[inline]
    pub fn locate_hash(&self, hash: u64) -> Option<usize> {
        if self.is_empty() {
            return None;
        }
        Some(match self {
            Ring::Maglev(r) => r.locate(hash),
            Ring::Ketama(r) => r.locate(hash),
            Ring::Twemproxy(r) => r.locate(hash as u32),
            Ring::Jump(r) => r.locate(hash),
            Ring::Rendezvous(r) => r.locate(hash),
        })
    }

    /// The member index owning `key`.
    #[inline]
    pub fn locate(&self, key: &[u8]) -> Option<usize> {
        self.locate_hash(self.hash_key(key))
    }

    /// Visits distinct members in this ring's order of preference for `hash`,
    /// the owner first, until `accept` returns true; returns that member.
    pub fn walk(&self, hash: u64, accept: &mut dyn FnMut(usize) -> bool) -> Option<usize> {
        let n = self.len();
        if n == 0 {
            return None;
        }
        let mut seen = Seen::new(n);
        let mut visit = |i: usize| -> Option<Option<usize>> {
            if !seen.insert(i) {
                return None;
            }
            if accept(i) {
                return Some(Some(i));
            }
            if seen.count == n {
                return Some(None);
            }
            None
        };
        let found = match self {
            Ring::Maglev(r) => r.walk(hash, &mut visit),
            Ring::Ketama(r) => r.walk(hash, &mut visit),
            Ring::Twemproxy(r) => r.walk(hash as u32, &mut visit),
            Ring::Jump(r) => r.walk(hash, &mut visit),
            Ring::Rendezvous(r) => r.walk(hash, &mut visit),
        };
        match found {
            Some(x) => x,
            // A function's walk may not reach every member (ketama with a tiny
            // ring); finish in index order so every member is considered.
            None => (0..n).find_map(&mut visit).flatten(),
        }
    }

    /// Each member's share of the key space, where the function defines one
    /// exactly (table slots, arc lengths); `None` for jump and rendezvous,
    /// whose shares are only measured by sampling keys.
    pub fn intrinsic_shares(&self) -> Option<Vec<f64>> {
        match self {
            Ring::Maglev(r) => Some(r.shares()),
            Ring::Ketama(r) => Some(r.shares()),
            Ring::Twemproxy(r) => Some(r.shares()),
            Ring::Jump(_) | Ring::Rendezvous(_) => None,
        }
    }
}

/// A set of member indexes seen during a walk; no allocation up to 256 members.
struct Seen {
    small: [u64; 4],
    big: Vec<bool>,
    count: usize,
}

impl Seen {
    fn new(n: usize) -> Seen {
        Seen { small: [0; 4], big: if n > 256 { vec![false; n] } else { Vec::new() }, count: 0 }
    }

    fn insert(&mut self, i: usize) -> bool {
        let fresh = if self.big.is_empty() {
            let (w, b) = (i / 64, 1u64 << (i % 64));
            let fresh = self.small[w] & b == 0;
            self.small[w] |= b;
            fresh
        } else {
            !std::mem::replace(&mut self.big[i], true)
        };
        self.count += fresh as usize;
        fresh
    }
}

/// The walk callback: `Some(result)` stops the walk.
pub(crate) type Visit<'a> = dyn FnMut(usize) -> Option<Option<usize>> + 'a;

#[cfg(test)]
mod tests;
