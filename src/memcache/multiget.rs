//! A get of several keys: grouped by shard (and by home replica for a
//! `gets`), a key asked twice read once, hot keys answered from the root's
//! cache, one read per group sent at once, and the values put back in the
//! client's key order as shared slices of the shards' answers.

use super::hotcache::Lookup;
use super::replicas::{answer, read};
use super::reply::Expect;
use super::request::{Command, Verb};
use super::service::Service;
use bytes::{Bytes, BytesMut};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

/// The keys of a get that go to one shard (and, for a `gets`, one home replica).
pub struct Group {
    pub shard: usize,
    pub home: Option<usize>,
    pub keys: Vec<usize>,
}

/// The keys of a get grouped by shard: each group's shard and keys (token
/// indexes, in the client's order), and each key's group (`usize::MAX` for a
/// key the hot-key cache answers).
pub struct Groups {
    pub groups: Vec<Group>,
    of_key: Vec<usize>,
    /// Some key is asked more than once.
    pub repeats: bool,
}

/// What the hot-key cache does for each key of a multi-key get, by the key's
/// place in the get; empty when no key is hot.
pub struct HotReads {
    /// (key's place, cached answer or the slot to fill).
    keys: Vec<(usize, Result<Bytes, Option<super::hotcache::Reservation>>)>,
}

impl HotReads {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn cached(&self, place: usize) -> Option<&Bytes> {
        self.keys.iter().find(|k| k.0 == place).and_then(|k| k.1.as_ref().ok())
    }

    /// The slot reserved for the key at `place`, once.
    fn reserved(&mut self, place: usize) -> Option<super::hotcache::Reservation> {
        match self.keys.iter_mut().find(|k| k.0 == place)? {
            (_, Err(r)) => r.take(),
            _ => None,
        }
    }
}

/// Looks up each hot key of a multi-key get in the root's hot-key cache.
pub fn hot_reads(svc: &Service, cmd: &Command, cas: bool, touch: bool) -> HotReads {
    let mut h = HotReads { keys: Vec::new() };
    let Some(c) = svc.hot_cache.as_ref().filter(|_| !touch && svc.heat.is_hot_any()) else { return h };
    let now = Instant::now();
    for (place, k) in cmd.get_keys().enumerate().take(svc.policy.max_keys) {
        let key = cmd.token(k);
        if svc.heat.is_hot(key) {
            match c.lookup(key, cas, now) {
                Lookup::Hit(a) => h.keys.push((place, Ok(a))),
                Lookup::Fill(token) => h.keys.push((place, Err(Some(token)))),
                Lookup::Pass => {}
            }
        }
    }
    h
}

pub fn group(svc: &Service, cmd: &Command, hot: &HotReads) -> Result<Groups, Option<Bytes>> {
    let keys = cmd.get_keys();
    let cas = matches!(cmd.verb, Verb::Get { cas: true, .. });
    if keys.len() > svc.policy.max_keys {
        svc.stats.refused.fetch_add(1, Relaxed);
        return Err(Some(Bytes::from_static(b"CLIENT_ERROR too many keys in one get\r\n")));
    }
    let mut g = Groups { groups: Vec::new(), of_key: Vec::with_capacity(keys.len()), repeats: false };
    // A key asked again is read once (its value is answered again from that one read).
    let mut seen = std::collections::HashSet::with_capacity(keys.len());
    for (place, k) in keys.enumerate() {
        if hot.cached(place).is_some() {
            g.of_key.push(usize::MAX);
            continue;
        }
        let shard = svc.shard_of(cmd.token(k));
        let home = cas.then(|| svc.shards[shard].home(cmd.token(k)));
        let i = match g.groups.iter().position(|x| x.shard == shard && x.home == home) {
            Some(i) => i,
            None => {
                g.groups.push(Group { shard, home, keys: Vec::new() });
                g.groups.len() - 1
            }
        };
        if seen.insert(cmd.token(k)) {
            g.groups[i].keys.push(k);
        } else {
            g.repeats = true;
        }
        g.of_key.push(i);
    }
    Ok(g)
}

/// A get over several shards, or with keys asked more than once: one get per
/// shard at once for its distinct keys, the values put back in the client's
/// key order as shared slices of the shards' answers (a value asked for twice
/// is held once), hot keys' answers from the root's cache (and those read for
/// it kept there). A shard that fails fails the whole get (its keys are
/// neither hits nor misses).
pub async fn multi_get(svc: Arc<Service>, cmd: Box<Command>, groups: Groups, mut hot: HotReads, lane: usize) -> Vec<Bytes> {
    let reads = groups.groups.iter().map(|Group { shard, home, keys }| {
        let mut line = BytesMut::with_capacity(64);
        line.extend_from_slice(cmd.token(0));
        if let Verb::Get { touch: true, .. } = cmd.verb {
            line.extend_from_slice(b" ");
            line.extend_from_slice(cmd.token(1));
        }
        for &k in keys {
            line.extend_from_slice(b" ");
            line.extend_from_slice(cmd.token(k));
        }
        line.extend_from_slice(b"\r\n");
        read(&svc, *shard, line.freeze(), Expect::Values, lane, *home, false)
    });
    let answers = futures_util::future::join_all(reads).await;
    let mut values = std::collections::HashMap::new();
    for a in answers {
        match a {
            Ok(b) if b.ends_with(b"END\r\n") => values.extend(split_values(&b)),
            // The slots reserved for hot keys are freed as `hot` drops (an error is never kept).
            other => return vec![answer(other)],
        }
    }
    let mut out = Vec::with_capacity(cmd.get_keys().len() + 1);
    let (mut hits, now) = (0, Instant::now());
    for (i, k) in cmd.get_keys().enumerate() {
        let key = cmd.token(k);
        if groups.of_key[i] == usize::MAX {
            // Answered by the hot-key cache: its value block, without the END.
            if let Some(a) = hot.cached(i).filter(|a| a.len() > 5) {
                out.push(a.slice(..a.len() - 5));
                hits += 1;
            }
            continue;
        }
        let block: Option<&Bytes> = values.get(key);
        if let Some(b) = block {
            out.push(b.clone());
            hits += 1;
        }
        if let Some(token) = hot.reserved(i) {
            let b = block.map_or(&b""[..], |b| &b[..]);
            let mut one = BytesMut::with_capacity(b.len() + 5);
            one.extend_from_slice(b);
            one.extend_from_slice(b"END\r\n");
            token.fill(&one.freeze(), now);
        }
    }
    out.push(Bytes::from_static(b"END\r\n"));
    let asked = cmd.get_keys().len() as u64;
    svc.stats.get_hits.fetch_add(hits, Relaxed);
    svc.stats.get_misses.fetch_add(asked - hits, Relaxed);
    out
}

/// The `VALUE` blocks of a framed get answer: each key and its whole block.
fn split_values(b: &Bytes) -> Vec<(Bytes, Bytes)> {
    let mut out = Vec::new();
    let mut at = 0;
    while b[at..].starts_with(b"VALUE ") {
        let nl = at + b[at..].iter().position(|&c| c == b'\n').expect("framed");
        let line = &b[at..nl - 1];
        let mut parts = line.split(|&c| c == b' ');
        let key = parts.nth(1).unwrap_or_default();
        let size: usize = parts.nth(1).and_then(|s| std::str::from_utf8(s).ok()?.parse().ok()).unwrap_or(0);
        let key_at = at + 6;
        let end = nl + 1 + size + 2;
        out.push((b.slice(key_at..key_at + key.len()), b.slice(at..end)));
        at = end;
    }
    out
}
