//! The one body type that flows through the proxy, both ways.
//!
//! An enum rather than a boxed trait object, so that forwarding a request or a
//! response costs no allocation: either nothing, a buffer we made ourselves, or a
//! streamed hyper body (with a byte cap on request bodies, and an optional guard
//! that keeps an endpoint's in-flight count until the response has been sent).

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body longer than the configured limit.
#[derive(Debug, thiserror::Error)]
#[error("request body is larger than the limit of {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// A request body that stalled past the read timeout or crawled below the minimum rate.
#[derive(Debug, thiserror::Error)]
#[error("the client sent its request body too slowly")]
pub struct BodyTooSlow;

/// An upstream response body that stalled past the service's `body_idle`.
#[derive(Debug, thiserror::Error)]
#[error("the upstream stopped sending its response body")]
pub struct UpstreamStalled;

/// Pacing of a body: the longest gap between chunks, and (request bodies) a
/// minimum average rate enforced after a grace period.
pub struct Pace {
    sleep: Pin<Box<tokio::time::Sleep>>,
    gap: std::time::Duration,
    min_rate: u64,
    started: std::time::Instant,
    bytes: u64,
    /// The clock starts when the body is first read, not while an upstream
    /// connection is still being made.
    polled: bool,
}

/// The grace period before the minimum rate applies.
const RATE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

impl Pace {
    pub fn new(gap: std::time::Duration, min_rate: u64) -> Box<Pace> {
        Box::new(Pace {
            sleep: Box::pin(tokio::time::sleep(gap)),
            gap,
            min_rate,
            started: std::time::Instant::now(),
            bytes: 0,
            polled: false,
        })
    }

    fn start(&mut self) {
        if !self.polled {
            self.polled = true;
            self.started = std::time::Instant::now();
            self.sleep.as_mut().reset(tokio::time::Instant::now() + self.gap);
        }
    }

    /// Records `n` bytes; false when the average rate is too low.
    fn advance(&mut self, n: u64) -> bool {
        self.bytes += n;
        let now = tokio::time::Instant::now();
        self.sleep.as_mut().reset(now + self.gap);
        let elapsed = self.started.elapsed();
        !(self.min_rate > 0 && elapsed > RATE_GRACE && (self.bytes as f64 / elapsed.as_secs_f64()) < self.min_rate as f64)
    }
}

/// A body of another kind, behind one allocation (the cache's tee, which keeps
/// a response for the store as it streams).
pub type Boxed = Box<dyn HttpBody<Data = Bytes, Error = BoxError> + Send + Sync + Unpin>;

/// An upstream HTTP/1 connection of our own client, driven by whoever holds it.
pub type OwnConn = crate::http1::client::Conn<crate::tls::stream::Stream>;

/// The HTTP/1 connection an upstream response arrived on.
pub enum Conn {
    /// hyper's client (`[server] http1 = "hyper"`): a handle to its connection task.
    Hyper(hyper::client::conn::http1::SendRequest<Body>),
    /// Our own client: the connection itself.
    Own(Box<OwnConn>),
}

/// Whoever lent an upstream response body its connection (an endpoint): told
/// when the body was read whole, so the connection can serve another request,
/// and when the response is done with, so its in-flight count drops.
pub trait Release: Send + Sync {
    /// The body was read to its end on `conn`.
    fn reuse(&self, conn: Conn);
    /// The response is finished or abandoned (a connection not given back closes).
    fn done(&self);
}

/// What a streaming upstream response body holds until it ends.
pub struct Held {
    owner: Arc<dyn Release>,
    conn: Option<Conn>,
}

impl Held {
    /// Holds `owner` (and, over HTTP/1, the connection to give back) while the body streams.
    pub fn new(owner: Arc<dyn Release>, conn: Option<Conn>) -> Held {
        Held { owner, conn }
    }

    /// Keeps `conn` too, to give back when the body has been read whole.
    pub fn keep(mut self, conn: Option<Conn>) -> Held {
        self.conn = conn;
        self
    }

    /// The body was read whole: the connection can serve another request.
    pub fn finish(mut self) {
        if let Some(c) = self.conn.take() {
            self.owner.reuse(c);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.owner.done();
    }
}

pub enum Body {
    Empty,
    /// A body of another kind (a response being stored by the cache as it streams).
    Boxed(Boxed),
    Full(Option<Bytes>),
    /// A cache hit: its data, and the stored response's fields rendered as
    /// they go on the wire (`cache::fields`). Our HTTP/1 loop writes them as
    /// they are; any other writer gets them as header fields first
    /// (`cache::fields::spread`).
    Stored {
        fields: Bytes,
        data: Option<Bytes>,
    },
    Stream {
        inner: Incoming,
        /// Bytes still allowed; `u64::MAX` for no limit.
        remaining: u64,
        limit: u64,
        held: Option<Held>,
        /// Request bodies: read timeout and minimum rate. Response bodies: the
        /// idle timeout, made only when a read first has to wait.
        pace: Option<Box<Pace>>,
        /// Response bodies: the longest gap between reads, in milliseconds (0: none).
        idle_ms: u32,
    },
    /// An upstream response body read off our own client's connection.
    Own(Box<Own>),
    /// A request body read off the client's connection by our own server,
    /// with the same byte cap and pacing as a streamed one.
    Inbound {
        src: Arc<dyn crate::http1::server::Source>,
        remaining: u64,
        limit: u64,
        pace: Option<Box<Pace>>,
    },
}

/// A response body on an upstream connection of our own client: read by the
/// task that polls the body, and the connection given back once it has ended.
pub struct Own {
    /// Until the body has ended.
    conn: Option<Box<OwnConn>>,
    reader: crate::http1::body::Body,
    /// The connection may carry another request after this body.
    reusable: bool,
    held: Option<Held>,
    pace: Option<Box<Pace>>,
    idle_ms: u32,
    /// Trailer fields still to be given (a chunked body's, once read).
    trailers_due: bool,
}

impl Own {
    /// The body has ended: the connection goes back to its pool when it can
    /// carry another request, and the endpoint is told the response is done.
    fn finish(&mut self) {
        let conn = self.conn.take();
        if let Some(h) = self.held.take() {
            match conn {
                Some(c) if self.reusable && c.clean() => h.keep(Some(Conn::Own(c))).finish(),
                _ => drop(h),
            }
        }
        self.trailers_due = !self.reader.trailers().is_empty();
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(conn) = self.conn.as_mut() else {
            if std::mem::take(&mut self.trailers_due) {
                return Poll::Ready(Some(Ok(Frame::trailers(trailer_fields(self.reader.trailers())))));
            }
            return Poll::Ready(None);
        };
        match conn.poll_body(cx, &mut self.reader) {
            Poll::Ready(Ok(Some(data))) => {
                if let Some(p) = &mut self.pace {
                    p.advance(data.len() as u64);
                }
                if self.reader.done() {
                    self.finish();
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Ok(None)) => {
                self.finish();
                self.poll(cx)
            }
            Poll::Ready(Err(e)) => {
                // The connection closes; the endpoint is told the response is done.
                self.conn = None;
                self.held = None;
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Pending => match stalled(&mut self.pace, self.idle_ms, true, cx) {
                Some(e) => {
                    self.conn = None;
                    self.held = None;
                    Poll::Ready(Some(Err(e)))
                }
                None => Poll::Pending,
            },
        }
    }
}

/// Trailer fields as the chunked decoder keeps them (`name: value` lines).
fn trailer_fields(raw: &[u8]) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for line in raw.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let value = line[colon + 1..].trim_ascii();
        if let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(&line[..colon]), http::HeaderValue::from_bytes(value)) {
            h.append(k, v);
        }
    }
    h
}

/// A body that has to wait: the idle timer (made on the first wait of a
/// response body), and the error once it ran out.
fn stalled(pace: &mut Option<Box<Pace>>, idle_ms: u32, upstream: bool, cx: &mut Context<'_>) -> Option<BoxError> {
    if pace.is_none() && idle_ms > 0 {
        // The first wait of a response body: only now is a timer worth it.
        let mut p = Pace::new(std::time::Duration::from_millis(u64::from(idle_ms)), 0);
        p.start();
        *pace = Some(p);
    }
    let p = pace.as_mut()?;
    if p.sleep.as_mut().poll(cx).is_pending() {
        return None;
    }
    Some(if upstream {
        crate::metrics::GLOBAL.upstream_stalled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!("upstream response body stalled past body_idle; cut off");
        Box::new(UpstreamStalled)
    } else {
        Box::new(BodyTooSlow)
    })
}

impl Body {
    pub fn empty() -> Body {
        Body::Empty
    }

    pub fn full(b: impl Into<Bytes>) -> Body {
        Body::Full(Some(b.into()))
    }

    /// A streamed body with no limit.
    pub fn stream(inner: Incoming) -> Body {
        Body::Stream { inner, remaining: u64::MAX, limit: u64::MAX, held: None, pace: None, idle_ms: 0 }
    }

    /// A request body our own server reads off the client's connection (no
    /// limit until [`Body::limit`] sets one).
    pub fn inbound(src: Arc<dyn crate::http1::server::Source>) -> Body {
        Body::Inbound { src, remaining: u64::MAX, limit: u64::MAX, pace: None }
    }

    /// Wraps another body.
    pub fn boxed(b: impl HttpBody<Data = Bytes, Error = BoxError> + Send + Sync + Unpin + 'static) -> Body {
        Body::Boxed(Box::new(b))
    }

    /// This request body, failing once more than `max` bytes arrive, or when it
    /// stalls or crawls (`pace`: read timeout, minimum rate). The pacer is only
    /// built when there is a body to read, so bodiless requests pay no timer.
    /// A body the proxy made itself is returned as it is.
    pub fn limit(self, max: u64, pace: (std::time::Duration, u64)) -> Body {
        match self {
            Body::Stream { inner, held, .. } => {
                let pace = if inner.is_end_stream() { None } else { Some(Pace::new(pace.0, pace.1)) };
                Body::Stream { inner, remaining: max, limit: max, held, pace, idle_ms: 0 }
            }
            Body::Inbound { src, .. } => {
                let pace = if src.ended() { None } else { Some(Pace::new(pace.0, pace.1)) };
                Body::Inbound { src, remaining: max, limit: max, pace }
            }
            other => other,
        }
    }

    /// A response body on our own client's connection, framed by `reader`:
    /// `held` is finished when it ends (the connection given back when
    /// `reusable`), dropped (closing the connection) if the body is abandoned
    /// or stalls for `idle`. A body already at its end gives them back at once.
    pub fn own(conn: Box<OwnConn>, reader: crate::http1::body::Body, reusable: bool, held: Held, idle: std::time::Duration) -> Body {
        let idle_ms = idle.as_millis().min(u32::MAX as u128) as u32;
        let mut o = Own { conn: Some(conn), reader, reusable, held: Some(held), pace: None, idle_ms, trailers_due: false };
        if o.reader.done() {
            o.finish();
            return Body::Empty;
        }
        Body::Own(Box::new(o))
    }

    /// An upstream response body: `held` is finished when the body ends, dropped
    /// (closing the connection) if the body is abandoned or stalls for `idle`.
    pub fn upstream(inner: Incoming, held: Held, idle: std::time::Duration) -> Body {
        let idle_ms = idle.as_millis().min(u32::MAX as u128) as u32;
        Body::Stream { inner, remaining: u64::MAX, limit: u64::MAX, held: Some(held), pace: None, idle_ms }
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Body::Empty => "Body::Empty",
            Body::Boxed(_) => "Body::Boxed",
            Body::Full(_) => "Body::Full",
            Body::Stored { .. } => "Body::Stored",
            Body::Stream { .. } => "Body::Stream",
            Body::Own(_) => "Body::Own",
            Body::Inbound { .. } => "Body::Inbound",
        })
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Boxed(b) => Pin::new(&mut **b).poll_frame(cx),
            Body::Full(b) | Body::Stored { data: b, .. } => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream { inner, remaining, limit, held, pace, idle_ms } => {
                if let Some(p) = pace {
                    p.start();
                }
                let polled = Pin::new(&mut *inner).poll_frame(cx);
                match polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(data) = frame.data_ref() {
                            let n = data.len() as u64;
                            if n > *remaining {
                                return Poll::Ready(Some(Err(Box::new(BodyTooLarge(*limit)))));
                            }
                            *remaining -= n;
                            if let Some(p) = pace {
                                if !p.advance(n) {
                                    return Poll::Ready(Some(Err(Box::new(BodyTooSlow))));
                                }
                            }
                        }
                        if inner.is_end_stream() {
                            if let Some(h) = held.take() {
                                h.finish();
                            }
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
                    Poll::Ready(None) => {
                        if let Some(h) = held.take() {
                            h.finish();
                        }
                        Poll::Ready(None)
                    }
                    Poll::Pending => match stalled(pace, *idle_ms, held.is_some(), cx) {
                        Some(e) => Poll::Ready(Some(Err(e))),
                        None => Poll::Pending,
                    },
                }
            }
            Body::Own(o) => o.poll(cx),
            Body::Inbound { src, remaining, limit, pace } => {
                if let Some(p) = pace {
                    p.start();
                }
                match src.poll_body(cx) {
                    Poll::Ready(Some(Ok(data))) => {
                        let n = data.len() as u64;
                        if n > *remaining {
                            return Poll::Ready(Some(Err(Box::new(BodyTooLarge(*limit)))));
                        }
                        *remaining -= n;
                        if pace.as_mut().is_some_and(|p| !p.advance(n)) {
                            return Poll::Ready(Some(Err(Box::new(BodyTooSlow))));
                        }
                        Poll::Ready(Some(Ok(Frame::data(data))))
                    }
                    Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
                    Poll::Ready(None) => Poll::Ready(None),
                    Poll::Pending => match stalled(pace, 0, false, cx) {
                        Some(e) => Poll::Ready(Some(Err(e))),
                        None => Poll::Pending,
                    },
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Boxed(b) => b.is_end_stream(),
            Body::Full(b) | Body::Stored { data: b, .. } => b.is_none(),
            Body::Stream { inner, .. } => inner.is_end_stream(),
            Body::Own(o) => o.conn.is_none() && !o.trailers_due,
            Body::Inbound { src, .. } => src.ended(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Boxed(b) => b.size_hint(),
            Body::Full(Some(b)) | Body::Stored { data: Some(b), .. } => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) | Body::Stored { data: None, .. } => SizeHint::with_exact(0),
            Body::Stream { inner, .. } => inner.size_hint(),
            Body::Own(o) => match o.reader.remaining() {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
            Body::Inbound { src, .. } => match src.remaining() {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
        }
    }
}

impl crate::http1::server::Outbound for Body {
    fn rendered_fields(&self) -> &[u8] {
        match self {
            Body::Stored { fields, .. } => fields,
            _ => b"",
        }
    }
}
