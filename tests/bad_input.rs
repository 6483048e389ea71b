//! Bad input from clients and from backends: each gets a defined answer and a
//! metric, and the proxy keeps serving other requests.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn proxy_with(extra_top: &str, svc_extra: &str) -> (Proxy, Backend) {
    let a = backend("a");
    let p = Proxy::start(&(extra_top.to_string() + &route_all("app") + &service("app", "round_robin", &[&a], svc_extra)));
    (p, a)
}

fn still_serving(p: &Proxy) {
    let r = p.get("/");
    assert_eq!(r.status, 200, "proxy stopped serving: {}", r.text());
}

#[test]
fn malformed_requests_get_400() {
    let (p, _a) = proxy_with("", "");
    for raw in [
        "GARBAGE\r\n\r\n",
        "GET / HTTP/9.9\r\n\r\n",
        "GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n",
    ] {
        let r = request(p.addr, raw);
        assert_eq!(r.status, 400, "{raw:?} -> {}", r.status);
    }
    eventually(5, "bad requests counted", || p.metric("ringmaster_local_answers_total{reason=\"bad_request\"}") >= 4.0);
    still_serving(&p);
}

#[test]
fn oversized_headers_get_431() {
    let (p, _a) = proxy_with("[limits]\nmax_header_bytes = 2048\nmax_headers = 20\n\n", "");
    let big = "x".repeat(4000);
    let r = request(p.addr, &format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\nConnection: close\r\n\r\n"));
    assert_eq!(r.status, 431);
    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = request(p.addr, &format!("GET / HTTP/1.1\r\nHost: a\r\n{many}Connection: close\r\n\r\n"));
    assert_eq!(r.status, 431);
    // Far beyond any buffer: hyper's own limit answers 431 too.
    let series = "ringmaster_local_answers_total{reason=\"headers_too_large\"}";
    assert_eq!(p.metric(series), 2.0);
    let huge = "y".repeat(100_000);
    let r = request_bytes(p.addr, format!("GET / HTTP/1.1\r\nHost: a\r\nX-Huge: {huge}\r\n\r\n").as_bytes());
    // The client may be reset while still writing (the proxy stops reading at its
    // buffer limit), so the answer is not always readable; the refusal is always counted.
    if let Ok(r) = r {
        assert_eq!(r.status, 431);
    }
    eventually(5, "hyper's 431 counted", || p.metric(series) == 3.0);
    still_serving(&p);
}

#[test]
fn oversized_bodies_get_413() {
    let (p, _a) = proxy_with("[limits]\nmax_body_bytes = 1000\n\n", "");
    let body = "z".repeat(5000);
    let r = request(p.addr, &format!("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n{body}"));
    assert_eq!(r.status, 413);
    // Chunked, so the size is only known while streaming.
    let r = request(
        p.addr,
        &format!("POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n1388\r\n{body}\r\n0\r\n\r\n"),
    );
    assert_eq!(r.status, 413);
    // A body within the limit passes.
    let r = request(p.addr, "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
    assert_eq!(r.json()["body_len"], 5);
    assert!(p.metric("ringmaster_local_answers_total{reason=\"body_too_large\"}") >= 2.0);
    still_serving(&p);
}

#[test]
fn backend_closing_mid_response_does_not_hang_the_client() {
    let (p, _a) = proxy_with("", "");
    let start = Instant::now();
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /close-mid HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    // The client sees the promised length cut short and the connection closed.
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("content-length: 1000"), "{text}");
    assert!(buf.len() < 1000, "{}", buf.len());
    assert!(start.elapsed() < Duration::from_secs(5));
    still_serving(&p);
}

#[test]
fn hanging_backend_gets_504() {
    let (p, _a) = proxy_with("", "timeouts = { connect = \"200ms\", request = \"300ms\" }");
    let r = p.get("/hang");
    assert_eq!(r.status, 504);
    assert_eq!(p.metric("ringmaster_local_answers_total{reason=\"upstream_timeout\"}"), 1.0);
    still_serving(&p);
}

#[test]
fn garbage_backend_gets_502() {
    let g = backend_with("g", &["--garbage"]);
    let p = Proxy::start(&(route_all("app") + &service("app", "round_robin", &[&g], "")));
    let r = p.get("/");
    assert_eq!(r.status, 502);
    assert!(r.text().contains("upstream"), "{}", r.text());
}

#[test]
fn dead_backends_get_502_and_empty_pools_503() {
    let dead = free_addr();
    let cfg = format!(
        "{}[[routes]]\npath_prefix = \"/empty\"\nservice = \"empty\"\n\n[services.app]\nkind = \"replicated\"\nendpoints = [{{ address = \"{dead}\" }}]\n\n[services.empty]\nkind = \"replicated\"\n",
        "[[routes]]\npath_prefix = \"/app\"\nservice = \"app\"\n\n"
    );
    let p = Proxy::start(&cfg);
    assert_eq!(p.get("/app").status, 502);
    assert_eq!(p.get("/empty").status, 503);
    assert_eq!(p.get("/nowhere").status, 404);
    assert_eq!(p.metric("ringmaster_local_answers_total{reason=\"no_endpoint\"}"), 1.0);
    assert_eq!(p.metric("ringmaster_local_answers_total{reason=\"no_route\"}"), 1.0);
}

#[test]
fn slow_header_client_is_cut_off() {
    let (p, _a) = proxy_with("[limits]\nheader_read_timeout = \"300ms\"\n\n", "");
    let start = Instant::now();
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(start.elapsed() < Duration::from_secs(5), "slow client held the connection {:?}", start.elapsed());
    eventually(5, "timeout counted", || p.metric("ringmaster_local_answers_total{reason=\"header_timeout\"}") >= 1.0);
    still_serving(&p);
}

#[test]
fn connections_per_client_are_capped() {
    let (p, _a) = proxy_with("[limits]\nmax_connections_per_client = 2\n\n", "");
    // Two keep-alive connections, each after one answered request (so each
    // surely holds its slot), hold the client's slots...
    let held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(p.addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
            let mut got = Vec::new();
            let mut chunk = [0u8; 1024];
            while !String::from_utf8_lossy(&got).contains("hello from") {
                let n = s.read(&mut chunk).unwrap();
                assert!(n > 0, "closed early");
                got.extend_from_slice(&chunk[..n]);
            }
            s
        })
        .collect();
    // ...so a third is answered 429 and closed.
    let r = p.get("/");
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.text().contains("too many connections"));
    assert_eq!(p.metric("ringmaster_local_answers_total{reason=\"too_many_connections\"}"), 1.0);
    drop(held);
    eventually(5, "slots released", || p.get("/").status == 200);
}

#[test]
fn a_stalled_request_body_gets_408() {
    let (p, _a) = proxy_with("[limits]\nbody_read_timeout = \"300ms\"\n\n", "");
    let start = Instant::now();
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly ten b").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(p.metric("ringmaster_local_answers_total{reason=\"body_timeout\"}"), 1.0);
    still_serving(&p);
}

#[test]
fn slow_clients_do_not_block_a_fast_one() {
    let (p, _a) = proxy_with("[limits]\nheader_read_timeout = \"60s\"\nbody_read_timeout = \"60s\"\n\n", "");
    // Fifty slowloris connections, half stalled in their headers, half in a body.
    let slow: Vec<TcpStream> = (0..50)
        .map(|i| {
            let mut s = TcpStream::connect(p.addr).unwrap();
            let part: &[u8] = if i % 2 == 0 {
                b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: "
            } else {
                b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\nabc"
            };
            s.write_all(part).unwrap();
            s
        })
        .collect();
    // A fast client is answered while every slow one is still waiting.
    for _ in 0..10 {
        assert_eq!(p.get("/").status, 200);
    }
    for mut s in slow {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 16];
        assert!(matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock), "a slow connection was answered or closed");
    }
}
