//! One client connection of the ambassador: read, parse, dispatch, and write
//! the answers back in the order the commands came, however many are in
//! flight (pipelining). An idle connection holds no buffers. A command left
//! half-sent longer than the command timeout, or a line too long to frame,
//! is answered and the connection closed; every other bad line gets
//! memcached's answer and the connection goes on.

use super::dispatch::{dispatch, Later, Reply};
use super::request::{Parsed, Parser};
use super::service::Service;
use super::stats::GLOBAL;
use bytes::{Bytes, BytesMut};
use futures_util::stream::{FuturesOrdered, StreamExt};
use futures_util::FutureExt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
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
        }
    }
}

/// Commands in flight per client connection; beyond, reading pauses.
const MAX_PIPELINE: usize = 1024;
/// Bytes read at a time.
const READ: usize = 4 * 1024;

/// A socket half the client loop waits on without holding a buffer while
/// idle, then reads without waiting: a read that finds nothing clears the
/// readiness and the loop goes back to writing answers. (An awaited read
/// after a readiness that a full buffer left set would wait for the client's
/// next bytes while its answers sat unwritten.)
pub trait Readable: Unpin + Send {
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send;
    fn try_read_buf(&self, buf: &mut BytesMut) -> std::io::Result<usize>;
}

impl Readable for tokio::net::tcp::OwnedReadHalf {
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        tokio::net::tcp::OwnedReadHalf::readable(self)
    }
    fn try_read_buf(&self, buf: &mut BytesMut) -> std::io::Result<usize> {
        tokio::net::tcp::OwnedReadHalf::try_read_buf(self, buf)
    }
}

impl Readable for tokio::net::unix::OwnedReadHalf {
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        tokio::net::unix::OwnedReadHalf::readable(self)
    }
    fn try_read_buf(&self, buf: &mut BytesMut) -> std::io::Result<usize> {
        tokio::net::unix::OwnedReadHalf::try_read_buf(self, buf)
    }
}

/// An answer in the client's queue.
enum Pending {
    Ready(Option<Option<Bytes>>),
    Wait(Later),
}

impl Future for Pending {
    type Output = Option<Bytes>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        match self.get_mut() {
            Pending::Ready(a) => Poll::Ready(a.take().flatten()),
            Pending::Wait(f) => f.as_mut().poll(cx),
        }
    }
}

/// Gives each client connection its lane on the shared server connections.
static LANES: AtomicUsize = AtomicUsize::new(0);

const COMMAND_TIMEOUT: &str = "SERVER_ERROR timed out reading a command\r\n";

/// Serves one client until it quits, closes, or shutdown; `service` gives the
/// current snapshot's service at each read.
pub async fn serve<R: Readable, W: AsyncWrite + Unpin + Send>(
    r: R,
    mut w: W,
    service: impl Fn() -> Option<Arc<Service>>,
    command_timeout: Duration,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    GLOBAL.connections.fetch_add(1, Relaxed);
    GLOBAL.connections_total.fetch_add(1, Relaxed);
    let lane = LANES.fetch_add(1, Relaxed);
    let Some(mut svc) = service() else { return };
    let mut parser = Parser::new(svc.max_value);
    let mut inbuf = BytesMut::new();
    let mut out = BytesMut::new();
    let mut pending: FuturesOrdered<Pending> = FuturesOrdered::new();
    let (mut closing, mut partial_since) = (false, None::<Instant>);
    // Made once, not at every turn of the loop (its waiter registration shows in profiles).
    let mut shutdown = shutdown;
    let mut stop = std::pin::pin!(shutdown.changed());
    loop {
        if !closing && !inbuf.is_empty() && pending.len() < MAX_PIPELINE {
            let (close, partial) = parse(&mut parser, &mut inbuf, &svc, lane, &mut pending);
            closing = close;
            partial_since = if partial { partial_since.or(Some(Instant::now())) } else { None };
        }
        if inbuf.is_empty() && inbuf.capacity() > 0 {
            inbuf = BytesMut::new();
        }
        if closing && pending.is_empty() {
            break;
        }
        let deadline = partial_since.map(|t| t + command_timeout);
        tokio::select! {
            biased;
            Some(a) = pending.next(), if !pending.is_empty() => {
                // One answer ready is written as it is; more are gathered into one write.
                let mut first = a;
                while let Some(Some(a)) = pending.next().now_or_never() {
                    if let Some(f) = first.take() {
                        out.extend_from_slice(&f);
                    }
                    out.extend_from_slice(a.as_deref().unwrap_or_default());
                }
                let bytes: &[u8] = match &first {
                    Some(f) => f,
                    None => &out,
                };
                if !bytes.is_empty() && w.write_all(bytes).await.is_err() {
                    break;
                }
                if !out.is_empty() {
                    out = BytesMut::new();
                }
            }
            ready = r.readable(), if !closing && pending.len() < MAX_PIPELINE => {
                if ready.is_err() {
                    break;
                }
                inbuf.reserve(READ);
                // Never waits: nothing there (a stale or spurious readiness) clears it.
                match r.try_read_buf(&mut inbuf) {
                    Ok(0) => closing = true,
                    Ok(_) => {
                        if let Some(s) = service() {
                            svc = s;
                            parser.max_value = svc.max_value;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() && !closing => {
                GLOBAL.command_timeouts.fetch_add(1, Relaxed);
                GLOBAL.closed_bad_input.fetch_add(1, Relaxed);
                pending.push_back(Pending::Ready(Some(Some(Bytes::from_static(COMMAND_TIMEOUT.as_bytes())))));
                closing = true;
            }
            _ = &mut stop, if !closing => closing = true,
        }
    }
    let _ = w.shutdown().await;
    GLOBAL.connections.fetch_sub(1, Relaxed);
}

/// Parses and dispatches what `inbuf` holds; says whether the connection is
/// to close, and whether a command is left half-read.
fn parse(
    parser: &mut Parser,
    inbuf: &mut BytesMut,
    svc: &Arc<Service>,
    lane: usize,
    pending: &mut FuturesOrdered<Pending>,
) -> (bool, bool) {
    while pending.len() < MAX_PIPELINE {
        let Some(p) = parser.next(inbuf) else { return (false, !inbuf.is_empty()) };
        match p {
            Parsed::Command(cmd) => match dispatch(svc, cmd, lane) {
                Reply::Now(a) => pending.push_back(Pending::Ready(Some(a))),
                Reply::Later(f) => pending.push_back(Pending::Wait(f)),
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
