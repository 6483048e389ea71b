//! A response body that streams to the client while it is kept for the store:
//! when it ends, the response is stored; if it grows past the object size
//! limit, keeping stops and the response is only passed through.

use super::store::{Entry, Landing, Store};
use crate::body::{Body, BoxError};
use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};

/// What to store once the body is whole: the entry, body still empty.
pub struct Pending {
    pub store: Arc<Store>,
    pub entry: Entry,
    /// The route's cap of variants per key.
    pub max_variants: usize,
    /// Ends the key's flight (waking coalesced requests) when dropped.
    pub landing: Option<Landing>,
}

pub struct Tee {
    pub inner: Body,
    buf: BytesMut,
    max: usize,
    job: Option<Pending>,
}

impl Tee {
    pub fn new(inner: Body, max: usize, job: Pending) -> Tee {
        Tee { inner, buf: BytesMut::new(), max, job: Some(job) }
    }

    fn finish(&mut self) {
        if let Some(mut job) = self.job.take() {
            job.entry.body = std::mem::take(&mut self.buf).freeze();
            job.store.insert(job.entry, job.max_variants);
        }
    }
}

impl http_body::Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(job)) = (frame.data_ref(), this.job.as_ref()) {
                    if this.buf.len() + data.len() > this.max {
                        job.store.stats.too_large.fetch_add(1, Relaxed);
                        this.job = None;
                        this.buf = BytesMut::new();
                    } else {
                        this.buf.extend_from_slice(data);
                    }
                }
                if this.inner.is_end_stream() {
                    this.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            // A broken body is not stored; dropping the job lands the flight.
            Poll::Ready(Some(Err(e))) => {
                this.job = None;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
