//! Serving a client connection with our own HTTP/1.1: one loop, on the
//! connection's task, reads a request head, hands the request to the handler
//! (the pipeline) with a body that reads the same connection, and writes the
//! answer back framed as the request and the answer allow; pipelined requests
//! are read one after another. The loop polls the handler's future itself, so
//! one task drives a request end to end, with no channel to another task.
//!
//! The request body and the loop share the connection's read side through a
//! mutex that is only ever taken inside a poll (never across an await): the
//! loop lends the read side to the body while the handler runs and takes it
//! back before it writes the answer. A body still unread then closes the
//! connection after the answer. Between requests an empty read buffer gives
//! its memory back, as nginx frees a keep-alive connection's buffers, and a
//! request's own state is boxed for its life, so an idle connection holds
//! only the loop.

use super::body::{Body as Reader, BodyError};
use super::chunked::Limits as ChunkLimits;
use super::head::{Framing, HeadError, Limits};
use super::read::{self, ReadError};
use super::write;
use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, TRANSFER_ENCODING};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as HttpBody;
use std::future::Future;
use std::io::Write as _;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadHalf, WriteHalf};
use tokio::sync::watch;

/// What a connection is held to.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub limits: Limits,
    pub chunk: ChunkLimits,
}

/// How a connection ended.
#[derive(Debug)]
pub enum End {
    /// The client closed between requests, or one side asked to close.
    Clean,
    /// A request head was refused (answered, then closed).
    Refused(HeadError),
    /// The client closed in the middle of a request head.
    Truncated,
    /// Shutdown: stopped between requests.
    Stopped,
    /// An answer's body failed or did not match its length (closed mid-answer).
    BadAnswer,
    /// A 101: the connection went to the request's tunnel.
    Upgraded,
    Io(std::io::Error),
}

/// A client connection's byte stream, whatever its type.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A client connection after its 101: the stream, and what the client sent
/// past its request head (the tunnel's first bytes).
pub struct Upgraded {
    pub io: Box<dyn Io>,
    pub read: BytesMut,
}

/// In the extensions of a request that asks for an upgrade: where its
/// connection goes once a 101 was written (hyper's `OnUpgrade` for our loop).
#[derive(Clone)]
pub struct OnUpgrade(Arc<Mutex<Option<tokio::sync::oneshot::Receiver<Upgraded>>>>);

impl OnUpgrade {
    /// The connection, once its 101 was written; an error if it never is.
    pub async fn upgraded(self) -> Result<Upgraded, Box<dyn std::error::Error + Send + Sync>> {
        let rx = self.0.lock().expect("upgrade lock").take().ok_or("the upgrade was taken already")?;
        rx.await.map_err(|_| "the connection did not switch protocols".into())
    }
}

/// Whether a request head asks to switch protocols.
fn asks_upgrade(h: &http::HeaderMap) -> bool {
    h.contains_key(http::header::UPGRADE)
}

/// An answer's body as the loop writes it: the data, and field lines the
/// body brings rendered already (a cache hit's stored fields), written
/// before the answer's own.
pub trait Outbound: HttpBody<Data = Bytes> + Unpin {
    fn rendered_fields(&self) -> &[u8] {
        b""
    }
}

/// A request body being read off its connection, as the proxy's body type
/// sees it.
pub trait Source: Send + Sync {
    fn poll_body(&self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>>;
    /// Whether the body was read to its end.
    fn ended(&self) -> bool;
    /// Bytes still to come, when the length is known.
    fn remaining(&self) -> Option<u64>;
}

/// The read side of a client connection: the stream, what was read past the
/// last head, and the body being read.
struct ReadSide<R> {
    io: R,
    buf: BytesMut,
    body: Reader,
    /// The client waits for 100 Continue before it sends the body.
    expect: bool,
    /// The body asked for bytes: the loop owes the client a 100 Continue.
    continue_due: bool,
}

impl<R: AsyncRead + Unpin + Send> Source for Mutex<Option<ReadSide<R>>> {
    fn poll_body(&self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        let mut g = self.lock().expect("read side lock");
        // The connection moved on (its answer was written): the body is cut off.
        let Some(side) = g.as_mut() else { return Poll::Ready(Some(Err(BodyError::Truncated))) };
        if std::mem::take(&mut side.expect) {
            side.continue_due = true;
        }
        match side.body.poll_next(cx, &mut side.io, &mut side.buf) {
            Poll::Ready(Ok(Some(b))) => Poll::Ready(Some(Ok(b))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn ended(&self) -> bool {
        self.lock().expect("read side lock").as_ref().is_none_or(|s| s.body.done())
    }

    fn remaining(&self) -> Option<u64> {
        self.lock().expect("read side lock").as_ref().and_then(|s| s.body.remaining())
    }
}

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Serves `io` until the client closes, a side asks to close, or `stop`
/// holds true between requests (a closed `stop` never stops it); each
/// request goes to `handle`. `first` holds bytes already read off `io` (the
/// first of a request head). `inbound` makes the handler's request body from
/// what reads it (none for a request without one).
///
/// The future it returns is what an idle connection holds, so it is kept to
/// the loop's own state: the setup happens before it, and each request's
/// state (reading the rest of its head, the handler, the answer) is boxed
/// for the request's life.
pub fn serve<I, H, F, Q, B>(
    io: I,
    first: BytesMut,
    settings: Settings,
    mut stop: watch::Receiver<bool>,
    inbound: fn(Option<Arc<dyn Source>>) -> Q,
    handle: H,
) -> impl Future<Output = End>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: FnMut(Request<Q>) -> F,
    F: Future<Output = Response<B>>,
    B: Outbound,
    B::Error: std::fmt::Display,
{
    let (r, w) = tokio::io::split(io);
    let side = ReadSide { io: r, buf: first, body: Reader::new(Framing::None, settings.chunk), expect: false, continue_due: false };
    let mut conn = Connection { side: Some(side), lent: None, w, out: Vec::new(), settings, inbound, handle };
    // The connection and `stop` are this future's own, used in place: awaiting
    // a future moved in would hold it twice.
    async move {
        match conn.run(&mut stop).await {
            Exit::End(end) => end,
            Exit::Switched(tx) => {
                let side = conn.side.take().expect("the read side is home after a request");
                let _ = tx.send(Upgraded { io: Box::new(side.io.unsplit(conn.w)), read: side.buf });
                End::Upgraded
            }
        }
    }
}

/// How the loop ended.
enum Exit {
    End(End),
    /// A 101 was written to a request that asked for its connection.
    Switched(tokio::sync::oneshot::Sender<Upgraded>),
}

/// The read side as a request's body reads it.
type Lent<R> = Arc<Mutex<Option<ReadSide<R>>>>;

/// A connection's state between requests.
struct Connection<I, H, Q> {
    /// The read side, here between requests and lent (to `lent`) during one
    /// with a body.
    side: Option<ReadSide<ReadHalf<I>>>,
    /// Made by the first request with a body: a connection of bodiless
    /// requests holds none.
    lent: Option<Lent<ReadHalf<I>>>,
    w: WriteHalf<I>,
    /// Where heads are written; emptied of its memory while idle.
    out: Vec<u8>,
    settings: Settings,
    inbound: fn(Option<Arc<dyn Source>>) -> Q,
    handle: H,
}

impl<I, H, F, Q, B> Connection<I, H, Q>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: FnMut(Request<Q>) -> F,
    F: Future<Output = Response<B>>,
    B: Outbound,
    B::Error: std::fmt::Display,
{
    async fn run(&mut self, stop: &mut watch::Receiver<bool>) -> Exit {
        loop {
            let side = self.side.as_mut().expect("the read side is home between requests");
            if side.buf.is_empty() {
                // Idle: no buffer of our own while waiting.
                side.buf = BytesMut::new();
                self.out = Vec::new();
                let n = tokio::select! {
                    n = read::land(&mut side.io, &mut side.buf) => n,
                    // A closed `stop` never stops the connection.
                    Ok(_) = stop.wait_for(|s| *s) => return Exit::End(End::Stopped),
                };
                match n {
                    Ok(0) => return Exit::End(End::Clean),
                    Ok(_) => {}
                    Err(e) => return Exit::End(End::Io(e)),
                }
            }
            // Boxed: a request's state exists only while it runs.
            match Box::pin(self.request()).await {
                Ok(Next::Another) => {}
                Ok(Next::Close) => {
                    let _ = self.w.shutdown().await;
                    return Exit::End(End::Clean);
                }
                Ok(Next::Switched(Some(tx))) => return Exit::Switched(tx),
                Ok(Next::Switched(None)) => return Exit::End(End::Clean),
                Err(end) => return Exit::End(end),
            }
        }
    }

    /// Reads one request's head (its first bytes are in the buffer), runs
    /// the handler and writes its answer.
    async fn request(&mut self) -> Result<Next, End> {
        let side = self.side.as_mut().expect("the read side is home between requests");
        let head = match read::request(&mut side.io, &mut side.buf, &self.settings.limits).await {
            Ok(Some(h)) => h,
            Ok(None) => return Err(End::Clean),
            Err(ReadError::Head(e)) => {
                let _ = refuse(&mut self.w, &e).await;
                return Err(End::Refused(e));
            }
            Err(ReadError::Truncated) => return Err(End::Truncated),
            Err(ReadError::Io(e)) => return Err(End::Io(e)),
        };
        let (method, version) = (head.method.clone(), head.version);
        side.body = Reader::new(head.framing, self.settings.chunk);
        side.expect = version == Version::HTTP_11
            && !side.body.done()
            && head.headers.get(EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        side.continue_due = false;
        // A body reads the connection through the lent read side; without
        // one, the read side stays home.
        let lent = match side.body.done() {
            true => None,
            false => {
                let lent = self.lent.get_or_insert_with(|| Arc::new(Mutex::new(None))).clone();
                *lent.lock().expect("read side lock") = self.side.take();
                Some(lent)
            }
        };
        let body = (self.inbound)(lent.clone().map(|l| l as Arc<dyn Source>));
        let mut req = Request::new(body);
        let upgrade = asks_upgrade(&head.headers).then(|| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            req.extensions_mut().insert(OnUpgrade(Arc::new(Mutex::new(Some(rx)))));
            tx
        });
        *req.method_mut() = head.method;
        *req.uri_mut() = head.uri;
        *req.version_mut() = version;
        *req.headers_mut() = head.headers;
        // Pinned where it is made: the handler's future is the largest part of
        // a request's state, and each move of it is a copy.
        let handler = pin!((self.handle)(req));
        let resp = drive(handler, lent.as_deref(), &mut self.w).await;
        if let Some(lent) = lent {
            self.side = lent.lock().expect("read side lock").take();
        }
        let resp = resp.map_err(End::Io)?;
        // A body left unread would be read as the next request: close after this answer.
        let keep_alive = head.keep_alive && self.side.as_ref().is_some_and(|s| s.body.done());
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            answer(&mut self.w, &mut self.out, resp, &method, version, false).await?;
            return Ok(Next::Switched(upgrade));
        }
        Ok(if answer(&mut self.w, &mut self.out, resp, &method, version, keep_alive).await? { Next::Another } else { Next::Close })
    }
}

/// What the connection does after an answer.
enum Next {
    /// Reads the next request.
    Another,
    /// Closes.
    Close,
    /// A 101 was written: the connection goes to the request's tunnel
    /// (when the request asked for one).
    Switched(Option<tokio::sync::oneshot::Sender<Upgraded>>),
}

/// Polls the handler's future; a 100 Continue goes out when its body first
/// asks for bytes.
async fn drive<F, R, W, B>(mut fut: Pin<&mut F>, lent: Option<&Mutex<Option<ReadSide<R>>>>, w: &mut W) -> std::io::Result<Response<B>>
where
    F: Future<Output = Response<B>>,
    W: AsyncWrite + Unpin,
{
    let mut sent = CONTINUE.len();
    std::future::poll_fn(|cx| loop {
        if let Poll::Ready(r) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(r));
        }
        if sent == CONTINUE.len() {
            let due = lent.is_some_and(|l| l.lock().expect("read side lock").as_mut().is_some_and(|s| std::mem::take(&mut s.continue_due)));
            if !due {
                return Poll::Pending;
            }
            sent = 0;
        }
        match Pin::new(&mut *w).poll_write(cx, &CONTINUE[sent..]) {
            Poll::Ready(Ok(n)) if n > 0 => sent += n,
            Poll::Ready(Ok(_)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        if sent == CONTINUE.len() {
            // Sent: the body now waits for the client's bytes; poll the handler again.
            continue;
        }
    })
    .await
}

/// How an answer's body goes on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Out {
    None,
    Length(u64),
    Chunked,
    /// HTTP/1.0 without a length: the body ends when the connection closes.
    UntilClose,
}

/// Writes `resp` to a `method` request of `version`; whether the connection
/// goes on to another request.
async fn answer<W, B>(
    w: &mut W,
    out: &mut Vec<u8>,
    resp: Response<B>,
    method: &Method,
    version: Version,
    keep_alive: bool,
) -> Result<bool, End>
where
    W: AsyncWrite + Unpin,
    B: Outbound,
    B::Error: std::fmt::Display,
{
    let (mut parts, mut body) = resp.into_parts();
    let status = parts.status;
    let bodiless =
        *method == Method::HEAD || status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let asked_close = parts.headers.get(CONNECTION).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    if !switching {
        // A 101 keeps its `Connection: upgrade`; any other answer's is the loop's to write.
        parts.headers.remove(CONNECTION);
    }
    parts.headers.remove(TRANSFER_ENCODING);
    let declared: Option<u64> = parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let framing = match (bodiless, declared, body.size_hint().exact()) {
        (true, ..) => Out::None,
        (false, Some(n), _) | (false, None, Some(n)) => Out::Length(n),
        (false, None, None) if version == Version::HTTP_11 => Out::Chunked,
        (false, None, None) => Out::UntilClose,
    };
    let keep_alive = keep_alive && !asked_close && framing != Out::UntilClose;
    let mut extra = [0u8; 128];
    let used = {
        let mut e = &mut extra[..];
        if !parts.headers.contains_key(DATE) {
            // Written as it is formatted, not through a String.
            let _ = write!(e, "date: {}\r\n", httpdate::HttpDate::from(std::time::SystemTime::now()));
        }
        match framing {
            Out::Length(n) if declared.is_none() => {
                let _ = write!(e, "content-length: {n}\r\n");
            }
            // A HEAD answer names the length its GET would have, when it is known.
            Out::None if *method == Method::HEAD && declared.is_none() => {
                if let Some(n) = body.size_hint().exact() {
                    let _ = write!(e, "content-length: {n}\r\n");
                }
            }
            Out::Chunked => {
                let _ = e.write_all(b"transfer-encoding: chunked\r\n");
            }
            _ => {}
        }
        match (keep_alive, version) {
            _ if switching => {}
            // HTTP/1.0 closes unless told otherwise: nothing to say.
            (false, Version::HTTP_10) => {}
            (false, _) => {
                let _ = e.write_all(b"connection: close\r\n");
            }
            (true, Version::HTTP_10) => {
                let _ = e.write_all(b"connection: keep-alive\r\n");
            }
            _ => {}
        }
        128 - e.len()
    };
    out.clear();
    // One allocation for the head and a small body that goes in its write
    // (the buffer is given back while the connection idles).
    let inline = body.size_hint().exact().filter(|&n| n <= COPY_MAX as u64 && !bodiless).unwrap_or(0) as usize;
    out.reserve(write::head_size(&parts.headers, body.rendered_fields(), used) + inline + 32);
    write::response_head_with(out, version, status, &parts.headers, body.rendered_fields(), &extra[..used]);
    let io = |e| End::Io(e);
    if framing == Out::None {
        w.write_all(out).await.map_err(io)?;
        w.flush().await.map_err(io)?;
        return Ok(keep_alive);
    }
    let mut sent = 0u64;
    let mut trailers = None;
    loop {
        match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "an answer's body failed; the connection closes");
                let _ = w.write_all(out).await;
                return Err(End::BadAnswer);
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    sent += data.len() as u64;
                    if matches!(framing, Out::Length(n) if sent > n) {
                        return Err(End::BadAnswer);
                    }
                    if framing == Out::Chunked {
                        write::chunk_start(out, data.len());
                    }
                    let end = if framing == Out::Chunked && !data.is_empty() { write::CHUNK_END } else { b"" };
                    if data.len() > COPY_MAX {
                        // Gathered with what comes before and after it, not copied.
                        write_all_vectored(w, [out, &data, end]).await.map_err(io)?;
                        out.clear();
                        continue;
                    }
                    out.extend_from_slice(&data);
                    out.extend_from_slice(end);
                    // The head goes out with the first piece; each piece as it comes
                    // (a streamed answer is not held back), the last with the body's end.
                    if !body.is_end_stream() {
                        w.write_all(out).await.map_err(io)?;
                        out.clear();
                    }
                }
                Err(f) => trailers = f.into_trailers().ok(),
            },
        }
        if body.is_end_stream() {
            break;
        }
    }
    if matches!(framing, Out::Length(n) if sent != n) {
        let _ = w.write_all(out).await;
        return Err(End::BadAnswer);
    }
    if framing == Out::Chunked {
        let mut t = Vec::new();
        for (name, value) in trailers.iter().flatten() {
            t.extend_from_slice(name.as_str().as_bytes());
            t.extend_from_slice(b": ");
            t.extend_from_slice(value.as_bytes());
            t.extend_from_slice(b"\r\n");
        }
        write::last_chunk(out, &t);
    }
    w.write_all(out).await.map_err(io)?;
    out.clear();
    w.flush().await.map_err(io)?;
    Ok(keep_alive)
}

/// A body piece of at most this many bytes is copied next to the head (or its
/// chunk framing) for one write; a larger one is written from where it is.
const COPY_MAX: usize = 1024;

/// Writes the three pieces whole, gathered in as few writes as the stream takes.
async fn write_all_vectored<W: AsyncWrite + Unpin>(w: &mut W, parts: [&[u8]; 3]) -> std::io::Result<()> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut done = 0;
    while done < total {
        let mut skip = done;
        let slices = parts.map(|p| {
            let from = skip.min(p.len());
            skip -= from;
            std::io::IoSlice::new(&p[from..])
        });
        let n = std::future::poll_fn(|cx| Pin::new(&mut *w).poll_write_vectored(cx, &slices)).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        done += n;
    }
    Ok(())
}

/// The answer to a refused head, then the connection closes.
async fn refuse<W: AsyncWrite + Unpin>(w: &mut W, e: &HeadError) -> std::io::Result<()> {
    let status = e.status();
    let text = format!("{e}\n");
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        text.len()
    );
    w.write_all(head.as_bytes()).await?;
    w.write_all(text.as_bytes()).await?;
    w.shutdown().await
}

#[cfg(test)]
mod tests;
