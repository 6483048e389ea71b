//! The store: cached responses in memory, bounded in bytes, with an admission
//! and eviction policy for skewed traffic (quick_cache's CLOCK-Pro-style hot
//! and cold queues with ghost entries), variants per Vary, purges, and request
//! coalescing (one upstream request per key while others wait).

use super::fields::Fields;
use super::policy::{Reuse, Timing};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// One stored response.
pub struct Entry {
    /// The full cache key, checked on lookup (the store is indexed by its hash).
    pub key: Box<str>,
    pub status: StatusCode,
    pub fields: Fields,
    pub body: Bytes,
    pub reuse: Reuse,
    pub timing: Timing,
    /// The request's values of the response's Vary fields.
    pub vary: Box<[(HeaderName, Option<HeaderValue>)]>,
    /// Surrogate keys, for purge by tag.
    pub tags: Box<[Box<str>]>,
    pub hits: AtomicU64,
    /// When a request was last answered by this variant (clock nanoseconds),
    /// to evict the least recently used of a key's variants.
    pub last_used: AtomicU64,
}

impl Entry {
    /// Bytes this entry holds, for the memory budget.
    pub fn weight(&self) -> u64 {
        (self.body.len() + self.fields.bytes() + self.key.len() + 256) as u64
    }

    /// Whether this variant answers a request with headers `req`.
    pub fn matches(&self, req: &HeaderMap) -> bool {
        self.vary.iter().all(|(name, value)| req.get(name) == value.as_ref())
    }
}

/// The variants stored under one key (one allocation for the list).
pub type Variants = Arc<[Arc<Entry>]>;

#[derive(Clone)]
struct ByteWeighter;

impl quick_cache::Weighter<u64, Variants> for ByteWeighter {
    fn weight(&self, _: &u64, v: &Variants) -> u64 {
        v.iter().map(|e| e.weight()).sum::<u64>().max(1)
    }
}

/// Counts evictions.
#[derive(Clone, Default)]
struct Evictions(Arc<AtomicU64>);

impl quick_cache::Lifecycle<u64, Variants> for Evictions {
    type RequestState = ();
    fn on_evict(&self, _: &mut (), _: u64, _: Variants) {
        self.0.fetch_add(1, Relaxed);
    }
}

/// A request in flight upstream for a key; waiters are woken when it ends.
#[derive(Default)]
pub struct Flight {
    pub done: Notify,
    /// Set just before waiters are woken, for a waiter that arrives late.
    pub landed: std::sync::atomic::AtomicBool,
}

/// Cache counters, by what happened.
#[derive(Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub misses_uncacheable: AtomicU64,
    pub stale_served: AtomicU64,
    pub revalidations: AtomicU64,
    pub revalidated_304: AtomicU64,
    pub coalesced_waits: AtomicU64,
    pub stored: AtomicU64,
    pub not_stored: AtomicU64,
    pub too_large: AtomicU64,
    pub purged: AtomicU64,
    pub invalidated: AtomicU64,
    /// Variants evicted to keep a key within `max_variants`.
    pub variant_evictions: AtomicU64,
}

pub struct Store {
    cache: quick_cache::sync::Cache<u64, Variants, ByteWeighter, quick_cache::DefaultHashBuilder, Evictions>,
    evictions: Evictions,
    flights: Mutex<HashMap<u64, Arc<Flight>>>,
    pub stats: CacheStats,
    pub capacity: u64,
    /// Turned off for now by the operator (`POST /admin/cache/switch`):
    /// requests pass the cache by, and nothing is stored. Kept across reloads
    /// with the store.
    pub bypassed: std::sync::atomic::AtomicBool,
}

/// The index hash of a cache key.
pub fn key_hash(key: &str) -> u64 {
    crate::hash::xxh3(key.as_bytes())
}

impl Store {
    pub fn new(capacity_bytes: u64) -> Store {
        let evictions = Evictions::default();
        let cache = quick_cache::sync::Cache::with(
            (capacity_bytes / 4096).clamp(64, 1 << 22) as usize,
            capacity_bytes,
            ByteWeighter,
            Default::default(),
            evictions.clone(),
        );
        Store {
            cache,
            evictions,
            flights: Mutex::new(HashMap::new()),
            stats: CacheStats::default(),
            capacity: capacity_bytes,
            bypassed: Default::default(),
        }
    }

    /// The stored variant for `key` that matches the request headers.
    pub fn get(&self, key: &str, req: &HeaderMap) -> Option<Arc<Entry>> {
        let v = self.cache.get(&key_hash(key))?;
        let e = v.iter().find(|e| &*e.key == key && e.matches(req)).cloned()?;
        // Recency matters only among variants: a key with one writes nothing.
        if v.len() > 1 {
            e.last_used.store(crate::clock::now_ns(), Relaxed);
        }
        Some(e)
    }

    /// Stores `entry`, replacing the variant with the same Vary values; a key
    /// keeps at most `max_variants`, the least recently used going first.
    pub fn insert(&self, entry: Entry, max_variants: usize) {
        let h = key_hash(&entry.key);
        let mut variants: Vec<Arc<Entry>> = self
            .cache
            .get(&h)
            .map(|v| v.iter().filter(|e| e.key == entry.key && e.vary != entry.vary).cloned().collect())
            .unwrap_or_default();
        while !variants.is_empty() && variants.len() >= max_variants.max(1) {
            let lru = (0..variants.len()).min_by_key(|&i| variants[i].last_used.load(Relaxed)).unwrap_or(0);
            variants.remove(lru);
            self.stats.variant_evictions.fetch_add(1, Relaxed);
        }
        entry.last_used.store(crate::clock::now_ns(), Relaxed);
        variants.push(Arc::new(entry));
        self.cache.insert(h, variants.into());
        self.stats.stored.fetch_add(1, Relaxed);
    }

    /// Removes every variant of `key`; returns how many.
    pub fn remove(&self, key: &str) -> usize {
        let n = self.cache.remove(&key_hash(key)).map(|(_, v)| v.len()).unwrap_or(0);
        self.stats.purged.fetch_add(n as u64, Relaxed);
        n
    }

    /// Removes every entry whose key starts with `prefix`, or that carries `tag`.
    pub fn purge_where(&self, pred: impl Fn(&Entry) -> bool) -> usize {
        let n = AtomicU64::new(0);
        self.cache.retain(|_, v| {
            let gone = v.iter().filter(|e| pred(e)).count();
            n.fetch_add(gone as u64, Relaxed);
            gone == 0
        });
        let n = n.load(Relaxed);
        self.stats.purged.fetch_add(n, Relaxed);
        n as usize
    }

    pub fn bytes(&self) -> u64 {
        self.cache.weight()
    }

    pub fn entries(&self) -> usize {
        self.cache.len()
    }

    pub fn evictions(&self) -> u64 {
        self.evictions.0.load(Relaxed)
    }

    /// The most requested keys, with their hit counts.
    pub fn top_keys(&self, n: usize) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> =
            self.cache.iter().flat_map(|(_, v)| v.iter().map(|e| (e.key.to_string(), e.hits.load(Relaxed))).collect::<Vec<_>>()).collect();
        all.sort_by_key(|e| std::cmp::Reverse(e.1));
        all.truncate(n);
        all
    }

    /// Joins the flight for `key`: `Ok(flight)` when this request leads (goes
    /// upstream and must call `land`), `Err(flight)` when another request leads
    /// and this one should wait for it.
    pub fn take_off(&self, key: &str) -> Result<Arc<Flight>, Arc<Flight>> {
        let mut f = self.flights.lock().expect("flights lock");
        match f.get(&key_hash(key)) {
            Some(existing) => Err(existing.clone()),
            None => {
                let flight = Arc::new(Flight::default());
                f.insert(key_hash(key), flight.clone());
                Ok(flight)
            }
        }
    }

    /// Ends the flight for `key`, waking its waiters.
    pub fn land(&self, key_h: u64) {
        if let Some(f) = self.flights.lock().expect("flights lock").remove(&key_h) {
            f.landed.store(true, Relaxed);
            f.done.notify_waiters();
        }
    }
}

/// Ends a flight when dropped, so that waiters never wait for a request that
/// was abandoned.
pub struct Landing {
    pub store: Arc<Store>,
    pub key_hash: u64,
}

impl Drop for Landing {
    fn drop(&mut self) {
        self.store.land(self.key_hash);
    }
}
