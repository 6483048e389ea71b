//! Forward, one server connection: a socket to a memcached endpoint shared by
//! the clients whose lane maps to it, driven by one task, with no channel in
//! between. A client queues its command itself: under a short lock its bytes
//! are appended to the connection's queue (with the opaque that matches the
//! answer to it) and its answer's slot recorded, and the task is woken only
//! when the queue was empty. The task writes everything queued in one write,
//! so commands from many clients that queue while a write is under way share
//! the next one; it reads the answers in place, frames them in the order the
//! commands went, matches each to its command and hands it over.
//!
//! A timeout, a close with commands in flight, a malformed or mismatched
//! answer, or bytes nobody asked for end the connection: every command
//! written fails, every command queued and not yet written is sent once more
//! on a fresh connection (it cannot have reached the server).

use super::reply::{frame, matches, Check, Expect};
use super::upstream::{Endpoint, EndpointStats, Failure, Reply, Settings};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// Commands queued for a connection's next write at most; beyond, commands fail at once.
const QUEUE: usize = 4096;
/// Bytes queued for the next write at most (a larger command still goes, alone).
const QUEUED_BYTES: usize = 4 << 20;
/// A buffer larger than this is given back once empty.
const KEEP: usize = 64 * 1024;
/// Room made in the read buffer when it runs short.
const READ: usize = 16 * 1024;
/// Room in the read buffer below which it is made.
const MIN_ROOM: usize = 2048;

/// A command for a server: its bytes as the client sent them (kept until
/// written, to be sent again on a fresh connection if this one ends first),
/// the shape of its answer, where the answer goes, its deadline and when it
/// was sent.
pub(super) struct Op {
    pub wire: Bytes,
    pub expect: Expect,
    pub reply: Reply,
    pub deadline: Instant,
    pub started: Instant,
    /// Already sent once more after a connection ended before writing it.
    pub resent: bool,
}

/// Why a connection did not take a command.
pub(super) enum Refused {
    /// It has ended: the command goes to a fresh one.
    Ended(Op),
    /// Its queue is full.
    Full(Op),
}

/// A command written, waiting for its answer.
struct Sent {
    expect: Expect,
    check: Check,
    reply: Reply,
    deadline: Instant,
    started: Instant,
}

/// What the clients and the connection's task share.
#[derive(Default)]
struct Queue {
    /// The queued commands' bytes, as they go to the server.
    out: BytesMut,
    /// The queued commands, in the order of `out`, each with how its answer is matched.
    ops: VecDeque<(Op, Check)>,
    /// The last opaque added on this connection.
    opaque: u32,
    /// The task, to wake when a command is queued on an empty queue.
    waker: Option<Waker>,
    /// The connection has ended: nothing more is queued here.
    ended: bool,
    /// No handle is left: the task ends once its answers are in.
    abandoned: bool,
}

type Shared = Arc<Mutex<Queue>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Queue> {
    // A panic while the lock was held leaves a queue still well formed.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// A handle on a connection, held by its endpoint's lane slot; when the last
/// is dropped the task ends after the answers it waits for.
pub(super) struct Conn {
    shared: Shared,
}

impl Drop for Conn {
    fn drop(&mut self) {
        let waker = {
            let mut q = lock(&self.shared);
            q.abandoned = true;
            q.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Conn {
    /// Opens a connection to `ep` for lane `lane`: its task connects and runs it.
    pub(super) fn open(ep: &Arc<Endpoint>, lane: usize) -> Conn {
        let shared = Shared::default();
        let server = Server {
            stats: ep.stats.clone(),
            settings: ep.settings.clone(),
            name: ep.name.as_str().into(),
            addr: ep.addr,
            endpoint: Arc::downgrade(ep),
        };
        tokio::spawn(run(server, lane, shared.clone()));
        Conn { shared }
    }

    /// Queues `op` for the connection's next write.
    pub(super) fn push(&self, op: Op) -> Result<(), Refused> {
        let waker = {
            let mut guard = lock(&self.shared);
            let q = &mut *guard;
            if q.ended {
                return Err(Refused::Ended(op));
            }
            if q.ops.len() >= QUEUE || (!q.out.is_empty() && q.out.len() + op.wire.len() > QUEUED_BYTES) {
                return Err(Refused::Full(op));
            }
            let check = put(&mut q.out, &op.wire, op.expect, &mut q.opaque);
            q.ops.push_back((op, check));
            if q.ops.len() == 1 {
                q.waker.take()
            } else {
                None
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
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
            let mut digits = [0u8; 20];
            buf.extend_from_slice(line);
            buf.extend_from_slice(b" O");
            buf.extend_from_slice(crate::value::decimal(u64::from(*opaque), &mut digits));
            buf.extend_from_slice(&wire[end..]);
            Check::Added(*opaque)
        }
    }
}

/// What a connection's task knows of its endpoint. It holds the endpoint
/// itself only weakly: the endpoint holds the connection, and a task holding
/// it would keep a removed endpoint and its sockets alive.
struct Server {
    stats: Arc<EndpointStats>,
    settings: Settings,
    name: Box<str>,
    addr: SocketAddr,
    endpoint: Weak<Endpoint>,
}

impl Server {
    fn failed(&self, why: Failure) {
        self.stats.failed(&self.settings, &self.name, self.addr, why);
    }

    /// A command queued and never written goes to a fresh connection, while
    /// its endpoint is still in use.
    fn resend(&self, lane: usize, op: Op) {
        match self.endpoint.upgrade() {
            Some(ep) => ep.resend(lane, op, Failure::Closed),
            None => op.reply.send(Err(Failure::Closed)),
        }
    }
}

/// One connection's life: connect, then write and read until it ends; then
/// the commands written fail and those queued go to a fresh connection.
async fn run(ep: Server, lane: usize, shared: Shared) {
    let connected = tokio::time::timeout(ep.settings.connect_timeout, TcpStream::connect(ep.addr)).await;
    let stream = match connected {
        Ok(Ok(s)) => s,
        Ok(Err(_)) | Err(_) => {
            tracing::debug!(endpoint = %ep.name, addr = %ep.addr, "memcache connect failed");
            ep.failed(Failure::Connect);
            for (op, _) in end(&shared) {
                op.reply.send(Err(Failure::Connect));
            }
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    ep.stats.connections.fetch_add(1, Relaxed);
    let mut link = Link {
        ep,
        shared,
        stream,
        wbuf: BytesMut::new(),
        written: 0,
        rbuf: BytesMut::new(),
        sent: VecDeque::new(),
        timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        armed: false,
        deferred: false,
    };
    let why = std::future::poll_fn(|cx| link.poll(cx)).await;
    let Link { ep, shared, sent, .. } = link;
    if let Some(why) = why {
        ep.failed(why);
    }
    ep.stats.connections.fetch_sub(1, Relaxed);
    // Ended first, so the lane's next command opens another connection.
    let queued = end(&shared);
    for s in sent {
        s.reply.send(Err(why.unwrap_or(Failure::Closed)));
    }
    for (op, _) in queued {
        ep.resend(lane, op);
    }
}

/// Marks the connection ended and takes the commands still queued.
fn end(shared: &Shared) -> VecDeque<(Op, Check)> {
    let mut q = lock(shared);
    q.ended = true;
    q.waker = None;
    q.out = BytesMut::new();
    std::mem::take(&mut q.ops)
}

/// A connected server connection, as its task drives it.
struct Link {
    ep: Server,
    shared: Shared,
    stream: TcpStream,
    /// The write under way, and how much of it the socket took.
    wbuf: BytesMut,
    written: usize,
    /// Answer bytes read and not yet handed over.
    rbuf: BytesMut,
    /// Commands written, in order, waiting for their answers.
    sent: VecDeque<Sent>,
    /// One timer for the connection, not one per command: armed at some
    /// command's deadline; deadlines only grow in the order commands are
    /// sent, so when it fires it is re-armed for the command now waiting
    /// unless that one's deadline has passed.
    timer: Pin<Box<Sleep>>,
    armed: bool,
    /// The take of what is queued now waits for the runtime's other tasks.
    deferred: bool,
}

impl Link {
    /// Writes what is queued, hands over the answers read, and watches the
    /// deadline; ready when the connection ends (`None` when it ended
    /// cleanly: the server closed it idle, or no handle is left).
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Failure>> {
        loop {
            if self.written == self.wbuf.len() {
                match self.take(cx) {
                    Take::Done => return Poll::Ready(None),
                    Take::Deferred => break,
                    _ => {}
                }
            }
            if let Err(why) = self.write(cx) {
                return Poll::Ready(Some(why));
            }
            // What was taken went out whole: clients may have queued more meanwhile.
            if self.written == self.wbuf.len() && !self.wbuf.is_empty() {
                continue;
            }
            break;
        }
        if let Poll::Ready(why) = self.read(cx) {
            return Poll::Ready(why);
        }
        self.watch(cx).map(Some)
    }

    /// Takes every queued command for the next write, or registers to be
    /// woken when one is queued.
    fn take(&mut self, cx: &mut Context<'_>) -> Take {
        self.wbuf.clear();
        self.written = 0;
        if self.wbuf.capacity() > KEEP {
            self.wbuf = BytesMut::new();
        }
        let mut q = lock(&self.shared);
        if q.ops.is_empty() {
            if q.abandoned && self.sent.is_empty() {
                return Take::Done;
            }
            if !q.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                q.waker = Some(cx.waker().clone());
            }
            return Take::Nothing;
        }
        if !self.deferred {
            // Once the runtime has run the other tasks ready now (and looked
            // for more), commands they queue go out in this same write.
            self.deferred = true;
            drop(q);
            let _ = std::pin::pin!(tokio::task::yield_now()).poll(cx);
            return Take::Deferred;
        }
        self.deferred = false;
        // The queue keeps this write's spent buffer, so neither side allocates.
        std::mem::swap(&mut q.out, &mut self.wbuf);
        let commands = q.ops.len() as u64;
        self.sent.extend(q.ops.drain(..).map(|(op, check)| Sent {
            expect: op.expect,
            check,
            reply: op.reply,
            deadline: op.deadline,
            started: op.started,
        }));
        drop(q);
        self.ep.stats.writes.fetch_add(1, Relaxed);
        super::stats::GLOBAL.server_writes.fetch_add(1, Relaxed);
        super::stats::GLOBAL.server_commands.fetch_add(commands, Relaxed);
        Take::Took
    }

    /// Writes as much of the write under way as the socket takes now.
    fn write(&mut self, cx: &mut Context<'_>) -> Result<(), Failure> {
        while self.written < self.wbuf.len() {
            match Pin::new(&mut self.stream).poll_write(cx, &self.wbuf[self.written..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Err(Failure::Closed),
                Poll::Ready(Ok(n)) => self.written += n,
                Poll::Pending => break,
            }
        }
        Ok(())
    }

    /// Frames the answers read, in order, and hands each to its command;
    /// reads until the socket has nothing more. Ready when the connection ends.
    fn read(&mut self, cx: &mut Context<'_>) -> Poll<Option<Failure>> {
        let ep = &self.ep;
        loop {
            while let Some(front) = self.sent.front() {
                let n = match frame(&self.rbuf, front.expect, ep.settings.max_value) {
                    Ok(Some(n)) => n,
                    Ok(None) => break,
                    Err(g) => {
                        tracing::warn!(endpoint = %ep.name, addr = %ep.addr, error = %g, "memcache server out of step; closing its connection");
                        return Poll::Ready(Some(Failure::Garbage));
                    }
                };
                let n = match matches(&self.rbuf[..n], &front.check) {
                    Ok(None) => n,
                    // The opaque added here is cut out of the answer's first line.
                    Ok(Some(cut)) => {
                        self.rbuf.copy_within(0..cut.start, cut.len());
                        bytes::Buf::advance(&mut self.rbuf, cut.len());
                        n - cut.len()
                    }
                    Err(g) => {
                        super::stats::GLOBAL.desyncs.fetch_add(1, Relaxed);
                        tracing::warn!(endpoint = %ep.name, addr = %ep.addr, error = %g, "memcache server connection out of step; closing it");
                        return Poll::Ready(Some(Failure::Desync));
                    }
                };
                let s = self.sent.pop_front().expect("framed for the front command");
                ep.stats.succeeded(s.started);
                s.reply.send(Ok(self.rbuf.split_to(n).freeze()));
            }
            if self.sent.is_empty() && !self.rbuf.is_empty() {
                // Only what was written can be answered: these bytes answer nothing.
                super::stats::GLOBAL.desyncs.fetch_add(1, Relaxed);
                tracing::warn!(endpoint = %ep.name, addr = %ep.addr, "memcache server sent bytes no command asked for; closing its connection");
                return Poll::Ready(Some(Failure::Desync));
            }
            if self.rbuf.is_empty() && self.rbuf.capacity() > KEEP {
                self.rbuf = BytesMut::new();
            }
            // Answers handed over share the buffer: its room is used up
            // before another is made, rather than a new one per read.
            if self.rbuf.capacity() - self.rbuf.len() < MIN_ROOM {
                self.rbuf.reserve(READ);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.rbuf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(n)) if n > 0 => {}
                // A server that closes an idle connection is noticed now, not by the next command.
                Poll::Ready(_) if self.sent.is_empty() => {
                    tracing::debug!(endpoint = %ep.name, addr = %ep.addr, "memcache server closed an idle connection");
                    return Poll::Ready(None);
                }
                Poll::Ready(_) => return Poll::Ready(Some(Failure::Closed)),
            }
        }
    }

    /// Ready with a timeout when the oldest command waiting is past its deadline.
    fn watch(&mut self, cx: &mut Context<'_>) -> Poll<Failure> {
        let Some(front) = self.sent.front() else { return Poll::Pending };
        if !self.armed {
            self.timer.as_mut().reset(front.deadline);
            self.armed = true;
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            if front.deadline <= Instant::now() {
                return Poll::Ready(Failure::Timeout);
            }
            self.timer.as_mut().reset(front.deadline);
        }
        Poll::Pending
    }
}

/// What a look at the queue found.
enum Take {
    Nothing,
    Took,
    /// Something queued, taken after the runtime's other ready tasks ran.
    Deferred,
    /// Nothing queued, nothing waited for, and no handle left.
    Done,
}

#[cfg(test)]
mod tests {
    use super::super::reply::Expect;
    use super::super::stub::{stub, Stub};
    use super::super::upstream::{Endpoint, Settings};
    use bytes::Bytes;
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::Arc;
    use std::time::Duration;

    fn endpoint(addr: std::net::SocketAddr) -> Arc<Endpoint> {
        let settings = Settings {
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_secs(2),
            max_value: 1 << 20,
            failure_limit: 0,
            retry_timeout: Duration::from_secs(1),
            connections: 1,
        };
        Arc::new(Endpoint::new("e".into(), addr, settings, Default::default()))
    }

    /// Clients on different lanes of one connection queue while its task has
    /// not run: their commands go out together, in one write, and each gets
    /// its own answer.
    #[tokio::test]
    async fn commands_queued_by_many_clients_share_one_write() {
        let ep = endpoint(stub(Stub::Answer("END\r\n")).await);
        let answers: Vec<_> = (0..10).map(|lane| ep.send(lane, Bytes::from(format!("get k{lane}\r\n")), Expect::Values)).collect();
        for a in answers {
            assert_eq!(&a.await.unwrap().unwrap()[..], b"END\r\n");
        }
        assert_eq!(ep.stats.writes.load(Relaxed), 1, "ten commands, one write");
        // The next command, queued alone, is a write of its own.
        assert_eq!(&ep.send(3, Bytes::from_static(b"get k\r\n"), Expect::Values).await.unwrap().unwrap()[..], b"END\r\n");
        assert_eq!(ep.stats.writes.load(Relaxed), 2);
    }

    /// The endpoint gone (a reload removed it), its connection's task ends
    /// and closes the socket.
    #[tokio::test]
    async fn a_connection_ends_with_its_endpoint() {
        let ep = endpoint(stub(Stub::Answer("END\r\n")).await);
        assert!(ep.send(0, Bytes::from_static(b"get k\r\n"), Expect::Values).await.unwrap().is_ok());
        let stats = ep.stats.clone();
        assert_eq!(stats.connections.load(Relaxed), 1);
        drop(ep);
        for _ in 0..100 {
            if stats.connections.load(Relaxed) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the connection outlived its endpoint");
    }
}
