//! The upstream client against a peer that is a byte stream: what reaches
//! the upstream, byte for byte, and what comes back.

use super::*;
use crate::http1::chunked::{Decoder, Limits as ChunkLimits};
use crate::http1::head::{parse_request, Limits as HeadLimits};
use http_body::Frame;
use proptest::prelude::*;
use std::collections::VecDeque;
use tokio::io::{AsyncReadExt as _, DuplexStream};

/// A body of pieces of unknown total size, as a client's streamed upload is.
struct Pieces(VecDeque<Bytes>, Option<HeaderMap>);

impl HttpBody for Pieces {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(b) = self.0.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        Poll::Ready(self.1.take().map(|t| Ok(Frame::trailers(t))))
    }
}

/// A body of known bytes (none: a bodiless request).
fn known(b: &'static [u8]) -> impl HttpBody<Data = Bytes, Error = BoxError> + Unpin {
    http_body_util::BodyExt::map_err(http_body_util::Full::new(Bytes::from_static(b)), |e| -> BoxError { match e {} })
}

/// Everything `peer` received until `n` bytes, or until it went quiet.
async fn received(peer: &mut DuplexStream, until: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut got = Vec::new();
    while !until(&got) {
        let mut b = [0u8; 4096];
        let n = peer.read(&mut b).await.unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&b[..n]);
    }
    got
}

/// Whether `wire` holds a whole request: its head and its chunked body's end.
fn whole_chunked(wire: &[u8]) -> bool {
    let Some(head) = parse_request(wire, &HeadLimits { max_headers: 16, max_head_bytes: 4096 }).unwrap() else { return false };
    let mut d = Decoder::new(ChunkLimits::default());
    d.decode(&wire[head.len..], &mut Vec::new()).unwrap();
    d.done()
}

fn request<B>(method: Method, uri: &str, body: B) -> Request<B> {
    let mut r = Request::new(body);
    *r.method_mut() = method;
    *r.uri_mut() = uri.parse().unwrap();
    r.headers_mut().insert("host", "up.example".parse().unwrap());
    r
}

#[tokio::test]
async fn a_bodiless_get_and_an_empty_post_are_framed_as_nginx_frames_them() {
    let (io, mut peer) = tokio::io::duplex(1 << 16);
    let mut conn = Conn::new(io, None);
    let answer = tokio::spawn(async move {
        let first = received(&mut peer, |w| w.ends_with(b"\r\n\r\n")).await;
        peer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await.unwrap();
        let second = received(&mut peer, |w| w.ends_with(b"\r\n\r\n")).await;
        peer.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await.unwrap();
        (first, second, peer)
    });
    let head = conn.send(request(Method::GET, "/a?b=1", known(b""))).await.ok().unwrap();
    assert_eq!((head.status.as_u16(), head.framing), (200, Framing::Length(2)));
    let mut reader = Reader::new(head.framing, Default::default());
    let body = std::future::poll_fn(|cx| conn.poll_body(cx, &mut reader)).await.unwrap().unwrap();
    assert_eq!((&body[..], reader.done(), conn.clean()), (&b"ok"[..], true, true));
    assert!(conn.buf.capacity() > 0, "the answer was read into the connection's buffer");
    conn.rest();
    assert_eq!(conn.buf.capacity(), 0, "an idle connection holds no read buffer");
    let head = conn.send(request(Method::POST, "/p", known(b""))).await.ok().unwrap();
    assert_eq!((head.status.as_u16(), head.framing), (204, Framing::None));
    let (first, second, _peer) = answer.await.unwrap();
    assert_eq!(first, b"GET /a?b=1 HTTP/1.1\r\nhost: up.example\r\n\r\n");
    assert_eq!(second, b"POST /p HTTP/1.1\r\nhost: up.example\r\ncontent-length: 0\r\n\r\n");
}

#[tokio::test]
async fn a_body_of_known_length_goes_in_the_heads_write_and_interim_answers_are_read_past() {
    let (io, mut peer) = tokio::io::duplex(1 << 16);
    let mut conn = Conn::new(io, None);
    let answer = tokio::spawn(async move {
        let wire = received(&mut peer, |w| w.ends_with(b"hello")).await;
        peer.write_all(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n").await.unwrap();
        peer.write_all(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n").await.unwrap();
        peer.write_all(b"3\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n").await.unwrap();
        (wire, peer)
    });
    let mut req = request(Method::PUT, "/k", known(b"hello"));
    req.headers_mut().insert("content-length", "5".parse().unwrap());
    let head = conn.send(req).await.ok().unwrap();
    assert_eq!(head.status.as_u16(), 201, "100 and 103 are read past");
    assert!(!head.headers.contains_key("content-length"), "Transfer-Encoding wins; the length is dropped");
    let mut reader = Reader::new(head.framing, Default::default());
    let mut got = Vec::new();
    while let Some(piece) = std::future::poll_fn(|cx| conn.poll_body(cx, &mut reader)).await.unwrap() {
        got.extend_from_slice(&piece);
    }
    assert_eq!((got.as_slice(), reader.trailers()), (&b"abc"[..], &b"X-Sum: 1\r\n"[..]));
    let (wire, _peer) = answer.await.unwrap();
    assert_eq!(wire, b"PUT /k HTTP/1.1\r\nhost: up.example\r\ncontent-length: 5\r\n\r\nhello");
}

#[tokio::test]
async fn a_closed_connection_is_seen_while_idle_and_a_close_before_the_head_is_early() {
    let (io, peer) = tokio::io::duplex(1024);
    let mut conn = Conn::new(io, None);
    assert!(!conn.closed_while_idle(), "an open, quiet connection is fine");
    drop(peer);
    assert!(conn.closed_while_idle(), "the upstream's close is seen without waiting");

    let (io, mut peer) = tokio::io::duplex(1024);
    let mut conn = Conn::new(io, None);
    peer.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
    assert!(conn.closed_while_idle(), "bytes nobody asked for make it unusable");

    let (io, mut peer) = tokio::io::duplex(1024);
    let mut conn = Conn::new(io, None);
    let closer = tokio::spawn(async move {
        received(&mut peer, |w| w.ends_with(b"\r\n\r\n")).await;
    });
    let err = conn.send(request(Method::GET, "/", known(b""))).await.err().unwrap();
    closer.await.unwrap();
    assert!(matches!(err.error, Error::Closed) && err.error.is_early() && err.unsent.is_none(), "{}", err.error);
}

#[tokio::test]
async fn a_request_never_written_comes_back_whole() {
    let (io, peer) = tokio::io::duplex(1024);
    drop(peer);
    let mut conn = Conn::new(io, None);
    let err = conn.send(request(Method::POST, "/p", known(b""))).await.err().unwrap();
    assert!(matches!(err.error, Error::Write(_)), "{}", err.error);
    let back = err.unsent.expect("nothing was written: the request comes back");
    assert_eq!((back.method(), back.uri().path()), (&Method::POST, "/p"));
}

#[tokio::test]
async fn a_malformed_or_oversized_answer_is_refused() {
    for answer in [&b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..], b"NOT HTTP\r\n\r\n"] {
        let (io, mut peer) = tokio::io::duplex(1 << 16);
        let mut conn = Conn::new(io, None);
        let a = answer.to_vec();
        let t = tokio::spawn(async move {
            received(&mut peer, |w| w.ends_with(b"\r\n\r\n")).await;
            peer.write_all(&a).await.unwrap();
            peer
        });
        let err = conn.send(request(Method::GET, "/", known(b""))).await.err().unwrap();
        assert!(matches!(err.error, Error::Head(_)), "{}: {}", String::from_utf8_lossy(answer), err.error);
        drop(t.await);
    }
}

/// A body that gives one piece, then waits for ever (a client still uploading).
struct Stalls(Option<Bytes>);

impl HttpBody for Stalls {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.0.take() {
            Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
            None => Poll::Pending,
        }
    }
}

/// An upstream that answers before the body is all there: the answer is
/// taken while the body waits (or while a write waits on an upstream that
/// stopped reading, or after it closed), and the connection is not reused.
#[tokio::test]
async fn an_answer_before_the_whole_body_ends_the_upload_and_the_connection() {
    let answer = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n";
    // The body waits; the upstream answers and keeps the connection open.
    let (io, mut peer) = tokio::io::duplex(1 << 16);
    let mut conn = Conn::new(io, None);
    let mut req = request(Method::POST, "/up", Stalls(Some(Bytes::from_static(b"0123456789"))));
    req.headers_mut().insert("content-length", "1000000".parse().unwrap());
    let upstream = tokio::spawn(async move {
        received(&mut peer, |w| w.ends_with(b"0123456789")).await;
        peer.write_all(answer).await.unwrap();
        peer
    });
    let head = conn.send(req).await.ok().unwrap();
    assert_eq!(head.status, 413);
    assert!(!conn.clean(), "a connection whose request was cut short carries no other");
    drop(upstream.await.unwrap());
    // A body larger than the pipe, to an upstream that answers, stops reading and closes.
    for close in [false, true] {
        let (io, mut peer) = tokio::io::duplex(4096);
        let mut conn = Conn::new(io, None);
        let big = vec![b'x'; 256 * 1024];
        let req = request(
            Method::POST,
            "/up",
            http_body_util::BodyExt::map_err(http_body_util::Full::new(Bytes::from(big)), |e| -> BoxError { match e {} }),
        );
        let upstream = tokio::spawn(async move {
            received(&mut peer, |w| w.windows(4).any(|x| x == b"\r\n\r\n")).await;
            peer.write_all(answer).await.unwrap();
            if !close {
                std::future::pending::<()>().await;
            }
        });
        let head = conn.send(req).await.ok().unwrap();
        assert_eq!(head.status, 413, "close: {close}");
        assert!(!conn.clean());
        upstream.abort();
    }
}

/// Sends `pieces` (and trailers) as a streamed body; what the upstream got.
fn upload(pieces: Vec<Vec<u8>>, trailers: bool) -> (Vec<u8>, Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let (io, mut peer) = tokio::io::duplex(1 << 20);
        let mut conn = Conn::new(io, None);
        let t = tokio::spawn(async move {
            let wire = received(&mut peer, whole_chunked).await;
            peer.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await.unwrap();
            (wire, peer)
        });
        let mut h = HeaderMap::new();
        h.insert("x-t", "1".parse().unwrap());
        let body = Pieces(pieces.into_iter().map(Bytes::from).collect(), trailers.then_some(h));
        conn.send(request(Method::POST, "/up", body)).await.ok().unwrap();
        let (wire, _peer) = t.await.unwrap();
        let head = parse_request(&wire, &HeadLimits { max_headers: 16, max_head_bytes: 4096 }).unwrap().unwrap();
        assert_eq!(head.framing, Framing::Chunked);
        let mut d = Decoder::new(ChunkLimits::default());
        let mut body = Vec::new();
        let used = d.decode(&wire[head.len..], &mut body).unwrap();
        assert!(d.done() && head.len + used == wire.len(), "the body ends exactly where the wire does");
        (body, d.trailers().to_vec())
    })
}

#[test]
fn a_streamed_body_is_chunked_and_its_trailers_kept() {
    let (body, trailers) = upload(vec![b"ab".to_vec(), Vec::new(), vec![b'x'; 40_000], b"z".to_vec()], true);
    let mut want = b"ab".to_vec();
    want.extend(vec![b'x'; 40_000]);
    want.push(b'z');
    assert_eq!((body, trailers), (want, b"x-t: 1\r\n".to_vec()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Any body, cut into any pieces, arrives byte-identical at the upstream.
    #[test]
    fn any_framing_of_a_body_arrives_byte_identical(body in proptest::collection::vec(any::<u8>(), 0..50_000), cuts in proptest::collection::vec(0usize..50_000, 0..12)) {
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (body.len() + 1)).collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut at = 0;
        for c in cuts.into_iter().chain([body.len()]) {
            pieces.push(body[at..c].to_vec());
            at = c;
        }
        let (got, _) = upload(pieces, false);
        prop_assert_eq!(got, body);
    }
}
