//! The replica logic of a shard, in one place: a read from one replica that
//! fails over (on a failure, on a miss with `miss_failover` or while a new
//! replica warms up; a replica owing a repair is passed over), a write to
//! every replica answered by the write policy (a failure on a replica logged
//! for repair), and a `cas` at the key's home replica that, once stored, sets
//! the value on the others.

use super::reply::{count_reads, is_miss, is_server_error, Expect};
use super::service::{Service, Writes};
use super::upstream::{Answer, Failure};
use bytes::Bytes;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

/// The client's answer for a server's answer or failure.
pub fn answer(a: Result<Bytes, Failure>) -> Bytes {
    a.unwrap_or_else(|f| Bytes::from_static(f.answer().as_bytes()))
}

/// Waits for an answer; a vanished connection is a closed one.
pub async fn arrive(a: Answer) -> Result<Bytes, Failure> {
    a.await.unwrap_or(Err(Failure::Closed))
}

/// A read from one replica of `shard`, failing over to the next on a failure
/// (and on a miss, with `miss_failover`): from `home` when given, else where
/// the read policy says.
pub async fn read(
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
    sh.stats.load.latency.observe(started.elapsed());
    sh.stats.traffic(&wire, &last);
    match &last {
        Ok(a) if !is_server_error(a) => count_reads(&wire, a, expect, &sh.stats.hits, &sh.stats.misses),
        _ => {
            sh.stats.load.errors.fetch_add(1, Relaxed);
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
pub async fn write(svc: &Service, shard: usize, wire: &Bytes, expect: Expect, lane: usize, key: Option<&Bytes>) -> Result<Bytes, Failure> {
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
    sh.stats.load.latency.observe(started.elapsed());
    let result = if ok >= need { first_ok } else { first_bad.or(first_ok) };
    let result = result.unwrap_or(Err(Failure::Ejected));
    sh.stats.traffic(wire, &result);
    if !done(&result) {
        sh.stats.load.errors.fetch_add(1, Relaxed);
    }
    result
}

/// A `cas` (or an ms with `C`) on the first available replica (the one a
/// `gets` or `mg ... c` reads); once it stored, the value is set on the other
/// replicas, so they stay alike.
pub async fn cas(
    svc: &Service,
    shard: usize,
    wire: &Bytes,
    set: &Bytes,
    expect: Expect,
    lane: usize,
    key: &Bytes,
) -> Result<Bytes, Failure> {
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
        sh.stats.load.errors.fetch_add(1, Relaxed);
    }
    a
}

#[cfg(test)]
mod tests;
