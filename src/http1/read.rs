//! Reading a head off a connection: bytes are read into the connection's
//! buffer until a whole head has arrived (or the limits refuse it), and what
//! came after the head (a body's first bytes, a pipelined request) stays in
//! the buffer for whoever reads next. A clean close before any byte is the
//! end of a keep-alive connection, not an error. Waiting for a request, an
//! idle connection holds no read buffer of its own.

use super::head::{request_from, HeadError, Limits, RequestHead};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt as _};

/// Why no request head was read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Head(#[from] HeadError),
    #[error("the connection closed in the middle of a request head")]
    Truncated,
    #[error("reading the connection: {0}")]
    Io(#[from] std::io::Error),
}

/// The next request head on `io`, read into `buf` (which may already hold
/// bytes); `Ok(None)` when the client closed between requests. The head's
/// bytes are consumed from `buf`; anything after them is left there.
pub async fn request<R: AsyncRead + Unpin>(io: &mut R, buf: &mut BytesMut, limits: &Limits) -> Result<Option<RequestHead>, ReadError> {
    loop {
        if !buf.is_empty() {
            // Parsed shared, so the head's values are slices of what was read.
            let all = std::mem::take(buf).freeze();
            let parsed = request_from(&all, limits);
            if let Ok(Some(head)) = &parsed {
                // What came after the head (a body's first bytes, a pipelined request).
                if all.len() > head.len {
                    *buf = BytesMut::from(&all[head.len..]);
                }
                return Ok(parsed?);
            }
            *buf = all.try_into_mut().unwrap_or_else(|b| BytesMut::from(&b[..]));
            parsed?;
        }
        let n = if buf.is_empty() {
            land(io, buf).await?
        } else {
            buf.reserve(4096.min(limits.max_head_bytes + 1));
            io.read_buf(buf).await?
        };
        if n == 0 {
            return if buf.is_empty() { Ok(None) } else { Err(ReadError::Truncated) };
        }
    }
}

/// Waits for bytes with no buffer of our own (they land on the stack of the
/// poll that finds them, then go to `buf`), so an idle connection holds no
/// read buffer, as nginx's does not; how many came (0: the peer closed).
pub async fn land<R: AsyncRead + Unpin>(io: &mut R, buf: &mut BytesMut) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| {
        let mut landing = [0u8; 2048];
        let mut rb = tokio::io::ReadBuf::new(&mut landing);
        std::task::ready!(std::pin::Pin::new(&mut *io).poll_read(cx, &mut rb))?;
        buf.extend_from_slice(rb.filled());
        std::task::Poll::Ready(Ok(rb.filled().len()))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::super::head::Framing;
    use super::*;
    use bytes::Buf as _;
    use tokio::io::AsyncWriteExt as _;

    const L: Limits = Limits { max_headers: 16, max_head_bytes: 1024 };

    #[tokio::test]
    async fn pipelined_heads_arrive_in_pieces_and_are_read_in_order() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            let wire = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
            for piece in wire.chunks(7) {
                client.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut buf = BytesMut::new();
        let first = request(&mut server, &mut buf, &L).await.unwrap().unwrap();
        assert_eq!((first.uri.path(), first.framing), ("/a", Framing::Length(3)));
        // The body is the caller's to read: here, the three bytes left in the buffer (or still coming).
        while buf.len() < 3 {
            server.read_buf(&mut buf).await.unwrap();
        }
        assert_eq!(&buf[..3], b"abc");
        buf.advance(3);
        let second = request(&mut server, &mut buf, &L).await.unwrap().unwrap();
        assert_eq!((second.uri.path(), second.framing), ("/b", Framing::None));
        writer.await.unwrap();
        assert!(request(&mut server, &mut buf, &L).await.unwrap().is_none(), "a close between requests ends the connection");
    }

    #[tokio::test]
    async fn a_close_mid_head_and_an_endless_head_are_refused() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        drop(client);
        assert!(matches!(request(&mut server, &mut BytesMut::new(), &L).await, Err(ReadError::Truncated)));
        let (mut client, mut server) = tokio::io::duplex(4096);
        let w = tokio::spawn(async move {
            let _ = client.write_all(b"GET / HTTP/1.1\r\n").await;
            loop {
                if client.write_all(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaa\r\n").await.is_err() {
                    break;
                }
            }
        });
        let err = request(&mut server, &mut BytesMut::new(), &L).await.unwrap_err();
        assert!(matches!(err, ReadError::Head(HeadError::TooLarge | HeadError::TooManyHeaders)), "{err}");
        drop(server);
        w.await.unwrap();
    }
}
