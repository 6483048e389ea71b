//! An upstream HTTP/1.1 connection driven by the task of the request that
//! holds it: the request's task writes the head (and a first piece of the
//! body) in one write, streams the rest of the body, and reads the response
//! head, and the response body is read off the same connection by whoever
//! polls it (the client's task). No connection task and no channel between a
//! request and its upstream, unlike hyper's client, whose connection runs on
//! a task of its own. Between requests the connection lies in its pool with
//! nobody reading it; [`Conn::closed_while_idle`] looks once, without
//! waiting, whether the upstream closed it meanwhile.

use super::body::{fill, Body as Reader, BodyError};
use super::head::{parse_response, Framing, HeadError, Limits, ResponseHead};
use super::write;
use bytes::{Buf as _, Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, Method, Request};
use http_body::Body as HttpBody;
use std::io::Write as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How much of an upstream's response head is read before it is refused
/// (hyper's client allows 100 fields).
pub const RESPONSE_LIMITS: Limits = Limits { max_headers: 128, max_head_bytes: 64 * 1024 };

/// A body piece of at most this many bytes goes out in the same write as the
/// head (or its chunk framing); a larger one is written on its own.
const COPY_MAX: usize = 16 * 1024;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing the request: {0}")]
    Write(std::io::Error),
    #[error("the connection closed before a response head")]
    Closed,
    #[error("the connection closed in the middle of the response head")]
    Truncated,
    #[error("reading the response: {0}")]
    Read(std::io::Error),
    #[error("a malformed response head: {0}")]
    Head(#[from] HeadError),
    #[error("the request body failed: {0}")]
    Body(BoxError),
    #[error("the request body did not match its Content-Length")]
    BodyLength,
}

impl Error {
    /// The upstream reset the connection, or it broke under the request.
    pub fn is_reset(&self) -> bool {
        use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
        matches!(self, Error::Write(e) | Error::Read(e) if matches!(e.kind(), ConnectionReset | ConnectionAborted | BrokenPipe))
    }

    /// The connection ended before a response head: nothing of an answer exists.
    pub fn is_early(&self) -> bool {
        matches!(self, Error::Closed | Error::Truncated) || self.is_reset()
    }

    /// The request body's own failure (too large, too slow), if that is what it was.
    pub fn body(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match self {
            Error::Body(e) => Some(&**e),
            _ => None,
        }
    }
}

/// A failed exchange, with the request when none of it was written (it may
/// then go again, on this connection's successor or elsewhere).
pub struct Failed<B> {
    pub error: Error,
    pub unsent: Option<Request<B>>,
    /// A bodiless request that was written but got no byte of an answer: the
    /// caller may send it again where that is safe (an idempotent request on a
    /// reused connection the upstream closed as the request arrived).
    pub resend: Option<Request<B>>,
}

/// How the request's body is framed on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Out {
    None,
    /// Content-Length, the request's own or one the proxy added.
    Length(u64),
    Chunked,
}

/// How far the request got: written whole, or cut short by the upstream's
/// answer (its head, read).
enum Upload {
    Sent,
    Answered(ResponseHead),
}

/// The body's next frame (none at its end), or the upstream's answer first.
enum Next {
    Frame(Option<Result<http_body::Frame<Bytes>, BoxError>>),
    Answered(ResponseHead),
}

/// What the head's write took of the body: a first piece too large to copy
/// (still to write), whether that was all, the bytes of it, its trailers.
struct Sent {
    large: Option<Bytes>,
    ended: bool,
    bytes: u64,
    trailers: Option<HeaderMap>,
}

/// One upstream connection: its stream, what was read past the last answer,
/// and the buffer requests are written from.
pub struct Conn<S> {
    io: S,
    buf: BytesMut,
    out: Vec<u8>,
    /// An answer came before the request was written whole: the connection
    /// cannot carry another request.
    spent: bool,
    /// The upstream closed its side while the request was going out.
    read_closed: bool,
    /// What lives as long as the connection (its pool's count of open
    /// connections, a permit under a connection cap).
    _hold: Option<Box<dyn Send + Sync>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// A connection over `io`; `hold` is dropped when the connection is.
    pub fn new(io: S, hold: Option<Box<dyn Send + Sync>>) -> Conn<S> {
        Conn { io, buf: BytesMut::new(), out: Vec::new(), spent: false, read_closed: false, _hold: hold }
    }

    /// The stream and the bytes read past the response head (a tunnel's first bytes after a 101).
    pub fn into_parts(self) -> (S, BytesMut) {
        (self.io, self.buf)
    }

    /// Whether the upstream closed the connection, failed it, or sent bytes
    /// nobody asked for while it idled: its read is polled once, never waited on.
    pub fn closed_while_idle(&mut self) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        !matches!(fill(&mut cx, &mut self.io, &mut self.buf), Poll::Pending)
    }

    /// Gives back the read buffer's memory while the connection idles in its
    /// pool (nginx frees an idle upstream connection's buffers too); nothing
    /// when bytes are left in it.
    pub fn rest(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }

    /// Whether the connection may carry another request: its last request
    /// was written whole, the answer read to its end and nothing came after it.
    pub fn clean(&self) -> bool {
        !self.spent && self.buf.is_empty()
    }

    /// Sends `req` and reads the response head (1xx interim answers other
    /// than 101 are read past). The response body, if its head says there
    /// is one, is then read with [`Conn::poll_body`].
    pub async fn send<B>(&mut self, req: Request<B>) -> Result<ResponseHead, Failed<B>>
    where
        B: HttpBody<Data = Bytes, Error = BoxError> + Unpin,
    {
        let (parts, mut body) = req.into_parts();
        let out = framing(&parts.method, &parts.headers, &body);
        let mut line = [0u8; 40];
        let extra = match out {
            Out::Length(n) if !parts.headers.contains_key(CONTENT_LENGTH) => {
                let mut w = &mut line[..];
                let _ = write!(w, "content-length: {n}\r\n");
                let left = w.len();
                &line[..40 - left]
            }
            Out::Chunked => b"transfer-encoding: chunked\r\n".as_slice(),
            _ => b"",
        };
        self.out.clear();
        write::request_head_with(&mut self.out, &parts.method, &parts.uri, &parts.headers, extra);
        // A first piece of the body that is already here goes in the head's write.
        let mut taken = false;
        let mut ended = out == Out::None;
        let mut sent = 0u64;
        let mut trailers = None;
        let mut large = None;
        if !ended {
            match std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
                Poll::Ready(Some(Ok(f))) => {
                    taken = true;
                    match f.into_data() {
                        Ok(data) => {
                            sent += data.len() as u64;
                            large = self.frame_into_out(out, data);
                        }
                        Err(f) => {
                            trailers = f.into_trailers().ok();
                            ended = true;
                        }
                    }
                }
                Poll::Ready(Some(Err(e))) => return Err(Failed { error: Error::Body(e), unsent: None, resend: None }),
                Poll::Ready(None) => ended = true,
                Poll::Pending => {}
            }
        }
        if let Err((e, written)) = write_out(&mut self.io, &self.out).await {
            let unsent = (written == 0 && !taken).then(|| Request::from_parts(parts, body));
            return Err(Failed { error: Error::Write(e), unsent, resend: None });
        }
        let fail = |error| Failed { error, unsent: None, resend: None };
        // The rest goes out while the answer is watched for: an upstream may
        // answer before it has read the body (a 413, a 401) and stop reading.
        let first = Sent { large, ended, bytes: sent, trailers };
        if let Upload::Answered(head) = self.upload(out, &mut body, first, &parts.method).await.map_err(fail)? {
            // Not written whole: the connection ends with this answer.
            self.spent = true;
            return Ok(head);
        }
        self.io.flush().await.map_err(|e| fail(Error::Write(e)))?;
        match self.read_head(&parts.method).await {
            Ok(head) => Ok(head),
            Err(error) => {
                let resend = (out == Out::None && error.is_early()).then(|| Request::from_parts(parts, body));
                Err(Failed { error, unsent: None, resend })
            }
        }
    }

    /// Writes the rest of the request after its head's write: a large first
    /// piece, the body as it comes, its last chunk with the trailers. Stops
    /// early with `Answered` when the upstream's answer arrives first.
    async fn upload<B>(&mut self, out: Out, body: &mut B, first: Sent, method: &Method) -> Result<Upload, Error>
    where
        B: HttpBody<Data = Bytes, Error = BoxError> + Unpin,
    {
        let Sent { large, ended, bytes: mut sent, mut trailers } = first;
        if let Some(data) = large {
            if let a @ Upload::Answered(_) = self.write_large(out, &data, method).await? {
                return Ok(a);
            }
        }
        if !ended {
            loop {
                let frame = match self.next_frame(body, method).await? {
                    Next::Answered(head) => return Ok(Upload::Answered(head)),
                    Next::Frame(None) => break,
                    Next::Frame(Some(f)) => f.map_err(Error::Body)?,
                };
                let data = match frame.into_data() {
                    Ok(data) => data,
                    Err(f) => {
                        trailers = f.into_trailers().ok();
                        break;
                    }
                };
                sent += data.len() as u64;
                if matches!(out, Out::Length(n) if sent > n) {
                    return Err(Error::BodyLength);
                }
                self.out.clear();
                let large = self.frame_into_out(out, data);
                if let a @ Upload::Answered(_) = self.write_out_watching(method).await? {
                    return Ok(a);
                }
                if let Some(data) = large {
                    if let a @ Upload::Answered(_) = self.write_large(out, &data, method).await? {
                        return Ok(a);
                    }
                }
            }
        }
        if matches!(out, Out::Length(n) if sent != n) {
            return Err(Error::BodyLength);
        }
        if out == Out::Chunked {
            self.out.clear();
            let mut t = Vec::new();
            if let Some(h) = &trailers {
                trailer_lines(&mut t, h);
            }
            write::last_chunk(&mut self.out, &t);
            return self.write_out_watching(method).await;
        }
        Ok(Upload::Sent)
    }

    /// A body piece too large to copy, written on its own (with its chunk's end).
    async fn write_large(&mut self, out: Out, data: &[u8], method: &Method) -> Result<Upload, Error> {
        if let a @ Upload::Answered(_) = self.write_watching(data, method).await? {
            return Ok(a);
        }
        if out == Out::Chunked {
            return self.write_watching(write::CHUNK_END, method).await;
        }
        Ok(Upload::Sent)
    }

    /// Writes what `self.out` holds, as [`Conn::write_watching`].
    async fn write_out_watching(&mut self, method: &Method) -> Result<Upload, Error> {
        let out = std::mem::take(&mut self.out);
        let r = self.write_watching(&out, method).await;
        self.out = out;
        r
    }

    /// Writes `data` whole, reading what the upstream sends meanwhile:
    /// `Answered` once a final response head is in, and the rest unsent.
    async fn write_watching(&mut self, data: &[u8], method: &Method) -> Result<Upload, Error> {
        let mut at = 0;
        let written = std::future::poll_fn(|cx| {
            while at < data.len() {
                match Pin::new(&mut self.io).poll_write(cx, &data[at..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(Error::Write(std::io::ErrorKind::WriteZero.into()))),
                    Poll::Ready(Ok(n)) => at += n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::Write(e))),
                    Poll::Pending => return self.poll_answer(cx, method).map(|r| r.map(Upload::Answered)),
                }
            }
            Poll::Ready(Ok(Upload::Sent))
        })
        .await;
        match written {
            // It stopped reading and closed: its answer may be here already.
            Err(Error::Write(e)) => self.answer_here(method).map(Upload::Answered).ok_or(Error::Write(e)),
            w => w,
        }
    }

    /// The body's next frame, or `Answered` when the upstream's answer
    /// arrives while the body has nothing ready.
    async fn next_frame<B>(&mut self, body: &mut B, method: &Method) -> Result<Next, Error>
    where
        B: HttpBody<Data = Bytes, Error = BoxError> + Unpin,
    {
        std::future::poll_fn(|cx| match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Ready(f) => Poll::Ready(Ok(Next::Frame(f))),
            Poll::Pending => self.poll_answer(cx, method).map(|r| r.map(Next::Answered)),
        })
        .await
    }

    /// Reads what the upstream sent while the request is still going out;
    /// ready with the answer's head once it is in. Pending after the upstream
    /// closed its side: the write in progress then says what became of it.
    fn poll_answer(&mut self, cx: &mut Context<'_>, method: &Method) -> Poll<Result<ResponseHead, Error>> {
        loop {
            if let Some(head) = self.final_head(method)? {
                return Poll::Ready(Ok(head));
            }
            if self.read_closed {
                return Poll::Pending;
            }
            match fill(cx, &mut self.io, &mut self.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    self.read_closed = true;
                    return Poll::Pending;
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::Read(e))),
            }
        }
    }

    /// The answer's head, if it is (or, read now without waiting, comes) in.
    fn answer_here(&mut self, method: &Method) -> Option<ResponseHead> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        loop {
            if let Ok(Some(head)) = self.final_head(method) {
                return Some(head);
            }
            match fill(&mut cx, &mut self.io, &mut self.buf) {
                Poll::Ready(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }

    /// The final response head at the start of the buffer, taken off it;
    /// interim 1xx answers (other than 101) before it are read past.
    fn final_head(&mut self, method: &Method) -> Result<Option<ResponseHead>, Error> {
        while !self.buf.is_empty() {
            let Some(h) = parse_response(&self.buf, method, &RESPONSE_LIMITS)? else { return Ok(None) };
            self.buf.advance(h.len);
            if !h.status.is_informational() || h.status == http::StatusCode::SWITCHING_PROTOCOLS {
                return Ok(Some(h));
            }
        }
        Ok(None)
    }

    /// Puts `data` (framed as `out` asks) after what `self.out` holds, or
    /// gives it back when it is too large to copy.
    fn frame_into_out(&mut self, out: Out, data: Bytes) -> Option<Bytes> {
        if data.is_empty() {
            return None;
        }
        if out == Out::Chunked {
            write::chunk_start(&mut self.out, data.len());
        }
        if data.len() > COPY_MAX {
            return Some(data);
        }
        self.out.extend_from_slice(&data);
        if out == Out::Chunked {
            self.out.extend_from_slice(write::CHUNK_END);
        }
        None
    }

    /// Reads the response head to `method`'s request, past 1xx interim answers.
    async fn read_head(&mut self, method: &Method) -> Result<ResponseHead, Error> {
        loop {
            if let Some(h) = self.final_head(method)? {
                return Ok(h);
            }
            let n = std::future::poll_fn(|cx| fill(cx, &mut self.io, &mut self.buf)).await.map_err(Error::Read)?;
            if n == 0 {
                return Err(if self.buf.is_empty() { Error::Closed } else { Error::Truncated });
            }
        }
    }

    /// The next piece of the response body `reader` frames.
    pub fn poll_body(&mut self, cx: &mut Context<'_>, reader: &mut Reader) -> Poll<Result<Option<Bytes>, BodyError>> {
        reader.poll_next(cx, &mut self.io, &mut self.buf)
    }
}

/// The framing of a request body: the request's own Content-Length, none
/// for a body known empty (a Content-Length of 0 for methods that carry
/// one), the size when it is known, else chunked.
fn framing<B: HttpBody>(method: &Method, headers: &HeaderMap, body: &B) -> Out {
    if let Some(n) = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()) {
        return Out::Length(n);
    }
    if body.is_end_stream() {
        return if matches!(*method, Method::POST | Method::PUT | Method::PATCH) { Out::Length(0) } else { Out::None };
    }
    match body.size_hint().exact() {
        Some(n) => Out::Length(n),
        None => Out::Chunked,
    }
}

/// Trailer fields as the last chunk carries them.
fn trailer_lines(out: &mut Vec<u8>, h: &HeaderMap) {
    for (name, value) in h {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Writes `bytes` whole; on failure, the error and how much was written.
async fn write_out<S: AsyncWrite + Unpin>(io: &mut S, bytes: &[u8]) -> Result<(), (std::io::Error, usize)> {
    let mut written = 0;
    while written < bytes.len() {
        match io.write(&bytes[written..]).await {
            Ok(0) => return Err((std::io::ErrorKind::WriteZero.into(), written)),
            Ok(n) => written += n,
            Err(e) => return Err((e, written)),
        }
    }
    Ok(())
}

/// Whether a response's connection can carry another request once its
/// body is read: both sides said keep-alive and the body has an end.
pub fn reusable(head: &ResponseHead) -> bool {
    head.keep_alive && head.framing != Framing::UntilClose && head.status != http::StatusCode::SWITCHING_PROTOCOLS
}

#[cfg(test)]
mod tests;
