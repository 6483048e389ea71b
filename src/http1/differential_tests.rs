//! The head parser against hyper's, on one corpus of request heads (valid,
//! borderline and hostile): both must accept or both refuse, and where both
//! accept, the framing must agree. Where ringmaster is deliberately stricter
//! than hyper, the case says so.

use super::head::{parse_request, Framing, Limits};
use http_body_util::BodyExt as _;
use tokio::io::AsyncWriteExt as _;

/// What hyper's HTTP/1 server does with `raw`: the body it read, or None when it refused.
async fn hyper_verdict(raw: &[u8]) -> Option<Vec<u8>> {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let tx = tx.clone();
        async move {
            let body = req.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
            let _ = tx.send(body);
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
        }
    });
    let conn = tokio::spawn(
        hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .serve_connection(hyper_util::rt::TokioIo::new(server), svc),
    );
    client.write_all(raw).await.unwrap();
    // The service's body, or the connection's end without one (a refusal).
    let verdict = tokio::time::timeout(std::time::Duration::from_secs(2), rx.recv()).await.ok().flatten();
    conn.abort();
    verdict
}

#[tokio::test]
async fn the_head_parser_agrees_with_hyper() {
    let limits = Limits { max_headers: 100, max_head_bytes: 16384 };
    // (request bytes, ringmaster stricter than hyper on purpose)
    let corpus: &[(&[u8], bool)] = &[
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", false),
        (b"GET /x?y=%2F HTTP/1.0\r\n\r\n", false),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", false),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", false),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", false),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", false),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1_0\r\n\r\n", false),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", false),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", false),
        (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", false),
        (b"GET / HTTP/1.1\r\nHo\x00st: a\r\n\r\n", false),
        (b"GET / HTTP/9.9\r\nHost: a\r\n\r\n", false),
        (b"GET http://a.example/p HTTP/1.1\r\nHost: a.example\r\n\r\n", false),
        (b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", false),
        // hyper takes Content-Length with Transfer-Encoding (chunked wins); a proxy must not (RFC 9112 6.1).
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", true),
    ];
    for (raw, stricter) in corpus {
        let ours = parse_request(raw, &limits);
        let theirs = hyper_verdict(raw).await;
        let shown = String::from_utf8_lossy(raw);
        match (&ours, &theirs) {
            (Ok(Some(_)), Some(_)) | (Err(_), None) => {}
            (Err(_), Some(_)) if *stricter => {}
            _ => panic!("{shown:?}: ours {ours:?}, hyper's {theirs:?}"),
        }
        if let (Ok(Some(h)), Some(body)) = (&ours, &theirs) {
            let framed = match h.framing {
                Framing::None => 0,
                Framing::Length(n) => n as usize,
                Framing::Chunked | Framing::UntilClose => body.len(),
            };
            assert_eq!(framed, body.len(), "{shown:?}: the framing disagrees");
        }
    }
}
