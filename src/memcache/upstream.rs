//! Forward: the ambassador's connections to one memcached endpoint, shared by
//! every client and pipelined, and the endpoint's health by nutcracker's rules
//! (`server_failure_limit` failures in a row eject it for `server_retry_timeout`,
//! during which it fails fast).
//!
//! Each client has a lane: its commands go on one of the endpoint's
//! connections (`conn`), so they stay in order. Sending never waits: a
//! command is queued, or fails at once when the connection's queue is full.

use super::conn::{Conn, Op, Refused};
use super::reply::Expect;
use crate::clock;
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Why a command got no answer from a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("connection to the server failed")]
    Connect,
    #[error("the server timed out")]
    Timeout,
    #[error("the server closed the connection")]
    Closed,
    #[error("the server sent a malformed answer")]
    Garbage,
    #[error("the server's answers were out of step with the commands sent")]
    Desync,
    #[error("the server is ejected after repeated failures")]
    Ejected,
    #[error("too many commands queued for the server")]
    Overloaded,
}

impl Failure {
    /// The line a client gets for it.
    pub fn answer(self) -> &'static str {
        match self {
            Failure::Connect => "SERVER_ERROR connection to the server failed\r\n",
            Failure::Timeout => "SERVER_ERROR the server timed out\r\n",
            Failure::Closed => "SERVER_ERROR the server closed the connection\r\n",
            Failure::Garbage => "SERVER_ERROR the server sent a malformed answer\r\n",
            Failure::Desync => "SERVER_ERROR the server's answers were out of step\r\n",
            Failure::Ejected => "SERVER_ERROR no server available\r\n",
            Failure::Overloaded => "SERVER_ERROR too many commands queued for the server\r\n",
        }
    }
}

/// How an endpoint is reached and judged (the service's settings).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Settings {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_value: usize,
    /// Failures in a row that eject the endpoint; 0 never ejects.
    pub failure_limit: u32,
    pub retry_timeout: Duration,
    /// Connections per endpoint; each client uses one of them, so its commands stay in order.
    pub connections: usize,
}

/// Counters of one endpoint, carried over a reload with the endpoint.
#[derive(Default)]
pub struct EndpointStats {
    /// When it joined its shard (ms), for slow start and warm-up; 0 when there from the start.
    pub joined_ms: AtomicU64,
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub timeouts: AtomicU64,
    pub ejections: AtomicU64,
    pub connections: AtomicUsize,
    /// Writes to its connections; each carries every command queued since the last.
    pub writes: AtomicU64,
    /// Commands queued or sent here and not yet answered.
    pub in_flight: AtomicUsize,
    pub latency: crate::metrics::Histogram,
    /// Its command rate, measured by the heat tick from `requests`.
    pub rate: crate::heat::rate::Rate,
    /// Keys it missed writes of, to delete before it serves reads again.
    pub repair: super::repair::RepairLog,
    failures: AtomicU32,
    ejected_until_ms: AtomicU64,
}

impl EndpointStats {
    /// An answer came in good order: the failures in a row start again.
    pub(super) fn succeeded(&self, started: Instant) {
        self.latency.observe(started.elapsed());
        if self.failures.load(Relaxed) != 0 {
            self.failures.store(0, Relaxed);
        }
    }

    /// Counts a failure; the `failure_limit`-th in a row ejects the endpoint.
    pub(super) fn failed(&self, settings: &Settings, name: &str, addr: SocketAddr, why: Failure) {
        self.errors.fetch_add(1, Relaxed);
        if why == Failure::Timeout {
            self.timeouts.fetch_add(1, Relaxed);
        }
        let limit = settings.failure_limit;
        if limit == 0 {
            return;
        }
        let n = self.failures.fetch_add(1, Relaxed) + 1;
        let (now, until) = (clock::now_ms(), self.ejected_until_ms.load(Relaxed));
        if n < limit || until > now {
            return;
        }
        // Of failures seen at the same instant, one ejects.
        let retry = settings.retry_timeout;
        if self.ejected_until_ms.compare_exchange(until, now + retry.as_millis() as u64, Relaxed, Relaxed).is_ok() {
            // One more failure after the retry timeout ejects it again.
            self.failures.store(limit - 1, Relaxed);
            self.ejections.fetch_add(1, Relaxed);
            tracing::warn!(endpoint = %name, addr = %addr, failures = n, retry_ms = retry.as_millis() as u64, reason = %why, "memcache endpoint ejected");
        }
    }
}

/// One memcached server.
pub struct Endpoint {
    pub name: String,
    pub addr: SocketAddr,
    pub settings: Settings,
    pub stats: Arc<EndpointStats>,
    conns: Box<[ArcSwapOption<Conn>]>,
}

/// A command sent, waiting for its answer.
pub type Answer = oneshot::Receiver<Result<Bytes, Failure>>;

/// Where a command's answer goes; the command counts in its endpoint's
/// in-flight gauge until this is answered or dropped, whichever way it ends.
/// A write carries its key: if it fails here, the key goes to the endpoint's
/// repair log.
pub(super) struct Reply {
    tx: oneshot::Sender<Result<Bytes, Failure>>,
    _flight: Flight,
    repair: Option<Bytes>,
}

impl Reply {
    pub(super) fn send(self, answer: Result<Bytes, Failure>) {
        if let Some(key) = &self.repair {
            if answer.as_ref().map_or(true, |a| super::reply::is_server_error(a)) {
                self._flight.0.repair.log(key);
            }
        }
        let _ = self.tx.send(answer);
    }
}

struct Flight(Arc<EndpointStats>);

impl Drop for Flight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

impl Endpoint {
    pub fn new(name: String, addr: SocketAddr, settings: Settings, stats: Arc<EndpointStats>) -> Endpoint {
        let conns = (0..settings.connections.max(1)).map(|_| ArcSwapOption::empty()).collect();
        Endpoint { name, addr, settings, stats, conns }
    }

    /// Whether the endpoint takes commands now (not ejected).
    pub fn available(&self) -> bool {
        self.stats.ejected_until_ms.load(Relaxed) <= clock::now_ms()
    }

    /// Whether the endpoint serves reads (and `cas`) now: not ejected, and no
    /// repair owed; an owed repair is started here.
    pub fn serves_reads(self: &Arc<Self>) -> bool {
        if !self.available() {
            return false;
        }
        if !self.stats.repair.owed() {
            return true;
        }
        if let Some(replay) = self.stats.repair.begin() {
            tokio::spawn(repair(self.clone(), replay));
        }
        false
    }

    /// Queues `wire` on connection `lane` (a client's own lane keeps its
    /// commands in order) and returns where its answer will arrive.
    pub fn send(self: &Arc<Self>, lane: usize, wire: Bytes, expect: Expect) -> Answer {
        self.send_write(lane, wire, expect, None)
    }

    /// As `send`, for a write of `key`: if it fails here, `key` goes to the
    /// endpoint's repair log.
    pub fn send_write(self: &Arc<Self>, lane: usize, wire: Bytes, expect: Expect, key: Option<Bytes>) -> Answer {
        let (tx, answer) = oneshot::channel();
        if !self.available() {
            if let Some(k) = &key {
                self.stats.repair.log(k);
            }
            let _ = tx.send(Err(Failure::Ejected));
            return answer;
        }
        self.stats.requests.fetch_add(1, Relaxed);
        self.stats.in_flight.fetch_add(1, Relaxed);
        let reply = Reply { tx, _flight: Flight(self.stats.clone()), repair: key };
        let now = Instant::now();
        let op = Op { wire, expect, reply, deadline: now + self.settings.request_timeout, started: now, resent: false };
        self.enqueue(lane, op);
        answer
    }

    /// Queues `op` on lane `lane`'s connection, opening one when there is
    /// none or it has ended.
    fn enqueue(self: &Arc<Self>, lane: usize, mut op: Op) {
        let slot = &self.conns[lane % self.conns.len()];
        for _ in 0..2 {
            let pushed = match &*slot.load() {
                Some(conn) => conn.push(op),
                None => Err(Refused::Ended(op)),
            };
            match pushed {
                Ok(()) => return,
                Err(Refused::Full(o)) => {
                    o.reply.send(Err(Failure::Overloaded));
                    self.stats.errors.fetch_add(1, Relaxed);
                    return;
                }
                // None yet, or it ended since: open another, once.
                Err(Refused::Ended(o)) => {
                    op = o;
                    slot.store(Some(Arc::new(Conn::open(self, lane))));
                }
            }
        }
        op.reply.send(Err(Failure::Closed));
    }

    /// A command its connection never wrote (the connection ended first) is
    /// sent once more, on a fresh connection; it cannot have reached the server.
    pub(super) fn resend(self: &Arc<Self>, lane: usize, mut op: Op, why: Failure) {
        if op.resent || op.deadline <= Instant::now() {
            op.reply.send(Err(why));
            return;
        }
        op.resent = true;
        self.enqueue(lane, op);
    }

    /// Whether the endpoint is ejected now, and for how many more milliseconds.
    pub fn ejected_for_ms(&self) -> u64 {
        self.stats.ejected_until_ms.load(Relaxed).saturating_sub(clock::now_ms())
    }
}

/// Replays an endpoint's repair log: deletes its keys (pipelined, in order),
/// or flushes it after an overflow; what failed stays owed.
async fn repair(ep: Arc<Endpoint>, replay: super::repair::Replay) {
    use super::repair::Replay;
    let ok = |a: &Result<Bytes, Failure>| matches!(a, Ok(b) if !super::reply::is_error(b.strip_suffix(b"\r\n").unwrap_or(b)));
    let done = match &replay {
        Replay::Flush => {
            let a = ep.send(0, Bytes::from_static(b"flush_all\r\n"), Expect::Line).await.unwrap_or(Err(Failure::Closed));
            usize::from(ok(&a))
        }
        Replay::Delete(keys) => {
            let sent: Vec<Answer> = keys.iter().map(|k| ep.send(0, super::split::delete_line(k), Expect::Meta)).collect();
            let mut done = 0;
            for a in sent {
                if !ok(&a.await.unwrap_or(Err(Failure::Closed))) {
                    break;
                }
                done += 1;
            }
            done
        }
    };
    ep.stats.repair.end(&replay, done);
    let flush = matches!(replay, Replay::Flush);
    tracing::info!(endpoint = %ep.name, addr = %ep.addr, flush, done, owed = ep.stats.repair.pending(), "memcache endpoint repair replayed");
}
