//! The server loop over an in-memory connection: what a client gets back,
//! byte for byte where it matters, for each framing and each way a
//! connection goes on or ends.

use super::*;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use tokio::io::{AsyncReadExt as _, DuplexStream};
use tokio::task::JoinHandle;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Answer = BoxBody<Bytes, BoxError>;

impl Outbound for Answer {}

const SETTINGS: Settings =
    Settings { limits: Limits { max_headers: 32, max_head_bytes: 4096 }, chunk: ChunkLimits { max_line: 4096, max_trailers: 8192 } };

fn full(b: impl Into<Bytes>) -> Answer {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

fn streamed(pieces: Vec<Bytes>) -> Answer {
    StreamBody::new(futures_util::stream::iter(pieces.into_iter().map(|b| Ok::<_, BoxError>(http_body::Frame::data(b))))).boxed()
}

/// Every byte of a request body, or `usize::MAX` when reading it failed.
async fn body_len(src: Option<Arc<dyn Source>>) -> usize {
    let Some(src) = src else { return 0 };
    let mut n = 0;
    loop {
        match std::future::poll_fn(|cx| src.poll_body(cx)).await {
            Some(Ok(b)) => n += b.len(),
            Some(Err(_)) => return usize::MAX,
            None => return n,
        }
    }
}

/// The handler of these tests: answers `METHOD path body-length`, reading
/// the body whole unless the path is `/skip`, streamed (chunked) for `/stream`.
async fn echo(req: Request<Option<Arc<dyn Source>>>) -> Response<Answer> {
    let (parts, body) = req.into_parts();
    let n = if parts.uri.path() == "/skip" { 0 } else { body_len(body).await };
    let text = format!("{} {} {n}", parts.method, parts.uri.path());
    Response::new(match parts.uri.path() {
        "/big" => full(vec![b'x'; 5000]),
        "/bigstream" => streamed(vec![Bytes::from(vec![b'y'; 3000]), Bytes::from(vec![b'z'; 3000])]),
        "/stream" => streamed(vec![Bytes::from(text), Bytes::from_static(b"!")]),
        _ => full(text),
    })
}

/// A stop that never comes (its sender is gone).
fn running() -> tokio::sync::watch::Receiver<bool> {
    tokio::sync::watch::channel(false).1
}

fn start(stop: tokio::sync::watch::Receiver<bool>) -> (DuplexStream, JoinHandle<End>) {
    let (client, server) = tokio::io::duplex(1 << 16);
    (client, tokio::spawn(serve(server, BytesMut::new(), SETTINGS, stop, |src| src, echo)))
}

/// Reads until `want` answers (each ending with its body, as `complete` says) have come.
async fn read_until(c: &mut DuplexStream, done: impl Fn(&str) -> bool) -> String {
    let mut got = Vec::new();
    while !done(&String::from_utf8_lossy(&got)) {
        let mut b = [0u8; 4096];
        let n = c.read(&mut b).await.unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&b[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// The answers without their Date fields.
fn dateless(s: &str) -> String {
    s.split("\r\n").filter(|l| !l.starts_with("date: ")).collect::<Vec<_>>().join("\r\n")
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (mut c, server) = start(running());
    c.write_all(
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /c HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    let got = read_until(&mut c, |s| s.ends_with("GET /c 0")).await;
    assert!(got.contains("\r\ndate: "), "a Date on each answer: {got}");
    assert_eq!(
        dateless(&got),
        "HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nGET /a 0HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nPOST /b 3HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nGET /c 0"
    );
    drop(c);
    assert!(matches!(server.await.unwrap(), End::Clean));
}

#[tokio::test]
async fn a_chunked_upload_is_read_and_an_answer_of_unknown_length_is_chunked() {
    let (mut c, _server) = start(running());
    c.write_all(b"POST /stream HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n")
        .await
        .unwrap();
    let got = read_until(&mut c, |s| s.ends_with("0\r\n\r\n")).await;
    assert_eq!(dateless(&got), "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\ne\r\nPOST /stream 5\r\n1\r\n!\r\n0\r\n\r\n");
}

#[tokio::test]
async fn expect_100_continue_is_answered_when_the_body_is_first_read() {
    let (mut c, _server) = start(running());
    c.write_all(b"PUT /k HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n").await.unwrap();
    let interim = read_until(&mut c, |s| s.ends_with("\r\n\r\n")).await;
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n", "the client is told to send its body");
    c.write_all(b"data").await.unwrap();
    let got = read_until(&mut c, |s| s.ends_with("PUT /k 4")).await;
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
}

#[tokio::test]
async fn head_and_http_1_0_answers_are_framed_as_their_requests_ask() {
    let (mut c, _server) = start(running());
    c.write_all(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").await.unwrap();
    let got = read_until(&mut c, |s| s.ends_with("GET /after 0")).await;
    assert_eq!(
        dateless(&got),
        "HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nHTTP/1.0 200 OK\r\ncontent-length: 12\r\nconnection: keep-alive\r\n\r\nGET /after 0",
        "HEAD: the length of the body it would have, and no body"
    );
    c.write_all(b"GET /last HTTP/1.0\r\n\r\n").await.unwrap();
    let mut rest = String::new();
    c.read_to_string(&mut rest).await.unwrap();
    assert_eq!(dateless(&rest), "HTTP/1.0 200 OK\r\ncontent-length: 11\r\n\r\nGET /last 0", "HTTP/1.0 without keep-alive: closed after");
}

#[tokio::test]
async fn refused_heads_get_their_status_and_the_connection_closes() {
    let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(5000));
    for (wire, status) in [
        (&b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"[..], "400"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", "501"),
        (big.as_bytes(), "431"),
    ] {
        let (mut c, server) = start(running());
        c.write_all(wire).await.unwrap();
        let mut got = String::new();
        c.read_to_string(&mut got).await.unwrap();
        assert!(got.starts_with(&format!("HTTP/1.1 {status} ")) && got.contains("connection: close\r\n"), "{got}");
        assert!(matches!(server.await.unwrap(), End::Refused(_)));
    }
}

#[tokio::test]
async fn an_unread_body_closes_the_connection_after_its_answer() {
    let (mut c, _server) = start(running());
    // The body holds what would be a request if it were read as one.
    c.write_all(b"POST /skip HTTP/1.1\r\nHost: x\r\nContent-Length: 28\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n").await.unwrap();
    let mut got = String::new();
    c.read_to_string(&mut got).await.unwrap();
    assert_eq!(dateless(&got), "HTTP/1.1 200 OK\r\ncontent-length: 12\r\nconnection: close\r\n\r\nPOST /skip 0");
}

#[tokio::test]
async fn a_stop_ends_an_idle_connection_and_waits_for_a_request_in_flight() {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (mut c, server) = start(stop_rx);
    c.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    read_until(&mut c, |s| s.ends_with("GET /a 0")).await;
    stop_tx.send(true).unwrap();
    assert!(matches!(server.await.unwrap(), End::Stopped));
}

#[tokio::test]
async fn large_pieces_are_written_from_where_they_are_and_arrive_whole() {
    let (mut c, _server) = start(running());
    c.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\nGET /bigstream HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let got = read_until(&mut c, |s| s.ends_with("0\r\n\r\n")).await;
    let want = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n{}HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nbb8\r\n{}\r\nbb8\r\n{}\r\n0\r\n\r\n",
        "x".repeat(5000),
        "y".repeat(3000),
        "z".repeat(3000)
    );
    assert_eq!(dateless(&got), want);
}
