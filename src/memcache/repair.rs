//! The repair log: how a replica that missed writes converges (mcrouter's
//! asynclog, kept in memory). A write or delete that fails on a replica (it
//! was ejected, timed out, closed, or answered `SERVER_ERROR`), including one
//! the client was already answered for under `writes = "first"`, leaves the
//! key in that endpoint's log. While its log is not empty the endpoint takes
//! writes but no reads and no `cas`: a replay first deletes every logged key
//! on it (a delete is safe for a cache and idempotent, where replaying an
//! `incr` or `append` would not be). A log that overflows is dropped, and
//! the replay flushes the endpoint instead. So a re-admitted replica never
//! serves a key written or deleted while it was out.

use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

/// Keys a log holds at most before it overflows.
pub const MAX_KEYS: usize = 16 * 1024;

/// What a replay must do.
#[derive(Debug, PartialEq, Eq)]
pub enum Replay {
    /// Delete these keys (the oldest first).
    Delete(Vec<Bytes>),
    /// The log overflowed: flush the endpoint.
    Flush,
}

#[derive(Default)]
struct Entries {
    keys: VecDeque<Bytes>,
    overflowed: bool,
}

/// One endpoint's repair log and its counters.
#[derive(Default)]
pub struct RepairLog {
    entries: Mutex<Entries>,
    /// Keys logged and not yet replayed (or 1 while a flush is owed): read
    /// without the lock on every read's path.
    pending: AtomicUsize,
    /// A replay is running.
    replaying: AtomicBool,
    pub logged: AtomicU64,
    pub replayed: AtomicU64,
    pub flushes: AtomicU64,
}

impl RepairLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the endpoint owes a replay before it serves reads.
    pub fn owed(&self) -> bool {
        self.pending.load(Relaxed) != 0
    }

    /// Keys waiting (a flush owed counts one).
    pub fn pending(&self) -> usize {
        self.pending.load(Relaxed)
    }

    /// Logs `key`, missed by the endpoint.
    pub fn log(&self, key: &Bytes) {
        let mut e = self.lock();
        self.logged.fetch_add(1, Relaxed);
        if e.overflowed {
            return;
        }
        if e.keys.len() >= MAX_KEYS {
            e.keys = VecDeque::new();
            e.overflowed = true;
            self.pending.store(1, Relaxed);
            return;
        }
        e.keys.push_back(key.clone());
        self.pending.store(e.keys.len(), Relaxed);
    }

    /// Starts a replay unless one runs or none is owed: what it must do.
    pub fn begin(&self) -> Option<Replay> {
        if !self.owed() || self.replaying.swap(true, Relaxed) {
            return None;
        }
        let e = self.lock();
        if e.overflowed {
            return Some(Replay::Flush);
        }
        if e.keys.is_empty() {
            self.replaying.store(false, Relaxed);
            return None;
        }
        Some(Replay::Delete(e.keys.iter().cloned().collect()))
    }

    /// Ends a replay: `done` of its work succeeded (the first `done` keys, or
    /// the flush when `done` is nonzero). Keys logged meanwhile stay owed.
    pub fn end(&self, replay: &Replay, done: usize) {
        let mut e = self.lock();
        match replay {
            Replay::Flush if done > 0 => {
                // Everything before the flush is gone from the endpoint.
                *e = Entries::default();
                self.flushes.fetch_add(1, Relaxed);
            }
            Replay::Delete(keys) => {
                // The log only grows at its back while a replay runs (an overflow empties it).
                if !e.overflowed {
                    let n = done.min(keys.len()).min(e.keys.len());
                    e.keys.drain(..n);
                    self.replayed.fetch_add(n as u64, Relaxed);
                }
            }
            Replay::Flush => {}
        }
        let owed = if e.overflowed { 1 } else { e.keys.len() };
        self.pending.store(owed, Relaxed);
        self.replaying.store(false, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_replayed_in_order_and_new_ones_stay_owed() {
        let log = RepairLog::default();
        assert_eq!(log.begin(), None);
        for k in ["a", "b", "c"] {
            log.log(&Bytes::from(k));
        }
        assert!(log.owed());
        let replay = log.begin().unwrap();
        assert_eq!(replay, Replay::Delete(vec![Bytes::from("a"), Bytes::from("b"), Bytes::from("c")]));
        assert_eq!(log.begin(), None, "one replay at a time");
        log.log(&Bytes::from("d"));
        log.end(&replay, 2);
        assert_eq!(log.pending(), 2, "c failed, d came meanwhile");
        let replay = log.begin().unwrap();
        assert_eq!(replay, Replay::Delete(vec![Bytes::from("c"), Bytes::from("d")]));
        log.end(&replay, 2);
        assert!(!log.owed());
    }

    #[test]
    fn an_overflowing_log_owes_a_flush() {
        let log = RepairLog::default();
        for i in 0..=MAX_KEYS {
            log.log(&Bytes::from(format!("k{i}")));
        }
        assert_eq!(log.pending(), 1);
        let replay = log.begin().unwrap();
        assert_eq!(replay, Replay::Flush);
        log.end(&replay, 0);
        assert!(log.owed(), "a failed flush is still owed");
        let replay = log.begin().unwrap();
        log.end(&replay, 1);
        assert!(!log.owed());
        assert_eq!(log.flushes.load(Relaxed), 1);
    }
}
