//! A message body read off a connection in the pieces it arrives in, framed
//! as its head said: so many bytes (Content-Length), chunked, or until the
//! peer closes (a response without a length). Each call gives the next
//! piece of the body; bytes past its end stay in the connection's buffer for
//! the next message. A body that ends early is an error, never a short body.

use super::chunked::{ChunkError, Decoder, Limits};
use super::head::Framing;
use bytes::{Buf as _, Bytes, BytesMut};
use std::task::{ready, Context, Poll};
use tokio::io::AsyncRead;

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the connection closed before the body's end")]
    Truncated,
    #[error("{0}")]
    Chunked(#[from] ChunkError),
    #[error("reading the connection: {0}")]
    Io(#[from] std::io::Error),
}

/// Where a body's reading stands.
#[derive(Debug)]
pub struct Body {
    state: State,
    /// A chunked body's trailer fields, once read.
    trailers: Vec<u8>,
}

#[derive(Debug)]
enum State {
    Length(u64),
    Chunked(Box<Decoder>),
    UntilClose,
    Done,
}

impl Body {
    pub fn new(framing: Framing, limits: Limits) -> Body {
        let state = match framing {
            Framing::None | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Box::new(Decoder::new(limits))),
            Framing::UntilClose => State::UntilClose,
        };
        Body { state, trailers: Vec::new() }
    }

    /// Whether the whole body has been read.
    pub fn done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// The trailer fields of a chunked body, once done.
    pub fn trailers(&self) -> &[u8] {
        &self.trailers
    }

    /// The next piece of the body (`None` once it is all read), taken from
    /// `buf` first and then from `io`.
    pub async fn next<R: AsyncRead + Unpin>(&mut self, io: &mut R, buf: &mut BytesMut) -> Result<Option<Bytes>, BodyError> {
        std::future::poll_fn(|cx| self.poll_next(cx, io, buf)).await
    }

    /// As [`Body::next`], for a caller that is itself polled (a response body
    /// streamed by the task that writes it to the client).
    pub fn poll_next<R: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut R,
        buf: &mut BytesMut,
    ) -> Poll<Result<Option<Bytes>, BodyError>> {
        loop {
            match &mut self.state {
                State::Done => return Poll::Ready(Ok(None)),
                State::Length(left) => {
                    if buf.is_empty() && ready!(fill(cx, io, buf))? == 0 {
                        return Poll::Ready(Err(BodyError::Truncated));
                    }
                    let n = (*left).min(buf.len() as u64) as usize;
                    *left -= n as u64;
                    if *left == 0 {
                        self.state = State::Done;
                    }
                    return Poll::Ready(Ok(Some(buf.split_to(n).freeze())));
                }
                State::UntilClose => {
                    if buf.is_empty() && ready!(fill(cx, io, buf))? == 0 {
                        self.state = State::Done;
                        return Poll::Ready(Ok(None));
                    }
                    return Poll::Ready(Ok(Some(buf.split().freeze())));
                }
                State::Chunked(d) => {
                    if buf.is_empty() && ready!(fill(cx, io, buf))? == 0 {
                        return Poll::Ready(Err(BodyError::Truncated));
                    }
                    let mut out = Vec::new();
                    let used = d.decode(buf, &mut out)?;
                    buf.advance(used);
                    if d.done() {
                        self.trailers = d.trailers().to_vec();
                        self.state = State::Done;
                    }
                    if !out.is_empty() {
                        return Poll::Ready(Ok(Some(out.into())));
                    }
                }
            }
        }
    }

    /// Bytes of the body still to come, when its length is known.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Done => Some(0),
            _ => None,
        }
    }
}

/// Room for one read: an answer's head and a few KiB of its body arrive in
/// one read rather than two.
const READ_ROOM: usize = 8192;

/// Reads what `io` has into `buf`, with room for [`READ_ROOM`] bytes made
/// first (in place when the buffer's earlier pieces were all given back); 0
/// at its end.
pub fn fill<R: AsyncRead + Unpin>(cx: &mut Context<'_>, io: &mut R, buf: &mut BytesMut) -> Poll<std::io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_ROOM {
        buf.reserve(READ_ROOM);
    }
    tokio_util::io::poll_read_buf(std::pin::Pin::new(io), cx, buf)
}

#[cfg(test)]
mod tests {
    use super::super::chunked::encode;
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// Writes `wire` in small pieces, then closes (or not).
    fn peer(wire: Vec<u8>, close: bool) -> tokio::io::DuplexStream {
        let (mut client, server) = tokio::io::duplex(32);
        tokio::spawn(async move {
            for piece in wire.chunks(5) {
                if client.write_all(piece).await.is_err() {
                    return;
                }
            }
            if !close {
                std::future::pending::<()>().await;
            }
        });
        server
    }

    async fn read_all(body: &mut Body, io: &mut tokio::io::DuplexStream, buf: &mut BytesMut) -> Result<Vec<u8>, BodyError> {
        let mut got = Vec::new();
        while let Some(piece) = body.next(io, buf).await? {
            got.extend_from_slice(&piece);
        }
        Ok(got)
    }

    #[tokio::test]
    async fn each_framing_gives_the_body_and_leaves_what_follows() {
        let payload: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        for framing in [Framing::Length(300), Framing::Chunked] {
            let mut wire = if framing == Framing::Chunked { encode(&payload, &[1, 50, 7]) } else { payload.clone() };
            wire.extend_from_slice(b"NEXT");
            let mut io = peer(wire, false);
            // Some of the body already came with the head.
            let mut buf = BytesMut::new();
            io.read_buf(&mut buf).await.unwrap();
            let mut body = Body::new(framing, Limits::default());
            assert_eq!(read_all(&mut body, &mut io, &mut buf).await.unwrap(), payload, "{framing:?}");
            assert!(body.done());
            while buf.len() < 4 {
                io.read_buf(&mut buf).await.unwrap();
            }
            assert_eq!(&buf[..4], b"NEXT", "{framing:?}: what follows the body stays");
        }
        let mut io = peer(payload.clone(), true);
        let mut body = Body::new(Framing::UntilClose, Limits::default());
        assert_eq!(read_all(&mut body, &mut io, &mut BytesMut::new()).await.unwrap(), payload);
        let mut body = Body::new(Framing::None, Limits::default());
        assert!(body.next(&mut peer(Vec::new(), true), &mut BytesMut::new()).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error_not_a_short_body() {
        let mut body = Body::new(Framing::Length(10), Limits::default());
        assert!(matches!(read_all(&mut body, &mut peer(b"12345".to_vec(), true), &mut BytesMut::new()).await, Err(BodyError::Truncated)));
        let mut body = Body::new(Framing::Chunked, Limits::default());
        let r = read_all(&mut body, &mut peer(b"5\r\nhello\r\n".to_vec(), true), &mut BytesMut::new()).await;
        assert!(matches!(r, Err(BodyError::Truncated)));
        let mut body = Body::new(Framing::Chunked, Limits::default());
        let r = read_all(&mut body, &mut peer(b"5\nhello\r\n0\r\n\r\n".to_vec(), true), &mut BytesMut::new()).await;
        assert!(matches!(r, Err(BodyError::Chunked(ChunkError::BadLineEnd))));
        let mut body = Body::new(Framing::Chunked, Limits::default());
        let got = read_all(&mut body, &mut peer(b"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n".to_vec(), false), &mut BytesMut::new()).await.unwrap();
        assert_eq!((got.as_slice(), body.trailers()), (&b"abc"[..], &b"X-T: 1\r\n"[..]));
    }
}
