//! ketama_twemproxy places keys exactly where a real nutcracker puts them:
//! 10,000 keys set through nutcracker in front of three memcached, then found
//! on the server ringmaster's ring names.

mod common;
use common::*;
use ringmaster::shard::hash::KeyHash;
use ringmaster::shard::ring::{Function, Member, Ring};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

fn memcached(port: u16) -> Proc {
    let child = Command::new("memcached")
        .args(["-u", "root", "-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0", "-t", "1", "-m", "64"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("memcached is installed (scripts/test installs it)");
    wait_port(SocketAddr::from(([127, 0, 0, 1], port)));
    Proc(child)
}

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

fn agree(names: Option<[&str; 3]>) {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let _servers: Vec<Proc> = ports.iter().map(|&p| memcached(p)).collect();
    let dir = tempfile::tempdir().unwrap();
    let listen = free_port();
    let mut yml =
        format!("mc:\n  listen: 127.0.0.1:{listen}\n  hash: fnv1a_64\n  distribution: ketama\n  auto_eject_hosts: false\n  servers:\n");
    for (i, p) in ports.iter().enumerate() {
        match names {
            Some(n) => yml.push_str(&format!("   - 127.0.0.1:{p}:1 {}\n", n[i])),
            None => yml.push_str(&format!("   - 127.0.0.1:{p}:1\n")),
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

    let keys: Vec<String> = (0..10_000).map(|i| format!("user:{i}:{}", i * 7919 % 1000)).collect();
    let mut s = TcpStream::connect(("127.0.0.1", listen)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for batch in keys.chunks(500) {
        let req: String = batch.iter().map(|k| format!("set {k} 0 0 1\r\nx\r\n")).collect();
        roundtrip(&mut s, req.as_bytes(), b"STORED\r\n", batch.len());
    }

    let members: Vec<Member> =
        (0..3).map(|i| Member::new(names.map(|n| n[i].to_string()).unwrap_or_else(|| format!("127.0.0.1:{}", ports[i])), 1)).collect();
    let ring = Ring::build(Function::KetamaTwemproxy, &members, KeyHash::Fnv1a64);
    let mut checked = 0;
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
            let ours = ring.locate(k.as_bytes()).unwrap() == i;
            assert_eq!(ours, held.contains(k), "key {k}: ringmaster says server {i} is {ours}");
        }
        checked += held.len();
    }
    assert_eq!(checked, keys.len(), "every key is on exactly one server");
}

#[test]
fn ketama_twemproxy_agrees_with_nutcracker_on_named_servers() {
    agree(Some(["mc1", "mc2", "mc3"]));
}

#[test]
fn ketama_twemproxy_agrees_with_nutcracker_on_unnamed_servers() {
    agree(None);
}
