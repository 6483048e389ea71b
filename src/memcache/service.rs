//! A memcache service as the ambassador runs it: the ring over its shards,
//! each shard a pool of replicated memcached endpoints, and the policies that
//! say how writes are replicated and reads fail over. Immutable; a reload
//! builds a new one that keeps the endpoints (with their connections and
//! health) whose address and settings are unchanged.

use super::upstream::Endpoint;
use crate::hash::hash_tag;
use crate::ring::Ring;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// Which answers a replicated write waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Writes {
    /// The first replica that answers in order (the next one's if it failed).
    First,
    /// Every replica must answer; any failure is the client's answer.
    All,
    /// More than half of the replicas must answer.
    Majority,
}

/// Which replica a read goes to first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reads {
    /// Replicas in turn.
    RoundRobin,
    /// The first listed replica (the local one), the others when it fails.
    LocalFirst,
}

/// How a service's commands are spread and replicated.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub writes: Writes,
    pub reads: Reads,
    /// A miss on one replica is asked of the next.
    pub miss_failover: bool,
    /// A shard whose endpoints are all ejected leaves the ring for the time
    /// (its keys go to the next shard), as nutcracker's `auto_eject_hosts`.
    pub auto_eject: bool,
    /// Keys per get at most.
    pub max_keys: usize,
    /// A new replica's share of reads ramps up over this long (zero: at once).
    pub slow_start: std::time::Duration,
    /// A replica this new has its misses asked again of an older one (zero: never).
    pub warm_up: std::time::Duration,
    /// A client's `flush_all` is sent on; else refused.
    pub allow_flush_all: bool,
    /// `stats` shows the pid and endpoint names and addresses.
    pub stats_detail: bool,
}

/// Counters of one shard, carried over a reload by service and shard name.
#[derive(Default)]
pub struct ShardStats {
    /// Commands (counted as they are sent), those that failed on every
    /// replica asked, in flight, latency and rates, as every pool of either
    /// protocol keeps them.
    pub load: crate::heat::load::Load,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub failovers: AtomicU64,
    /// Bytes of commands sent and answers received, and their rate.
    pub bytes: AtomicU64,
    pub bytes_rate: crate::heat::rate::Rate,
}

impl ShardStats {
    /// Counts the bytes of a command and of its answer.
    pub fn traffic(&self, wire: &[u8], answer: &Result<bytes::Bytes, super::upstream::Failure>) {
        let answered = answer.as_ref().map_or(0, |a| a.len());
        self.bytes.fetch_add((wire.len() + answered) as u64, Relaxed);
    }
}

/// Counts a command in flight on a shard while alive.
pub struct InFlight<'a>(&'a ShardStats);

impl<'a> InFlight<'a> {
    pub fn new(s: &'a ShardStats) -> InFlight<'a> {
        s.load.in_flight.fetch_add(1, Relaxed);
        s.load.requests.fetch_add(1, Relaxed);
        InFlight(s)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.load.in_flight.fetch_sub(1, Relaxed);
    }
}

/// One shard: replicas holding the same keys.
pub struct Shard {
    pub name: String,
    pub replicas: Vec<Arc<Endpoint>>,
    pub stats: Arc<ShardStats>,
    next: AtomicUsize,
}

impl Shard {
    pub fn new(name: String, replicas: Vec<Arc<Endpoint>>, stats: Arc<ShardStats>) -> Shard {
        Shard { name, replicas, stats, next: AtomicUsize::new(0) }
    }

    /// Whether any replica takes commands now.
    pub fn available(&self) -> bool {
        self.replicas.iter().any(|e| e.available())
    }

    /// A key's home replica: where its meta gets, cas reads and `cas` go, so
    /// that state one memcached keeps per key (cas values, lease and win
    /// tokens after `md ... I`, vivify-on-miss) looks the same as from one
    /// server. Reads fail over from it in a fixed order.
    pub fn home(&self, key: &[u8]) -> usize {
        match self.replicas.len() {
            0 | 1 => 0,
            n => (crate::hash::mix64(crate::hash::xxh3(key)) % n as u64) as usize,
        }
    }

    /// The replica a read starts at by the read policy. A hot key's reads
    /// are spread (`spread`) over every replica in turn. With `slow_start`, a
    /// new replica keeps its turn with its ramp's chance, else the turn passes
    /// to the next.
    pub fn read_start(&self, p: &Policy, spread: bool) -> usize {
        if (p.reads == Reads::LocalFirst && !spread) || self.replicas.len() < 2 {
            return 0;
        }
        let n = self.replicas.len();
        let i = self.next.fetch_add(1, Relaxed) % n;
        if p.slow_start.is_zero() {
            return i;
        }
        let (now, slow) = (crate::clock::now_ms(), p.slow_start.as_millis() as u64);
        (0..n)
            .map(|k| (i + k) % n)
            .find(|&j| crate::balance::ramp_passes(self.replicas[j].stats.joined_ms.load(Relaxed), now, slow))
            .unwrap_or(i)
    }

    /// Whether `replica` is warming up: it joined less than `warm_up` ago and
    /// an older replica can answer for it.
    pub fn warming(&self, replica: usize, warm_up: std::time::Duration) -> bool {
        let joined = self.replicas[replica].stats.joined_ms.load(Relaxed);
        joined != 0
            && crate::clock::now_ms().saturating_sub(joined) < warm_up.as_millis() as u64
            && self.replicas.iter().any(|e| e.available() && e.stats.joined_ms.load(Relaxed) < joined)
    }
}

/// Commands by kind, and what the ambassador refused, per service.
#[derive(Default)]
pub struct ServiceStats {
    pub commands: [AtomicU64; COMMANDS.len()],
    pub refused: AtomicU64,
    pub errors: AtomicU64,
    /// Keys read and found, and not found, as clients saw them (one per key
    /// of a multi-key get, as memcached counts them; root-cache answers included).
    pub get_hits: AtomicU64,
    pub get_misses: AtomicU64,
    /// `flush_all` refused (`allow_flush_all` is off).
    pub flush_refused: AtomicU64,
}

/// The command kinds counted (`Verb::name`).
pub const COMMANDS: [&str; 16] =
    ["get", "store", "delete", "arith", "touch", "flush_all", "version", "verbosity", "quit", "stats", "mg", "ms", "md", "ma", "me", "mn"];

impl ServiceStats {
    /// Counts a command of kind `index` (into [`COMMANDS`]).
    pub fn count(&self, index: usize) {
        self.commands[index].fetch_add(1, Relaxed);
    }
}

/// A memcache service.
pub struct Service {
    pub name: String,
    pub ring: Ring,
    pub tag: Option<[u8; 2]>,
    pub shards: Vec<Shard>,
    pub policy: Policy,
    pub max_value: usize,
    /// How long a client has to finish a command it began.
    pub command_timeout: std::time::Duration,
    pub stats: Arc<ServiceStats>,
    /// The service's hottest keys, sampled as commands are placed.
    pub heat: Arc<crate::heat::KeyHeat>,
    /// Hot keys' get answers at the root, when the service asks for it.
    pub hot_cache: Option<Arc<super::hotcache::HotCache>>,
    /// Per-shard autoscaling, when the service asks for it.
    pub scaler: Option<crate::scale::Policy>,
}

impl Service {
    /// The shard of `key`: its owner on the ring, or with `auto_eject` the
    /// first shard in the ring's order that has an endpoint up.
    pub fn shard_of(&self, key: &[u8]) -> usize {
        self.heat.sample(key);
        let hash = self.ring.hash_key(hash_tag(key, self.tag));
        if self.policy.auto_eject {
            if let Some(s) = self.ring.walk(hash, &mut |s| self.shards[s].available()) {
                return s;
            }
        }
        self.ring.locate_hash(hash).unwrap_or(0)
    }

    /// Every endpoint, shard by shard.
    pub fn endpoints(&self) -> impl Iterator<Item = &Arc<Endpoint>> {
        self.shards.iter().flat_map(|s| s.replicas.iter())
    }
}
