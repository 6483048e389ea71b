//! Memcache test helpers: real memcached processes, a raw client that sends
//! bytes and reads answers, and an ambassador config over given shards.

use super::{free_port, wait_port, Proc};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A memcached on a free loopback port.
pub struct Memcached {
    pub proc: Proc,
    pub addr: SocketAddr,
}

pub fn memcached() -> Memcached {
    memcached_with(&[])
}

/// A memcached with extra arguments (such as `-I 2m`).
/// A memcached that lost its port to another process exits; it is started
/// again on another port, so a test never talks to a server not its own.
pub fn memcached_with(extra: &[&str]) -> Memcached {
    loop {
        let port = free_port();
        let child = Command::new("memcached")
            .args(["-u", "root", "-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0", "-t", "1", "-m", "64"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("memcached is installed (scripts/test installs it)");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut proc = Proc(child);
        wait_port(addr);
        // The server on the port says its pid: ours, or another's.
        // Another process on the port may reset the connection.
        while proc.0.try_wait().unwrap().is_none() {
            if try_server_stat(addr, "pid") == Some(u64::from(proc.0.id())) {
                return Memcached { proc, addr };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A connection speaking raw bytes.
pub struct Raw(pub TcpStream);

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Raw(s)
    }

    /// Sends `req` and reads until the answer holds `count` times `end`.
    pub fn ask(&mut self, req: &[u8], end: &[u8], count: usize) -> Vec<u8> {
        self.0.write_all(req).unwrap();
        self.until(end, count)
    }

    pub fn until(&mut self, end: &[u8], count: usize) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        while buf.windows(end.len()).filter(|w| *w == end).count() < count {
            let n = self.0.read(&mut chunk).expect("answer in time");
            assert!(n > 0, "connection closed; got {:?}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        }
        buf
    }

    /// One-line answer to a one-line command.
    pub fn line(&mut self, req: &str) -> String {
        String::from_utf8(self.ask(req.as_bytes(), b"\r\n", 1)).unwrap()
    }
}

/// Sends `req` on a new connection and reads until the peer has been quiet for `quiet`.
/// `stats` value `name` from whatever listens on `addr`, or None when it
/// does not answer as a memcached would.
fn try_server_stat(addr: SocketAddr, name: &str) -> Option<u64> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"stats\r\n").ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.ends_with(b"END\r\n") {
        let n = s.read(&mut chunk).ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8(buf).ok()?;
    text.lines().find_map(|l| l.strip_prefix(&format!("STAT {name} "))?.trim().parse().ok())
}

/// A memcached's own `stats` value `name`, read on a connection of its own.
pub fn server_stat(addr: SocketAddr, name: &str) -> u64 {
    let s = String::from_utf8(Raw::connect(addr).ask(b"stats\r\n", b"END\r\n", 1)).unwrap();
    s.lines().find_map(|l| l.strip_prefix(&format!("STAT {name} "))?.trim().parse().ok()).unwrap_or_else(|| panic!("{name} in {s}"))
}

pub fn exchange(addr: SocketAddr, req: &[u8], quiet: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(req).unwrap();
    s.set_read_timeout(Some(quiet)).unwrap();
    let mut out = Vec::new();
    let mut chunk = [0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    out
}

/// A memcache listener on `listen` and a sharded memcache service `cache`,
/// each shard the endpoints given; `extra` goes into `[services.cache.memcache]`.
pub fn ambassador(listen: SocketAddr, shards: &[(&str, Vec<SocketAddr>)], sharder: &str, extra: &str) -> String {
    let mut c = format!(
        "[[listeners]]\nname = \"mc\"\nlisten = \"{listen}\"\nprotocol = \"memcache\"\nservice = \"cache\"\n\n\
         [services.cache]\nkind = \"sharded\"\nprotocol = \"memcache\"\nsharder = {{ {sharder} }}\n\
         timeouts = {{ connect = \"500ms\", request = \"1s\" }}\n\n[services.cache.memcache]\n{extra}\n\n"
    );
    for (name, eps) in shards {
        let list: Vec<String> = eps.iter().map(|a| format!("{{ address = \"{a}\" }}")).collect();
        c.push_str(&format!("[services.cache.shards.{name}]\nendpoints = [{}]\n\n", list.join(", ")));
    }
    c
}
