//! ketama_twemproxy places keys exactly where a real nutcracker puts them:
//! 10,000 keys set through nutcracker in front of three memcached, then found
//! on the server ringmaster's ring names.

mod common;
use common::*;
use ringmaster::hash::KeyHash;
use ringmaster::ring::{Function, Member, Ring};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Sends `req` and reads until the answer ends with `end`.
fn roundtrip(s: &mut TcpStream, req: &[u8], end: &[u8], count: usize) -> Vec<u8> {
    s.write_all(req).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    while buf.windows(end.len()).filter(|w| *w == end).count() < count {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
    }
    buf
}

/// Sets 10,000 keys through a real nutcracker (fnv1a_64, ketama) over three
/// memcached, checks that the ring library places each where nutcracker did,
/// and returns the keys with the index of the server holding each.
fn agree(names: Option<[&str; 3]>) -> Vec<(String, usize)> {
    agree_with("fnv1a_64", [1, 1, 1], None, names)
}

/// As [`agree`], for nutcracker's `hash`, the servers' weights and a `hash_tag`.
fn agree_with(hash: &str, weights: [u32; 3], tag: Option<&str>, names: Option<[&str; 3]>) -> Vec<(String, usize)> {
    let servers: Vec<common::mc::Memcached> = (0..3).map(|_| common::mc::memcached()).collect();
    let ports: Vec<u16> = servers.iter().map(|m| m.addr.port()).collect();
    let dir = tempfile::tempdir().unwrap();
    let listen = free_port();
    let mut yml = format!("mc:\n  listen: 127.0.0.1:{listen}\n  hash: {hash}\n  distribution: ketama\n  auto_eject_hosts: false\n");
    if let Some(t) = tag {
        yml.push_str(&format!("  hash_tag: \"{t}\"\n"));
    }
    yml.push_str("  servers:\n");
    for (i, p) in ports.iter().enumerate() {
        let w = weights[i];
        match names {
            Some(n) => yml.push_str(&format!("   - 127.0.0.1:{p}:{w} {}\n", n[i])),
            None => yml.push_str(&format!("   - 127.0.0.1:{p}:{w}\n")),
        }
    }
    let conf = dir.path().join("nutcracker.yml");
    std::fs::write(&conf, yml).unwrap();
    let stats = free_port();
    let child = Command::new("nutcracker")
        .args(["-c", conf.to_str().unwrap(), "-s", &stats.to_string(), "-o", dir.path().join("nc.log").to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nutcracker is installed (scripts/test installs it)");
    let _nc = Proc(child);
    wait_port(SocketAddr::from(([127, 0, 0, 1], listen)));

    let keys: Vec<String> = match tag {
        // Keys that share a tag share a server; some keys have none.
        Some(_) => (0..10_000).map(|i| if i % 5 == 0 { format!("plain:{i}") } else { format!("x{i}:{{user:{}}}:y", i % 700) }).collect(),
        None => (0..10_000).map(|i| format!("user:{i}:{}", i * 7919 % 1000)).collect(),
    };
    let mut s = TcpStream::connect(("127.0.0.1", listen)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for batch in keys.chunks(500) {
        let req: String = batch.iter().map(|k| format!("set {k} 0 0 1\r\nx\r\n")).collect();
        roundtrip(&mut s, req.as_bytes(), b"STORED\r\n", batch.len());
    }

    let members: Vec<Member> = (0..3)
        .map(|i| Member::new(names.map(|n| n[i].to_string()).unwrap_or_else(|| format!("127.0.0.1:{}", ports[i])), weights[i]))
        .collect();
    let key_hash = match hash {
        "md5" => KeyHash::Md5,
        "fnv1a_32" => KeyHash::Fnv1a32,
        _ => KeyHash::Fnv1a64,
    };
    let ring = Ring::build(Function::KetamaTwemproxy, &members, key_hash);
    let tag_pair = tag.map(|t| <[u8; 2]>::try_from(t.as_bytes()).unwrap());
    let mut checked = 0;
    let mut placed = Vec::new();
    for (i, &port) in ports.iter().enumerate() {
        let mut m = TcpStream::connect(("127.0.0.1", port)).unwrap();
        m.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut held = HashSet::new();
        for batch in keys.chunks(200) {
            let req = format!("get {}\r\n", batch.join(" "));
            let answer = roundtrip(&mut m, req.as_bytes(), b"END\r\n", 1);
            for line in BufReader::new(&answer[..]).lines() {
                let line = line.unwrap();
                if let Some(rest) = line.strip_prefix("VALUE ") {
                    held.insert(rest.split(' ').next().unwrap().to_string());
                }
            }
        }
        for k in &keys {
            let ours = ring.locate(ringmaster::hash::hash_tag(k.as_bytes(), tag_pair)).unwrap() == i;
            assert_eq!(ours, held.contains(k), "key {k}: ringmaster says server {i} is {ours}");
        }
        checked += held.len();
        placed.extend(held.into_iter().map(|k| (k, i)));
    }
    assert_eq!(checked, keys.len(), "every key is on exactly one server");
    placed
}

#[test]
fn ketama_twemproxy_agrees_with_nutcracker_on_named_servers() {
    agree(Some(["mc1", "mc2", "mc3"]));
}

/// nutcracker's other hashes, weights other than 1, and a hash tag: each key
/// is on the server ringmaster's ring names.
#[test]
fn placement_agrees_with_nutcracker_for_md5_fnv1a_32_weights_and_hash_tags() {
    let names = Some(["mc1", "mc2", "mc3"]);
    for hash in ["md5", "fnv1a_32"] {
        agree_with(hash, [1, 1, 1], None, names);
    }
    let placed = agree_with("fnv1a_64", [1, 3, 2], None, names);
    let on = |i: usize| placed.iter().filter(|p| p.1 == i).count();
    assert!(on(1) > 2 * on(0), "weight 3 holds more than weight 1: {} and {}", on(1), on(0));
    let placed = agree_with("md5", [1, 1, 1], Some("{}"), names);
    let server_of = |k: &str| placed.iter().find(|p| p.0 == k).map(|p| p.1);
    assert_eq!(server_of("x1:{user:1}:y"), server_of("x701:{user:1}:y"), "one tag, one server");
}

/// A running proxy's sharded service with `function = "ketama_twemproxy"` and no
/// `hash` (nutcracker's default, fnv1a_64) sends every key to the shard named like
/// the nutcracker server that holds it.
#[test]
fn a_running_proxy_places_keys_as_nutcracker_does() {
    let names = ["mc1", "mc2", "mc3"];
    let placed = agree(Some(names));
    let backends: Vec<Backend> = names.iter().map(|n| backend(n)).collect();
    let mut cfg = String::from("[[routes]]\nservice = \"cache\"\n\n[services.cache]\nkind = \"sharded\"\nshard_header = \"x-shard\"\n");
    cfg.push_str("sharder = { key = { header = \"x-key\" }, function = \"ketama_twemproxy\", fallback = \"reject\" }\n\n");
    for b in &backends {
        cfg.push_str(&format!(
            "[services.cache.shards.{}]\nendpoints = [{{ name = \"{}\", address = \"{}\" }}]\n\n",
            b.name, b.name, b.addr
        ));
    }
    let p = Proxy::start(&cfg);
    let mut conn = TcpStream::connect(p.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut wrong = Vec::new();
    for (key, server) in &placed {
        conn.write_all(format!("GET / HTTP/1.1\r\nHost: x\r\nX-Key: {key}\r\n\r\n").as_bytes()).unwrap();
        let (mut shard, mut len) = (String::new(), 0usize);
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.strip_prefix("x-shard: ") {
                shard = v.to_string();
            } else if let Some(v) = l.strip_prefix("content-length: ") {
                len = v.parse().unwrap();
            }
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        if shard != names[*server] {
            wrong.push((key.clone(), shard, names[*server]));
        }
    }
    assert!(wrong.is_empty(), "{} of {} keys placed unlike nutcracker, e.g. {:?}", wrong.len(), placed.len(), &wrong[..wrong.len().min(5)]);
    // Another key hash must be asked for, and places keys elsewhere.
    let md5 = cfg.replace("function = \"ketama_twemproxy\"", "function = \"ketama_twemproxy\", hash = \"md5\"");
    p.rewrite(&md5);
    p.proc.signal("HUP");
    eventually(5, "reload", || p.metric("ringmaster_reloads_total") == 1.0);
    let moved = placed
        .iter()
        .take(300)
        .filter(|(k, s)| {
            let r = request(p.addr, &format!("GET / HTTP/1.1\r\nHost: x\r\nX-Key: {k}\r\nConnection: close\r\n\r\n"));
            // A failed request moved nothing: it must name a shard, another one.
            assert_eq!(r.status, 200, "{k}: {}", r.text());
            let shard = r.header("x-shard").unwrap_or_else(|| panic!("{k}: no x-shard"));
            shard != names[*s]
        })
        .count();
    assert!(moved > 100, "md5 placed {moved} of 300 keys elsewhere");
}

#[test]
fn ketama_twemproxy_agrees_with_nutcracker_on_unnamed_servers() {
    agree(None);
}
