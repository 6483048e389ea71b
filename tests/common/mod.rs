//! Test harness: real processes on loopback. The ringmaster binary as proxy and
//! as backend replicas, a plain blocking HTTP/1.1 client, and helpers to wait for
//! readiness. Every child is killed when its handle drops.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod kube;
pub mod mc;
pub mod pki;

pub const BIN: &str = env!("CARGO_BIN_EXE_ringmaster");

/// A loopback port that was free a moment ago, never one this test process
/// handed out before: tests run in parallel threads, and two of them given
/// the same port (one closed its probe before the other's server bound it)
/// would share a server without knowing.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A child process, killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }
    /// Sends `sig`. A STOP returns once every thread has stopped: `kill`
    /// returns when the signal is queued, and a loaded machine saw a
    /// memcached answer one more command after that.
    pub fn signal(&self, sig: &str) {
        Command::new("kill").arg(format!("-{sig}")).arg(self.0.id().to_string()).status().unwrap();
        if sig == "STOP" {
            let tasks = format!("/proc/{}/task", self.0.id());
            let stopped = |t: std::fs::DirEntry| {
                let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).is_none_or(|s| s == "T" || s == "t")
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while !std::fs::read_dir(&tasks).map(|d| d.flatten().all(stopped)).unwrap_or(true) {
                assert!(Instant::now() < deadline, "process {} did not stop", self.0.id());
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// Waits until something accepts connections on `addr`.
pub fn wait_port(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listening on {addr}");
}

/// A backend replica: `ringmaster backend`.
pub struct Backend {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub name: String,
}

pub fn backend(name: &str) -> Backend {
    backend_with(name, &[])
}

/// A backend on `ip:port`, named by its IP (the addresses of one name, or of
/// one EndpointSlice, share a port).
pub fn backend_on(ip: std::net::Ipv4Addr, port: u16) -> Proc {
    let child = Command::new(BIN)
        .args(["backend", "--listen", &format!("{ip}:{port}"), "--name", &ip.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(SocketAddr::from((ip, port)));
    Proc(child)
}

/// A backend on a port the OS picks (no race with other tests for a free port);
/// it prints the address it bound.
pub fn backend_with(name: &str, extra: &[&str]) -> Backend {
    let mut child = Command::new(BIN)
        .args(["backend", "--listen", "127.0.0.1:0", "--name", name])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().unwrap()), &mut line).unwrap();
    let addr: SocketAddr =
        line.trim().strip_prefix("listening on ").and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("backend said {line:?}"));
    let proc = Proc(child);
    wait_port(addr);
    Backend { proc, addr, name: name.to_string() }
}

/// `config` with `[server] http1` set from RINGMASTER_TEST_HTTP1 when that is
/// set, so the same tests run on hyper's HTTP/1 path too (scripts/test does).
pub fn with_engine(config: String) -> String {
    let Ok(engine) = std::env::var("RINGMASTER_TEST_HTTP1") else { return config };
    let line = format!("http1 = \"{engine}\"\n");
    match config.find("[server]\n") {
        Some(i) if i == 0 || config.as_bytes()[i - 1] == b'\n' => {
            let at = i + "[server]\n".len();
            format!("{}{line}{}", &config[..at], &config[at..])
        }
        _ => format!("{config}\n[server]\n{line}"),
    }
}

/// A running proxy with its config file.
pub struct Proxy {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    /// Lines of the `[admin]` table beyond its address.
    admin_extra: String,
}

impl Proxy {
    /// Starts ringmaster on `body`, a config without its `[admin]` table and first
    /// listener, which are added here on free ports.
    pub fn start(body: &str) -> Proxy {
        Proxy::start_with_admin("", body)
    }

    /// As [`Proxy::start`], with `admin_extra` lines in the `[admin]` table.
    pub fn start_with_admin(admin_extra: &str, body: &str) -> Proxy {
        // Another test may take a port between free_addr() and the bind: try again.
        for _ in 0..4 {
            if let Some(p) = Proxy::try_start(admin_extra, body) {
                return p;
            }
        }
        panic!("ringmaster could not bind its ports four times");
    }

    /// As [`Proxy::start`], with its admin listener on `admin` (which other
    /// processes' configs name).
    pub fn start_on(admin: SocketAddr, body: &str) -> Proxy {
        Proxy::try_start_on(admin, "", body).expect("the admin address was free")
    }

    /// As [`Proxy::start_on`], with `admin_extra` lines in the `[admin]` table.
    pub fn start_on_with(admin: SocketAddr, admin_extra: &str, body: &str) -> Proxy {
        Proxy::try_start_on(admin, admin_extra, body).expect("the admin address was free")
    }

    /// Starts the proxy; None when its main or admin port was taken meanwhile.
    fn try_start(admin_extra: &str, body: &str) -> Option<Proxy> {
        Proxy::try_start_on(free_addr(), admin_extra, body)
    }

    fn try_start_on(admin: SocketAddr, admin_extra: &str, body: &str) -> Option<Proxy> {
        let addr = free_addr();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("ringmaster.toml");
        std::fs::write(&config, with_engine(Proxy::head(addr, admin, admin_extra) + body)).unwrap();
        let child = Command::new(BIN)
            .args(["run", "--config", config.to_str().unwrap()])
            .env("RINGMASTER_LOG", "info")
            .stdout(Stdio::from(std::fs::File::create(dir.path().join("stdout.log")).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(dir.path().join("stderr.log")).unwrap()))
            .spawn()
            .unwrap();
        let mut p = Proxy { proc: Proc(child), addr, admin, dir, config, admin_extra: admin_extra.to_string() };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(admin).is_err() || TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = p.proc.0.try_wait() {
                let err = p.stderr();
                if err.contains(&format!("cannot listen on {addr}")) || err.contains(&format!("admin address {admin}")) {
                    return None;
                }
                panic!("ringmaster exited ({status}) at start:\n{err}");
            }
            assert!(Instant::now() < deadline, "ringmaster did not start:\n{}", p.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(p)
    }

    pub fn head(addr: SocketAddr, admin: SocketAddr, admin_extra: &str) -> String {
        format!("[admin]\nlisten = \"{admin}\"\n{admin_extra}\n\n[[listeners]]\nname = \"main\"\nlisten = \"{addr}\"\n\n")
    }

    /// Rewrites the config (head kept) for a reload.
    pub fn rewrite(&self, body: &str) {
        std::fs::write(&self.config, with_engine(Proxy::head(self.addr, self.admin, &self.admin_extra) + body)).unwrap();
    }

    pub fn get(&self, path: &str) -> Response {
        get(self.addr, path)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }

    /// The value of one metric line (exact name and labels) from /metrics.
    pub fn metric(&self, series: &str) -> f64 {
        let text = admin_get(self.admin, "/metrics").text();
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).map(|v| v.trim().parse::<f64>().unwrap()))
            .unwrap_or_else(|| panic!("metric {series} not found in:\n{text}"))
    }

    pub fn admin_json(&self, path: &str) -> serde_json::Value {
        serde_json::from_str(&admin_get(self.admin, path).text()).unwrap()
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(|s| s.as_str())
    }
    pub fn backend(&self) -> String {
        self.header("x-backend").unwrap_or("-").to_string()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// A GET to an admin listener, under a name it answers to.
pub fn admin_get(addr: SocketAddr, path: &str) -> Response {
    request(addr, &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"))
}

pub fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, &format!("GET {path} HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n"))
}

/// Sends raw request bytes and reads the whole answer (the request should ask
/// for Connection: close).
pub fn request(addr: SocketAddr, raw: &str) -> Response {
    request_bytes(addr, raw.as_bytes()).unwrap_or_else(|e| panic!("request to {addr} failed: {e}"))
}

pub fn request_bytes(addr: SocketAddr, raw: &[u8]) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.write_all(raw)?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse_response(&buf).ok_or_else(|| std::io::Error::other(format!("unparsable answer: {:?}", String::from_utf8_lossy(&buf))))
}

pub fn parse_response(buf: &[u8]) -> Option<Response> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut headers = HashMap::new();
    for l in lines {
        let (k, v) = l.split_once(':')?;
        headers
            .entry(k.trim().to_ascii_lowercase())
            .and_modify(|old: &mut String| {
                old.push_str(", ");
                old.push_str(v.trim())
            })
            .or_insert_with(|| v.trim().to_string());
    }
    let raw = &buf[end + 4..];
    let body = if headers.get("transfer-encoding").map(|t| t.contains("chunked")).unwrap_or(false) { dechunk(raw) } else { raw.to_vec() };
    Some(Response { status, headers, body })
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(nl) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..nl]).unwrap_or("0").trim(), 16).unwrap_or(0);
        if size == 0 || raw.len() < nl + 2 + size {
            break;
        }
        out.extend_from_slice(&raw[nl + 2..nl + 2 + size]);
        raw = &raw[(nl + 4 + size).min(raw.len())..];
    }
    out
}

/// Polls `f` until it returns true or `secs` pass.
pub fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for: {what}");
}

/// Counts answers per backend over `n` GETs of `path`.
pub fn spread(p: &Proxy, path: &str, n: usize) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for _ in 0..n {
        let r = p.get(path);
        assert_eq!(r.status, 200, "{}", r.text());
        *m.entry(r.backend()).or_insert(0) += 1;
    }
    m
}

/// A `[services.NAME]` table of a replicated service over `backends`.
pub fn service(name: &str, balancer: &str, backends: &[&Backend], extra: &str) -> String {
    let mut s = format!("[services.{name}]\nkind = \"replicated\"\nbalancer = \"{balancer}\"\n{extra}\n");
    for b in backends {
        s.push_str(&format!("[[services.{name}.endpoints]]\nname = \"{}\"\naddress = \"{}\"\n", b.name, b.addr));
    }
    s
}

/// One route sending everything to `svc`.
/// `ringmaster check` on config `text`, as outside a pod: whether it
/// passed, and what it said on stderr.
pub fn check_config(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN).args(["check", "--config", path.to_str().unwrap()]).env_remove("KUBERNETES_SERVICE_HOST").output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

pub fn route_all(svc: &str) -> String {
    format!("[[routes]]\nname = \"all\"\nservice = \"{svc}\"\n\n")
}

/// Like [`request`], but from the loopback address `from` (any of 127.0.0.0/8),
/// so that the proxy sees distinct client addresses.
pub fn request_from(from: std::net::IpAddr, addr: SocketAddr, raw: &str) -> Response {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let s = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(from, 0)).unwrap();
        sock.connect(addr).await.unwrap()
    });
    let mut s = s.into_std().unwrap();
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse_response(&buf).unwrap_or_else(|| panic!("unparsable answer: {:?}", String::from_utf8_lossy(&buf)))
}

/// A keep-alive HTTP/1.1 client over one connection, reconnecting only when asked.
pub struct KeepAlive {
    addr: SocketAddr,
    reader: std::io::BufReader<TcpStream>,
}

impl KeepAlive {
    pub fn connect(addr: SocketAddr) -> std::io::Result<KeepAlive> {
        let s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(15)))?;
        Ok(KeepAlive { addr, reader: std::io::BufReader::new(s) })
    }

    /// One GET on the open connection; answers must carry Content-Length.
    pub fn get(&mut self, path: &str) -> std::io::Result<Response> {
        self.request(&format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n\r\n"))
    }

    /// One request (`raw`, its whole head) on the open connection; answers must carry Content-Length.
    pub fn request(&mut self, raw: &str) -> std::io::Result<Response> {
        use std::io::BufRead;
        self.reader.get_mut().write_all(raw.as_bytes())?;
        let mut head = Vec::new();
        loop {
            let n = self.reader.read_until(b'\n', &mut head)?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("closed by {}", self.addr)));
            }
            if head.ends_with(b"\r\n\r\n") {
                break;
            }
        }
        let mut r = parse_response(&head).ok_or_else(|| std::io::Error::other("unparsable head"))?;
        let len: usize = r.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body)?;
        r.body = body;
        Ok(r)
    }
}

/// The HTTP/2 client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One raw HTTP/2 frame, for tests that speak frames themselves.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![(payload.len() >> 16) as u8, (payload.len() >> 8) as u8, payload.len() as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Whether the root behind `admin` leads (its `/admin/heat` says so).
pub fn leads(admin: SocketAddr) -> bool {
    let text = admin_get(admin, "/admin/heat").text();
    serde_json::from_str::<serde_json::Value>(&text).map(|v| v["leader"]["leads"] == true).unwrap_or(false)
}

/// A hand-written upstream on loopback: each connection it accepts runs
/// `serve` on a thread of its own.
pub fn raw_upstream(serve: impl Fn(TcpStream) + Send + Sync + 'static) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let serve = std::sync::Arc::new(serve);
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let serve = serve.clone();
            std::thread::spawn(move || serve(s));
        }
    });
    addr
}

/// A request head read off `s` byte by byte, so that nothing after it is
/// consumed; None when the peer closed before its end.
pub fn read_head(s: &mut impl Read) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).unwrap_or(0) == 0 {
            return None;
        }
        head.push(b[0]);
    }
    Some(head)
}

/// `ringmaster demo` on free ports, its output where it is sent.
pub struct Demo {
    pub proc: Proc,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub tls: SocketAddr,
    pub mc: SocketAddr,
}

pub fn demo(stdout: Stdio, stderr: Stdio) -> Demo {
    let (listen, admin, tls, mc) = (free_addr(), free_addr(), free_addr(), free_addr());
    let child = Command::new(BIN)
        .args(["demo", "--listen", &listen.to_string(), "--admin", &admin.to_string(), "--tls-listen", &tls.to_string()])
        .args(["--memcache-listen", &mc.to_string()])
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap();
    Demo { proc: Proc(child), listen, admin, tls, mc }
}
