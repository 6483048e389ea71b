//! A client connection served by our own HTTP/1.1 loop (`http1::server`):
//! the first bytes tell HTTP/1 from HTTP/2's preface (which goes to hyper's
//! server, those bytes put back in front), then each request runs the
//! pipeline on the connection's own task, and the loop's ending is counted as
//! hyper's connection errors are.

use super::listener::{Busy, ConnInfo};
use super::Shared;
use crate::http1::head::{HeadError, Limits};
use crate::http1::server::{self, End, Settings};
use crate::metrics::{count_answer, Answer, GLOBAL};
use crate::pipeline;
use bytes::{Buf as _, BytesMut};
use futures_util::FutureExt as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads the first bytes of `io`: with them, `Some(true)` for HTTP/2's
/// preface, `Some(false)` for anything else (HTTP/1, or bytes the HTTP/1
/// loop refuses), `None` when the client closed or failed before a byte.
pub async fn sniff<I: AsyncRead + Unpin>(mut io: I) -> (I, BytesMut, Option<bool>) {
    let mut first = BytesMut::new();
    let verdict = loop {
        first.reserve(4096);
        match io.read_buf(&mut first).await {
            Ok(0) | Err(_) if first.is_empty() => break None,
            Ok(0) | Err(_) => break Some(false),
            Ok(_) => {}
        }
        let n = first.len().min(H2_PREFACE.len());
        if first[..n] != H2_PREFACE[..n] {
            break Some(false);
        }
        if n == H2_PREFACE.len() {
            break Some(true);
        }
    };
    (io, first, verdict)
}

/// Serves an HTTP/1 connection whose first bytes are `first`. The setup
/// happens here, so the future an idle connection holds carries only the
/// loop and what its ending needs.
pub fn serve<I>(io: I, first: BytesMut, shared: &Arc<Shared>, conn: Arc<ConnInfo>) -> impl Future<Output = ()>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let settings = {
        let l = &shared.live.load().snap.conn;
        // As hyper was set up: a head may run a little past max_header_bytes, which
        // the parse-limits phase then answers exactly.
        Settings {
            limits: Limits { max_headers: l.max_headers, max_head_bytes: (l.max_header_bytes + 1024).max(8192) },
            chunk: Default::default(),
        }
    };
    let peer = conn.facts.peer;
    let facts = conn.clone();
    let inbound = |src: Option<Arc<dyn server::Source>>| src.map_or(crate::body::Body::Empty, crate::body::Body::inbound);
    let shared = shared.clone();
    let requests = server::serve(io, first, settings, shared.shutdown.clone(), inbound, move |req| {
        let conn = conn.clone();
        let shared = shared.clone();
        // Not boxed here: the loop boxes each request's whole state, this with it.
        async move {
            let _busy = Busy::new(&conn);
            let live = shared.live.load_full();
            pipeline::handle(req, &conn.facts, &live.snap).await
        }
    });
    // A combinator, not an async block: awaiting `requests` moved into a
    // block would hold the connection's future twice.
    requests.then(move |end| {
        count_end(end, peer);
        // An upgraded connection lives on as its tunnel: its permit and slot with it.
        async move { facts.facts.tunnels_closed().await }
    })
}

/// Counts how a connection ended, as hyper's connection errors are counted.
fn count_end(end: End, peer: std::net::SocketAddr) {
    match end {
        End::Clean | End::Stopped | End::Upgraded => {}
        End::Refused(e) => {
            GLOBAL.connection_errors.fetch_add(1, Relaxed);
            count_answer(match e {
                HeadError::TooLarge | HeadError::TooManyHeaders => Answer::HeadersTooLarge,
                _ => Answer::BadRequest,
            });
            tracing::debug!(%peer, error = %e, "request head refused");
        }
        End::Truncated | End::BadAnswer | End::Io(_) => {
            GLOBAL.connection_errors.fetch_add(1, Relaxed);
            tracing::debug!(%peer, end = ?end, "client connection error");
        }
    }
}

/// A stream with bytes already read off it put back in front.
pub struct Prefixed<I> {
    io: I,
    first: BytesMut,
}

impl<I> Prefixed<I> {
    pub fn new(io: I, first: BytesMut) -> Prefixed<I> {
        Prefixed { io, first }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if !self.first.is_empty() {
            let n = self.first.len().min(buf.remaining());
            buf.put_slice(&self.first[..n]);
            self.first.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
