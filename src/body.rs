//! The one body type that flows through the proxy, both ways.
//!
//! An enum rather than a boxed trait object, so that forwarding a request or a
//! response costs no allocation: either nothing, a buffer we made ourselves, or a
//! streamed hyper body (with a byte cap on request bodies, and an optional guard
//! that keeps an endpoint's in-flight count until the response has been sent).

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body longer than the configured limit.
#[derive(Debug, thiserror::Error)]
#[error("request body is larger than the limit of {0} bytes")]
pub struct BodyTooLarge(pub u64);

pub enum Body {
    Empty,
    /// A response being stored by the cache as it streams.
    Caching(Box<crate::cache::tee::Tee>),
    Full(Option<Bytes>),
    Stream {
        inner: Incoming,
        /// Bytes still allowed; `u64::MAX` for no limit.
        remaining: u64,
        limit: u64,
        held: Option<crate::upstream::endpoint::Held>,
    },
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
        Body::Stream { inner, remaining: u64::MAX, limit: u64::MAX, held: None }
    }

    /// A streamed body that fails once more than `limit` bytes arrive.
    pub fn limited(inner: Incoming, limit: u64) -> Body {
        Body::Stream { inner, remaining: limit, limit, held: None }
    }

    /// An upstream response body: `held` is finished when the body ends, dropped
    /// (closing the connection) if the body is abandoned.
    pub fn upstream(inner: Incoming, held: crate::upstream::endpoint::Held) -> Body {
        Body::Stream { inner, remaining: u64::MAX, limit: u64::MAX, held: Some(held) }
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Caching(t) => Pin::new(&mut **t).poll_frame(cx),
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream { inner, remaining, limit, held } => match Pin::new(&mut *inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        let n = data.len() as u64;
                        if n > *remaining {
                            return Poll::Ready(Some(Err(Box::new(BodyTooLarge(*limit)))));
                        }
                        *remaining -= n;
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
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Caching(t) => t.is_end_stream(),
            Body::Full(b) => b.is_none(),
            Body::Stream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Caching(t) => t.size_hint(),
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Stream { inner, .. } => inner.size_hint(),
        }
    }
}
