//! Connection timeouts kept apart: an idle keep-alive connection closes after
//! keepalive_timeout, a request head must arrive within header_read_timeout of
//! its first byte (or of accept), HTTP/2 connections idle out without a head
//! timer, and an HTTP/2 rapid-reset flood ends the connection with GOAWAY.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn proxy(limits: &str) -> (Proxy, Backend) {
    let a = backend("a");
    let cfg = format!("[limits]\n{limits}\n\n{}{}", route_all("app"), service("app", "round_robin", &[&a], ""));
    (Proxy::start(&cfg), a)
}

/// Reads until the server closes; how long that took.
fn closed_after(s: &mut TcpStream) -> Duration {
    let t = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return t.elapsed(),
            Ok(_) => {}
        }
    }
}

/// Sends one keep-alive GET and reads its answer (Content-Length bodies).
fn keepalive_get(s: &mut TcpStream) -> u16 {
    s.write_all(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed while waiting for an answer");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(r) = parse_response(&buf) {
            let len: usize = r.header("content-length").unwrap().parse().unwrap();
            if r.body.len() >= len {
                return r.status;
            }
        }
    }
}

#[test]
fn idle_keepalive_connections_close_after_keepalive_timeout() {
    let (p, _a) = proxy("keepalive_timeout = \"1s\"\nheader_read_timeout = \"5s\"");
    let mut s = TcpStream::connect(p.addr).unwrap();
    assert_eq!(keepalive_get(&mut s), 200);
    let waited = closed_after(&mut s);
    assert!(waited < Duration::from_secs(4), "idle connection not closed: {waited:?}");
    assert_eq!(p.metric("ringmaster_connections_idle_closed_total"), 1.0);
    assert_eq!(p.metric("ringmaster_local_answers_total{reason=\"header_timeout\"}"), 0.0);
}

#[test]
fn the_header_timeout_runs_from_the_first_byte_not_from_the_idle_wait() {
    let (p, _a) = proxy("keepalive_timeout = \"30s\"\nheader_read_timeout = \"1s\"");
    let mut s = TcpStream::connect(p.addr).unwrap();
    assert_eq!(keepalive_get(&mut s), 200);
    // Idle longer than the header timeout: still open, because idling is not sending a head.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(keepalive_get(&mut s), 200);
    // A head that stalls after its first bytes is cut after header_read_timeout.
    s.write_all(b"GET /small HTTP/1.1\r\n").unwrap();
    let waited = closed_after(&mut s);
    assert!(waited < Duration::from_secs(4), "slow head not cut: {waited:?}");
    eventually(5, "counted", || p.metric("ringmaster_local_answers_total{reason=\"header_timeout\"}") == 1.0);
    // A connection that never sends anything is cut after header_read_timeout too (slowloris).
    let mut silent = TcpStream::connect(p.addr).unwrap();
    let waited = closed_after(&mut silent);
    assert!(waited < Duration::from_secs(4), "silent connection not cut: {waited:?}");
    assert_eq!(p.metric("ringmaster_connections_idle_closed_total"), 0.0);
}

#[test]
fn idle_http2_connections_have_no_head_timer_and_close_when_idle() {
    let (p, _a) = proxy("keepalive_timeout = \"3s\"\nheader_read_timeout = \"1s\"");
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.write_all(PREFACE).unwrap();
    s.write_all(&frame(4, 0, 0, &[])).unwrap();
    let waited = closed_after(&mut s);
    assert!(waited > Duration::from_millis(2500) && waited < Duration::from_secs(6), "closed after {waited:?}");
    assert_eq!(p.metric("ringmaster_connections_idle_closed_total"), 1.0);
}

#[test]
fn an_http2_rapid_reset_flood_gets_goaway() {
    let (p, _a) = proxy("h2_max_reset_streams = 20");
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.write_all(PREFACE).unwrap();
    s.write_all(&frame(4, 0, 0, &[])).unwrap();
    // GET / with :authority localhost, then an immediate RST_STREAM (CANCEL), 500 times.
    let mut block = vec![0x82, 0x86, 0x84, 0x01, 9];
    block.extend_from_slice(b"localhost");
    let mut flood = Vec::new();
    for i in 0..500u32 {
        let id = 2 * i + 1;
        flood.extend(frame(1, 0x5, id, &block));
        flood.extend(frame(3, 0, id, &8u32.to_be_bytes()));
    }
    let _ = s.write_all(&flood);
    // Read frames until GOAWAY.
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 16384];
    let mut goaway = None;
    'read: while let Ok(n) = s.read(&mut chunk) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        while got.len() >= at + 9 {
            let len = (got[at] as usize) << 16 | (got[at + 1] as usize) << 8 | got[at + 2] as usize;
            if got.len() < at + 9 + len {
                break;
            }
            if got[at + 3] == 7 {
                let code = u32::from_be_bytes(got[at + 13..at + 17].try_into().unwrap());
                goaway = Some(code);
                break 'read;
            }
            at += 9 + len;
        }
    }
    assert_eq!(goaway, Some(0xb), "expected GOAWAY ENHANCE_YOUR_CALM");
    eventually(5, "counted", || p.metric("ringmaster_local_answers_total{reason=\"h2_flood\"}") == 1.0);
}

#[test]
fn a_stalled_upstream_body_is_cut_off_after_body_idle() {
    let a = backend("a");
    let p = Proxy::start(&(route_all("app") + &service("app", "round_robin", &[&a], "timeouts = { body_idle = \"300ms\" }")));
    // HTTP/1.1: the head and the first bytes arrive, then the connection closes.
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.write_all(b"GET /stall HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200") && text.ends_with("0123456789"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10), "held for {:?}", started.elapsed());
    assert_eq!(p.metric("ringmaster_upstream_stalled_total"), 1.0);
    // HTTP/2: the stream is reset although the connection stays alive.
    let started = Instant::now();
    let out = std::process::Command::new("curl")
        .args(["-s", "--http2-prior-knowledge", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{}/stall", p.addr))
        .output()
        .unwrap();
    assert!(!out.status.success(), "curl read a whole answer: {}", String::from_utf8_lossy(&out.stdout));
    assert!(started.elapsed() < Duration::from_secs(10), "held for {:?}", started.elapsed());
    assert_eq!(p.metric("ringmaster_upstream_stalled_total"), 2.0);
}

/// The defaults a user of nginx or HAProxy expects to be on: a request body
/// that crawls below 500 bytes a second (Apache's mod_reqtimeout MinRate)
/// is cut with 408 after the 5 s grace, and one client address holds at most
/// 256 connections.
#[test]
fn a_crawling_body_and_a_connection_hog_are_refused_by_default() {
    let (p, a) = proxy("");
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    while started.elapsed() < Duration::from_secs(12) && !got.ends_with(b"\r\n\r\n") {
        // 100 bytes a second.
        if s.write_all(&[b'x'; 10]).is_err() {
            break;
        }
        let mut chunk = [0u8; 1024];
        if let Ok(n) = s.read(&mut chunk) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
    }
    let said = String::from_utf8_lossy(&got);
    assert!(said.starts_with("HTTP/1.1 408"), "a 100 B/s body was not cut ({:?}): {said}", started.elapsed());
    drop(s);
    let _ = a;
    // 256 connections from one address are served; the 257th is refused.
    let mut held: Vec<TcpStream> = (0..256).map(|_| TcpStream::connect(p.addr).unwrap()).collect();
    assert_eq!(keepalive_get(&mut held[255]), 200);
    eventually(5, "the 257th connection is refused", || p.get("/small").status == 429);
}
