//! Target, balance and forward for one memcache command: the key's shard, the
//! replica or replicas, and the answer the client gets. Reads go to one
//! replica and fail over; writes go to every replica and answer by the write
//! policy; a `cas` goes to the replica a `gets` reads from and, once it stored,
//! the value is set on the others; a multi-key get is split by shard and its
//! answers put back in the client's key order.

use super::hotcache::Lookup;
use super::reply::{count_reads, is_miss, is_server_error, Expect};
use super::request::{Command, Verb};
use super::service::{Service, Writes};
use super::upstream::{Answer, Failure};
use bytes::{Bytes, BytesMut};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

/// An answer still to come.
pub type Later = Pin<Box<dyn Future<Output = Option<Bytes>> + Send>>;

/// An answer still to come in several parts, written in order (a multi-key
/// get's values, shared with the shards' answers rather than copied).
pub type LaterChain = Pin<Box<dyn Future<Output = Vec<Bytes>> + Send>>;

/// What a command gets.
pub enum Reply {
    /// Answered at once (nothing, for a quiet command).
    Now(Option<Bytes>),
    Later(Later),
    Chain(LaterChain),
    /// The client said `quit`: close after the answers before it.
    Quit,
}

fn text(s: &'static str) -> Option<Bytes> {
    Some(Bytes::from_static(s.as_bytes()))
}

/// Sends `cmd` where it belongs; `lane` is the client's connection lane.
pub fn dispatch(svc: &Arc<Service>, cmd: Box<Command>, lane: usize) -> Reply {
    svc.stats.count(cmd.verb.index());
    match cmd.verb {
        Verb::Quit => Reply::Quit,
        Verb::Version => Reply::Now(Some(Bytes::from(format!("VERSION ringmaster-{}\r\n", env!("CARGO_PKG_VERSION"))))),
        Verb::Verbosity => Reply::Now(if cmd.quiet { None } else { text("OK\r\n") }),
        Verb::MetaNoop => Reply::Now(text("MN\r\n")),
        Verb::Stats => Reply::Now(Some(super::stats::answer(svc, &cmd))),
        Verb::FlushAll if !svc.policy.allow_flush_all => {
            // memcached's answer when started with -F.
            svc.stats.flush_refused.fetch_add(1, Relaxed);
            svc.stats.refused.fetch_add(1, Relaxed);
            tracing::debug!(service = %svc.name, "flush_all refused (allow_flush_all is off)");
            Reply::Now(if cmd.quiet { None } else { text("CLIENT_ERROR flush_all not allowed\r\n") })
        }
        Verb::FlushAll => Reply::Later(Box::pin(flush_all(svc.clone(), cmd, lane))),
        Verb::Get { cas: with_cas, touch } => {
            // One key, the common get, is placed without grouping.
            let keys = cmd.get_keys();
            let (shard, hot) = match keys.len() {
                1 => {
                    let key = cmd.token(keys.start);
                    (svc.shard_of(key), svc.heat.is_hot(key))
                }
                _ => {
                    let hot = hot_reads(svc, &cmd, with_cas, touch);
                    match group(svc, &cmd, &hot) {
                        Err(answer) => return Reply::Now(answer),
                        Ok(g) if g.groups.len() == 1 && hot.is_empty() && !g.repeats => (g.groups[0].shard, false),
                        Ok(groups) => return Reply::Chain(Box::pin(multi_get(svc.clone(), cmd, groups, hot, lane))),
                    }
                }
            };
            let fill = match (&svc.hot_cache, hot && !touch) {
                (Some(c), true) => match c.lookup(cmd.token(keys.start), with_cas, Instant::now()) {
                    Lookup::Hit(a) => {
                        count_reads(&cmd.wire, &a, Expect::Values, &svc.stats.get_hits, &svc.stats.get_misses);
                        return Reply::Now(Some(a));
                    }
                    Lookup::Fill(token) => Some(token),
                    Lookup::Pass => None,
                },
                _ => None,
            };
            let svc = svc.clone();
            let m = &svc.heat.policy().mitigation;
            let spread = hot && m.spread;
            // Key-split: a plain get of a hot key reads one of its places.
            let split = if hot && !with_cas && !touch && keys.len() == 1 { m.split } else { 0 };
            Reply::Later(Box::pin(async move {
                let a = if split > 1 {
                    let key = Bytes::copy_from_slice(cmd.token(cmd.get_keys().start));
                    super::split::get(svc.clone(), key, shard, split, cmd.wire.clone(), lane).await
                } else {
                    // A cas value is read where a later cas goes: the (first) key's home.
                    let home = with_cas.then(|| svc.shards[shard].home(cmd.token(cmd.get_keys().start)));
                    answer(read(&svc, shard, cmd.wire.clone(), Expect::Values, lane, home, spread).await)
                };
                if let Some(token) = fill {
                    token.fill(&a, Instant::now());
                }
                count_reads(&cmd.wire, &a, Expect::Values, &svc.stats.get_hits, &svc.stats.get_misses);
                Some(a)
            }))
        }
        Verb::MetaGet | Verb::MetaDebug => {
            let key = cmd.key();
            let (shard, spread) = (svc.shard_of(key), svc.heat.policy().mitigation.spread && svc.heat.is_hot(key));
            // Meta gets read the key's home replica (lease and win tokens, cas
            // values are per server); `spread` gives that up for a hot key's plain reads.
            let cas = cmd.tokens[2..].iter().any(|t| &cmd.raw[t.clone()] == b"c");
            let home = (!spread || cas).then(|| svc.shards[shard].home(key));
            let svc = svc.clone();
            Reply::Later(Box::pin(async move {
                let a = answer(read(&svc, shard, cmd.wire.clone(), Expect::Meta, lane, home, spread).await);
                count_reads(&cmd.wire, &a, Expect::Meta, &svc.stats.get_hits, &svc.stats.get_misses);
                quiet(&cmd, a)
            }))
        }
        _ => {
            let (svc, shard) = (svc.clone(), svc.shard_of(cmd.key()));
            let expect = if matches!(cmd.verb, Verb::MetaSet | Verb::MetaDelete | Verb::MetaArith) { Expect::Meta } else { Expect::Line };
            // A write drops the key's answers at the root before it is sent and
            // once it is answered, so no read that raced it keeps the old value.
            if let Some(c) = &svc.hot_cache {
                c.invalidate(cmd.key());
            }
            Reply::Later(Box::pin(async move {
                let key = Bytes::copy_from_slice(cmd.key());
                let a = match &cmd.as_set {
                    Some(set) => cas(&svc, shard, &cmd.wire, set, expect, lane, &key).await,
                    None => write(&svc, shard, &cmd.wire, expect, lane, Some(&key)).await,
                };
                if let Some(c) = &svc.hot_cache {
                    c.invalidate(cmd.key());
                }
                let split = svc.heat.policy().mitigation.split;
                if split > 1 && svc.heat.is_hot(cmd.key()) {
                    super::split::drop_copies(&svc, cmd.key(), shard, split, lane).await;
                }
                quiet(&cmd, answer(a))
            }))
        }
    }
}

/// The client's answer for a server's answer or failure.
pub(super) fn answer(a: Result<Bytes, Failure>) -> Bytes {
    a.unwrap_or_else(|f| Bytes::from_static(f.answer().as_bytes()))
}

/// A quiet command's nominal answer is dropped, as memcached drops it: every
/// answer of a text `noreply`; `EN` of mg; `HD` of ms and md; success of ma.
fn quiet(cmd: &Command, a: Bytes) -> Option<Bytes> {
    if !cmd.quiet {
        return Some(a);
    }
    let code = &a[..a.len().min(2)];
    let nominal = match cmd.verb {
        Verb::MetaGet => code == b"EN",
        Verb::MetaSet | Verb::MetaDelete => code == b"HD",
        Verb::MetaArith => code == b"HD" || code == b"VA",
        Verb::MetaDebug => false,
        _ => true,
    };
    (!nominal).then_some(a)
}

/// Waits for an answer; a vanished connection is a closed one.
async fn arrive(a: Answer) -> Result<Bytes, Failure> {
    a.await.unwrap_or(Err(Failure::Closed))
}

/// A read from one replica of `shard`, failing over to the next on a failure
/// (and on a miss, with `miss_failover`): from `home` when given, else where
/// the read policy says.
pub(super) async fn read(
    svc: &Service,
    shard: usize,
    wire: Bytes,
    expect: Expect,
    lane: usize,
    home: Option<usize>,
    spread: bool,
) -> Result<Bytes, Failure> {
    let sh = &svc.shards[shard];
    let started = Instant::now();
    let _in_flight = super::service::InFlight::new(&sh.stats);
    let n = sh.replicas.len();
    let start = home.unwrap_or_else(|| sh.read_start(&svc.policy, spread));
    let mut last = Err(Failure::Ejected);
    for i in 0..n {
        let ep = &sh.replicas[(start + i) % n];
        // A replica that owes a repair (or is ejected) is passed over, as a failure.
        if !ep.serves_reads() {
            if last.is_err() {
                last = Err(Failure::Ejected);
            }
            continue;
        }
        if i > 0 {
            sh.stats.failovers.fetch_add(1, Relaxed);
        }
        match arrive(ep.send(lane, wire.clone(), expect)).await {
            Ok(a) if is_server_error(&a) => last = Ok(a),
            Ok(a) if is_miss(&a) && (svc.policy.miss_failover || sh.warming((start + i) % n, svc.policy.warm_up)) && i + 1 < n => {
                last = Ok(a)
            }
            Ok(a) => {
                last = Ok(a);
                break;
            }
            Err(f) if last.is_err() => last = Err(f),
            Err(_) => {}
        }
    }
    sh.stats.latency.observe(started.elapsed());
    sh.stats.traffic(&wire, &last);
    match &last {
        Ok(a) if !is_server_error(a) => count_reads(&wire, a, expect, &sh.stats.hits, &sh.stats.misses),
        _ => {
            sh.stats.errors.fetch_add(1, Relaxed);
        }
    };
    last
}

/// Whether an answer means the replica did its part.
fn done(a: &Result<Bytes, Failure>) -> bool {
    matches!(a, Ok(b) if !is_server_error(b))
}

/// A write to every replica of `shard`, answered by the write policy. A
/// replica where it fails (even after the client was answered) logs `key`
/// for repair, when given.
pub(super) async fn write(
    svc: &Service,
    shard: usize,
    wire: &Bytes,
    expect: Expect,
    lane: usize,
    key: Option<&Bytes>,
) -> Result<Bytes, Failure> {
    let sh = &svc.shards[shard];
    let started = Instant::now();
    let _in_flight = super::service::InFlight::new(&sh.stats);
    let sent: Vec<Answer> = sh.replicas.iter().map(|ep| ep.send_write(lane, wire.clone(), expect, key.cloned())).collect();
    let n = sent.len();
    let need = match svc.policy.writes {
        Writes::First => 1,
        Writes::All => n,
        Writes::Majority => n / 2 + 1,
    };
    let (mut ok, mut first_ok, mut first_bad) = (0, None, None);
    for (i, a) in sent.into_iter().enumerate() {
        let a = arrive(a).await;
        if done(&a) {
            ok += 1;
            first_ok.get_or_insert(a);
        } else {
            first_bad.get_or_insert(a);
        }
        // Stop waiting once the policy is met, or can no longer be.
        if ok >= need || ok + (n - i - 1) < need {
            break;
        }
    }
    sh.stats.latency.observe(started.elapsed());
    let result = if ok >= need { first_ok } else { first_bad.or(first_ok) };
    let result = result.unwrap_or(Err(Failure::Ejected));
    sh.stats.traffic(wire, &result);
    if !done(&result) {
        sh.stats.errors.fetch_add(1, Relaxed);
    }
    result
}

/// A `cas` (or an ms with `C`) on the first available replica (the one a
/// `gets` or `mg ... c` reads); once it stored, the value is set on the other
/// replicas, so they stay alike.
async fn cas(svc: &Service, shard: usize, wire: &Bytes, set: &Bytes, expect: Expect, lane: usize, key: &Bytes) -> Result<Bytes, Failure> {
    let sh = &svc.shards[shard];
    let _in_flight = super::service::InFlight::new(&sh.stats);
    // The key's home, or the next that serves reads: where a `gets` read the cas value.
    let (n, home) = (sh.replicas.len(), sh.home(key));
    let Some(first) = (0..n).map(|i| (home + i) % n).find(|&i| sh.replicas[i].serves_reads()) else {
        return Err(Failure::Ejected);
    };
    let a = arrive(sh.replicas[first].send(lane, wire.clone(), expect)).await;
    sh.stats.traffic(wire, &a);
    if matches!(&a, Ok(b) if &b[..] == b"STORED\r\n" || b.starts_with(b"HD")) {
        for (i, ep) in sh.replicas.iter().enumerate() {
            if i != first {
                drop(ep.send_write(lane, set.clone(), expect, Some(key.clone())));
            }
        }
    } else if a.is_err() {
        // The compare may or may not have been applied there: the others keep what they hold.
        sh.replicas[first].stats.repair.log(key);
    }
    if !done(&a) {
        sh.stats.errors.fetch_add(1, Relaxed);
    }
    a
}

/// flush_all on every endpoint of every shard: `OK` when all said so.
async fn flush_all(svc: Arc<Service>, cmd: Box<Command>, lane: usize) -> Option<Bytes> {
    svc.hot_cache.iter().for_each(|c| c.clear());
    let sent: Vec<Answer> = svc.endpoints().map(|ep| ep.send(lane, cmd.wire.clone(), Expect::Line)).collect();
    let mut result = Bytes::from_static(b"OK\r\n");
    for a in sent {
        let a = answer(arrive(a).await);
        if &a[..] != b"OK\r\n" && &result[..] == b"OK\r\n" {
            result = a;
        }
    }
    svc.hot_cache.iter().for_each(|c| c.clear());
    quiet(&cmd, result)
}

/// The keys of a get that go to one shard (and, for a `gets`, one home replica).
struct Group {
    shard: usize,
    home: Option<usize>,
    keys: Vec<usize>,
}

/// The keys of a get grouped by shard: each group's shard and keys (token
/// indexes, in the client's order), and each key's group (`usize::MAX` for a
/// key the hot-key cache answers).
struct Groups {
    groups: Vec<Group>,
    of_key: Vec<usize>,
    /// Some key is asked more than once.
    repeats: bool,
}

/// What the hot-key cache does for each key of a multi-key get, by the key's
/// place in the get; empty when no key is hot.
struct HotReads {
    /// (key's place, cached answer or the slot to fill).
    keys: Vec<(usize, Result<Bytes, Option<super::hotcache::Reservation>>)>,
}

impl HotReads {
    fn is_empty(&self) -> bool {
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
fn hot_reads(svc: &Service, cmd: &Command, cas: bool, touch: bool) -> HotReads {
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

fn group(svc: &Service, cmd: &Command, hot: &HotReads) -> Result<Groups, Option<Bytes>> {
    let keys = cmd.get_keys();
    let cas = matches!(cmd.verb, Verb::Get { cas: true, .. });
    if keys.len() > svc.policy.max_keys {
        svc.stats.refused.fetch_add(1, Relaxed);
        return Err(text("CLIENT_ERROR too many keys in one get\r\n"));
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
async fn multi_get(svc: Arc<Service>, cmd: Box<Command>, groups: Groups, mut hot: HotReads, lane: usize) -> Vec<Bytes> {
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
