//! What the ambassador promises of replicas, ejection and reloads, each
//! shown against real memcached: many clients share the configured server
//! connections, `writes = "all"` and `"majority"` with a dead replica, a
//! stopped replica's reads fail over on the timeout and then fail fast while
//! it is ejected, `auto_eject_hosts` re-hashes a dead shard's keys, and many
//! reloads that add and remove endpoints and shards under pipelined load
//! leave every answer well formed and in order.

mod common;
use common::mc::*;
use common::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// 50 clients at once over `server_connections = 2`: memcached itself sees two
/// connections from the ambassador, however many clients there are.
#[test]
fn fifty_clients_share_the_configured_server_connections() {
    let m = memcached();
    // memcached counts a closed connection until it reads the close: the
    // baseline is a count that held twice, 50 ms apart.
    let mut baseline = server_stat(m.addr, "curr_connections");
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let again = server_stat(m.addr, "curr_connections");
        if again == baseline {
            break;
        }
        baseline = again;
    }
    let listen = free_addr();
    let p = Proxy::start(&ambassador(listen, &[("s", vec![m.addr])], "", "server_connections = 2"));
    wait_port(listen);
    let go = Arc::new(AtomicBool::new(true));
    let clients: Vec<_> = (0..50)
        .map(|i| {
            let go = go.clone();
            std::thread::spawn(move || {
                let mut c = Raw::connect(listen);
                let mut n = 0;
                while go.load(Relaxed) || n < 20 {
                    assert_eq!(c.line(&format!("set c{i}k{n} 0 0 1\r\nv\r\n")), "STORED\r\n");
                    assert_eq!(
                        c.ask(format!("get c{i}k{n}\r\n").as_bytes(), b"END\r\n", 1),
                        format!("VALUE c{i}k{n} 0 1\r\nv\r\nEND\r\n").into_bytes()
                    );
                    n += 1;
                }
                c
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut during = server_stat(m.addr, "curr_connections");
    while during != baseline + 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        during = server_stat(m.addr, "curr_connections");
    }
    go.store(false, Relaxed);
    let open: Vec<Raw> = clients.into_iter().map(|c| c.join().expect("no command failed")).collect();
    assert_eq!(during, baseline + 2, "memcached's own count of connections (50 clients open: {})", open.len());
    drop(p);
}

/// Three replicas, one dead: `writes = "majority"` stores (two of three),
/// `writes = "all"` answers the failure; reads still find the value.
#[test]
fn writes_all_and_majority_with_one_replica_dead() {
    let servers: Vec<Memcached> = (0..3).map(|_| memcached()).collect();
    let addrs: Vec<SocketAddr> = servers.iter().map(|m| m.addr).collect();
    let (majority, all) = (free_addr(), free_addr());
    let p1 = Proxy::start(&ambassador(majority, &[("s", addrs.clone())], "", "writes = \"majority\"\nserver_failure_limit = 0"));
    let p2 = Proxy::start(&ambassador(all, &[("s", addrs.clone())], "", "writes = \"all\"\nserver_failure_limit = 0"));
    wait_port(majority);
    wait_port(all);
    let (mut m, mut a) = (Raw::connect(majority), Raw::connect(all));
    assert_eq!(m.line("set k 0 0 1\r\n1\r\n"), "STORED\r\n");
    assert_eq!(a.line("set k 0 0 1\r\n2\r\n"), "STORED\r\n");
    let mut servers = servers;
    drop(servers.remove(2));
    for i in 0..5 {
        assert_eq!(m.line(&format!("set k 0 0 1\r\n{i}\r\n")), "STORED\r\n", "majority: two of three stored");
        let got = a.line(&format!("set k 0 0 1\r\n{i}\r\n"));
        assert!(got.starts_with("SERVER_ERROR "), "all: one replica failed, the client is told: {got}");
        for s in &servers {
            assert_eq!(Raw::connect(s.addr).ask(b"get k\r\n", b"END\r\n", 1), format!("VALUE k 0 1\r\n{i}\r\nEND\r\n").into_bytes());
        }
    }
    drop((p1, p2));
}

/// A stopped (not killed) replica: the first read waits the request timeout
/// and fails over to the other replica; once ejected, reads skip it at once.
#[test]
fn a_stopped_replica_fails_over_on_the_timeout_then_fails_fast_while_ejected() {
    let (one, two) = (memcached(), memcached());
    let listen = free_addr();
    let extra = "reads = \"local_first\"\nserver_failure_limit = 1\nserver_retry_timeout = \"30s\"";
    let p = Proxy::start(&ambassador(listen, &[("s", vec![one.addr, two.addr])], "", extra));
    wait_port(listen);
    let mut c = Raw::connect(listen);
    assert_eq!(c.line("set k 0 0 1\r\nv\r\n"), "STORED\r\n");
    one.proc.signal("STOP");
    let started = Instant::now();
    assert_eq!(c.ask(b"get k\r\n", b"END\r\n", 1), b"VALUE k 0 1\r\nv\r\nEND\r\n");
    let first = started.elapsed();
    assert!(first >= Duration::from_millis(900), "the first read failed over before the timeout: {first:?}");
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(c.ask(b"get k\r\n", b"END\r\n", 1), b"VALUE k 0 1\r\nv\r\nEND\r\n");
    }
    assert!(started.elapsed() < Duration::from_millis(900), "ejected, it is skipped at once: {:?}", started.elapsed());
    one.proc.signal("CONT");
    drop(p);
}

/// `auto_eject_hosts`: once a dead shard is ejected its keys are placed on
/// the next shard of the ring and work again (nutcracker's behaviour).
#[test]
fn auto_eject_hosts_rehashes_a_dead_shards_keys() {
    let (a, b) = (memcached(), memcached());
    let listen = free_addr();
    let extra = "auto_eject_hosts = true\nserver_failure_limit = 1\nserver_retry_timeout = \"30s\"";
    let p = Proxy::start(&ambassador(listen, &[("a", vec![a.addr]), ("b", vec![b.addr])], "function = \"maglev\"", extra));
    wait_port(listen);
    let mut c = Raw::connect(listen);
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    for k in &keys {
        assert_eq!(c.line(&format!("set {k} 0 0 1\r\nv\r\n")), "STORED\r\n");
    }
    let on_a: Vec<&String> = keys.iter().filter(|k| Raw::connect(a.addr).line(&format!("get {k}\r\n")).starts_with("VALUE")).collect();
    assert!(!on_a.is_empty());
    drop(a);
    // The first command to the dead shard fails and ejects it; then its keys live on b.
    let _ = c.line(&format!("set {} 0 0 1\r\nw\r\n", on_a[0]));
    for k in &on_a {
        assert_eq!(c.line(&format!("set {k} 0 0 1\r\nw\r\n")), "STORED\r\n", "{k} re-hashed");
        assert_eq!(c.ask(format!("get {k}\r\n").as_bytes(), b"END\r\n", 1), format!("VALUE {k} 0 1\r\nw\r\nEND\r\n").into_bytes());
    }
    assert!(
        Raw::connect(b.addr).ask(format!("get {}\r\n", on_a[0]).as_bytes(), b"END\r\n", 1).starts_with(b"VALUE"),
        "the key lives on b now"
    );
    drop(p);
}

/// Twelve reloads, by SIGHUP and by the admin endpoint, that add and remove
/// an endpoint and a shard, while clients pipeline sets and gets with
/// miss_failover off: every answer is well formed, in order, and of the key
/// asked (a value, or a miss for a key that moved).
#[test]
fn many_reloads_under_pipelined_load_keep_every_answer_in_order() {
    let servers: Vec<Memcached> = (0..4).map(|_| memcached()).collect();
    let listen = free_addr();
    let small = ambassador(listen, &[("a", vec![servers[0].addr]), ("b", vec![servers[1].addr])], "", "");
    let big = ambassador(
        listen,
        &[("a", vec![servers[0].addr, servers[2].addr]), ("b", vec![servers[1].addr]), ("c", vec![servers[3].addr])],
        "",
        "",
    );
    let p = Proxy::start(&small);
    wait_port(listen);
    let go = Arc::new(AtomicBool::new(true));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let go = go.clone();
            std::thread::spawn(move || {
                let mut c = Raw::connect(listen);
                let mut rounds = 0;
                while go.load(Relaxed) {
                    let mut batch = String::new();
                    for i in 0..20 {
                        let k = format!("w{w}r{rounds}k{i}");
                        batch.push_str(&format!("set {k} 0 0 {}\r\n{k}\r\nget {k}\r\n", k.len()));
                    }
                    batch.push_str("mn\r\n");
                    let got = String::from_utf8(c.ask(batch.as_bytes(), b"MN\r\n", 1)).unwrap();
                    let mut lines = got.split("\r\n");
                    for i in 0..20 {
                        let k = format!("w{w}r{rounds}k{i}");
                        assert_eq!(lines.next(), Some("STORED"), "round {rounds}: {got}");
                        match lines.next() {
                            Some("END") => {}
                            Some(l) if l == format!("VALUE {k} 0 {}", k.len()) => {
                                assert_eq!(lines.next(), Some(k.as_str()));
                                assert_eq!(lines.next(), Some("END"));
                            }
                            other => panic!("round {rounds}, key {k}: {other:?} in {got}"),
                        }
                    }
                    assert_eq!(lines.next(), Some("MN"));
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();
    for swap in 0..12 {
        std::thread::sleep(Duration::from_millis(150));
        p.rewrite(if swap % 2 == 0 { &big } else { &small });
        if swap % 3 == 0 {
            let r = request(p.admin, "POST /admin/reload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            assert_eq!(r.status, 200, "{}", r.text());
        } else {
            p.proc.signal("HUP");
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    go.store(false, Relaxed);
    let rounds: usize = workers.into_iter().map(|w| w.join().expect("every answer well formed")).sum();
    assert!(rounds > 20, "only {rounds} rounds ran");
    assert!(p.stderr().matches("config reloaded").count() >= 8, "{}", p.stderr());
    assert_eq!(p.metric("ringmaster_memcache_desyncs_total"), 0.0);
    drop(p);
}

/// Two worker threads, 32 clients sending gets and meta gets over one
/// server connection per endpoint for three seconds: no answer is ever
/// taken for one nobody asked for (the writer and the reader of a server
/// connection run on different threads), no command fails.
#[test]
fn two_workers_under_pipelined_load_never_call_a_server_out_of_step() {
    let servers: Vec<Memcached> = (0..2).map(|_| memcached()).collect();
    let listen = free_addr();
    let cfg =
        format!("[server]\nworkers = 2\n\n{}", ambassador(listen, &[("a", vec![servers[0].addr]), ("b", vec![servers[1].addr])], "", ""));
    let p = Proxy::start(&cfg);
    wait_port(listen);
    let mut c = Raw::connect(listen);
    for i in 0..20 {
        assert_eq!(c.line(&format!("set k{i} 0 0 2\r\nv{}\r\n", i % 10)), "STORED\r\n");
    }
    let until = Instant::now() + Duration::from_secs(3);
    let clients: Vec<_> = (0..32)
        .map(|w| {
            std::thread::spawn(move || {
                let mut c = Raw::connect(listen);
                // Half pipeline 16 commands; half send one at a time, so that
                // the server connections go idle between answers.
                let depth = if w % 2 == 0 { 8 } else { 1 };
                let mut batch = String::new();
                for i in 0..depth {
                    let k = (w + i) % 20;
                    batch.push_str(&format!("get k{k}\r\nmg k{k} v\r\n"));
                }
                batch.push_str("mn\r\n");
                while Instant::now() < until {
                    let got = String::from_utf8(c.ask(batch.as_bytes(), b"MN\r\n", 1)).unwrap();
                    assert!(!got.contains("ERROR"), "{got}");
                    assert_eq!(got.matches("VALUE ").count(), depth, "{got}");
                    assert_eq!(got.matches("VA 2").count(), depth, "{got}");
                }
            })
        })
        .collect();
    for t in clients {
        t.join().expect("no command failed");
    }
    assert_eq!(p.metric("ringmaster_memcache_desyncs_total"), 0.0);
    drop(p);
}
