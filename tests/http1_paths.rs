//! The same requests through ringmaster's own HTTP/1 (server loop and
//! upstream client) and through hyper's (`[server] http1 = "hyper"`), to an
//! upstream that records the bytes it receives and answers with every
//! framing: both paths must put the same bytes on the upstream's wire and
//! give the client the same answer.

mod common;

use common::{raw_upstream, Proxy};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Reads one request off `s`: its head, then its body as the head frames it
/// (Content-Length, or chunked up to the last chunk without trailers).
fn read_request(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut b).ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&b[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    let done = |got: &[u8]| {
        if let Some(l) = head.lines().find_map(|l| l.strip_prefix("content-length: ")) {
            got.len() >= head_end + l.trim().parse::<usize>().unwrap()
        } else if head.contains("transfer-encoding: chunked") {
            got.ends_with(b"0\r\n\r\n")
        } else {
            true
        }
    };
    while !done(&got) {
        let n = s.read(&mut b).ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&b[..n]);
    }
    Some(got)
}

/// The answer for a request path: every framing an upstream may use.
fn answer(request: &[u8]) -> (&'static [u8], bool) {
    let line = String::from_utf8_lossy(&request[..request.iter().position(|b| *b == b'\r').unwrap()]).to_string();
    let path = line.split(' ').nth(1).unwrap_or("/");
    match path {
        "/chunked" => {
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n", false)
        }
        "/close" => (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the upstream closes", true),
        "/head" => (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false),
        "/204" => (b"HTTP/1.1 204 No Content\r\n\r\n", false),
        "/304" => (b"HTTP/1.1 304 Not Modified\r\nETag: \"a\"\r\n\r\n", false),
        "/interim" => (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
        "/te-and-length" => (b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", false),
        _ => (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false),
    }
}

/// An upstream that records what each request put on its wire.
fn recording_upstream() -> (SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let addr = raw_upstream(move |mut s| {
        while let Some(req) = read_request(&mut s) {
            log.lock().unwrap().push(req.clone());
            let (bytes, close) = answer(&req);
            if s.write_all(bytes).is_err() || close {
                return;
            }
        }
    });
    (addr, seen)
}

/// Sends `raw` to `addr` on a connection of its own; everything that came back.
fn exchange(addr: SocketAddr, raw: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(raw).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

/// The client's answer without what may differ by nature: the Date field,
/// and where a chunked body's chunks fall (only the bytes they carry count).
fn comparable(answer: &[u8]) -> String {
    // Interim answers (100 Continue) first, each on its own.
    if answer.starts_with(b"HTTP/1.1 1") {
        if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            return format!("{}\n\n{}", String::from_utf8_lossy(&answer[..end]), comparable(&answer[end + 4..]));
        }
    }
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else { return String::from_utf8_lossy(answer).into_owned() };
    let head = String::from_utf8_lossy(&answer[..end]).to_string();
    // The status line, then the fields in name order (the order of fields with
    // different names carries no meaning; each server writes its own).
    let mut lines = head.lines();
    let mut head: Vec<&str> = lines.next().into_iter().collect();
    let mut fields: Vec<&str> = lines.filter(|l| !l.to_ascii_lowercase().starts_with("date:")).collect();
    fields.sort_by_key(|l| l.split(':').next().unwrap_or("").to_ascii_lowercase());
    head.extend(fields);
    let mut body = answer[end + 4..].to_vec();
    if head.iter().any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked")) {
        body = unchunk(&body);
    }
    format!("{}\n\n{}", head.join("\n"), String::from_utf8_lossy(&body))
}

/// A request as the upstream got it: its head byte for byte, and a chunked
/// body as the bytes it carries (where chunks fall is each sender's choice).
fn as_sent(wire: &[u8]) -> String {
    let end = wire.windows(4).position(|w| w == b"\r\n\r\n").expect("a whole head") + 4;
    let head = String::from_utf8_lossy(&wire[..end]).into_owned();
    let body = if head.contains("transfer-encoding: chunked") { unchunk(&wire[end..]) } else { wire[end..].to_vec() };
    format!("{head}{}", String::from_utf8_lossy(&body))
}

/// The bytes a well-formed chunked body carries (extensions and trailers ignored).
fn unchunk(mut wire: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = wire.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&wire[..eol]).split(';').next().unwrap().trim().to_string();
        let n = usize::from_str_radix(&size, 16).expect("a chunk size");
        if n == 0 {
            break;
        }
        out.extend_from_slice(&wire[eol + 2..eol + 2 + n]);
        wire = &wire[eol + 2 + n + 2..];
    }
    out
}

#[test]
fn both_http1_clients_put_the_same_bytes_upstream_and_give_the_same_answers() {
    let corpus: Vec<Vec<u8>> = [
        &b"GET /len HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"[..],
        b"GET /chunked HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET /close HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"HEAD /head HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET /204 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET /304 HTTP/1.1\r\nHost: a\r\nIf-None-Match: \"a\"\r\nConnection: close\r\n\r\n",
        b"GET /interim HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET /te-and-length HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"POST /len HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        b"POST /len HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        b"POST /len HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        b"PUT /len HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\nConnection: close\r\n\r\nxyz",
        b"GET /len HTTP/1.0\r\nHost: a\r\n\r\n",
        b"OPTIONS /len HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    ]
    .iter()
    .map(|r| r.to_vec())
    .collect();
    let mut runs = Vec::new();
    for engine in ["ringmaster", "hyper"] {
        let (up, seen) = recording_upstream();
        let p = Proxy::start(&format!(
            "[server]\nhttp1 = \"{engine}\"\n\n[[routes]]\nservice = \"s\"\n\n[services.s]\nkind = \"replicated\"\nendpoints = [{{ address = \"{up}\" }}]\n"
        ));
        let answers: Vec<String> = corpus.iter().map(|r| comparable(&exchange(p.addr, r))).collect();
        let upstream = seen.lock().unwrap().clone();
        runs.push((engine, answers, upstream));
    }
    let (own, hyper) = (&runs[0], &runs[1]);
    for (i, req) in corpus.iter().enumerate() {
        if req.starts_with(b"GET /te-and-length ") {
            // An answer with Transfer-Encoding and a Content-Length reaches the
            // client without the length (RFC 9112 section 6.3). hyper's path passed
            // `content-length: 99` on with a 2-byte body, which leaves the client
            // waiting for bytes that never come, or reading the next answer as
            // this one's; both paths drop it now.
            assert!(!own.1[i].contains("content-length") && own.1[i].ends_with("\n\nok"), "{}", own.1[i]);
        }
        assert_eq!(own.1[i], hyper.1[i], "the client's answer to {:?}", String::from_utf8_lossy(req));
        assert!(own.1[i].starts_with("HTTP/1."), "an answer to {:?}: {}", String::from_utf8_lossy(req), own.1[i]);
    }
    assert_eq!(own.2.len(), corpus.len(), "each request reached the upstream once");
    for (i, (a, b)) in own.2.iter().zip(&hyper.2).enumerate() {
        assert_eq!(as_sent(a), as_sent(b), "upstream bytes of request {i}");
    }
}
