//! Forward: the ambassador's connections to one memcached endpoint, shared by
//! every client and pipelined, and the endpoint's health by nutcracker's rules
//! (`server_failure_limit` failures in a row eject it for `server_retry_timeout`,
//! during which it fails fast).
//!
//! A connection is two tasks over one socket: the writer drains queued commands
//! into one write, the reader frames the answers in the order they were sent
//! and hands each to its waiting command. Each answer is matched to its
//! command (a meta command carries an opaque the answer must echo, a get's
//! values must be of its keys, in order): an answer that does not match means
//! the connection is out of step, and it is closed rather than read on. A
//! timeout, a close, a malformed or mismatched answer ends the connection and
//! fails every command still on it; the next command opens a new one.
//! Sending never waits: a command is queued, or fails at once when the queue
//! is full.

use super::reply::{frame, matches, Check, Expect};
use crate::clock;
use arc_swap::ArcSwapOption;
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Commands queued on one connection at most; beyond, commands fail at once.
const QUEUE: usize = 4096;
/// Bytes gathered into one write at most.
const BATCH: usize = 256 * 1024;

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

struct Op {
    wire: Bytes,
    expect: Expect,
    reply: Reply,
    deadline: Instant,
    started: Instant,
    /// Already re-sent once after its connection ended before writing it.
    resent: bool,
}

/// What the reader is told of a command written: its answer's shape, how the
/// answer is matched to it, where the answer goes, its deadline and when it was sent.
struct Pending {
    expect: Expect,
    check: Check,
    reply: Reply,
    deadline: Instant,
    started: Instant,
}

/// Where a command's answer goes; the command counts in its endpoint's
/// in-flight gauge until this is answered or dropped, whichever way it ends.
/// A write carries its key: if it fails here, the key goes to the endpoint's
/// repair log.
struct Reply {
    tx: oneshot::Sender<Result<Bytes, Failure>>,
    _flight: Flight,
    repair: Option<Bytes>,
}

impl Reply {
    fn send(self, answer: Result<Bytes, Failure>) {
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

struct Conn {
    tx: mpsc::Sender<Op>,
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
            let conn = match slot.load_full() {
                Some(c) if !c.tx.is_closed() => c,
                _ => {
                    let fresh = Arc::new(self.open(lane));
                    slot.store(Some(fresh.clone()));
                    fresh
                }
            };
            match conn.tx.try_send(op) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(o)) => {
                    o.reply.send(Err(Failure::Overloaded));
                    self.stats.errors.fetch_add(1, Relaxed);
                    return;
                }
                // The connection ended since it was loaded: open another once.
                Err(mpsc::error::TrySendError::Closed(o)) => op = o,
            }
        }
        op.reply.send(Err(Failure::Closed));
    }

    /// A command its connection never wrote (the connection ended first) is
    /// sent once more, on a fresh connection; it cannot have reached the server.
    fn resend(self: &Arc<Self>, lane: usize, mut op: Op, why: Failure) {
        if op.resent || op.deadline <= Instant::now() {
            op.reply.send(Err(why));
            return;
        }
        op.resent = true;
        self.enqueue(lane, op);
    }

    fn open(self: &Arc<Self>, lane: usize) -> Conn {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(self.clone(), lane, rx));
        Conn { tx }
    }

    fn succeeded(&self, started: Instant) {
        self.stats.latency.observe(started.elapsed());
        if self.stats.failures.load(Relaxed) != 0 {
            self.stats.failures.store(0, Relaxed);
        }
    }

    /// Counts a failure; the `failure_limit`-th in a row ejects the endpoint.
    fn failed(&self, why: Failure) {
        self.stats.errors.fetch_add(1, Relaxed);
        if why == Failure::Timeout {
            self.stats.timeouts.fetch_add(1, Relaxed);
        }
        let limit = self.settings.failure_limit;
        if limit == 0 {
            return;
        }
        let n = self.stats.failures.fetch_add(1, Relaxed) + 1;
        let (now, until) = (clock::now_ms(), self.stats.ejected_until_ms.load(Relaxed));
        if n < limit || until > now {
            return;
        }
        // Of failures seen at the same instant, one ejects.
        let retry = self.settings.retry_timeout;
        if self.stats.ejected_until_ms.compare_exchange(until, now + retry.as_millis() as u64, Relaxed, Relaxed).is_ok() {
            // One more failure after the retry timeout ejects it again.
            self.stats.failures.store(limit - 1, Relaxed);
            self.stats.ejections.fetch_add(1, Relaxed);
            tracing::warn!(endpoint = %self.name, addr = %self.addr, failures = n, retry_ms = retry.as_millis() as u64, reason = %why, "memcache endpoint ejected");
        }
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

/// One connection's life: connect, then the writer and the reader until either
/// ends; commands queued and never written then go to a fresh connection.
async fn run(ep: Arc<Endpoint>, lane: usize, mut rx: mpsc::Receiver<Op>) {
    let connected = tokio::time::timeout(ep.settings.connect_timeout, tokio::net::TcpStream::connect(ep.addr)).await;
    let stream = match connected {
        Ok(Ok(s)) => s,
        Ok(Err(_)) | Err(_) => {
            tracing::debug!(endpoint = %ep.name, addr = %ep.addr, "memcache connect failed");
            ep.failed(Failure::Connect);
            fail_all(&mut rx, Failure::Connect);
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    ep.stats.connections.fetch_add(1, Relaxed);
    let (r, w) = stream.into_split();
    let (pending_tx, pending_rx) = mpsc::unbounded_channel();
    let (dead_tx, dead_rx) = oneshot::channel::<()>();
    let reader = tokio::spawn(read(ep.clone(), r, pending_rx, dead_tx));
    write(w, &mut rx, pending_tx, dead_rx).await;
    // Closed first, so the slot sees this connection ended and opens another.
    rx.close();
    let _ = reader.await;
    ep.stats.connections.fetch_sub(1, Relaxed);
    while let Ok(op) = rx.try_recv() {
        ep.resend(lane, op, Failure::Closed);
    }
}

/// Gathers queued commands into one write at a time, telling the reader what
/// to expect, until every handle is gone or the reader ends.
async fn write(
    mut w: tokio::net::tcp::OwnedWriteHalf,
    rx: &mut mpsc::Receiver<Op>,
    pending: mpsc::UnboundedSender<Pending>,
    mut dead: oneshot::Receiver<()>,
) {
    let mut buf = BytesMut::new();
    let mut opaque = 0u32;
    loop {
        let op = tokio::select! {
            op = rx.recv() => match op { Some(op) => op, None => return },
            _ = &mut dead => return,
        };
        let mut next = Some(op);
        let mut commands = 0;
        while let Some(op) = next.take() {
            commands += 1;
            let check = put(&mut buf, &op.wire, op.expect, &mut opaque);
            let p = Pending { expect: op.expect, check, reply: op.reply, deadline: op.deadline, started: op.started };
            if let Err(e) = pending.send(p) {
                e.0.reply.send(Err(Failure::Closed));
                return;
            }
            if buf.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        super::stats::GLOBAL.server_writes.fetch_add(1, Relaxed);
        super::stats::GLOBAL.server_commands.fetch_add(commands, Relaxed);
        tokio::select! {
            r = w.write_all(&buf) => if r.is_err() { return },
            _ = &mut dead => return,
        }
        buf.clear();
        if buf.capacity() > BATCH {
            buf = BytesMut::new();
        }
    }
}

/// Writes `wire` into `buf` as it goes to the server, and says how its answer
/// is matched: a meta command without an opaque of its own gets ` O<n>` (`n`
/// counts on this connection) at the end of its line; one with its own is
/// matched by it; a get by its keys. `me` answers carry no opaque.
fn put(buf: &mut BytesMut, wire: &Bytes, expect: Expect, opaque: &mut u32) -> Check {
    match expect {
        Expect::Line => {
            buf.extend_from_slice(wire);
            Check::None
        }
        Expect::Values => {
            buf.extend_from_slice(wire);
            Check::Keys(wire.clone())
        }
        Expect::Meta => {
            let nl = wire.iter().position(|&c| c == b'\n').unwrap_or(wire.len());
            let end = if nl > 0 && wire[nl - 1] == b'\r' { nl - 1 } else { nl };
            let line = &wire[..end];
            if line.starts_with(b"me ") {
                buf.extend_from_slice(wire);
                return Check::None;
            }
            if let Some(own) = line.split(|&c| c == b' ').skip(2).find(|t| t.first() == Some(&b'O')) {
                buf.extend_from_slice(wire);
                return Check::Echo(wire.slice_ref(own));
            }
            *opaque = opaque.wrapping_add(1);
            let mut digits = [0u8; 10];
            buf.extend_from_slice(line);
            buf.extend_from_slice(b" O");
            buf.extend_from_slice(super::reply::decimal(*opaque, &mut digits));
            buf.extend_from_slice(&wire[end..]);
            Check::Added(*opaque)
        }
    }
}

/// Frames answers in order and hands each to its command; a timeout, close,
/// malformed or mismatched answer fails the rest and ends the connection.
async fn read(
    ep: Arc<Endpoint>,
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut pending: mpsc::UnboundedReceiver<Pending>,
    dead: oneshot::Sender<()>,
) {
    let mut buf = BytesMut::new();
    // One timer for the connection, not one per read: it is armed at some
    // command's deadline, and deadlines only grow in the order commands are
    // sent, so when it fires it is re-armed for the command now waiting
    // unless that one's deadline has passed.
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut armed = false;
    let why = 'conn: loop {
        // While nothing is in flight the socket is watched too: a server that
        // closes an idle connection is noticed now, not by the next command.
        let next = if buf.is_empty() {
            tokio::select! {
                // The writer queues a command here before writing it.
                biased;
                p = pending.recv() => p,
                idle = r.read_buf(&mut buf) => match idle {
                    Ok(0) | Err(_) => {
                        tracing::debug!(endpoint = %ep.name, addr = %ep.addr, "memcache server closed an idle connection");
                        break 'conn None;
                    }
                    // On another thread the writer may have queued a command,
                    // written it and had it answered since the channel was
                    // polled: the answer is that command's. Else nobody asked.
                    Ok(_) => match pending.try_recv() {
                        Ok(p) => Some(p),
                        Err(_) => {
                            super::stats::GLOBAL.desyncs.fetch_add(1, Relaxed);
                            tracing::warn!(endpoint = %ep.name, addr = %ep.addr, "memcache server sent bytes no command asked for; closing its connection");
                            break 'conn Some(Failure::Desync);
                        }
                    },
                },
            }
        } else {
            pending.recv().await
        };
        let Some(Pending { expect, check, reply, deadline, started }) = next else { break 'conn None };
        if !armed {
            timer.as_mut().reset(deadline);
            armed = true;
        }
        loop {
            match frame(&buf, expect, ep.settings.max_value) {
                Ok(Some(n)) => {
                    let n = match matches(&buf[..n], &check) {
                        Ok(None) => n,
                        // The opaque added here is cut out of the answer's first line.
                        Ok(Some(cut)) => {
                            buf.copy_within(0..cut.start, cut.len());
                            bytes::Buf::advance(&mut buf, cut.len());
                            n - cut.len()
                        }
                        Err(g) => {
                            super::stats::GLOBAL.desyncs.fetch_add(1, Relaxed);
                            tracing::warn!(endpoint = %ep.name, addr = %ep.addr, error = %g, "memcache server connection out of step; closing it");
                            reply.send(Err(Failure::Desync));
                            break 'conn Some(Failure::Desync);
                        }
                    };
                    ep.succeeded(started);
                    reply.send(Ok(buf.split_to(n).freeze()));
                    if buf.is_empty() && buf.capacity() > 64 * 1024 {
                        buf = BytesMut::new();
                    }
                    break;
                }
                Ok(None) => {}
                Err(g) => {
                    tracing::warn!(endpoint = %ep.name, addr = %ep.addr, error = %g, "memcache server out of step; closing its connection");
                    reply.send(Err(Failure::Garbage));
                    break 'conn Some(Failure::Garbage);
                }
            }
            buf.reserve(16 * 1024);
            tokio::select! {
                biased;
                read = r.read_buf(&mut buf) => match read {
                    Ok(n) if n > 0 => {}
                    _ => {
                        reply.send(Err(Failure::Closed));
                        break 'conn Some(Failure::Closed);
                    }
                },
                () = &mut timer => {
                    if deadline > Instant::now() {
                        timer.as_mut().reset(deadline);
                    } else {
                        reply.send(Err(Failure::Timeout));
                        break 'conn Some(Failure::Timeout);
                    }
                }
            }
        }
    };
    if let Some(why) = why {
        ep.failed(why);
    }
    let _ = dead.send(());
    pending.close();
    while let Ok(p) = pending.try_recv() {
        p.reply.send(Err(why.unwrap_or(Failure::Closed)));
    }
}

fn fail_all(rx: &mut mpsc::Receiver<Op>, why: Failure) {
    rx.close();
    while let Ok(op) = rx.try_recv() {
        op.reply.send(Err(why));
    }
}
