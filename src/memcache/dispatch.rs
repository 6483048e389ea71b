//! Target for one memcache command: by its verb, the key's shard, then the
//! hot-key phase, then a read, a write or a cas of the shard's replicas
//! (`replicas`), or a get of several keys (`multiget`); and the answer the
//! client gets (quiet answers dropped as memcached drops them).

use super::hotkeys;
use super::multiget::{group, hot_reads, multi_get};
use super::replicas::{answer, arrive, cas, read, write};
use super::reply::{count_reads, Expect};
use super::request::{Command, Verb};
use super::service::Service;
use super::upstream::Answer;
use bytes::Bytes;
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
            let (shard, plan) = match keys.len() {
                1 => {
                    let key = cmd.token(keys.start);
                    let shard = svc.shard_of(key);
                    match hotkeys::get(svc, key, with_cas, touch) {
                        hotkeys::Read::Answered(a) => {
                            count_reads(&cmd.wire, &a, Expect::Values, &svc.stats.get_hits, &svc.stats.get_misses);
                            return Reply::Now(Some(a));
                        }
                        hotkeys::Read::Shard(plan) => (shard, plan),
                    }
                }
                _ => {
                    let hot = hot_reads(svc, &cmd, with_cas, touch);
                    match group(svc, &cmd, &hot) {
                        Err(answer) => return Reply::Now(answer),
                        Ok(g) if g.groups.len() == 1 && hot.is_empty() && !g.repeats => (g.groups[0].shard, hotkeys::Plan::default()),
                        Ok(groups) => return Reply::Chain(Box::pin(multi_get(svc.clone(), cmd, groups, hot, lane))),
                    }
                }
            };
            let svc = svc.clone();
            Reply::Later(Box::pin(async move {
                let a = if plan.split > 1 {
                    // Key-split: a plain get of a hot key reads one of its places.
                    let key = Bytes::copy_from_slice(cmd.token(cmd.get_keys().start));
                    super::split::get(svc.clone(), key, shard, plan.split, cmd.wire.clone(), lane).await
                } else {
                    // A cas value is read where a later cas goes: the (first) key's home.
                    let home = with_cas.then(|| svc.shards[shard].home(cmd.token(cmd.get_keys().start)));
                    answer(read(&svc, shard, cmd.wire.clone(), Expect::Values, lane, home, plan.spread).await)
                };
                if let Some(slot) = plan.fill {
                    slot.fill(&a, Instant::now());
                }
                count_reads(&cmd.wire, &a, Expect::Values, &svc.stats.get_hits, &svc.stats.get_misses);
                Some(a)
            }))
        }
        Verb::MetaGet | Verb::MetaDebug => {
            let key = cmd.key();
            let shard = svc.shard_of(key);
            let spread = hotkeys::spread(svc, key);
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
            hotkeys::before_write(&svc, cmd.key());
            Reply::Later(Box::pin(async move {
                let key = Bytes::copy_from_slice(cmd.key());
                let a = match &cmd.as_set {
                    Some(set) => cas(&svc, shard, &cmd.wire, set, expect, lane, &key).await,
                    None => write(&svc, shard, &cmd.wire, expect, lane, Some(&key)).await,
                };
                hotkeys::after_write(&svc, cmd.key(), shard, lane).await;
                quiet(&cmd, answer(a))
            }))
        }
    }
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
