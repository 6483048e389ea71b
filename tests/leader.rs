//! Leader election with a real etcd: of two roots only the leader scales;
//! killing it hands scaling to the other within the lease TTL; a leader cut
//! off from etcd stops leading on its own clock once its lease lapses, and
//! leads again when etcd is back.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A one-member etcd on loopback, in its own data directory.
fn etcd(dir: &std::path::Path) -> (Proc, String) {
    let (client, peer) = (free_addr(), free_addr());
    let child = Command::new("etcd")
        .args(["--name", "t", "--data-dir", dir.join("etcd").to_str().unwrap()])
        .args(["--listen-client-urls", &format!("http://{client}"), "--advertise-client-urls", &format!("http://{client}")])
        .args(["--listen-peer-urls", &format!("http://{peer}"), "--initial-advertise-peer-urls", &format!("http://{peer}")])
        .args(["--initial-cluster", &format!("t=http://{peer}")])
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(dir.join("etcd.log")).unwrap()))
        .spawn()
        .expect("etcd is installed (scripts/test installs etcd-server)");
    let p = Proc(child);
    wait_port(client);
    (p, format!("http://{client}"))
}

#[test]
fn only_the_leader_scales_and_another_root_takes_over_within_the_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let (etcd, url) = etcd(dir.path());
    let (b1, b2) = (backend("b1"), backend("b2"));
    let log = dir.path().join("steps.log");
    // min_replicas = 2 over a one-endpoint pool: whoever leads runs the command at once.
    let root = |who: &str| {
        format!(
            "[leader]\nidentity = \"{who}\"\nttl = \"2s\"\netcd = {{ endpoint = \"{url}\", key = \"/test/leader\" }}\n\n\
             [[routes]]\nservice = \"web\"\n\n[services.web]\nkind = \"replicated\"\nendpoints = [{{ address = \"{}\" }}]\n\
             [services.web.scaler]\ntarget = 1000\nmin_replicas = 2\nmax_replicas = 2\ncooldown = \"0s\"\n\
             command = {{ run = \"echo {who} >> {}; echo b1 {}; echo b2 {}\" }}\n",
            b1.addr,
            log.display(),
            b1.addr,
            b2.addr
        )
    };
    let steps = || std::fs::read_to_string(&log).unwrap_or_default();
    let first = Proxy::start(&root("root-1"));
    eventually(10, "root-1 leads", || leads(first.admin));
    let second = Proxy::start(&root("root-2"));
    eventually(10, "root-1 scaled its pool", || steps() == "root-1\n");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(steps(), "root-1\n", "the follower never runs the scaler's command");
    assert!(!leads(second.admin));
    assert_eq!(spread(&first, "/", 20).len(), 2, "root-1's pool is the command's list");
    assert_eq!(spread(&second, "/", 20).len(), 1, "root-2 has not scaled");

    first.proc.signal("KILL");
    let died = Instant::now();
    eventually(10, "root-2 leads", || leads(second.admin));
    let took = died.elapsed();
    // The ttl, one renewal period (ttl / 3) and a second of slack for the poll and the machine.
    let ttl = Duration::from_secs(2);
    assert!(took <= ttl + ttl / 3 + Duration::from_secs(1), "handed over within the ttl and a renewal period: {took:?}");
    eventually(5, "root-2 scaled", || steps() == "root-1\nroot-2\n");
    assert_eq!(spread(&second, "/", 20).len(), 2);

    // Cut off from etcd, the leader stops leading when its lease lapses.
    etcd.signal("STOP");
    let cut = Instant::now();
    eventually(8, "root-2 no longer leads", || !leads(second.admin));
    assert!(cut.elapsed() >= Duration::from_millis(500), "not at the first missed renewal: {:?}", cut.elapsed());
    assert_eq!(second.metric("ringmaster_scaler_leader"), 0.0);
    etcd.signal("CONT");
    eventually(10, "root-2 leads again once etcd answers", || leads(second.admin));
    let said = second.stderr();
    assert!(said.contains("this root no longer leads: its lease lapsed unrenewed"), "the lost lead is logged: {said}");
    assert!(said.contains("WARN") && said.contains("leader election: no answer within"), "the failed renewal is logged: {said}");
}

#[test]
fn the_leader_scales_on_the_load_every_root_forwards() {
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, url) = etcd(dir.path());
    let (b1, b2) = (backend("b1"), backend("b2"));
    let log = dir.path().join("steps.log");
    let (admin1, admin2) = (free_addr(), free_addr());
    // 20 requests a second per replica; the load below (about 60 a second) goes through root-2 only.
    let root = |who: &str, peer: std::net::SocketAddr| {
        format!(
            "[leader]\nidentity = \"{who}\"\nttl = \"2s\"\netcd = {{ endpoint = \"{url}\", key = \"/test/peers\" }}\npeers = [\"http://{peer}\"]\n\n\
             [[routes]]\nservice = \"web\"\n\n[services.web]\nkind = \"replicated\"\nendpoints = [{{ address = \"{}\" }}]\n\
             heat = {{ window = \"1s\" }}\n\
             [services.web.scaler]\ntarget = 20\nmin_replicas = 1\nmax_replicas = 2\ncooldown = \"0s\"\n\
             command = {{ run = \"echo {who} $RINGMASTER_DESIRED >> {}; echo b1 {}; echo b2 {}\" }}\n",
            b1.addr,
            log.display(),
            b1.addr,
            b2.addr
        )
    };
    let first = Proxy::start_on(admin1, &root("root-1", admin2));
    eventually(10, "root-1 leads", || leads(first.admin));
    let second = Proxy::start_on(admin2, &root("root-2", admin1));
    let mut c = KeepAlive::connect(second.addr).unwrap();
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until && std::fs::read_to_string(&log).unwrap_or_default().is_empty() {
        assert_eq!(c.get("/").unwrap().status, 200);
        std::thread::sleep(Duration::from_millis(15));
    }
    assert_eq!(std::fs::read_to_string(&log).unwrap_or_default(), "root-1 2\n", "the leader scaled on root-2's load");
    let heat = first.admin_json("/admin/heat");
    assert!(heat["services"][0]["shards"][0]["rate"].as_f64().unwrap() < 1.0, "root-1 forwarded nothing itself: {heat:#}");
}

#[test]
fn elections_and_back_ends_are_checked_with_positions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let cfg = "[leader]\nttl = \"0s\"\netcd = { endpoint = \"https://x:1/path\" }\npeers = [\"10.0.0.2:9901\"]\n\n\
               [[listeners]]\nname = \"main\"\nlisten = \"127.0.0.1:8080\"\n\n[[routes]]\nservice = \"app\"\n\n\
               [services.app]\nkind = \"replicated\"\nendpoints = [{ address = \"127.0.0.1:9001\" }]\n\
               scaler = { target = 10, command = { run = \" \", timeout = \"0s\" } }\n\n\
               [[routes]]\nservice = \"k\"\n\n[services.k]\nkind = \"replicated\"\nendpoints = [{ address = \"127.0.0.1:9002\" }]\n\
               scaler = { target = 10, kubernetes = { object = \"pod/x\", api_server = \"http://127.0.0.1:1\" }, local = { command = \"x {port}\", ports = \"1-2\" } }\n";
    std::fs::write(&path, cfg).unwrap();
    let out = Command::new(BIN).args(["check", "--config", path.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for (needle, line) in [
        ("ttl must be from 1s to 5m", 2),
        ("is not an etcd endpoint", 3),
        ("is not a peer's admin address", 4),
        ("the command is empty", 16),
        ("timeout must be above 0", 16),
        ("a scaler has one back-end", 24),
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
        assert!(
            err.lines().any(|l| l.contains(&format!("{}:{line}:", path.display())) && l.contains(needle)),
            "{needle} at line {line}: {err}"
        );
    }
}

/// A peer answering `/admin/heat` with `rate` for the pool `web`; serves until the test ends.
fn fake_peer(rate: f64) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = format!(r#"{{"services":[{{"service":"web","shards":[{{"shard":"web","rate":{rate},"in_flight":{rate}}}]}}]}}"#);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

/// Peers are data, not authority: each peer's load counts at most
/// `peer_load_factor` times what this root sees (or the target, when it sees
/// less), and never below zero. A fake peer claiming a million requests a
/// second cannot drive the leader to max_replicas, nor a negative one cancel
/// another's load.
#[test]
fn a_peers_load_is_clamped() {
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, url) = etcd(dir.path());
    let b1 = backend("b1");
    let log = dir.path().join("steps.log");
    let (huge, negative) = (fake_peer(1e6), fake_peer(-1e6));
    let cfg = format!(
        "[leader]\nidentity = \"root-1\"\nttl = \"2s\"\netcd = {{ endpoint = \"{url}\", key = \"/test/clamp\" }}\n\
         peers = [\"http://{huge}\", \"http://{negative}\"]\npeer_load_factor = 2\n\n\
         [[routes]]\nservice = \"web\"\n\n[services.web]\nkind = \"replicated\"\nendpoints = [{{ address = \"{}\" }}]\n\
         [services.web.scaler]\ntarget = 20\nmin_replicas = 1\nmax_replicas = 10\ncooldown = \"0s\"\n\
         command = {{ run = \"echo $RINGMASTER_DESIRED >> {}; for i in $(seq 1 $RINGMASTER_DESIRED); do echo 127.0.0.1:$((40000 + i)); done\" }}\n",
        b1.addr,
        log.display(),
    );
    let p = Proxy::start(&cfg);
    eventually(10, "root-1 leads", || leads(p.admin));
    eventually(10, "the leader scaled on its peers' load", || !std::fs::read_to_string(&log).unwrap_or_default().is_empty());
    std::thread::sleep(Duration::from_secs(3));
    let steps = std::fs::read_to_string(&log).unwrap();
    let desired: Vec<u32> = steps.lines().map(|l| l.trim().parse().unwrap()).collect();
    // Clamped to 2 x the target (this root sees no load): 40 a second, 2 replicas.
    assert!(desired.iter().all(|&d| d == 2), "{desired:?}");
}

/// A TCP relay to `to`: connections pass until `cut` is set, then every open
/// one is dropped and new ones are closed at once (a partition).
fn relay(to: std::net::SocketAddr, cut: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::net::SocketAddr {
    use std::sync::atomic::Ordering::Relaxed;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            let Ok(u) = std::net::TcpStream::connect(to) else { continue };
            if cut.load(Relaxed) {
                continue;
            }
            for (mut from, mut into) in [(c.try_clone().unwrap(), u.try_clone().unwrap()), (u, c)] {
                let cut = cut.clone();
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
                    let mut buf = [0u8; 16384];
                    loop {
                        if cut.load(Relaxed) {
                            let _ = from.shutdown(std::net::Shutdown::Both);
                            let _ = into.shutdown(std::net::Shutdown::Both);
                            return;
                        }
                        match from.read(&mut buf) {
                            Ok(0) => {
                                let _ = into.shutdown(std::net::Shutdown::Write);
                                return;
                            }
                            Ok(n) => {
                                if into.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                            Err(_) => return,
                        }
                    }
                });
            }
        }
    });
    addr
}

/// Fencing: root-1 reaches etcd through a relay that is cut while root-2
/// still reaches it. Each root's scaler runs a command that takes 1.5 s at
/// every tick, writing when it starts and ends. Root-1 runs nothing past its
/// lease: its last line precedes root-2's first, and root-2 leads within the
/// ttl plus one renewal period (plus slack) of the cut.
#[test]
fn a_partitioned_leader_stops_before_another_starts() {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, url) = etcd(dir.path());
    let cut = std::sync::Arc::new(AtomicBool::new(false));
    let etcd_addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let through = relay(etcd_addr, cut.clone());
    let b1 = backend("b1");
    let log = dir.path().join("steps.log");
    let ttl = Duration::from_secs(2);
    // min_replicas = 2 over a command that lists one endpoint: every tick asks for a step.
    let root = |who: &str, etcd: &str| {
        format!(
            "[leader]\nidentity = \"{who}\"\nttl = \"2s\"\netcd = {{ endpoint = \"{etcd}\", key = \"/test/fence\" }}\n\n\
             [[routes]]\nservice = \"web\"\n\n[services.web]\nkind = \"replicated\"\nendpoints = [{{ address = \"{}\" }}]\n\
             [services.web.scaler]\ntarget = 1000\nmin_replicas = 2\nmax_replicas = 2\ncooldown = \"0s\"\n\
             command = {{ run = \"echo {who} start $(date +%s%3N) >> {log}; sleep 1.5; echo {who} end $(date +%s%3N) >> {log}; echo {}\", timeout = \"10s\" }}\n",
            b1.addr,
            b1.addr,
            log = log.display(),
        )
    };
    let first = Proxy::start(&root("root-1", &format!("http://{through}")));
    eventually(10, "root-1 leads", || leads(first.admin));
    let second = Proxy::start(&root("root-2", &url));
    eventually(10, "root-1 runs its command", || std::fs::read_to_string(&log).unwrap_or_default().contains("root-1 end"));
    assert!(!leads(second.admin));
    cut.store(true, Relaxed);
    let cut_at = Instant::now();
    let cut_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    eventually(10, "root-2 leads", || leads(second.admin));
    let took = cut_at.elapsed();
    // The ttl, one renewal period (ttl / 3), and a second of slack for the poll and the machine.
    assert!(took <= ttl + ttl / 3 + Duration::from_secs(1), "root-2 took over {took:?} after the cut");
    eventually(10, "root-2 runs its command", || std::fs::read_to_string(&log).unwrap_or_default().contains("root-2 start"));
    std::thread::sleep(Duration::from_secs(3));
    let lines: Vec<(String, String, u64)> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w[0].to_string(), w[1].to_string(), w[2].parse().unwrap())
        })
        .collect();
    let root1_last = lines.iter().filter(|l| l.0 == "root-1").map(|l| l.2).max().unwrap();
    let root2_first = lines.iter().filter(|l| l.0 == "root-2").map(|l| l.2).min().unwrap();
    assert!(root1_last < root2_first, "root-1 ran until {root1_last}, root-2 started at {root2_first} (cut at {cut_ms}): {lines:?}");
    assert!(!leads(first.admin), "the cut-off root does not lead");
}

/// etcd over https with client certificates required (mutual TLS): a root
/// with the CA and a client certificate in `[leader] tls` leads; one without
/// the client certificate cannot reach the election and never leads.
#[test]
fn an_election_over_mutual_tls_to_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let ca = common::pki::Ca::new("etcd test CA");
    let (server_cert, server_key) = ca.leaf_for_both("etcd", &["127.0.0.1"]);
    let (cert, key) = ca.leaf("root-1", &[], true, (2031, 1, 1));
    for (f, text) in
        [("ca.crt", &ca.pem), ("client.crt", &cert), ("client.key", &key), ("server.crt", &server_cert), ("server.key", &server_key)]
    {
        std::fs::write(dir.path().join(f), text).unwrap();
    }
    let d = |f: &str| dir.path().join(f).display().to_string();
    let (client, peer) = (free_addr(), free_addr());
    let child = Command::new("etcd")
        .args(["--name", "t", "--data-dir", &d("etcd")])
        .args(["--listen-client-urls", &format!("https://{client}"), "--advertise-client-urls", &format!("https://{client}")])
        .args(["--listen-peer-urls", &format!("http://{peer}"), "--initial-advertise-peer-urls", &format!("http://{peer}")])
        .args(["--initial-cluster", &format!("t=http://{peer}")])
        .args(["--cert-file", &d("server.crt"), "--key-file", &d("server.key"), "--client-cert-auth", "--trusted-ca-file", &d("ca.crt")])
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(dir.path().join("etcd.log")).unwrap()))
        .spawn()
        .expect("etcd is installed (scripts/test installs etcd-server)");
    let _etcd = Proc(child);
    wait_port(client);
    let root = |who: &str, tls: &str| {
        format!("[leader]\nidentity = \"{who}\"\nttl = \"2s\"\netcd = {{ endpoint = \"https://{client}\", key = \"/test/tls\" }}\ntls = {{ {tls} }}\n")
    };
    let first =
        Proxy::start(&root("root-1", &format!("ca = \"{}\", cert = \"{}\", key = \"{}\"", d("ca.crt"), d("client.crt"), d("client.key"))));
    let until = Instant::now() + Duration::from_secs(15);
    while !leads(first.admin) {
        assert!(Instant::now() < until, "root-1 does not lead over mutual TLS: {}", first.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(first);
    // Without a client certificate etcd refuses the handshake: never leads, and says why.
    let second = Proxy::start(&root("root-2", &format!("ca = \"{}\"", d("ca.crt"))));
    std::thread::sleep(Duration::from_secs(4));
    assert!(!leads(second.admin));
    assert!(second.stderr().contains("leader election:"), "{}", second.stderr());
}

/// Peers over HTTPS with the read-only heat token: root-2's admin listener
/// speaks TLS and asks for a token; root-1 reads its heat with `[leader] tls`
/// (the private CA) and `peers_token_file` (the heat token, which opens
/// nothing else), and scales on the load root-2 forwards.
#[test]
fn the_leader_reads_its_peers_over_https_with_the_heat_token() {
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, url) = etcd(dir.path());
    let ca = common::pki::Ca::new("roots CA");
    ca.write_leaf(dir.path(), "admin", "root-2", &["127.0.0.1"]);
    std::fs::write(dir.path().join("ca.crt"), &ca.pem).unwrap();
    std::fs::write(dir.path().join("heat-token"), "peek-3\n").unwrap();
    let d = |f: &str| dir.path().join(f).display().to_string();
    let (b1, b2) = (backend("b1"), backend("b2"));
    let log = dir.path().join("steps.log");
    let (admin1, admin2) = (free_addr(), free_addr());
    let service = format!(
        "[[routes]]\nservice = \"web\"\n\n[services.web]\nkind = \"replicated\"\nendpoints = [{{ address = \"{}\" }}]\nheat = {{ window = \"1s\" }}\n\
         [services.web.scaler]\ntarget = 20\nmin_replicas = 1\nmax_replicas = 2\ncooldown = \"0s\"\n\
         command = {{ run = \"echo $RINGMASTER_DESIRED >> {}; echo b1 {}; echo b2 {}\" }}\n",
        b1.addr,
        log.display(),
        b1.addr,
        b2.addr
    );
    let leader = |who: &str, peers: &str| {
        format!("[leader]\nidentity = \"{who}\"\nttl = \"2s\"\netcd = {{ endpoint = \"{url}\", key = \"/test/https-peers\" }}\n{peers}\n\n")
    };
    let first = Proxy::start_on(
        admin1,
        &(leader(
            "root-1",
            &format!("peers = [\"https://{admin2}\"]\npeers_token_file = \"{}\"\ntls = {{ ca = \"{}\" }}", d("heat-token"), d("ca.crt")),
        ) + &service),
    );
    eventually(10, "root-1 leads", || leads(first.admin));
    // root-2's admin: HTTPS, a full token and the heat token.
    let second = Proxy::start_on_with(
        admin2,
        &format!(
            "token = \"full-9\"\nheat_token = \"peek-3\"\ntls = {{ certificates = [{{ cert = \"{}\", key = \"{}\" }}] }}",
            d("admin.crt"),
            d("admin.key")
        ),
        &(leader("root-2", "") + &service),
    );
    let mut c = KeepAlive::connect(second.addr).unwrap();
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until && std::fs::read_to_string(&log).unwrap_or_default().is_empty() {
        assert_eq!(c.get("/").unwrap().status, 200);
        std::thread::sleep(Duration::from_millis(15));
    }
    assert_eq!(std::fs::read_to_string(&log).unwrap_or_default(), "2\n", "the leader scaled on root-2's load: {}", first.stderr());
    // root-1 may poll before root-2 listens (connection refused); any other
    // refusal (the TLS handshake, the token) is the failure this test is for.
    let log = first.stderr();
    let refusals: Vec<&str> = log.lines().filter(|l| l.contains("a peer's heat is not counted")).collect();
    assert!(refusals.iter().all(|l| l.contains("cannot connect")), "{log}");
}
