//! `ringmaster demo`: the main job on embedded defaults. Starts three built-in
//! backend replicas and the proxy in front of them, a sharded service, the
//! memcache ambassador when memcached is installed, and the hot-shard scene
//! (`hot`), prints what to try, and runs until Ctrl-C. The generated config is written to a file so that it can be
//! read, edited and reloaded like any other.

mod hot;

use crate::server;
use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Options of the demo.
pub struct DemoOpts {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub tls_listen: SocketAddr,
    /// The memcache ambassador's address (when memcached is installed).
    pub memcache_listen: SocketAddr,
}

/// memcached processes the demo started, stopped with it.
struct Memcacheds(Vec<std::process::Child>);

impl Drop for Memcacheds {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One small memcached on `port` that dies with the demo, even a killed one: it
/// gets SIGTERM when its parent ends (set after its user is, since memcached's
/// own `-u` would clear it; as root it runs as `nobody`).
fn memcached_command(port: u16) -> std::process::Command {
    use std::os::unix::process::CommandExt as _;
    let mut c = std::process::Command::new("memcached");
    c.args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0", "-t", "1", "-m", "16"]);
    // SAFETY: getpwnam's result is read at once, before any other call that could reuse it.
    let nobody = unsafe { libc::getpwnam(c"nobody".as_ptr()).as_ref().map(|p| (p.pw_uid, p.pw_gid)) };
    if let (0, Some((uid, gid))) = (unsafe { libc::geteuid() }, nobody) {
        c.uid(uid).gid(gid);
    }
    crate::child::dies_with_us(&mut c);
    c
}

/// Starts six small memcached (3 shards x 2 replicas) on free loopback ports,
/// or says how to install memcached.
fn start_memcacheds() -> Result<(Memcacheds, Vec<SocketAddr>), NoMemcached> {
    start_memcacheds_on(&mut || std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()))
}

/// Why the demo runs without the memcache ambassador.
#[derive(Debug, thiserror::Error)]
enum NoMemcached {
    #[error("memcached is not installed (sudo apt-get install memcached), so the demo runs without the memcache ambassador")]
    NotInstalled,
    #[error("memcached did not start ({0}), so the demo runs without the memcache ambassador")]
    DidNotStart(std::io::Error),
    #[error("memcached did not start on any of {PORT_TRIES} free ports; the demo runs without the memcache ambassador")]
    PortsTaken,
    #[error("no free loopback port for memcached ({0}); the demo runs without the memcache ambassador")]
    NoPort(std::io::Error),
}

/// How many ports one memcached may try: a port found free can be taken by
/// another process before memcached binds it.
const PORT_TRIES: usize = 8;

/// [`start_memcacheds`] with ports from `pick`. Each memcached is accepted
/// only once it answers `stats` with its own pid; one whose port was taken
/// meanwhile (it exits, or someone else answers there) is started again on
/// another port.
fn start_memcacheds_on(pick: &mut dyn FnMut() -> std::io::Result<u16>) -> Result<(Memcacheds, Vec<SocketAddr>), NoMemcached> {
    let mut procs = Memcacheds(Vec::new());
    let mut addrs = Vec::new();
    for _ in 0..6 {
        let mut started = None;
        for _ in 0..PORT_TRIES {
            let port = pick().map_err(NoMemcached::NoPort)?;
            let mut child =
                memcached_command(port).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().map_err(
                    |e| match e.kind() {
                        std::io::ErrorKind::NotFound => NoMemcached::NotInstalled,
                        _ => NoMemcached::DidNotStart(e),
                    },
                )?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            if answers_as(addr, &mut child) {
                started = Some((child, addr));
                break;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let Some((child, addr)) = started else { return Err(NoMemcached::PortsTaken) };
        procs.0.push(child);
        addrs.push(addr);
    }
    Ok((procs, addrs))
}

/// Whether the memcached `child` serves `addr` within 5 s: `stats` there
/// reports its pid. False once it exits (its port was taken) or another
/// process answers on `addr`.
fn answers_as(addr: SocketAddr, child: &mut std::process::Child) -> bool {
    use std::io::{BufRead as _, Write as _};
    let pid = format!("STAT pid {}", child.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return false;
        }
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200)) else {
            std::thread::sleep(std::time::Duration::from_millis(20));
            continue;
        };
        let _ = s.set_read_timeout(Some(std::time::Duration::from_millis(500)));
        if s.write_all(b"stats\r\n").is_err() {
            continue;
        }
        let mut lines = std::io::BufReader::new(s).lines();
        let mut saw_end = false;
        while let Some(Ok(line)) = lines.next() {
            if line == pid {
                return true;
            }
            if line == "END" {
                saw_end = true;
                break;
            }
        }
        if saw_end {
            return false;
        }
    }
    false
}

/// The ambassador's part of the demo config: a memcache listener and a
/// service of 3 shards x 2 replicas over `servers`.
fn memcache_text(listen: SocketAddr, servers: &[SocketAddr]) -> String {
    let mut s = format!(
        "
# The memcache ambassador: memcached's protocol on {listen}, keys sharded over
# 3 shards (nutcracker's ketama placement), each write to both replicas.
         [[listeners]]
name = \"memcache\"
listen = \"{listen}\"
protocol = \"memcache\"
service = \"cache\"

         [services.cache]
kind = \"sharded\"
protocol = \"memcache\"
sharder = {{ function = \"ketama_twemproxy\" }}
timeouts = {{ connect = \"500ms\", request = \"1s\" }}
"
    );
    for (shard, pair) in ["mc-a", "mc-b", "mc-c"].iter().zip(servers.chunks(2)) {
        s.push_str(&format!(
            "
[services.cache.shards.{shard}]
endpoints = ["
        ));
        for (j, b) in pair.iter().enumerate() {
            s.push_str(&format!("{{ name = \"{shard}{}\", address = \"{b}\" }}, ", j + 1));
        }
        s.push_str("]\n");
    }
    s
}

/// Makes a self-signed ECDSA P-256 certificate for localhost and the loopback
/// addresses, written as `cert.pem` and `key.pem` in `dir`.
pub fn self_signed(dir: &std::path::Path) -> anyhow::Result<()> {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    let mut params = rcgen::CertificateParams::new(names)?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "ringmaster demo");
    // Valid until the end of next year (rcgen's default runs to the year 4096).
    let year = 1970 + std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) / 31_556_952;
    params.not_after = rcgen::date_time_ymd(year as i32 + 1, 12, 31);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    std::fs::write(dir.join("cert.pem"), cert.pem())?;
    std::fs::write(dir.join("key.pem"), key.serialize_pem())?;
    Ok(())
}

/// The demo's config, in front of `backends`, with its certificate in `certs`.
pub fn config_text(o: &DemoOpts, backends: &[SocketAddr], certs: &std::path::Path) -> String {
    let mut s = format!(
        r#"# Written by `ringmaster demo`. Edit it, then reload:
#   curl -X POST http://{admin}/admin/reload
[server]
grace_period = "2s"

[admin]
listen = "{admin}"

# Anonymous callers get 5 requests a minute on /api/; the demo key gets 100.
[identity]
api_key = {{ header = "x-api-key", query = "api_key" }}
[[identity.keys]]
key = "demo-key"
tier = "partner"
owner = "demo"

[rate_limits.anonymous]
rate = 5
period = "1m"
[rate_limits.partner]
rate = 100
period = "1m"

[[listeners]]
name = "main"
listen = "{listen}"

# The same routes over HTTPS (HTTP/2 by ALPN), with a certificate made at start.
[[listeners]]
name = "https"
listen = "{tls_listen}"
protocol = "https"
tls = {{ certificates = [{{ cert = "{certs}/cert.pem", key = "{certs}/key.pem" }}] }}

[[routes]]
name = "users"
path_prefix = "/users/"
service = "users"

[[routes]]
name = "everyone"
path_prefix = "/all/"
service = "users"
fan_out = true

[[routes]]
name = "api"
path_prefix = "/api/"
service = "app"
rate_limit_tiers = {{ anonymous = ["anonymous"], partner = ["partner"] }}

[[routes]]
name = "cached"
path_prefix = "/cc/"
service = "app"
cache = {{ memory_bytes = 67108864, purge_from = ["127.0.0.1"] }}

[[routes]]
name = "hot"
path_prefix = "/hot/"
service = "hot"

[[routes]]
name = "app"
path_prefix = "/"
service = "app"

[services.app]
kind = "replicated"
balancer = "round_robin"
health = {{ path = "/healthz", interval = "1s", timeout = "500ms" }}
"#,
        admin = o.admin,
        listen = o.listen,
        tls_listen = o.tls_listen,
        certs = certs.display()
    );
    for (i, b) in backends.iter().take(3).enumerate() {
        s.push_str(&format!("\n[[services.app.endpoints]]\nname = \"replica-{}\"\naddress = \"{b}\"\n", i + 1));
    }
    // A sharded service: the second path segment (/users/ID) picks one of three
    // shards, each a pool of two replicas.
    s.push_str(
        "\n[services.users]\nkind = \"sharded\"\nshard_header = \"x-shard\"\nsharder = { key = { path_segment = 1 }, function = \"maglev\", fallback = \"all\" }\n",
    );
    for (shard, pair) in ["a", "b", "c"].iter().zip(backends[3..].chunks(2)) {
        s.push_str(&format!("\n[services.users.shards.{shard}]\nendpoints = ["));
        for (j, b) in pair.iter().enumerate() {
            s.push_str(&format!("{{ name = \"{shard}{}\", address = \"{b}\" }}, ", j + 1));
        }
        s.push_str("]\n");
    }
    s
}

/// How the printed commands name this binary: `ringmaster` when that is what
/// the PATH finds, else its full path.
fn exe_name() -> String {
    let Ok(me) = std::env::current_exe().and_then(std::fs::canonicalize) else {
        return "ringmaster".into();
    };
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find_map(|d| std::fs::canonicalize(d.join("ringmaster")).ok());
    if on_path.as_ref() == Some(&me) {
        "ringmaster".into()
    } else {
        me.display().to_string()
    }
}

/// Runs the demo until Ctrl-C.
pub fn run(o: DemoOpts) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        // Three replicas of a stateless app, then 3 shards x 2 replicas.
        let names = ["replica-1", "replica-2", "replica-3", "a1", "a2", "b1", "b2", "c1", "c2", "h1-base", "h2-base", "h3-base"];
        let mut backends = Vec::new();
        for name in names {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            backends.push(l.local_addr()?);
            tokio::spawn(crate::backend::serve(l, name.to_string(), std::time::Duration::ZERO));
        }
        let dir: PathBuf = std::env::temp_dir().join(format!("ringmaster-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        self_signed(&dir).context("making the demo's self-signed certificate")?;
        let path = dir.join("ringmaster.toml");
        let mut text = config_text(&o, &backends[..9], &dir);
        text.push_str(&hot::config_text(&backends[9..]));
        // The commands printed name this binary by its path: a fresh machine
        // that ran `cargo run` has no `ringmaster` on its PATH.
        let exe = exe_name();
        let memcached = start_memcacheds();
        let mc_help = match &memcached {
            Ok((_, servers)) => {
                text.push_str(&memcache_text(o.memcache_listen, servers));
                let m = o.memcache_listen;
                format!(
                    "\nThe memcache ambassador (3 shards x 2 replicas of memcached) on {m}:\n\
                     \x20 {exe} mc {m} set greeting hello && {exe} mc {m} set name ring\n\
                     \x20 {exe} mc {m} get greeting name nothing   # one get over shards, in key order\n\
                     \x20 {exe} mc {m} stats shards\n\
                     \x20 {exe} ring locate --config {} --service cache greeting name\n",
                    path.display()
                )
            }
            Err(why) => format!("\n({why})\n"),
        };
        std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
        let cfg = crate::config::parse(&path.display().to_string(), &text)?;
        let (listen, admin, tls, shown) = (o.listen, o.admin, o.tls_listen, path.clone());
        let tls_port = tls.port();
        let cert = dir.join("cert.pem");
        let result = server::serve(cfg, path.clone(), move |_| {
            tokio::spawn(hot::scene(listen, admin));
            println!(
                "ringmaster demo: a round-robin load balancer in front of three replicas,\n\
                 and a sharded service (3 shards x 2 replicas) keyed by the user id in /users/ID\n\
                 \n  proxy    http://{listen}/\n  https    https://{tls}/ (self-signed: {})\n  dashboard http://{admin}/   (live, with 15 minutes of history)\n  admin    http://{admin}/admin/pools\n  metrics  http://{admin}/metrics\n  config   {}\n\
                 \nTry:\n  for i in 1 2 3 4 5 6; do curl -s http://{listen}/; done\n  curl -s http://{listen}/echo      # what the replica received (X-Forwarded-For, Via, ...)\n  curl -s --http2-prior-knowledge http://{listen}/\n\
                 \x20 curl -si http://{listen}/users/42 | grep -i x-shard   # the same id always lands on the same shard\n\
                 \x20 curl -s http://{listen}/all/items                    # fan-out: every shard answers, arrays merged\n\
                 \x20 {exe} ring locate --config {cfg} --service users 42\n\
                 \x20 curl -si 'http://{listen}/cc/page?cc=max-age=30' | grep -iE 'x-cache|age|origin'   # run twice: MISS, then HIT\n\
                 \x20 curl -s http://{admin}/admin/cache\n\
                 \x20 {exe} bench 'http://{listen}/cc/page?cc=max-age=30' -c 8 -d 2s --admin {admin} --compare-cache cached   # with and without the cache\n\
                 \x20 for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w '%{{http_code}} ' http://{listen}/api/x; done   # 5 a minute, then 429\n\
                 \x20 curl -si -H 'x-api-key: demo-key' http://{listen}/api/x | grep -i ratelimit        # the partner tier\n\
                 \x20 curl -s --cacert {} https://localhost:{tls_port}/echo   # TLS ends here; the replica sees x-forwarded-proto: https\n\
                 {mc_help}\nCtrl-C stops.",
                cert.display(),
                shown.display(),
                cert.display(),
                cfg = shown.display()
            );
        })
        .await;
        drop(memcached);
        let _ = std::fs::remove_dir_all(&dir);
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port taken by another process between the pick and memcached's bind
    /// is not taken for memcached's: that memcached starts on another port.
    #[test]
    fn a_taken_port_is_not_mistaken_for_memcached() {
        if std::process::Command::new("memcached").arg("-h").output().is_err() {
            eprintln!("memcached is not installed; scripts/test installs it");
            return;
        }
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_port = taken.local_addr().unwrap().port();
        let mut first = true;
        let mut pick = || {
            if std::mem::take(&mut first) {
                return Ok(taken_port);
            }
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port())
        };
        let (procs, addrs) = start_memcacheds_on(&mut pick).unwrap();
        assert_eq!(procs.0.len(), 6);
        assert!(addrs.iter().all(|a| a.port() != taken_port), "{addrs:?} includes the taken port {taken_port}");
        for (child, addr) in procs.0.iter().zip(&addrs) {
            assert!(std::net::TcpStream::connect(addr).is_ok(), "memcached {} on {addr}", child.id());
        }
    }
}
