//! The ambassador's root-local cache of hot keys (`[services.NAME.hot_keys]`
//! with `cache = true`): a `get` or `gets` of a key the heat ranking calls hot
//! is answered from here for `ttl` after one read from its shard, so the shard
//! sees one read per ttl instead of all of them (a miss is kept too: a hot key
//! that does not exist is the classic way to hammer one shard). Any write of the key through
//! this root drops its answers, before the write is sent and again once it is
//! answered, so a read that raced the write cannot put the old value back: a
//! fill only lands in the slot it reserved, and a write empties that slot.
//! Bounded: only hot keys enter (at most `top_keys`), and `max_bytes` in all.
//! A fill is a [`Reservation`] that frees its slot when dropped unfilled (a
//! client that resets mid-read), so a slot never stays filling for good.

use crate::heat::CachePolicy;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Counters of a hot-key cache, carried with it.
#[derive(Default)]
pub struct HotCacheStats {
    pub hits: AtomicU64,
    /// Reads sent to the shard to fill an entry.
    pub fills: AtomicU64,
    /// Entries dropped by a write, delete or flush through this root.
    pub invalidations: AtomicU64,
    /// Answers not kept: the cache was full.
    pub refused: AtomicU64,
}

enum Slot {
    /// A read is on its way; only the read holding this token may fill it.
    Filling(u64),
    Ready {
        answer: Bytes,
        expires: Instant,
    },
}

#[derive(Default)]
struct Entries {
    /// Key -> slot, for get answers (0) and gets answers, which carry the cas value (1).
    maps: [HashMap<Box<[u8]>, Slot>; 2],
    bytes: usize,
    /// When expired answers are next swept out (at most once per ttl).
    sweep_at: Option<Instant>,
}

impl Entries {
    fn len(&self) -> usize {
        self.maps[0].len() + self.maps[1].len()
    }
}

/// What a read of a hot key does.
pub enum Lookup {
    /// The cached answer.
    Hit(Bytes),
    /// Read from the shard, then fill the slot reserved.
    Fill(Reservation),
    /// Another read is filling: read from the shard, keep nothing.
    Pass,
}

/// The right to fill one slot; dropped unfilled, it frees the slot.
pub struct Reservation {
    cache: Arc<HotCache>,
    key: Box<[u8]>,
    cas: bool,
    token: u64,
    done: bool,
}

impl Reservation {
    /// Keeps `answer` in the slot if it is a hit and the slot is still this one.
    pub fn fill(mut self, answer: &Bytes, now: Instant) {
        self.done = true;
        self.cache.fill(&self.key, self.cas, self.token, answer, now);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            self.cache.release(&self.key, self.cas, self.token);
        }
    }
}

pub struct HotCache {
    pub policy: CachePolicy,
    entries: Mutex<Entries>,
    /// Entries held, read without the lock so writes to a cold cache pay nothing.
    len: AtomicUsize,
    next_token: AtomicU64,
    pub stats: HotCacheStats,
}

impl HotCache {
    pub fn new(policy: CachePolicy) -> HotCache {
        HotCache {
            policy,
            entries: Mutex::default(),
            len: AtomicUsize::new(0),
            next_token: AtomicU64::new(1),
            stats: HotCacheStats::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A read of hot `key` (`cas`: a `gets`).
    pub fn lookup(self: &Arc<Self>, key: &[u8], cas: bool, now: Instant) -> Lookup {
        let mut e = self.lock();
        match e.maps[cas as usize].get(key) {
            Some(Slot::Ready { answer, expires }) if *expires > now => {
                self.stats.hits.fetch_add(1, Relaxed);
                return Lookup::Hit(answer.clone());
            }
            Some(Slot::Filling(_)) => return Lookup::Pass,
            _ => {}
        }
        let token = self.next_token.fetch_add(1, Relaxed);
        if let Some(Slot::Ready { answer, .. }) = e.maps[cas as usize].insert(key.into(), Slot::Filling(token)) {
            e.bytes -= answer.len();
        }
        self.len.store(e.len(), Relaxed);
        self.stats.fills.fetch_add(1, Relaxed);
        Lookup::Fill(Reservation { cache: self.clone(), key: key.into(), cas, token, done: false })
    }

    /// Frees `key`'s slot if `token` still holds it (a fill that never came).
    fn release(&self, key: &[u8], cas: bool, token: u64) {
        let mut e = self.lock();
        if matches!(e.maps[cas as usize].get(key), Some(Slot::Filling(t)) if *t == token) {
            e.maps[cas as usize].remove(key);
            self.len.store(e.len(), Relaxed);
        }
    }

    /// Keeps `answer` for `key` if it is a hit and the slot is still the one
    /// `token` reserved; else frees the slot.
    fn fill(&self, key: &[u8], cas: bool, token: u64, answer: &Bytes, now: Instant) {
        let mut e = self.lock();
        let Entries { maps, bytes, sweep_at } = &mut *e;
        let Some(slot) = maps[cas as usize].get_mut(key).filter(|s| matches!(s, Slot::Filling(t) if *t == token)) else {
            return;
        };
        // Values and misses are kept (a hot key that does not exist would
        // otherwise reach its shard on every read); errors are not.
        let keep = &answer[..] == b"END\r\n" || (answer.starts_with(b"VALUE ") && answer.ends_with(b"END\r\n"));
        if keep && *bytes + answer.len() <= self.policy.max_bytes {
            *bytes += answer.len();
            *slot = Slot::Ready { answer: answer.clone(), expires: now + self.policy.ttl };
        } else {
            if keep {
                self.stats.refused.fetch_add(1, Relaxed);
            }
            maps[cas as usize].remove(key);
        }
        // Expired answers go as new ones come, in one sweep per ttl.
        if sweep_at.is_none_or(|t| t <= now) {
            *sweep_at = Some(now + self.policy.ttl);
            for m in maps.iter_mut() {
                m.retain(|_, s| match s {
                    Slot::Ready { answer, expires } if *expires <= now => {
                        *bytes -= answer.len();
                        false
                    }
                    _ => true,
                });
            }
        }
        self.len.store(e.len(), Relaxed);
    }

    /// Drops `key`'s answers (a write, delete, arithmetic or touch of it).
    pub fn invalidate(&self, key: &[u8]) {
        if self.len.load(Relaxed) == 0 {
            return;
        }
        let mut e = self.lock();
        for cas in [false, true] {
            if let Some(slot) = e.maps[cas as usize].remove(key) {
                if let Slot::Ready { answer, .. } = slot {
                    e.bytes -= answer.len();
                }
                self.stats.invalidations.fetch_add(1, Relaxed);
            }
        }
        self.len.store(e.len(), Relaxed);
    }

    /// Drops everything (flush_all).
    pub fn clear(&self) {
        let mut e = self.lock();
        self.stats.invalidations.fetch_add(e.len() as u64, Relaxed);
        *e = Entries::default();
        self.len.store(0, Relaxed);
    }

    /// Entries and bytes held.
    pub fn size(&self) -> (usize, usize) {
        let e = self.lock();
        (e.len(), e.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cache(max_bytes: usize) -> Arc<HotCache> {
        Arc::new(HotCache::new(CachePolicy { ttl: Duration::from_secs(1), max_bytes }))
    }

    const HIT: &[u8] = b"VALUE k 0 1\r\nv\r\nEND\r\n";

    #[test]
    fn a_filled_answer_is_served_until_it_expires() {
        let (c, t0) = (cache(1 << 20), Instant::now());
        let Lookup::Fill(token) = c.lookup(b"k", false, t0) else { panic!("first read fills") };
        assert!(matches!(c.lookup(b"k", false, t0), Lookup::Pass), "one fill at a time");
        token.fill(&Bytes::from_static(HIT), t0);
        assert!(matches!(c.lookup(b"k", false, t0), Lookup::Hit(a) if a == HIT));
        assert!(matches!(c.lookup(b"k", true, t0), Lookup::Fill(_)), "gets answers carry cas: kept apart");
        assert!(matches!(c.lookup(b"k", false, t0 + Duration::from_secs(2)), Lookup::Fill(_)), "expired");
    }

    #[test]
    fn a_fill_that_never_comes_frees_its_slot() {
        let (c, t0) = (cache(1 << 20), Instant::now());
        let Lookup::Fill(token) = c.lookup(b"k", false, t0) else { panic!("first read fills") };
        drop(token);
        let Lookup::Fill(token) = c.lookup(b"k", false, t0) else { panic!("the dropped fill freed its slot") };
        token.fill(&Bytes::from_static(HIT), t0);
        assert!(matches!(c.lookup(b"k", false, t0), Lookup::Hit(_)));
    }

    #[test]
    fn a_write_during_a_fill_keeps_the_old_value_out() {
        let (c, t0) = (cache(1 << 20), Instant::now());
        let Lookup::Fill(token) = c.lookup(b"k", false, t0) else { panic!() };
        c.invalidate(b"k");
        token.fill(&Bytes::from_static(HIT), t0);
        assert!(matches!(c.lookup(b"k", false, t0), Lookup::Fill(_)), "the raced fill was dropped");
        assert_eq!(c.stats.invalidations.load(Relaxed), 1);
    }

    #[test]
    fn errors_and_what_does_not_fit_are_not_kept_but_misses_are() {
        let (c, t0) = (cache(HIT.len() + 5), Instant::now());
        for answer in [&b"SERVER_ERROR out of memory\r\n"[..], b"CLIENT_ERROR bad data chunk\r\n", b"VALUE k 0 1\r\nv\r\n"] {
            let Lookup::Fill(token) = c.lookup(b"k", false, t0) else { panic!() };
            token.fill(&Bytes::copy_from_slice(answer), t0);
            assert_eq!(c.size(), (0, 0));
        }
        let Lookup::Fill(token) = c.lookup(b"gone", false, t0) else { panic!() };
        token.fill(&Bytes::from_static(b"END\r\n"), t0);
        assert!(matches!(c.lookup(b"gone", false, t0), Lookup::Hit(a) if &a[..] == b"END\r\n"));
        c.invalidate(b"gone");
        let Lookup::Fill(token) = c.lookup(b"a", false, t0) else { panic!() };
        token.fill(&Bytes::from_static(HIT), t0);
        let Lookup::Fill(token) = c.lookup(b"b", false, t0) else { panic!() };
        token.fill(&Bytes::from_static(HIT), t0);
        assert_eq!(c.size(), (1, HIT.len()), "bounded by max_bytes");
        assert_eq!(c.stats.refused.load(Relaxed), 1);
        c.clear();
        assert_eq!(c.size(), (0, 0));
    }
}
