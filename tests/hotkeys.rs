//! Hot-key mitigation through the ambassador, with real memcached: once the
//! heat ranking calls a key hot, its gets are answered at the root (its shard
//! sees one read per ttl), a write, delete or flush through the root is seen
//! at once, and with `spread` a hot key's reads use every replica even under
//! `local_first`.

mod common;
use common::mc::{ambassador, memcached, Memcached, Raw};
use common::*;
use std::net::SocketAddr;

/// `n` gets in one pipelined batch: `hot` every other one, 200 other keys between.
fn skewed(c: &mut Raw, n: usize, hot: &str) {
    let mut batch = Vec::new();
    for i in 0..n {
        let key = if i % 2 == 0 { hot.to_string() } else { format!("k{}", i % 200) };
        batch.extend_from_slice(format!("get {key}\r\n").as_bytes());
    }
    batch.extend_from_slice(b"mn\r\n");
    c.ask(&batch, b"MN\r\n", 1);
}

/// A `STAT NAME VALUE` line's value from an answer of `stats ...`.
fn stat(c: &mut Raw, which: &str, name: &str) -> u64 {
    let line = if which.is_empty() { "stats\r\n".to_string() } else { format!("stats {which}\r\n") };
    let s = String::from_utf8(c.ask(line.as_bytes(), b"END\r\n", 1)).unwrap();
    s.lines().find_map(|l| l.strip_prefix(&format!("STAT {name} "))?.trim().parse().ok()).unwrap_or_else(|| panic!("{name} in {s}"))
}

fn start(servers: &[&Memcached], hot_keys: &str) -> (Proxy, SocketAddr) {
    let listen = free_addr();
    let shard: Vec<SocketAddr> = servers.iter().map(|m| m.addr).collect();
    let cfg = ambassador(listen, &[("a", shard)], "function = \"maglev\"", "reads = \"local_first\"\nallow_flush_all = true")
        + "[services.cache.heat]\nwindow = \"2s\"\nsample = 1\nhot_share = 0.2\n\n"
        + &format!("[services.cache.hot_keys]\n{hot_keys}\n");
    let p = Proxy::start_with_admin("show_keys = \"raw\"", &cfg);
    wait_port(listen);
    (p, listen)
}

/// Gets of `key` until the root answers them (the heat tick has called it hot and one read filled the cache).
fn until_cached(p: &Proxy, c: &mut Raw, key: &str) {
    eventually(10, "the hot key is answered at the root", || {
        skewed(c, 400, key);
        p.metric("ringmaster_heat_hot_cache_hits_total{service=\"cache\"}") > 0.0
    });
}

#[test]
fn a_hot_key_is_answered_at_the_root_and_writes_through_it_are_seen_at_once() {
    let server = memcached();
    let (p, listen) = start(&[&server], "cache = true\nttl = \"30s\"");
    let mut c = Raw::connect(listen);
    assert_eq!(c.line("set hot 0 0 2\r\nv1\r\n"), "STORED\r\n");
    until_cached(&p, &mut c, "hot");
    // 500 more gets of the hot key: the shard sees none of them (the ttl is long).
    let before = stat(&mut c, "shards", "a:requests");
    let hits = p.metric("ringmaster_heat_hot_cache_hits_total{service=\"cache\"}");
    let batch: Vec<u8> = (0..500).flat_map(|_| b"get hot\r\n".to_vec()).collect();
    let answers = c.ask(&batch, b"END\r\n", 500);
    assert_eq!(answers, b"VALUE hot 0 2\r\nv1\r\nEND\r\n".repeat(500));
    assert_eq!(stat(&mut c, "shards", "a:requests"), before, "the shard saw a hot key's read");
    assert_eq!(p.metric("ringmaster_heat_hot_cache_hits_total{service=\"cache\"}"), hits + 500.0);
    // Served from the root: a write that bypasses it is not seen before the ttl...
    assert_eq!(Raw::connect(server.addr).line("set hot 0 0 2\r\nvX\r\n"), "STORED\r\n");
    assert_eq!(c.ask(b"get hot\r\n", b"END\r\n", 1), b"VALUE hot 0 2\r\nv1\r\nEND\r\n");
    // ...but every write through it is, at once: set, delete, incr, touch, meta set, flush_all.
    assert_eq!(c.line("set hot 0 0 2\r\nv2\r\n"), "STORED\r\n");
    assert_eq!(c.ask(b"get hot\r\n", b"END\r\n", 1), b"VALUE hot 0 2\r\nv2\r\nEND\r\n");
    assert_eq!(c.ask(b"get hot\r\nget hot\r\n", b"END\r\n", 2), b"VALUE hot 0 2\r\nv2\r\nEND\r\n".repeat(2));
    assert_eq!(c.line("ms hot 2 T0\r\nv3\r\n"), "HD\r\n");
    assert_eq!(c.ask(b"get hot\r\n", b"END\r\n", 1), b"VALUE hot 0 2\r\nv3\r\nEND\r\n");
    assert_eq!(c.line("set hot 0 0 1\r\n5\r\n"), "STORED\r\n");
    c.ask(b"get hot\r\n", b"END\r\n", 1);
    assert_eq!(c.line("incr hot 2\r\n"), "7\r\n");
    assert_eq!(c.ask(b"get hot\r\n", b"END\r\n", 1), b"VALUE hot 0 1\r\n7\r\nEND\r\n");
    assert_eq!(c.line("delete hot\r\n"), "DELETED\r\n");
    assert_eq!(c.ask(b"get hot\r\n", b"END\r\n", 1), b"END\r\n");
    // A hot miss is answered at the root too, until a write.
    assert_eq!(Raw::connect(server.addr).line("set hot 0 0 2\r\nvX\r\n"), "STORED\r\n");
    assert_eq!(c.ask(b"get hot\r\n", b"END\r\n", 1), b"END\r\n");
    assert_eq!(c.line("set hot 0 0 2\r\nv4\r\n"), "STORED\r\n");
    c.ask(b"get hot\r\nget hot\r\n", b"END\r\n", 2);
    assert_eq!(c.line("flush_all\r\n"), "OK\r\n");
    assert_eq!(c.ask(b"get hot\r\n", b"END\r\n", 1), b"END\r\n", "flush_all empties the root too");
    // gets answers carry the cas value and are kept apart from get answers.
    assert_eq!(c.line("set hot 0 0 2\r\nv5\r\n"), "STORED\r\n");
    let gets = c.ask(b"gets hot\r\n", b"END\r\n", 1);
    assert!(gets.starts_with(b"VALUE hot 0 2 "), "{}", String::from_utf8_lossy(&gets));
    assert_eq!(c.ask(b"get hot\r\n", b"END\r\n", 1), b"VALUE hot 0 2\r\nv5\r\nEND\r\n");
    let heat = p.admin_json("/admin/heat");
    let cache = &heat["services"][0]["mitigation"]["cache"];
    assert!(cache["invalidations"].as_u64().unwrap() >= 6, "{heat:#}");
    assert!(cache["entries"].as_u64().unwrap() >= 1 && cache["bytes"].as_u64().unwrap() > 0, "{heat:#}");
    assert_eq!(heat["services"][0]["top_keys"][0]["key"], "hot");
}

#[test]
fn a_hot_keys_reads_are_spread_over_the_replicas() {
    let (one, two) = (memcached(), memcached());
    let (p, listen) = start(&[&one, &two], "spread = true");
    let mut c = Raw::connect(listen);
    assert_eq!(c.line("set hot 0 0 2\r\nv1\r\n"), "STORED\r\n");
    let reads = |m: &Memcached| stat(&mut Raw::connect(m.addr), "", "cmd_get");
    // local_first: a cold key is read from the first replica only.
    let before = reads(&two);
    let batch: Vec<u8> = (0..50).flat_map(|_| b"get cold\r\n".to_vec()).collect();
    c.ask(&batch, b"END\r\n", 50);
    assert_eq!(reads(&two), before, "a cold key's reads went to the second replica");
    eventually(10, "the hot key's reads reach the second replica", || {
        skewed(&mut c, 400, "hot");
        reads(&two) > before + 50
    });
    let (a, b) = (reads(&one), reads(&two));
    let batch: Vec<u8> = (0..200).flat_map(|_| b"get hot\r\n".to_vec()).collect();
    assert_eq!(c.ask(&batch, b"END\r\n", 200), b"VALUE hot 0 2\r\nv1\r\nEND\r\n".repeat(200));
    let (da, db) = (reads(&one) - a, reads(&two) - b);
    assert!(da >= 80 && db >= 80, "hot reads not spread: {da} and {db}");
    assert_eq!(p.metric("ringmaster_memcache_desyncs_total"), 0.0);
    drop(p);
}

#[test]
fn hot_keys_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let cfg = ambassador(free_addr(), &[("a", vec![free_addr()])], "", "")
        + "[services.cache.heat]\ntop_keys = 0\n\n[services.cache.hot_keys]\ncache = true\nttl = \"5ms\"\nmax_bytes = 10\nsplit = 40\n\n\
           [[routes]]\nservice = \"web\"\n\n[services.web]\nkind = \"sharded\"\nsharder = { key = \"path\" }\n\
           hot_keys = { cache = true, ttl = \"1500ms\", split = 2 }\n[services.web.shards.a]\nendpoints = [{ address = \"127.0.0.1:9\" }]\n";
    std::fs::write(&path, &cfg).unwrap();
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_ringmaster")).args(["check", "--config", path.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "hot_keys needs heat.top_keys above 0",
        "hot_keys ttl must be between 10ms and 60s",
        "hot_keys max_bytes must be between",
        "split must be from 2 to 16",
        "split is for memcache services",
        "ttl is whole seconds",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    assert!(err.contains(&format!("{}:", path.display())), "{err}");
}

#[test]
fn hot_keys_inside_a_multi_get_are_answered_at_the_root_in_key_order() {
    let (a, b) = (memcached(), memcached());
    let listen = free_addr();
    let cfg = ambassador(listen, &[("a", vec![a.addr]), ("b", vec![b.addr])], "function = \"maglev\"", "")
        + "[services.cache.heat]\nwindow = \"2s\"\nsample = 1\nhot_share = 0.2\n\n[services.cache.hot_keys]\ncache = true\nttl = \"30s\"\n";
    let p = Proxy::start(&cfg);
    wait_port(listen);
    let mut c = Raw::connect(listen);
    let keys: Vec<String> = (0..6).map(|i| format!("m{i}")).collect();
    for k in &keys {
        assert_eq!(c.line(&format!("set {k} 0 0 {}\r\n{k}\r\n", k.len())), "STORED\r\n");
    }
    until_cached(&p, &mut c, "hot");
    assert_eq!(c.line("set hot 0 0 3\r\nyes\r\n"), "STORED\r\n", "the write dropped the cached miss");
    // The hot key amid keys of both shards, and a key nobody has: one answer, in key order.
    let line = "get m0 hot m1 nothing m2 m3 m4 m5\r\n";
    let want = |hot: &str| {
        let mut w = String::new();
        for k in ["m0", "hot", "m1", "m2", "m3", "m4", "m5"] {
            let v = if k == "hot" { hot } else { k };
            w.push_str(&format!("VALUE {k} 0 {}\r\n{v}\r\n", v.len()));
        }
        w + "END\r\n"
    };
    assert_eq!(String::from_utf8(c.ask(line.as_bytes(), b"END\r\n", 1)).unwrap(), want("yes"));
    let hits = p.metric("ringmaster_heat_hot_cache_hits_total{service=\"cache\"}");
    // The hot key is now kept at the root: its shard does not see it again in multi-gets.
    let requests = |c: &mut Raw| stat(c, "shards", "a:requests") + stat(c, "shards", "b:requests");
    let before = requests(&mut c);
    for _ in 0..20 {
        assert_eq!(String::from_utf8(c.ask(line.as_bytes(), b"END\r\n", 1)).unwrap(), want("yes"));
    }
    assert!(p.metric("ringmaster_heat_hot_cache_hits_total{service=\"cache\"}") >= hits + 20.0);
    // 20 gets over two shards: at most 2 shard reads each, none of them for the hot key alone.
    assert!(requests(&mut c) - before <= 40, "{}", requests(&mut c) - before);
    // A write through the root is seen at once by the next multi-get.
    assert_eq!(c.line("set hot 0 0 3\r\nnew\r\n"), "STORED\r\n");
    assert_eq!(String::from_utf8(c.ask(line.as_bytes(), b"END\r\n", 1)).unwrap(), want("new"));
    // A get of only hot keys is answered without any shard.
    let before = requests(&mut c);
    c.ask(b"get hot\r\n", b"END\r\n", 1);
    assert_eq!(
        String::from_utf8(c.ask(b"get hot hot\r\n", b"END\r\n", 1)).unwrap(),
        "VALUE hot 0 3\r\nnew\r\nVALUE hot 0 3\r\nnew\r\nEND\r\n"
    );
    assert!(requests(&mut c) - before <= 1, "only the fill after the write read a shard");
}

#[test]
fn a_split_hot_key_is_read_from_several_shards_and_a_write_drops_its_copies() {
    let servers = [memcached(), memcached(), memcached()];
    let listen = free_addr();
    let shards: Vec<(&str, Vec<SocketAddr>)> =
        vec![("a", vec![servers[0].addr]), ("b", vec![servers[1].addr]), ("c", vec![servers[2].addr])];
    let cfg = ambassador(listen, &shards, "function = \"maglev\"", "")
        + "[services.cache.heat]\nwindow = \"2s\"\nsample = 1\nhot_share = 0.2\n\n[services.cache.hot_keys]\nsplit = 3\nttl = \"30s\"\n";
    let p = Proxy::start(&cfg);
    wait_port(listen);
    let mut c = Raw::connect(listen);
    assert_eq!(c.line("set hot 5 0 2\r\nv1\r\n"), "STORED\r\n");
    let held = || servers.iter().filter(|m| Raw::connect(m.addr).line("get hot\r\n").starts_with("VALUE")).count();
    assert_eq!(held(), 1, "a key starts on its owner only");
    assert_eq!(p.admin_json("/admin/heat")["services"][0]["mitigation"]["split"], 3);
    // Gets of the hot key: every one answers the value; the copies fill from the owner.
    eventually(15, "the hot key has copies on all three shards", || {
        for _ in 0..200 {
            assert_eq!(String::from_utf8(c.ask(b"get hot\r\n", b"END\r\n", 1)).unwrap(), "VALUE hot 5 2\r\nv1\r\nEND\r\n");
        }
        held() == 3
    });
    let requests = |c: &mut Raw| ["a", "b", "c"].map(|s| stat(c, "shards", &format!("{s}:requests")));
    let before = requests(&mut c);
    let batch: Vec<u8> = (0..300).flat_map(|_| b"get hot\r\n".to_vec()).collect();
    let answers = String::from_utf8(c.ask(&batch, b"END\r\n", 300)).unwrap();
    assert_eq!(answers.matches("VALUE hot 5 2\r\nv1\r\n").count(), 300);
    let after = requests(&mut c);
    for i in 0..3 {
        assert!(after[i] - before[i] > 50, "each place takes a share of the reads: {before:?} -> {after:?}");
    }
    // A write through the root: the owner has it, the copies are gone, every get sees it.
    assert_eq!(c.line("set hot 5 0 2\r\nv2\r\n"), "STORED\r\n");
    assert_eq!(held(), 1);
    for _ in 0..30 {
        assert_eq!(String::from_utf8(c.ask(b"get hot\r\n", b"END\r\n", 1)).unwrap(), "VALUE hot 5 2\r\nv2\r\nEND\r\n");
    }
    // The copies filled again live ttl at most: their exptime is set, the owner's is not.
    let ttls: Vec<String> = servers.iter().map(|m| Raw::connect(m.addr).line("mg hot t\r\n").trim().to_string()).collect();
    assert_eq!(ttls.iter().filter(|t| *t == "HD t-1").count(), 1, "{ttls:?}");
    for t in ttls.iter().filter(|t| *t != "HD t-1" && *t != "EN") {
        let secs: i64 = t.trim_start_matches("HD t").parse().unwrap();
        assert!((1..=30).contains(&secs), "{ttls:?}");
    }
}
