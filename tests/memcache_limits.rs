//! The ambassador's bounds on its clients, against real memcached: each
//! memcache listener has its own connection limits (idle memcache clients
//! never take an HTTP client's place), idle clients are closed, and a client
//! that pipelines big multi-gets and never reads neither pins the proxy's
//! memory nor stays open past the write timeout.

mod common;
use common::mc::*;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The ambassador's config with `clients` on its listener.
fn with_clients(listen: SocketAddr, shards: &[(&str, Vec<SocketAddr>)], extra: &str, clients: &str) -> String {
    ambassador(listen, shards, "", extra).replacen(
        "service = \"cache\"\n\n[services.cache]",
        &format!("service = \"cache\"\nclients = {{ {clients} }}\n\n[services.cache]"),
        1,
    )
}

/// Whether the peer closed `s` within `wait`, and what it said before.
fn closed_within(s: &mut TcpStream, wait: Duration) -> (bool, String) {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (closed, String::from_utf8_lossy(&got).into_owned())
}

/// Item 8: a memcache listener's clients count against its own
/// max_connections, not [limits].max_connections of HTTP; the one past it is
/// told so and closed; per-address caps and the idle timeout hold.
#[test]
fn memcache_clients_have_their_own_limits_and_never_lock_out_http() {
    let m = memcached();
    let web = backend("web");
    let listen = free_addr();
    let cfg = format!("[limits]\nmax_connections = 4\n\n{}{}", service("web", "round_robin", &[&web], ""), route_all("web"))
        + &with_clients(listen, &[("s", vec![m.addr])], "", "max_connections = 8, max_per_address = 6, idle_timeout = \"2s\"");
    let p = Proxy::start(&cfg);
    wait_port(listen);
    // wait_port's own connection gives its slot back once the proxy sees it close.
    eventually(5, "the readiness probe's connection is gone", || p.metric("ringmaster_memcache_connections") == 0.0);
    // Six idle clients from one address: all served.
    let mut idle: Vec<Raw> = (0..6).map(|_| Raw::connect(listen)).collect();
    for c in &mut idle {
        assert_eq!(c.line("mn\r\n"), "MN\r\n");
    }
    // HTTP still answers (its limit is 4; six memcache clients are open).
    for _ in 0..3 {
        assert_eq!(p.get("/").status, 200);
    }
    // A seventh from the same address is over max_per_address.
    let (closed, said) = closed_within(&mut TcpStream::connect(listen).unwrap(), Duration::from_secs(3));
    assert!(closed && said == "ERROR Too many open connections\r\n", "{closed} {said:?}");
    // From other addresses: two more fit max_connections = 8, the ninth does not.
    let from = |last: u8| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let s = rt.block_on(async {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind(SocketAddr::from(([127, 0, 0, last], 0))).unwrap();
            sock.connect(listen).await.unwrap()
        });
        let s = s.into_std().unwrap();
        s.set_nonblocking(false).unwrap();
        Raw(s)
    };
    let mut more: Vec<Raw> = (2..4).map(from).collect();
    for c in &mut more {
        c.0.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(c.line("mn\r\n"), "MN\r\n");
    }
    let (closed, said) = closed_within(&mut from(9).0, Duration::from_secs(3));
    assert!(closed && said == "ERROR Too many open connections\r\n", "{closed} {said:?}");
    assert!(p.metric("ringmaster_memcache_refused_connections_total") >= 2.0);
    // Idle for 2 s: closed, and their places are free again.
    let started = Instant::now();
    let (closed, said) = closed_within(&mut idle[0].0, Duration::from_secs(6));
    assert!(closed && said.is_empty(), "{closed} {said:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    eventually(5, "every idle client was closed", || p.metric("ringmaster_memcache_idle_closed_total") >= 8.0);
    let mut again = Raw::connect(listen);
    assert_eq!(again.line("mn\r\n"), "MN\r\n");
    drop(p);
}

/// The proxy's resident memory, from /proc.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").trim().parse().unwrap()
}

/// Item 4: a client that sends 1.6 KB of gets of one 1 MB value (the key
/// asked ~400 times) and never reads pins about one copy of the value, not
/// one per key asked; with its answers unread past the write timeout it is
/// closed, and a client that does read gets every copy it asked for.
#[test]
fn a_client_that_never_reads_pins_little_and_is_closed_after_the_write_timeout() {
    let m = memcached_with(&["-I", "2m"]);
    let listen = free_addr();
    let cfg = with_clients(
        listen,
        &[("s", vec![m.addr])],
        "max_value_bytes = 2097152",
        "write_timeout = \"2s\", max_total_pending_bytes = 17179869184",
    );
    let p = Proxy::start(&cfg);
    wait_port(listen);
    let value = vec![b'v'; 1024 * 1024];
    let mut c = Raw::connect(listen);
    let mut set = b"set big 0 0 1048576\r\n".to_vec();
    set.extend_from_slice(&value);
    set.extend_from_slice(b"\r\n");
    assert_eq!(c.ask(&set, b"\r\n", 1), b"STORED\r\n");
    let before = rss_kib(p.proc.pid());
    let gets: String = (0..2).map(|_| format!("get {}\r\n", vec!["big"; 200].join(" "))).collect();
    let mut clients: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(listen).unwrap()).collect();
    for s in &mut clients {
        // A small receive buffer, never read: the answers stay with the proxy.
        s.write_all(gets.as_bytes()).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1000));
    let during = rss_kib(p.proc.pid());
    // Four clients asked 1,600 copies of 1 MB; far less than one copy each per key is held.
    assert!(during < before + 64 * 1024, "RSS went from {before} KiB to {during} KiB");
    // Never read: closed by the write timeout, and what they held is freed.
    eventually(10, "the clients that never read are closed", || p.metric("ringmaster_memcache_write_timeouts_total") >= 4.0);
    assert_eq!(p.metric("ringmaster_memcache_connections"), 1.0, "only the first client is open");
    drop(clients);
    // A client that reads gets every value it asked for, in order.
    let mut reader = TcpStream::connect(listen).unwrap();
    reader.write_all(format!("get {}\r\n", vec!["big"; 50].join(" ")).repeat(2).as_bytes()).unwrap();
    let one = [format!("VALUE big 0 {}\r\n", value.len()).into_bytes(), value.clone(), b"\r\n".to_vec()].concat();
    let mut got = vec![0u8; 2 * (50 * one.len() + 5)];
    reader.read_exact(&mut got).unwrap();
    let answer = [one.repeat(50), b"END\r\n".to_vec()].concat();
    assert!(got == answer.repeat(2), "the values came back whole and in order");
    drop(p);
}

/// A pipeline far deeper than `max_in_flight`, of commands answered at once
/// and of commands a server answers, sent in one write: every answer comes,
/// in order (the client's unread commands are parsed as room is made, not
/// when more bytes arrive).
#[test]
fn a_pipeline_deeper_than_max_in_flight_is_answered_whole() {
    let m = memcached();
    let listen = free_addr();
    let p = Proxy::start(&with_clients(listen, &[("s", vec![m.addr])], "", "max_in_flight = 4"));
    wait_port(listen);
    let mut c = Raw::connect(listen);
    let mut batch = String::new();
    let mut want = String::new();
    for i in 0..500 {
        batch.push_str(&format!("mn\r\nset k{i} 0 0 1\r\nv\r\nget k{i}\r\n"));
        want.push_str(&format!("MN\r\nSTORED\r\nVALUE k{i} 0 1\r\nv\r\nEND\r\n"));
    }
    batch.push_str("mn\r\n");
    want.push_str("MN\r\n");
    let got = c.ask(batch.as_bytes(), b"MN\r\n", 501);
    assert!(String::from_utf8_lossy(&got) == want, "answers missing or out of order");
    assert_eq!(p.metric("ringmaster_memcache_desyncs_total"), 0.0, "a server connection in step was called out of step");
    drop(p);
}

/// Past the listener's max_total_pending_bytes, clients that do not read
/// their answers are closed, and a client that reads keeps being served.
#[test]
fn clients_that_never_read_are_closed_once_the_listener_budget_is_spent() {
    let m = memcached_with(&["-I", "2m"]);
    let listen = free_addr();
    let clients = "max_pending_bytes = 65536, max_total_pending_bytes = 4194304, write_timeout = \"60s\"";
    let p = Proxy::start(&with_clients(listen, &[("s", vec![m.addr])], "max_value_bytes = 2097152", clients));
    wait_port(listen);
    let mut c = Raw::connect(listen);
    let value = vec![b'v'; 1024 * 1024];
    for k in ["b0", "b1", "b2", "b3"] {
        let mut set = format!("set {k} 0 0 1048576\r\n").into_bytes();
        set.extend_from_slice(&value);
        set.extend_from_slice(b"\r\n");
        assert_eq!(c.ask(&set, b"\r\n", 1), b"STORED\r\n");
    }
    let before = rss_kib(p.proc.pid());
    let mut idle: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(listen).unwrap()).collect();
    for s in &mut idle {
        s.write_all(b"get b0 b1 b2 b3\r\nget b0 b1 b2 b3\r\n").unwrap();
    }
    eventually(10, "clients that never read are closed", || p.metric("ringmaster_memcache_closed_memory_total") >= 20.0);
    // 40 clients asked 320 MB; the proxy holds a small part of it.
    let during = rss_kib(p.proc.pid());
    assert!(during < before + 128 * 1024, "RSS went from {before} KiB to {during} KiB");
    // A client that reads is answered meanwhile.
    let mut reader = TcpStream::connect(listen).unwrap();
    reader.write_all(b"get b0 b1\r\n").unwrap();
    let mut got = vec![0u8; 2 * (value.len() + 22) + 5];
    reader.read_exact(&mut got).unwrap();
    assert!(got.starts_with(b"VALUE b0 0 1048576\r\n") && got.ends_with(b"\r\nEND\r\n"));
    drop(idle);
    drop(p);
}
