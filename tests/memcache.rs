//! The memcache ambassador against real memcached processes: the same bytes
//! as memcached itself for a one-shard pool, nutcracker's placement, multi-key
//! gets over shards in order, pipelining, replicas failing over, ejection and
//! re-admission, and reload under load.

mod common;
use common::mc::*;
use common::*;
use std::net::SocketAddr;
use std::time::Duration;

/// Every command of the text and meta protocols, good and bad, in one stream.
fn command_stream() -> Vec<u8> {
    let big = vec![b'x'; 2 * 1024 * 1024];
    let long_key = "k".repeat(251);
    let mut s: Vec<Vec<u8>> = [
        "set a 0 0 1\r\nx\r\n",
        "get a\r\n",
        "gets a\r\n",
        "add a 0 0 1\r\ny\r\n",
        "replace a 3 0 2\r\nzz\r\n",
        "append a 0 0 1\r\n1\r\n",
        "prepend a 0 0 1\r\n0\r\n",
        "get a nope a\r\n",
        "cas a 0 0 1 999\r\nq\r\n",
        "gets a\r\n",
        "cas a 0 0 1 3\r\nq\r\n",
        "get a\r\n",
        "cas nope 0 0 1 1\r\nq\r\n",
        "delete a\r\n",
        "delete a\r\n",
        "delete a 0\r\n",
        "delete a 5\r\n",
        "delete a noreply\r\n",
        "delete a 0 noreply\r\n",
        "delete a 1 noreply\r\n",
        "incr n 1\r\n",
        "set n 0 0 2\r\n10\r\n",
        "incr n 5\r\n",
        "decr n 100\r\n",
        "incr n x\r\n",
        "incr n 18446744073709551615\r\n",
        "incr n\r\n",
        "set s 0 0 3\r\nabc\r\n",
        "incr s 1\r\n",
        "touch s 100\r\n",
        "touch nope 1\r\n",
        "touch s\r\n",
        "touch s x\r\n",
        "gat 100 s nope\r\n",
        "gats 100 s\r\n",
        "gat x s\r\n",
        "gat 10\r\n",
        "get\r\n",
        "gets\r\n",
        "set b 0 0 x\r\n",
        "set b 0 0\r\n",
        "set b 0 0 -1\r\n",
        "set b x 0 1\r\nz\r\n",
        "set b -1 0 1\r\nz\r\n",
        "set b 0 0 2\r\nabcd\r\n",
        "get b\r\n",
        "set c 0 0 1 noreply\r\nc\r\n",
        "get c\r\n",
        "set c 0 0 x noreply\r\n",
        "add c 0 0 1 noreply\r\nd\r\n",
        "incr c 1 noreply\r\n",
        "touch c 10 noreply\r\n",
        "flush_all\r\n",
        "get c\r\n",
        "flush_all noreply\r\n",
        "flush_all 0\r\n",
        "flush_all x\r\n",
        "verbosity 1\r\n",
        "verbosity\r\n",
        "verbosity 1 noreply\r\n",
        "bogus\r\n",
        "x\r\n",
        "\r\n",
        "GET a\r\n",
        "set  d  0  0  1\r\nd\r\n",
        "get d\n",
        "get  d   d\r\n",
        "ms m 2 T0 F5\r\nhi\r\n",
        "mg m v f k s\r\n",
        "mg m v q\r\n",
        "mg nope v q\r\n",
        "mg nope v\r\n",
        "mn\r\n",
        "mg m k Oabc v\r\n",
        "mg m c\r\n",
        "ms m 2 q\r\nho\r\n",
        "ms m 2 MA\r\n!!\r\n",
        "mg m v\r\n",
        "md m q\r\n",
        "md m\r\n",
        "md m q\r\n",
        "mg\r\n",
        "ms m\r\n",
        "ms m x\r\n",
        "ms m 2 Mz\r\nhi\r\n",
        "ma cnt N0 J5 v\r\n",
        "ma cnt v\r\n",
        "ma cnt q\r\n",
        "ma cnt MD D2 v\r\n",
        "ma nope\r\n",
        "ma nope q\r\n",
        "me m\r\n",
        "ms bm9wZQ== 1 b\r\nz\r\n",
        "mg bm9wZQ== b v k\r\n",
        "mg nope v Lfoo Pbar\r\n",
        "ms m 1 T0 F1 I C1 E5 s c k O1 q b x y z w a b c\r\n1\r\n",
        "mg m v s t f c k O1 x y z a b c d e f g h\r\n",
        "mn\r\n",
    ]
    .iter()
    .map(|c| c.as_bytes().to_vec())
    .collect();
    // (A storage command with a key too long is left out: memcached 1.6.18 runs
    // its data block as a command, the ambassador swallows it; memcache_hostile.rs.)
    s.push(format!("delete {long_key}\r\nincr {long_key} 1\r\n").into_bytes());
    let mut set_big = format!("set b 0 0 {}\r\n", big.len()).into_bytes();
    set_big.extend_from_slice(&big);
    set_big.extend_from_slice(b"\r\nget b\r\nmn\r\n");
    s.push(set_big);
    s.concat()
}

/// The same command stream to a memcached directly and through the ambassador
/// to a one-shard pool of another (fresh) memcached gives the same bytes.
#[test]
fn a_one_shard_pool_answers_byte_for_byte_like_memcached() {
    let (direct, behind) = (memcached(), memcached());
    let listen = free_addr();
    let p = Proxy::start(&ambassador(listen, &[("only", vec![behind.addr])], "", "allow_flush_all = true"));
    wait_port(listen);
    // A get with a key too long is sent on its own: memcached drops the answers
    // still queued on the connection when it refuses one (a quirk of its own).
    let long_get = format!("get {}\r\n", "k".repeat(251)).into_bytes();
    for stream in [command_stream(), long_get] {
        same_answers(direct.addr, listen, &stream);
    }
    drop(p);
}

fn same_answers(direct: SocketAddr, listen: SocketAddr, stream: &[u8]) {
    let want = exchange(direct, stream, Duration::from_millis(700));
    let got = exchange(listen, stream, Duration::from_millis(700));
    assert!(want.len() > 30, "memcached answered: {}", String::from_utf8_lossy(&want));
    if want != got {
        let (w, g) = (String::from_utf8_lossy(&want), String::from_utf8_lossy(&got));
        let line = w.lines().zip(g.lines()).position(|(a, b)| a != b).unwrap_or(0);
        let ctx = |s: &str| s.lines().skip(line.saturating_sub(3)).take(6).collect::<Vec<_>>().join(" | ");
        panic!("answers differ at line {line}:\n memcached:  {}\n ringmaster: {}", ctx(&w), ctx(&g));
    }
}

/// Three shards: a multi-key get with misses and repeats, sent pipelined
/// after hundreds of sets in one write, comes back in the client's key order.
#[test]
fn multi_key_gets_over_shards_come_back_in_key_order() {
    let servers: Vec<Memcached> = (0..3).map(|_| memcached()).collect();
    let listen = free_addr();
    let shards: Vec<(&str, Vec<SocketAddr>)> = ["a", "b", "c"].iter().zip(&servers).map(|(n, m)| (*n, vec![m.addr])).collect();
    let _p = Proxy::start(&ambassador(listen, &shards, "function = \"maglev\"", ""));
    wait_port(listen);
    let mut c = Raw::connect(listen);
    let sets: String = (0..300).map(|i| format!("set key{i} {i} 0 {}\r\nvalue-{i}\r\n", format!("value-{i}").len())).collect();
    let answer = c.ask(sets.as_bytes(), b"STORED\r\n", 300);
    assert_eq!(answer, b"STORED\r\n".repeat(300));
    // Every shard holds some of them.
    for m in &servers {
        let held = Raw::connect(m.addr).ask(b"stats\r\n", b"END\r\n", 1);
        let items = String::from_utf8_lossy(&held)
            .lines()
            .find_map(|l| l.strip_prefix("STAT curr_items ").map(|v| v.trim().parse::<u32>().unwrap()));
        assert!(items.unwrap() > 50, "a shard holds too few keys: {items:?}");
    }
    let order: Vec<String> =
        (0..300).rev().step_by(7).map(|i| format!("key{i}")).chain(["missing".into(), "key3".into(), "key3".into()]).collect();
    let mut want = String::new();
    for k in &order {
        if let Some(i) = k.strip_prefix("key").map(|n| n.parse::<u32>().unwrap()) {
            want.push_str(&format!("VALUE {k} {i} {}\r\nvalue-{i}\r\n", format!("value-{i}").len()));
        }
    }
    want.push_str("END\r\n");
    let req = format!("get {}\r\nget {}\r\n", order.join(" "), order.join(" "));
    let got = c.ask(req.as_bytes(), b"END\r\n", 2);
    assert_eq!(String::from_utf8_lossy(&got), want.repeat(2));
    // Pipelined quiet meta gets: only hits, then MN, in order.
    let got = c.ask(b"mg key1 v q k\r\nmg nokey v q k\r\nmg key2 v q k\r\nmn\r\n", b"MN\r\n", 1);
    assert_eq!(String::from_utf8_lossy(&got), "VA 7 kkey1\r\nvalue-1\r\nVA 7 kkey2\r\nvalue-2\r\nMN\r\n");
}

/// Keys set through nutcracker over three named memcached are all found
/// through a ringmaster serving `ringmaster import nutcracker` of the same
/// config: the same placement, and the import passes `check`.
#[test]
fn keys_set_through_nutcracker_are_found_through_the_ambassador() {
    let servers: Vec<Memcached> = (0..3).map(|_| memcached()).collect();
    let dir = tempfile::tempdir().unwrap();
    let nc = free_port();
    let mut yml =
        format!("mc:\n  listen: 127.0.0.1:{nc}\n  hash: fnv1a_64\n  distribution: ketama\n  auto_eject_hosts: false\n  servers:\n");
    for (i, m) in servers.iter().enumerate() {
        yml.push_str(&format!("   - {}:1 mc{}\n", m.addr, i + 1));
    }
    std::fs::write(dir.path().join("nc.yml"), &yml).unwrap();
    let _nc = Proc(
        std::process::Command::new("nutcracker")
            .args(["-c", dir.path().join("nc.yml").to_str().unwrap(), "-s", &free_port().to_string()])
            .args(["-o", dir.path().join("nc.log").to_str().unwrap()])
            .spawn()
            .expect("nutcracker is installed (scripts/test installs it)"),
    );
    let nc_addr = SocketAddr::from(([127, 0, 0, 1], nc));
    wait_port(nc_addr);
    let keys: Vec<String> = (0..10_000).map(|i| format!("user:{i}:{}", i * 7919 % 1000)).collect();
    let mut n = Raw::connect(nc_addr);
    for batch in keys.chunks(500) {
        let req: String = batch.iter().map(|k| format!("set {k} 0 0 1\r\nx\r\n")).collect();
        n.ask(req.as_bytes(), b"STORED\r\n", batch.len());
    }
    // The same pool imported (on another port), checked, then served.
    let listen = free_addr();
    let import_yml = dir.path().join("import.yml");
    std::fs::write(&import_yml, yml.replace(&format!("127.0.0.1:{nc}"), &listen.to_string())).unwrap();
    let imported = std::process::Command::new(BIN).args(["import", "nutcracker", import_yml.to_str().unwrap()]).output().unwrap();
    assert!(imported.status.success(), "import: {}", String::from_utf8_lossy(&imported.stderr));
    let toml_text = String::from_utf8(imported.stdout).unwrap();
    std::fs::write(dir.path().join("imported.toml"), &toml_text).unwrap();
    let check =
        std::process::Command::new(BIN).args(["check", "--config", dir.path().join("imported.toml").to_str().unwrap()]).output().unwrap();
    assert!(check.status.success(), "check of the imported config: {}\n{toml_text}", String::from_utf8_lossy(&check.stderr));
    let _p = Proxy::start(&toml_text);
    wait_port(listen);
    let mut c = Raw::connect(listen);
    let mut found = 0;
    for batch in keys.chunks(100) {
        let got = c.ask(format!("get {}\r\n", batch.join(" ")).as_bytes(), b"END\r\n", 1);
        found += String::from_utf8_lossy(&got).matches("VALUE ").count();
    }
    assert_eq!(found, keys.len(), "keys nutcracker placed are found where ringmaster places them");
}

/// Two replicas: writes reach both; with one killed, reads fail over and
/// writes still succeed; it is ejected after server_failure_limit failures,
/// and once back and past server_retry_timeout it gets writes again.
#[test]
fn replicas_fail_over_and_an_ejected_endpoint_comes_back() {
    let (one, two) = (memcached(), memcached());
    let listen = free_addr();
    let extra = "server_failure_limit = 1\nserver_retry_timeout = \"1s\"\nreads = \"local_first\"\nstats_detail = true";
    let p = Proxy::start(&ambassador(listen, &[("s", vec![one.addr, two.addr])], "", extra));
    wait_port(listen);
    let mut c = Raw::connect(listen);
    assert_eq!(c.line("set k 0 0 2\r\nv1\r\n"), "STORED\r\n");
    // writes = "first": the client is answered by one; the other copy follows.
    for m in [&one, &two] {
        eventually(5, "written to every replica", || {
            Raw::connect(m.addr).ask(b"get k\r\n", b"END\r\n", 1) == b"VALUE k 0 2\r\nv1\r\nEND\r\n"
        });
    }
    let port = one.addr.port();
    drop(one);
    for i in 0..20 {
        assert_eq!(c.ask(b"get k\r\n", b"END\r\n", 1), b"VALUE k 0 2\r\nv1\r\nEND\r\n", "read {i} fails over to the live replica");
        assert_eq!(c.line(&format!("set w{i} 0 0 1\r\nx\r\n")), "STORED\r\n", "write {i} answered by the live replica");
    }
    let stats = String::from_utf8(c.ask(b"stats endpoints\r\n", b"END\r\n", 1)).unwrap();
    assert!(stats.contains(&format!("STAT s:{}:ejected 1", p_addr(port))), "{stats}");
    assert!(stats.contains(&format!("STAT s:{}:ejected 0", two.addr)), "{stats}");
    let dead = p_addr(port);
    let labels = format!("{{service=\"cache\",shard=\"s\",endpoint=\"{dead}\",address=\"{dead}\"}}");
    assert_eq!(p.metric(&format!("ringmaster_memcache_endpoint_healthy{labels}")), 0.0);
    assert!(p.metric(&format!("ringmaster_memcache_endpoint_ejections_total{labels}")) >= 1.0);
    assert!(p.metric("ringmaster_memcache_commands_total{service=\"cache\",command=\"get\"}") >= 20.0);
    // Back on the same port: re-admitted after the retry timeout.
    let back = common::Proc(
        std::process::Command::new("memcached")
            .args(["-u", "root", "-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0", "-t", "1", "-m", "64"])
            .spawn()
            .unwrap(),
    );
    wait_port(SocketAddr::from(([127, 0, 0, 1], port)));
    eventually(10, "the endpoint is re-admitted and gets writes", || {
        let _ = c.line("set again 0 0 1\r\ny\r\n");
        Raw::connect(SocketAddr::from(([127, 0, 0, 1], port))).ask(b"get again\r\n", b"END\r\n", 1) == b"VALUE again 0 1\r\ny\r\nEND\r\n"
    });
    drop(back);
    drop(p);
}

/// A compare-and-set, text or meta, goes to the replica the cas value came
/// from and, once it stored, the other replicas get the value too; a stale
/// compare changes no replica.
#[test]
fn a_cas_reaches_every_replica_once_it_stored() {
    let (one, two) = (memcached(), memcached());
    let listen = free_addr();
    let p = Proxy::start(&ambassador(listen, &[("s", vec![one.addr, two.addr])], "", "reads = \"round_robin\""));
    wait_port(listen);
    let mut c = Raw::connect(listen);
    let on_both = |get: &[u8], want: &[u8], what: &str| {
        for m in [&one, &two] {
            let end: &[u8] = if get.starts_with(b"mg") { b"\r\n" } else { b"END\r\n" };
            assert_eq!(
                String::from_utf8_lossy(&Raw::connect(m.addr).ask(get, end, 1)),
                String::from_utf8_lossy(want),
                "{what} on {}",
                m.addr
            );
        }
    };
    // The second replica's cas counter runs ahead, so a compare forwarded to it as is would fail there.
    assert_eq!(Raw::connect(two.addr).line("set other 0 0 1\r\nx\r\n"), "STORED\r\n");
    assert_eq!(c.line("set k 0 0 2\r\nv1\r\n"), "STORED\r\n");
    // `writes = "first"` answers once one replica stored: the other stores a moment later.
    eventually(5, "the set reached both replicas", || {
        [&one, &two].iter().all(|m| Raw::connect(m.addr).ask(b"get k\r\n", b"END\r\n", 1) == b"VALUE k 0 2\r\nv1\r\nEND\r\n")
    });
    let gets = String::from_utf8(c.ask(b"gets k\r\n", b"END\r\n", 1)).unwrap();
    let unique: u64 = gets.lines().next().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(c.line(&format!("cas k 0 0 2 {}\r\nv2\r\n", unique + 1000)), "EXISTS\r\n");
    on_both(b"get k\r\n", b"VALUE k 0 2\r\nv1\r\nEND\r\n", "a stale cas changed nothing");
    assert_eq!(c.line(&format!("cas k 0 0 2 {unique}\r\nv2\r\n")), "STORED\r\n");
    eventually(5, "the text cas reached the other replica", || {
        Raw::connect(two.addr).ask(b"get k\r\n", b"END\r\n", 1) == b"VALUE k 0 2\r\nv2\r\nEND\r\n"
    });
    on_both(b"get k\r\n", b"VALUE k 0 2\r\nv2\r\nEND\r\n", "after the text cas");
    // The meta protocol: mg with c, then ms with C (and a routing hint the servers never see).
    let mg = c.line("mg k c v\r\n");
    let cas: u64 = mg.split_whitespace().find_map(|t| t.strip_prefix('c')?.parse().ok()).unwrap_or_else(|| panic!("{mg}"));
    assert!(c.line(&format!("ms k 2 C{} T0\r\nv3\r\n", cas + 1000)).starts_with("EX"));
    on_both(b"get k\r\n", b"VALUE k 0 2\r\nv2\r\nEND\r\n", "a stale ms C changed nothing");
    assert_eq!(c.line(&format!("ms k 2 C{cas} Pa T0\r\nv3\r\n")), "HD\r\n");
    eventually(5, "the meta cas reached the other replica", || {
        Raw::connect(two.addr).ask(b"get k\r\n", b"END\r\n", 1) == b"VALUE k 0 2\r\nv3\r\nEND\r\n"
    });
    on_both(b"get k\r\n", b"VALUE k 0 2\r\nv3\r\nEND\r\n", "after the meta cas");
    drop(p);
}

fn p_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Shards and endpoints change by SIGHUP while clients run: no command fails
/// (the new replica starts empty; `miss_failover` finds older keys on the other).
#[test]
fn a_reload_under_load_fails_no_command() {
    let servers: Vec<Memcached> = (0..3).map(|_| memcached()).collect();
    let listen = free_addr();
    let before = ambassador(listen, &[("a", vec![servers[0].addr]), ("b", vec![servers[1].addr])], "", "");
    let after = ambassador(
        listen,
        &[("a", vec![servers[0].addr, servers[2].addr]), ("b", vec![servers[1].addr])],
        "",
        "writes = \"all\"\nmiss_failover = true",
    );
    let p = Proxy::start(&before);
    wait_port(listen);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = Raw::connect(listen);
                let mut done = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let k = format!("w{w}k{}", done % 100);
                    assert_eq!(c.line(&format!("set {k} 0 0 1\r\nx\r\n")), "STORED\r\n");
                    assert_eq!(
                        c.ask(format!("get {k}\r\n").as_bytes(), b"END\r\n", 1),
                        format!("VALUE {k} 0 1\r\nx\r\nEND\r\n").into_bytes()
                    );
                    done += 1;
                }
                done
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    p.rewrite(&after);
    p.proc.signal("HUP");
    eventually(10, "the reload took effect", || p.stderr().contains("config reloaded"));
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let total: usize = workers.into_iter().map(|w| w.join().expect("no command failed")).sum();
    assert!(total > 100, "only {total} rounds ran");
    let mut c = Raw::connect(listen);
    let stats = String::from_utf8(c.ask(b"stats shards\r\n", b"END\r\n", 1)).unwrap();
    assert!(stats.contains("STAT a:replicas 2"), "{stats}");
}

/// An endpoint a reload removes has its server connections closed: the
/// connection's task ends with its endpoint rather than holding it.
#[test]
fn a_reload_closes_the_connections_of_an_endpoint_it_removes() {
    let (a, b) = (memcached(), memcached());
    let baseline = server_stat(b.addr, "curr_connections");
    let listen = free_addr();
    let p = Proxy::start(&ambassador(listen, &[("a", vec![a.addr]), ("b", vec![b.addr])], "", ""));
    wait_port(listen);
    let mut c = Raw::connect(listen);
    for i in 0..20 {
        assert_eq!(c.line(&format!("set k{i} 0 0 1\r\nx\r\n")), "STORED\r\n");
    }
    assert!(server_stat(b.addr, "curr_connections") > baseline, "the ambassador holds a connection to b");
    p.rewrite(&ambassador(listen, &[("a", vec![a.addr])], "", ""));
    p.proc.signal("HUP");
    eventually(10, "the reload took effect", || p.stderr().contains("config reloaded"));
    eventually(10, "b's connection is closed", || server_stat(b.addr, "curr_connections") == baseline);
    assert_eq!(c.line("set k 0 0 1\r\nx\r\n"), "STORED\r\n");
}

/// A fake memcached that reads commands and answers with `behaviour`.
fn fake(behaviour: &'static [u8], close_after: bool) -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    if !behaviour.is_empty() && s.write_all(behaviour).is_err() {
                        return;
                    }
                    if close_after {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A key (hash tag `{tag}`) that the maglev ring over `shards` (sorted names) puts on `want`.
fn key_on(shards: &[&str], want: &str) -> String {
    use ringmaster::ring::{Function, Member, Ring};
    let members: Vec<Member> = shards.iter().map(|s| Member::new(*s, 1)).collect();
    let ring = Ring::build(Function::Maglev, &members, ringmaster::hash::KeyHash::Xxh3);
    let i = shards.iter().position(|s| *s == want).unwrap();
    (0..).map(|n| format!("t{n}")).find(|t| ring.locate(t.as_bytes()) == Some(i)).map(|t| format!("{{{t}}}:k")).unwrap()
}

/// A server that answers garbage, one that closes mid-answer and one that
/// hangs each get a defined SERVER_ERROR, counted; the healthy shard's
/// clients are not held up meanwhile.
#[test]
fn servers_that_answer_garbage_close_or_hang_fail_only_their_keys() {
    let good = memcached();
    let garbage = fake(b"HELLO THERE\r\n", false);
    let closing = fake(b"VALUE k 0 10\r\nabc", true);
    let hanging = fake(b"", false);
    let names = ["close", "garbage", "good", "hang"];
    let listen = free_addr();
    let shards = [("close", vec![closing]), ("garbage", vec![garbage]), ("good", vec![good.addr]), ("hang", vec![hanging])];
    let p = Proxy::start(&ambassador(
        listen,
        &shards,
        "function = \"maglev\", hash_tag = \"{}\"",
        "server_failure_limit = 0\nstats_detail = true",
    ));
    wait_port(listen);
    let k = |s: &str| key_on(&names, s);
    let hang_key = k("hang");
    let hung = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let a = Raw::connect(listen).ask(format!("get {hang_key}\r\n").as_bytes(), b"\r\n", 1);
        (a, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(100));
    let mut c = Raw::connect(listen);
    let started = std::time::Instant::now();
    assert_eq!(c.line(&format!("set {} 0 0 1\r\nx\r\n", k("good"))), "STORED\r\n");
    assert_eq!(
        c.ask(format!("get {}\r\n", k("good")).as_bytes(), b"END\r\n", 1),
        format!("VALUE {} 0 1\r\nx\r\nEND\r\n", k("good")).into_bytes()
    );
    assert!(started.elapsed() < Duration::from_millis(800), "the good shard waited on the hung one");
    let stats = String::from_utf8(c.ask(b"stats endpoints\r\n", b"END\r\n", 1)).unwrap();
    assert!(stats.contains(&format!("STAT hang:{hanging}:in_flight 1\r\n")), "the hung get is not in flight: {stats}");
    assert!(stats.contains(&format!("STAT good:{}:in_flight 0\r\n", good.addr)), "{stats}");
    assert_eq!(c.line(&format!("get {}\r\n", k("garbage"))), "SERVER_ERROR the server sent a malformed answer\r\n");
    assert_eq!(c.line(&format!("get {}\r\n", k("close"))), "SERVER_ERROR the server closed the connection\r\n");
    let (a, took) = hung.join().unwrap();
    assert_eq!(String::from_utf8_lossy(&a), "SERVER_ERROR the server timed out\r\n");
    assert!(took >= Duration::from_millis(900), "answered before the request timeout: {took:?}");
    // A multi-get touching a failed shard fails whole, and the connection goes on.
    assert_eq!(c.line(&format!("get {} {}\r\n", k("good"), k("garbage"))), "SERVER_ERROR the server sent a malformed answer\r\n");
    assert_eq!(c.line("mn\r\n"), "MN\r\n");
    let stats = String::from_utf8(c.ask(b"stats endpoints\r\n", b"END\r\n", 1)).unwrap();
    assert!(stats.contains(&format!("STAT hang:{hanging}:timeouts 1")), "{stats}");
    assert!(stats.contains(&format!("STAT hang:{hanging}:in_flight 0\r\n")), "{stats}");
    assert_eq!(
        p.metric(&format!(
            "ringmaster_memcache_endpoint_in_flight{{service=\"cache\",shard=\"hang\",endpoint=\"{hanging}\",address=\"{hanging}\"}}"
        )),
        0.0
    );
    assert!(stats.contains(&format!("STAT garbage:{garbage}:errors ")), "{stats}");
    drop(p);
}

/// Bad client input: garbage, a line too long, a command left half-sent.
/// Each gets its answer; other clients are not affected.
#[test]
fn bad_client_input_gets_answers_and_leaves_others_alone() {
    let m = memcached();
    let listen = free_addr();
    let p = Proxy::start(&ambassador(listen, &[("s", vec![m.addr])], "", "command_timeout = \"1s\""));
    wait_port(listen);
    let mut other = Raw::connect(listen);
    assert_eq!(other.line("set k 0 0 1\r\nv\r\n"), "STORED\r\n");
    // Garbage bytes, a bad line, then good commands on the same connection.
    let mut c = Raw::connect(listen);
    let got = c.ask(b"\x00\x01\xff garbage\r\n\x16\x03\x01\r\nget k\r\n", b"END\r\n", 1);
    assert_eq!(got, b"CLIENT_ERROR bad command line format\r\nERROR\r\nVALUE k 0 1\r\nv\r\nEND\r\n", "a NUL is refused");
    // A line too long to frame: answered, then closed.
    let long = vec![b'a'; 5000];
    let got = exchange(listen, &long, Duration::from_millis(500));
    assert_eq!(got, b"CLIENT_ERROR line too long\r\n");
    // Half a command, then silence: answered after the command timeout, then closed.
    let started = std::time::Instant::now();
    let got = exchange(listen, b"set k 0 0 10\r\nabc", Duration::from_secs(3));
    assert_eq!(got, b"SERVER_ERROR timed out reading a command\r\n");
    assert!(started.elapsed() >= Duration::from_millis(900));
    // A value shorter than declared swallows what follows, as memcached would:
    // the declared bytes are read, then the \r\n check fails.
    let got = exchange(listen, b"set k 0 0 3\r\nab\r\nget k\r\n", Duration::from_millis(500));
    assert_eq!(String::from_utf8_lossy(&got), "CLIENT_ERROR bad data chunk\r\nERROR\r\n");
    assert_eq!(other.ask(b"get k\r\n", b"END\r\n", 1), b"VALUE k 0 1\r\nv\r\nEND\r\n", "the other client is unaffected");
    let stats = String::from_utf8(other.ask(b"stats\r\n", b"END\r\n", 1)).unwrap();
    let bad: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("STAT bad_commands "))
        .unwrap_or_else(|| panic!("no bad_commands stat: {stats}"))
        .trim()
        .parse()
        .unwrap();
    assert!(bad >= 3, "the refused commands are counted: {stats}");
    drop(p);
}

/// Clients nobody here wrote: pymemcache over TCP and libmemcached's memccp,
/// memccat and memcslap over the ambassador's Unix socket and TCP listener.
#[test]
fn real_clients_work_through_the_ambassador() {
    let servers: Vec<Memcached> = (0..2).map(|_| memcached()).collect();
    let listen = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("mc.sock");
    let mut cfg = ambassador(listen, &[("a", vec![servers[0].addr]), ("b", vec![servers[1].addr])], "", "");
    cfg.push_str(&format!(
        "[[listeners]]\nname = \"mcu\"\nlisten = \"unix:{}\"\nprotocol = \"memcache\"\nservice = \"cache\"\n",
        sock.display()
    ));
    let _p = Proxy::start(&cfg);
    wait_port(listen);
    let script = format!(
        r#"
from pymemcache.client.base import Client
c = Client(('127.0.0.1', {port}), default_noreply=False)
c.set_many({{'k%d' % i: str(i) for i in range(100)}})
got = c.get_many(['k%d' % i for i in range(100)] + ['nope'])
assert got == {{'k%d' % i: str(i).encode() for i in range(100)}}, got
v, cas = c.gets('k1')
assert c.cas('k1', 'new', cas) is True and c.cas('k1', 'again', cas) is False
assert c.get('k1') == b'new'
c.set('n', '5'); assert c.incr('n', 3) == 8 and c.decr('n', 10) == 0
assert c.add('k2', 'x') is False and c.replace('k2', 'r') is True
assert c.append('k2', '+') and c.prepend('k2', '-') and c.get('k2') == b'-r+'
assert c.touch('k2', 10) and c.delete('k2') and c.get('k2') is None
assert c.version().startswith(b'ringmaster')
assert int(c.stats()[b'cmd_get']) > 0
u = Client('{sock}', default_noreply=False)
u.set('viaunix', 'yes'); assert c.get('viaunix') == b'yes'
print('ok')
"#,
        port = listen.port(),
        sock = sock.display()
    );
    let out = std::process::Command::new("/usr/bin/python3").args(["-c", &script]).output().expect("python3 runs");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"),
        "pymemcache: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = dir.path().join("payload.txt");
    std::fs::write(&file, "a file through the ambassador\n").unwrap();
    let servers_arg = format!("--servers={}", sock.display());
    let cp = std::process::Command::new("memccp").args([&servers_arg, file.to_str().unwrap()]).output().expect("memccp is installed");
    assert!(cp.status.success(), "memccp: {}", String::from_utf8_lossy(&cp.stderr));
    let cat = std::process::Command::new("memccat").args([&format!("--servers={listen}"), "payload.txt"]).output().unwrap();
    // memccat ends what it prints with a newline of its own.
    assert_eq!(
        String::from_utf8_lossy(&cat.stdout).trim_end(),
        "a file through the ambassador",
        "{}",
        String::from_utf8_lossy(&cat.stderr)
    );
    let slap = std::process::Command::new("timeout")
        .args(["30", "memcslap", &format!("--servers={listen}"), "--concurrency=4", "--execute-number=200"])
        .output()
        .unwrap();
    assert!(slap.status.success(), "memcslap: {}{}", String::from_utf8_lossy(&slap.stdout), String::from_utf8_lossy(&slap.stderr));
}

/// The demo's layout (3 shards of 2 replicas) answers like one memcached,
/// byte for byte, to a stream of lease-style meta commands (invalidation
/// with stale serving: `md ... I`, then X/W/Z on reads; vivify-on-miss with
/// `N`; recache with `R`) and plain commands over many keys: a key's meta
/// gets all reach its home replica, whose lease state is the one memcached's.
/// (Cas values and TTLs are left out: they follow each server's own history.)
#[test]
fn a_replicated_layout_answers_lease_commands_like_one_memcached() {
    let direct = memcached();
    let servers: Vec<Memcached> = (0..6).map(|_| memcached()).collect();
    let listen = free_addr();
    let shards: Vec<(&str, Vec<SocketAddr>)> =
        ["a", "b", "c"].iter().zip(servers.chunks(2)).map(|(n, pair)| (*n, pair.iter().map(|m| m.addr).collect())).collect();
    let p = Proxy::start(&ambassador(listen, &shards, "", "reads = \"round_robin\""));
    wait_port(listen);
    let mut stream = String::new();
    for i in 0..24 {
        let k = format!("lease{i}");
        stream.push_str(&format!(
            "ms {k} 1 T60\r\nx\r\nmd {k} I T30\r\nmg {k} v\r\nmg {k} v\r\nmg {k} v k\r\nms {k} 1 I\r\ny\r\nmg {k} v\r\n"
        ));
        stream.push_str(&format!("ms {k} 1\r\nz\r\nmg {k} v\r\nmg {k} v\r\n"));
        let v = format!("viv{i}");
        stream.push_str(&format!("mg {v} v N30\r\nmg {v} v N30\r\nmg {v} s v\r\nms {v} 2\r\nok\r\nmg {v} v\r\nmg {v} v\r\n"));
        let r = format!("re{i}");
        stream.push_str(&format!("set {r} 0 10 1\r\nr\r\nmg {r} v R30\r\nmg {r} v R30\r\nmg {r} v\r\nmg {r} v\r\n"));
        stream.push_str(&format!("md nolease{i} I\r\nmg nolease{i} v\r\nset p{i} 0 0 2\r\n{:02}\r\nget p{i} lease{i} nope\r\nincr p{i} 5\r\nappend p{i} 0 0 1\r\n!\r\nmg p{i} v\r\n", i % 100));
        stream.push_str(&format!("delete p{i}\r\nmg p{i} v\r\nmn\r\n"));
    }
    same_answers(direct.addr, listen, stream.as_bytes());
    drop(p);
}

/// The server side counts its writes and the commands they carry: every
/// command a client sends reaches the server once, and commands that queue
/// together share a write (at most one write per command).
#[test]
fn server_writes_and_the_commands_they_carry_are_counted() {
    let server = memcached();
    let listen = free_addr();
    let p = Proxy::start(&ambassador(listen, &[("only", vec![server.addr])], "", ""));
    wait_port(listen);
    let mut c = Raw::connect(listen);
    for i in 0..10 {
        assert_eq!(c.line(&format!("set k{i} 0 0 1\r\n{i}\r\n")), "STORED\r\n");
    }
    let burst: String = (0..50).map(|i| format!("get k{}\r\n", i % 10)).collect();
    let got = c.ask(burst.as_bytes(), b"END\r\n", 50);
    assert_eq!(String::from_utf8_lossy(&got).matches("VALUE ").count(), 50);
    let (writes, commands) = (p.metric("ringmaster_memcache_server_writes_total"), p.metric("ringmaster_memcache_server_commands_total"));
    assert_eq!(commands, 60.0, "each command reached the server once");
    assert!((1.0..=60.0).contains(&writes), "{writes} writes for {commands} commands");
    drop(p);
}
