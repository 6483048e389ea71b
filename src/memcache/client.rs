//! One client connection of the ambassador: read, parse, dispatch, and write
//! the answers back in the order the commands came, however many are in
//! flight (pipelining). An idle connection holds no buffers. A command left
//! half-sent longer than the command timeout, or a line too long to frame,
//! is answered and the connection closed; every other bad line gets
//! memcached's answer and the connection goes on.

use super::dispatch::{dispatch, Later, LaterChain, Reply};
use super::request::{Parsed, Parser};
use super::service::Service;
use super::stats::GLOBAL;
use bytes::{Bytes, BytesMut};
use futures_util::stream::{FuturesOrdered, StreamExt};
use futures_util::FutureExt;
use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// A memcache listener's limits on its clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Client connections open at once on the listener.
    pub max_connections: usize,
    /// Connections from one address at once; 0: no limit.
    pub max_per_address: usize,
    /// A client idle this long (nothing sent, nothing in flight) is closed.
    pub idle_timeout: Option<Duration>,
    /// A client that takes no answer bytes this long while answers wait is closed.
    pub write_timeout: Duration,
    /// Answer bytes waiting for the client past which its commands are not read.
    pub max_pending_bytes: usize,
    /// Commands in flight per client past which reading pauses.
    pub max_in_flight: usize,
    /// Answer bytes waiting for all the listener's clients at most: past it,
    /// a client that is itself past `max_pending_bytes` is closed.
    pub max_total_pending_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_per_address: 0,
            idle_timeout: None,
            write_timeout: Duration::from_secs(30),
            max_pending_bytes: 1024 * 1024,
            max_in_flight: 256,
            max_total_pending_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Answer bytes waiting for a listener's clients, all together.
#[derive(Default)]
pub struct Budget {
    used: AtomicUsize,
}

impl Budget {
    pub fn used(&self) -> usize {
        self.used.load(Relaxed)
    }
}

/// Bytes read at a time.
const READ: usize = 4 * 1024;
/// Bytes read at a time into an empty buffer.
const FIRST_READ: usize = 1024;

/// A socket half the client loop waits on without holding a buffer while
/// idle, then reads by polling its `AsyncRead` once, never awaiting it: a
/// short read clears the readiness (no extra read that only finds EAGAIN),
/// and a read that finds nothing leaves the loop free to write answers. (An
/// awaited read after a readiness that a full buffer left set waited for the
/// client's next bytes while its answers sat unwritten.)
pub trait Readable: AsyncRead + Unpin + Send {
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send;
}

impl Readable for tokio::net::tcp::OwnedReadHalf {
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        tokio::net::tcp::OwnedReadHalf::readable(self)
    }
}

impl Readable for tokio::net::unix::OwnedReadHalf {
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        tokio::net::unix::OwnedReadHalf::readable(self)
    }
}

/// An answer in the client's queue.
enum Pending {
    Ready(Option<Option<Bytes>>),
    Wait(Later),
    Chain(LaterChain),
}

/// What a command's answer is made of: nothing (a quiet command), one
/// buffer, or parts written in order.
enum Out {
    One(Option<Bytes>),
    Chain(Vec<Bytes>),
}

impl Future for Pending {
    type Output = Out;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Out> {
        match self.get_mut() {
            Pending::Ready(a) => Poll::Ready(Out::One(a.take().flatten())),
            Pending::Wait(f) => f.as_mut().poll(cx).map(Out::One),
            Pending::Chain(f) => f.as_mut().poll(cx).map(Out::Chain),
        }
    }
}

/// Gives each client connection its lane on the shared server connections.
static LANES: AtomicUsize = AtomicUsize::new(0);

const COMMAND_TIMEOUT: &str = "SERVER_ERROR timed out reading a command\r\n";

/// Answers ready for the client and not yet written, in order; written with
/// one vectored write for many small answers, never copied. Its bytes are
/// charged to the listener's budget while they wait.
struct Outbox<'a> {
    chunks: VecDeque<Bytes>,
    bytes: usize,
    budget: &'a Budget,
}

impl Drop for Outbox<'_> {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Relaxed);
    }
}

/// Chunks gathered into one write at most.
const IOV: usize = 64;

impl<'a> Outbox<'a> {
    fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.bytes += b.len();
            self.budget.used.fetch_add(b.len(), Relaxed);
            self.chunks.push_back(b);
        }
    }

    fn push_out(&mut self, out: Out) {
        match out {
            Out::One(b) => self.push(b.unwrap_or_default()),
            Out::Chain(parts) => parts.into_iter().for_each(|b| self.push(b)),
        }
    }

    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Drops the first `n` bytes, written.
    fn advance(&mut self, mut n: usize) {
        self.bytes -= n;
        self.budget.used.fetch_sub(n, Relaxed);
        while n > 0 {
            let front = self.chunks.front_mut().expect("advanced past the outbox");
            if n < front.len() {
                bytes::Buf::advance(front, n);
                return;
            }
            n -= front.len();
            self.chunks.pop_front();
        }
    }

    /// Writes what the socket takes now. The slices are gathered in `poll`,
    /// on the stack, so no connection's future carries them while it idles.
    fn poll_write<W: AsyncWrite + Unpin>(&mut self, w: &mut W, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let mut iov = [IoSlice::new(&[]); IOV];
        let k = self.chunks.len().min(IOV);
        for (slot, c) in iov.iter_mut().zip(self.chunks.iter()) {
            *slot = IoSlice::new(c);
        }
        let n = std::task::ready!(Pin::new(w).poll_write_vectored(cx, &iov[..k]))?;
        if n == 0 {
            return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
        }
        self.advance(n);
        Poll::Ready(Ok(n))
    }

    fn write<'b, W: AsyncWrite + Unpin>(&'b mut self, w: &'b mut W) -> impl Future<Output = std::io::Result<usize>> + use<'a, 'b, W> {
        std::future::poll_fn(move |cx| self.poll_write(w, cx))
    }
}

/// Why the loop closes a client itself.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Deadline {
    Command,
    Write,
    Idle,
}

/// Serves one client until it quits, closes, or shutdown; `service` gives the
/// current snapshot's service at each read. Answers are written as they come
/// (in order) without holding up reading; the client's commands are read and
/// dispatched only while fewer than `max_in_flight` are in flight and fewer
/// than `max_pending_bytes` of answers wait for it (back-pressure). A client
/// that takes no answer bytes for `write_timeout`, or sends nothing with
/// nothing in flight for `idle_timeout`, is closed and counted; so is one
/// past `max_pending_bytes` while the listener's clients together are past
/// `max_total_pending_bytes` (those that read keep being served).
pub async fn serve<R: Readable, W: AsyncWrite + Unpin + Send>(
    mut r: R,
    mut w: W,
    service: impl Fn() -> Option<Arc<Service>>,
    limits: &Limits,
    budget: &Budget,
    command_timeout: Duration,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    GLOBAL.connections_total.fetch_add(1, Relaxed);
    let lane = LANES.fetch_add(1, Relaxed);
    // The service as of the last read; none while the client idles, so an
    // idle client does not keep a replaced snapshot's endpoints (and their
    // server connections) alive.
    let Some(first) = service() else { return };
    let mut parser = Parser::new(first.max_value);
    let mut svc = Some(first);
    let mut inbuf = BytesMut::new();
    let mut outbox = Outbox { chunks: VecDeque::new(), bytes: 0, budget };
    let mut pending: FuturesOrdered<Pending> = FuturesOrdered::new();
    let (mut closing, mut partial_since) = (false, None::<Instant>);
    // Since when answers wait that the client does not take (write timeout),
    // and when it last sent or took bytes (idle timeout; kept only when one is set).
    let (mut stalled_since, mut active_at) = (None::<Instant>, Instant::now());
    let idle_clock = limits.idle_timeout.is_some();
    let mut shutdown = shutdown;
    let mut stop = std::pin::pin!(shutdown.changed());
    // Made only once some deadline needs it (an idle connection holds none).
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let mut armed: Option<Instant> = None;
    loop {
        let open = |pending: &FuturesOrdered<Pending>, outbox: &Outbox| {
            pending.len() < limits.max_in_flight && outbox.bytes < limits.max_pending_bytes
        };
        if !closing && !inbuf.is_empty() && open(&pending, &outbox) {
            let Some(service) = &svc else { break };
            let (close, partial) = parse(&mut parser, &mut inbuf, service, lane, &mut pending, limits.max_in_flight);
            closing = close;
            partial_since = if partial { partial_since.or(Some(Instant::now())) } else { None };
        }
        if inbuf.is_empty() {
            if inbuf.capacity() > 0 {
                inbuf = BytesMut::new();
            }
            svc = None;
        }
        // Answers ready now go to the outbox, and as much as the socket takes is written at once.
        let mut progress = false;
        while let Some(Some(a)) = pending.next().now_or_never() {
            outbox.push_out(a);
            progress = true;
        }
        while !outbox.is_empty() {
            match outbox.write(&mut w).now_or_never() {
                Some(Ok(_)) => (stalled_since, progress) = (None, true),
                Some(Err(_)) => return close(w).await,
                None => break,
            }
        }
        if outbox.is_empty() {
            if progress && idle_clock {
                active_at = Instant::now();
            }
        } else if stalled_since.is_none() {
            stalled_since = Some(Instant::now());
        }
        if closing && pending.is_empty() && outbox.is_empty() {
            break;
        }
        if outbox.bytes > limits.max_pending_bytes && budget.used() > limits.max_total_pending_bytes {
            GLOBAL.closed_memory.fetch_add(1, Relaxed);
            tracing::debug!(pending = outbox.bytes, "memcache client closed: its answers wait unread while the listener's budget is spent");
            break;
        }
        // Room was made for commands already read: parse them before waiting on the socket.
        if progress && !closing && !inbuf.is_empty() && open(&pending, &outbox) {
            continue;
        }
        // A command left half-sent matters only while the client may still finish it.
        let partial = partial_since.filter(|_| !closing);
        let quiet = pending.is_empty() && inbuf.is_empty() && outbox.is_empty();
        let deadline = next_deadline(limits, command_timeout, partial, stalled_since, active_at, quiet);
        if let Some((at, _)) = deadline.filter(|d| armed != Some(d.0)) {
            match &mut timer {
                Some(t) => t.as_mut().reset(at),
                None => timer = Some(Box::pin(tokio::time::sleep_until(at))),
            }
            armed = Some(at);
        }
        let reading = !closing && open(&pending, &outbox);
        tokio::select! {
            biased;
            Some(a) = pending.next(), if !pending.is_empty() => outbox.push_out(a),
            written = outbox.write(&mut w), if !outbox.is_empty() => match written {
                Ok(_) => stalled_since = (!outbox.is_empty()).then(Instant::now),
                Err(_) => break,
            },
            ready = r.readable(), if reading => {
                if ready.is_err() {
                    break;
                }
                // An empty buffer gets a small block first (most commands
                // are short, and a small block is the allocator's fast path);
                // one a read filled grows.
                if inbuf.capacity() - inbuf.len() < FIRST_READ {
                    inbuf.reserve(if inbuf.is_empty() { FIRST_READ } else { READ });
                }
                // Polled once, never awaited: nothing there (a stale or spurious readiness) clears it.
                match r.read_buf(&mut inbuf).now_or_never() {
                    None => {}
                    Some(Ok(0)) => closing = true,
                    Some(Ok(_)) => {
                        if idle_clock {
                            active_at = Instant::now();
                        }
                        // A service a reload removed keeps serving what was read under it.
                        if let Some(s) = service().or(svc.take()) {
                            parser.max_value = s.max_value;
                            svc = Some(s);
                        }
                    }
                    Some(Err(_)) => break,
                }
            }
            () = async { timer.as_mut().expect("armed with the deadline").await }, if deadline.is_some() => {
                armed = None;
                match deadline.map(|d| d.1) {
                    Some(Deadline::Command) if !closing => {
                        GLOBAL.command_timeouts.fetch_add(1, Relaxed);
                        GLOBAL.closed_bad_input.fetch_add(1, Relaxed);
                        pending.push_back(Pending::Ready(Some(Some(Bytes::from_static(COMMAND_TIMEOUT.as_bytes())))));
                        closing = true;
                    }
                    Some(Deadline::Write) => {
                        GLOBAL.write_timeouts.fetch_add(1, Relaxed);
                        tracing::debug!("memcache client closed: it took no answer bytes for the write timeout");
                        break;
                    }
                    Some(Deadline::Idle) => {
                        GLOBAL.idle_closed.fetch_add(1, Relaxed);
                        break;
                    }
                    _ => {}
                }
            }
            _ = &mut stop, if !closing => closing = true,
        }
    }
    close(w).await
}

/// The next time the loop must act on its own, and why: a command left
/// half-sent, answers the client does not take, or a client idle too long.
fn next_deadline(
    limits: &Limits,
    command_timeout: Duration,
    partial_since: Option<Instant>,
    stalled_since: Option<Instant>,
    active_at: Instant,
    quiet: bool,
) -> Option<(Instant, Deadline)> {
    let command = partial_since.map(|t| (t + command_timeout, Deadline::Command));
    let write = stalled_since.map(|t| (t + limits.write_timeout, Deadline::Write));
    let idle = limits.idle_timeout.filter(|_| quiet).map(|t| (active_at + t, Deadline::Idle));
    [command, write, idle].into_iter().flatten().min_by_key(|d| d.0)
}

async fn close<W: AsyncWrite + Unpin>(mut w: W) {
    let _ = tokio::time::timeout(Duration::from_secs(1), w.shutdown()).await;
}

/// Parses and dispatches what `inbuf` holds; says whether the connection is
/// to close, and whether a command is left half-read.
fn parse(
    parser: &mut Parser,
    inbuf: &mut BytesMut,
    svc: &Arc<Service>,
    lane: usize,
    pending: &mut FuturesOrdered<Pending>,
    max_in_flight: usize,
) -> (bool, bool) {
    while pending.len() < max_in_flight {
        let Some(p) = parser.next(inbuf) else { return (false, !inbuf.is_empty()) };
        match p {
            Parsed::Command(cmd) => match dispatch(svc, cmd, lane) {
                Reply::Now(a) => pending.push_back(Pending::Ready(Some(a))),
                Reply::Later(f) => pending.push_back(Pending::Wait(f)),
                Reply::Chain(f) => pending.push_back(Pending::Chain(f)),
                Reply::Quit => {
                    inbuf.clear();
                    return (true, false);
                }
            },
            Parsed::Answer(a) => {
                GLOBAL.bad_commands.fetch_add(1, Relaxed);
                svc.stats.refused.fetch_add(1, Relaxed);
                pending.push_back(Pending::Ready(Some(a.map(|t| Bytes::from_static(t.as_bytes())))));
            }
            Parsed::Close(a) => {
                GLOBAL.closed_bad_input.fetch_add(1, Relaxed);
                svc.stats.refused.fetch_add(1, Relaxed);
                tracing::debug!(answer = a.trim_end(), "memcache client closed for bad input");
                pending.push_back(Pending::Ready(Some(Some(Bytes::from_static(a.as_bytes())))));
                inbuf.clear();
                return (true, false);
            }
        }
    }
    (false, false)
}

#[cfg(test)]
mod tests;
