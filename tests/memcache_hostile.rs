//! The ambassador under hostile clients, against real memcached: a NUL byte
//! or a key a server would read differently never shifts a shared server
//! connection, a hot key's copies are dropped by a line that holds the key
//! whole, no answer waits for the client's next bytes, and bad numbers and
//! foreign protocols get memcached's own answers.

mod common;
use common::mc::*;
use common::*;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

fn one_shard(extra: &str) -> (Memcached, Proxy, SocketAddr) {
    let m = memcached();
    let listen = free_addr();
    let p = Proxy::start(&ambassador(listen, &[("s", vec![m.addr])], "", extra));
    wait_port(listen);
    (m, p, listen)
}

/// Item 1: a NUL ends a line early for memcached. An attacker's `mg ... q\0`
/// would get no answer from the server, and the next client's answer on the
/// shared server connection would go to the attacker; a storage line with a
/// NUL would run its data block as commands on the server.
#[test]
fn a_nul_in_a_line_never_shifts_the_shared_server_connection() {
    let (m, p, listen) = one_shard("");
    let mut victim = Raw::connect(listen);
    assert_eq!(victim.line("set secret 0 0 7\r\nhunter2\r\n"), "STORED\r\n");
    let mut attacker = Raw::connect(listen);
    for round in 0..20 {
        let got = attacker.ask(b"mg nokey v q\0\r\n", b"\r\n", 1);
        assert_eq!(String::from_utf8_lossy(&got), "CLIENT_ERROR bad command line format\r\n", "round {round}");
        let got = victim.ask(b"mg secret v\r\n", b"hunter2\r\n", 1);
        assert_eq!(String::from_utf8_lossy(&got), "VA 7\r\nhunter2\r\n", "round {round}");
    }
    // A storage line with a NUL: refused, and its data block (a command) is swallowed, never run.
    let smuggled = b"set k\0 0 0 16\r\ncache_memlimit 8\r\nmn\r\n";
    let got = attacker.ask(smuggled, b"MN\r\n", 1);
    assert_eq!(String::from_utf8_lossy(&got), "CLIENT_ERROR bad command line format\r\nMN\r\n");
    let limit = String::from_utf8(Raw::connect(m.addr).ask(b"stats settings\r\n", b"END\r\n", 1)).unwrap();
    assert!(limit.contains("STAT maxbytes 67108864\r\n"), "memcached's memory limit was changed: {limit}");
    // Keys with control bytes or DEL are refused the same way, in every command.
    for bad in [&b"get a\x01b\r\n"[..], b"delete a\x7f\r\n", b"mg a\x02 v\r\n", b"incr a\x1b 1\r\n", b"touch a\x0bb 1\r\n"] {
        assert_eq!(attacker.ask(bad, b"\r\n", 1), b"CLIENT_ERROR bad command line format\r\n", "{bad:?}");
    }
    let got = attacker.ask(b"set a\x01 0 0 3 noreply\r\nabc\r\nms b\x05 2\r\nhi\r\nmn\r\n", b"MN\r\n", 1);
    assert_eq!(String::from_utf8_lossy(&got), "CLIENT_ERROR bad command line format\r\nMN\r\n", "noreply silences the text refusal only");
    assert_eq!(victim.ask(b"mg secret v\r\n", b"hunter2\r\n", 1), b"VA 7\r\nhunter2\r\n");
    // Nothing was ejected by any of it.
    let stats = String::from_utf8(victim.ask(b"stats\r\n", b"END\r\n", 1)).unwrap();
    assert!(stats.contains("STAT endpoints_ejected 0\r\n"), "{stats}");
    drop(p);
}

/// Item 2: a hot key sent in base64 whose bytes hold a command: dropping its
/// split copies must not run that command on the copies' shard.
#[test]
fn a_hot_base64_key_never_injects_a_command_into_split_copies() {
    use base64::Engine as _;
    let servers = [memcached(), memcached(), memcached()];
    let listen = free_addr();
    let shards: Vec<(&str, Vec<SocketAddr>)> =
        vec![("a", vec![servers[0].addr]), ("b", vec![servers[1].addr]), ("c", vec![servers[2].addr])];
    let cfg = ambassador(listen, &shards, "function = \"maglev\"", "")
        + "[services.cache.heat]\nwindow = \"2s\"\nsample = 1\nhot_share = 0.2\n\n[services.cache.hot_keys]\nsplit = 3\nttl = \"30s\"\n";
    let p = Proxy::start(&cfg);
    wait_port(listen);
    let hostile = base64::engine::general_purpose::STANDARD.encode(b"x\r\nset injected 0 0 3\r\nabc");
    let mut c = Raw::connect(listen);
    assert_eq!(c.line(&format!("ms {hostile} 1 b\r\nv\r\n")), "HD\r\n");
    eventually(15, "the base64 key is hot", || {
        let batch: String = (0..200).map(|_| format!("mg {hostile} b v\r\n")).collect();
        c.ask(batch.as_bytes(), b"v\r\n", 200);
        p.admin_json("/admin/heat")["services"][0]["top_keys"].as_array().is_some_and(|a| a.iter().any(|k| k["hot"] == true))
    });
    // The hot set the write path reads is swapped in by the heat tick (once a second).
    let until = std::time::Instant::now() + Duration::from_millis(2500);
    while std::time::Instant::now() < until {
        let batch: String = (0..50).map(|_| format!("mg {hostile} b v\r\n")).collect();
        c.ask(batch.as_bytes(), b"v\r\n", 50);
    }
    for _ in 0..5 {
        assert_eq!(c.line(&format!("md {hostile} b\r\n")), "HD\r\n");
        assert_eq!(c.line(&format!("ms {hostile} 1 b\r\nv\r\n")), "HD\r\n");
    }
    assert_eq!(c.line("mn\r\n"), "MN\r\n");
    for m in &servers {
        assert_eq!(Raw::connect(m.addr).line("get injected\r\n"), "END\r\n", "a command ran on {}", m.addr);
    }
    // The copies were asked to drop the key: every shard saw deletes.
    let deletes = |m: &Memcached| {
        let s = String::from_utf8(Raw::connect(m.addr).ask(b"stats\r\n", b"END\r\n", 1)).unwrap();
        ["delete_hits", "delete_misses"]
            .iter()
            .map(|n| s.lines().find_map(|l| l.strip_prefix(&format!("STAT {n} "))?.trim().parse::<u64>().ok()).unwrap())
            .sum::<u64>()
    };
    assert!(servers.iter().all(|m| deletes(m) >= 5), "the split copies were not dropped");
    let stats = String::from_utf8(c.ask(b"stats\r\n", b"END\r\n", 1)).unwrap();
    assert!(stats.contains("STAT endpoints_ejected 0\r\n"), "{stats}");
}

/// Item 3: a storage command of any size, sent whole and on its own, is
/// answered without the client sending another byte: every value size
/// around each power of two from 1 KiB to 1 MiB, and whole commands of
/// exactly 4096 and 8192 bytes.
#[test]
fn every_storage_command_is_answered_without_more_bytes_from_the_client() {
    let (_m, p, listen) = one_shard("max_value_bytes = 2097152");
    let mut c = Raw::connect(listen);
    c.0.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sizes = Vec::new();
    for shift in 10..=20 {
        sizes.extend([(1usize << shift) - 1, 1 << shift, (1 << shift) + 1]);
    }
    // Whole commands of exactly 4096 and 8192 bytes (line + value + CRLF).
    for total in [4096usize, 8192, 16384] {
        let head = |n: usize| format!("set k 0 0 {n}\r\n").len();
        let n = (total - 2 - 20..total).find(|&n| head(n) + n + 2 == total).unwrap();
        sizes.push(n);
    }
    for n in sizes {
        let mut cmd = format!("set k 0 0 {n}\r\n").into_bytes();
        cmd.extend(std::iter::repeat_n(b'v', n));
        cmd.extend_from_slice(b"\r\n");
        c.0.write_all(&cmd).unwrap();
        let mut got = [0u8; 64];
        let read = c.0.read(&mut got).unwrap_or_else(|e| panic!("no answer to a set of {n} bytes ({} in all): {e}", cmd.len()));
        let answer = String::from_utf8_lossy(&got[..read]);
        // memcached -m 64 -I 1m stores values a little under 1 MiB.
        let big = ["SERVER_ERROR object too large for cache\r\n", "SERVER_ERROR out of memory storing object\r\n"];
        assert!(answer == "STORED\r\n" || (n >= 1 << 19 && big.contains(&&*answer)), "{n}: {answer}");
    }
    drop(p);
}

/// Fidelity: answers memcached 1.6 gives to bad numbers, refused keys and
/// HTTP request lines.
#[test]
fn bad_numbers_long_keys_and_http_lines_get_memcacheds_answers() {
    let (_m, p, listen) = one_shard("");
    let mut c = Raw::connect(listen);
    assert_eq!(c.line("verbosity invalid\r\n"), "CLIENT_ERROR bad command line format\r\n");
    assert_eq!(c.line("verbosity 1\r\n"), "OK\r\n");
    let got = c.ask(b"verbosity x noreply\r\nmn\r\n", b"MN\r\n", 1);
    assert_eq!(got, b"MN\r\n");
    assert_eq!(c.line("set k 0 0 -1\r\n"), "CLIENT_ERROR bad command line format\r\n");
    assert_eq!(c.line("set k 0 0 2147483648\r\n"), "CLIENT_ERROR bad command line format\r\n");
    assert_eq!(c.line("ms k -1\r\n"), "CLIENT_ERROR bad command line format\r\n");
    assert_eq!(c.line("ms k 2147483648 T0\r\n"), "CLIENT_ERROR bad command line format\r\n");
    // A key longer than 250 bytes: refused, and its data block swallowed, never run as a command.
    let long = "k".repeat(251);
    let got = c.ask(format!("set {long} 0 0 9\r\nflush_all\r\nmn\r\n").as_bytes(), b"MN\r\n", 1);
    assert_eq!(String::from_utf8_lossy(&got), "CLIENT_ERROR bad command line format\r\nMN\r\n");
    let got = c.ask(format!("ms {long} 9\r\nflush_all\r\nmn\r\n").as_bytes(), b"MN\r\n", 1);
    assert_eq!(String::from_utf8_lossy(&got), "CLIENT_ERROR bad command line format\r\nMN\r\n");
    // A base64 key that does not decode.
    assert_eq!(c.line("mg !!!! b v\r\n"), "CLIENT_ERROR error decoding key\r\n");
    // A line other than a get longer than 2048 bytes closes, however it is segmented.
    let got = exchange(listen, format!("delete {}\r\nmn\r\n", "k".repeat(3000)).as_bytes(), Duration::from_millis(500));
    assert_eq!(String::from_utf8_lossy(&got), "CLIENT_ERROR line too long\r\n");
    // An HTTP request line closes the connection at once, as memcached does.
    for http in [&b"GET / HTTP/1.0\r\nmn\r\n"[..], b"PUT /x HTTP/1.1\r\nHost: a\r\n\r\nmn\r\n"] {
        let mut s = std::net::TcpStream::connect(listen).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(http).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        assert_eq!(String::from_utf8_lossy(&out), "", "{:?}", String::from_utf8_lossy(http));
    }
    assert_eq!(c.line("mn\r\n"), "MN\r\n");
    drop(p);
}

fn stat(c: &mut Raw, which: &str, name: &str) -> Option<u64> {
    let line = if which.is_empty() { "stats\r\n".to_string() } else { format!("stats {which}\r\n") };
    let s = String::from_utf8(c.ask(line.as_bytes(), b"END\r\n", 1)).unwrap();
    s.lines().find_map(|l| l.strip_prefix(&format!("STAT {name} "))?.trim().parse().ok())
}

/// Item 7: one client's `flush_all` does not wipe the fleet unless the
/// service allows it; `stats` tells no pid or endpoint address unless asked to.
#[test]
fn flush_all_is_refused_and_stats_tell_no_addresses_by_default() {
    let (m, p, listen) = one_shard("");
    let mut c = Raw::connect(listen);
    assert_eq!(c.line("set k 0 0 1\r\nv\r\n"), "STORED\r\n");
    assert_eq!(c.line("flush_all\r\n"), "CLIENT_ERROR flush_all not allowed\r\n");
    assert_eq!(c.ask(b"flush_all noreply\r\nmn\r\n", b"MN\r\n", 1), b"MN\r\n");
    assert_eq!(c.ask(b"get k\r\n", b"END\r\n", 1), b"VALUE k 0 1\r\nv\r\nEND\r\n", "nothing was flushed");
    assert_eq!(stat(&mut c, "", "flush_refused"), Some(2));
    let all = String::from_utf8(c.ask(b"stats\r\nstats endpoints\r\n", b"END\r\n", 2)).unwrap();
    assert!(!all.contains("STAT pid "), "{all}");
    assert!(!all.contains(&m.addr.to_string()), "{all}");
    assert!(all.contains("STAT s:0:requests "), "{all}");
    drop(p);
    let (m, p, listen) = one_shard("allow_flush_all = true\nstats_detail = true");
    let mut c = Raw::connect(listen);
    assert_eq!(c.line("set k 0 0 1\r\nv\r\n"), "STORED\r\n");
    assert_eq!(c.line("flush_all\r\n"), "OK\r\n");
    assert_eq!(c.ask(b"get k\r\n", b"END\r\n", 1), b"END\r\n");
    let all = String::from_utf8(c.ask(b"stats\r\nstats endpoints\r\n", b"END\r\n", 2)).unwrap();
    assert!(all.contains("STAT pid ") && all.contains(&format!("STAT s:{}:requests ", m.addr)), "{all}");
    drop(p);
}

/// Item 10: hits and misses are counted per key, as memcached counts them,
/// for the service and for each shard.
#[test]
fn hits_and_misses_are_counted_per_key() {
    let servers = [memcached(), memcached()];
    let listen = free_addr();
    let p = Proxy::start(&ambassador(listen, &[("a", vec![servers[0].addr]), ("b", vec![servers[1].addr])], "", ""));
    wait_port(listen);
    let mut c = Raw::connect(listen);
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    for k in &keys[..10] {
        assert_eq!(c.line(&format!("set {k} 0 0 1\r\nv\r\n")), "STORED\r\n");
    }
    // Two misses in one get; then 10 hits and 10 misses over both shards; then a meta hit and miss.
    c.ask(b"get nope1 nope2\r\n", b"END\r\n", 1);
    c.ask(format!("get {}\r\n", keys.join(" ")).as_bytes(), b"END\r\n", 1);
    c.ask(b"mg k1 v\r\nmg nope3 v\r\n", b"\r\n", 3);
    assert_eq!(stat(&mut c, "", "get_hits"), Some(11));
    assert_eq!(stat(&mut c, "", "get_misses"), Some(13));
    let shard = |c: &mut Raw, n: &str| stat(c, "shards", &format!("a:{n}")).unwrap() + stat(c, "shards", &format!("b:{n}")).unwrap();
    assert_eq!((shard(&mut c, "hits"), shard(&mut c, "misses")), (11, 13));
    // memcached's own counters agree.
    let counted = |n: &str| servers.iter().map(|m| stat(&mut Raw::connect(m.addr), "", n).unwrap()).sum::<u64>();
    assert_eq!((counted("get_hits"), counted("get_misses")), (11, 13));
    drop(p);
}

/// Item 9: a client that resets while a hot key's fill is in flight does not
/// keep that key out of the root cache for good.
#[test]
fn a_client_reset_during_a_hot_fill_does_not_disable_the_root_cache() {
    use std::os::fd::AsRawFd;
    let m = memcached();
    let listen = free_addr();
    let cfg = ambassador(listen, &[("a", vec![m.addr])], "function = \"maglev\"", "server_failure_limit = 0")
        + "[services.cache.heat]\nwindow = \"2s\"\nsample = 1\nhot_share = 0.2\n\n[services.cache.hot_keys]\ncache = true\nttl = \"200ms\"\n";
    let p = Proxy::start(&cfg);
    wait_port(listen);
    let mut c = Raw::connect(listen);
    assert_eq!(c.line("set hot 0 0 1\r\nv\r\n"), "STORED\r\n");
    let hits = || p.metric("ringmaster_heat_hot_cache_hits_total{service=\"cache\"}");
    eventually(10, "the hot key is answered at the root", || {
        let batch: Vec<u8> = (0..300).flat_map(|_| b"get hot\r\n".to_vec()).collect();
        c.ask(&batch, b"END\r\n", 300);
        hits() > 0.0
    });
    // The server stops; the cached answer expires; a client's get reserves the fill and the client resets.
    m.proc.signal("STOP");
    std::thread::sleep(Duration::from_millis(400));
    let s = std::net::TcpStream::connect(listen).unwrap();
    (&s).write_all(b"get hot\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    let set = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as u32,
        )
    };
    assert_eq!(set, 0);
    drop(s);
    std::thread::sleep(Duration::from_millis(100));
    m.proc.signal("CONT");
    let before = hits();
    eventually(10, "the root caches the hot key again", || {
        let batch: Vec<u8> = (0..100).flat_map(|_| b"get hot\r\n".to_vec()).collect();
        let got = c.ask(&batch, b"END\r\n", 100);
        assert_eq!(String::from_utf8_lossy(&got).matches("VALUE hot 0 1\r\nv\r\n").count(), 100);
        hits() > before + 50.0
    });
    drop(p);
}

/// Item 5: a memcached that restarts closes the ambassador's idle pooled
/// connections; the close is noticed when it happens, so no command after
/// the restart fails (as with nutcracker).
#[test]
fn a_restarted_memcached_costs_no_command() {
    let m = memcached();
    let listen = free_addr();
    let p = Proxy::start(&ambassador(listen, &[("s", vec![m.addr])], "", "server_connections = 4"));
    wait_port(listen);
    // Several clients, so that every pooled server connection is open.
    let mut clients: Vec<Raw> = (0..8).map(|_| Raw::connect(listen)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.line(&format!("set k{i} 0 0 1\r\nv\r\n")), "STORED\r\n");
    }
    let addr = m.addr;
    let (mut first, mut current) = (Some(m), None::<Proc>);
    for round in 0..3 {
        // Stopped (by its pid, as Proc drops), then a new one on the same port.
        drop(first.take());
        drop(current.take());
        std::thread::sleep(Duration::from_millis(300));
        current = Some(Proc(
            std::process::Command::new("memcached")
                .args(["-u", "root", "-l", "127.0.0.1", "-p", &addr.port().to_string(), "-U", "0", "-t", "1", "-m", "64"])
                .spawn()
                .unwrap(),
        ));
        wait_port(addr);
        std::thread::sleep(Duration::from_millis(200));
        for (i, c) in clients.iter_mut().enumerate() {
            assert_eq!(c.line(&format!("set k{i} 0 0 1\r\nv\r\n")), "STORED\r\n", "round {round}, client {i}");
            assert_eq!(c.ask(format!("get k{i}\r\n").as_bytes(), b"END\r\n", 1), format!("VALUE k{i} 0 1\r\nv\r\nEND\r\n").into_bytes());
        }
    }
    let stats = String::from_utf8(clients[0].ask(b"stats\r\n", b"END\r\n", 1)).unwrap();
    assert!(stats.contains("STAT server_errors 0\r\n"), "{stats}");
    assert_eq!(p.metric("ringmaster_memcache_desyncs_total"), 0.0);
    drop(p);
}

/// Item 6: a delete and an overwrite made while a replica was stopped (its
/// writes timed out, then it was ejected) are repaired before it serves
/// reads again: no read ever returns the old value.
#[test]
fn a_replica_back_from_ejection_never_serves_what_was_deleted_or_overwritten() {
    let (one, two) = (memcached(), memcached());
    let listen = free_addr();
    let extra = "server_failure_limit = 1\nserver_retry_timeout = \"1s\"\nreads = \"round_robin\"\nstats_detail = true";
    let p = Proxy::start(&ambassador(listen, &[("s", vec![one.addr, two.addr])], "", extra));
    wait_port(listen);
    let mut c = Raw::connect(listen);
    assert_eq!(c.line("set gone 0 0 3\r\nold\r\n"), "STORED\r\n");
    assert_eq!(c.line("set changed 0 0 3\r\nold\r\n"), "STORED\r\n");
    two.proc.signal("STOP");
    // writes = "first": answered by the first replica; the stopped one times out, and is ejected.
    assert_eq!(c.line("delete gone\r\n"), "DELETED\r\n");
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(c.line("set changed 0 0 3\r\nnew\r\n"), "STORED\r\n");
    two.proc.signal("CONT");
    std::thread::sleep(Duration::from_millis(1200));
    // Back (the retry timeout passed): reads go round robin over both again,
    // and none of them, before or after the repair, is of an old value.
    let mut reads = 0;
    eventually(30, "the replica came back and serves reads", || {
        let mut served_by_two = false;
        for _ in 0..20 {
            reads += 1;
            assert_eq!(c.ask(b"get gone\r\n", b"END\r\n", 1), b"END\r\n", "read {reads} of a deleted key");
            let got = String::from_utf8(c.ask(b"get changed\r\n", b"END\r\n", 1)).unwrap();
            assert!(got == "VALUE changed 0 3\r\nnew\r\nEND\r\n" || got == "END\r\n", "read {reads}: {got}");
            served_by_two |= got == "END\r\n";
        }
        served_by_two
    });
    let stats = String::from_utf8(c.ask(b"stats endpoints\r\n", b"END\r\n", 1)).unwrap();
    let count = |name: &str| -> u64 {
        let prefix = format!("STAT s:{}:{name} ", two.addr);
        stats.lines().find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok()).unwrap_or_else(|| panic!("{name}: {stats}"))
    };
    // Both keys, and any write that reached the stopped replica before its ejection, replayed.
    assert!(count("repair_replayed") >= 2 && count("repair_replayed") == count("repair_logged"), "{stats}");
    assert_eq!(count("repair_owed"), 0, "{stats}");
    // The stopped replica itself no longer holds either old value.
    assert_eq!(Raw::connect(two.addr).ask(b"get gone changed\r\n", b"END\r\n", 1), b"END\r\n");
    drop(p);
}
