//! Rate limits shared through a real redis-server: two proxies enforce one
//! limit together; Redis killed mid-test (fail-open and fail-closed), then
//! recovery.

mod common;
use common::*;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

fn redis(port: u16) -> Proc {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed (scripts/test installs it)");
    wait_port(SocketAddr::from(([127, 0, 0, 1], port)));
    Proc(child)
}

fn proxy(a: &Backend, redis_port: u16, mode: &str) -> Proxy {
    Proxy::start(&format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n\n[rate_limit_store]\nredis = \"redis://127.0.0.1:{redis_port}\"\ntimeout = \"200ms\"\non_failure = \"{mode}\"\n\n[rate_limits.anon]\nrate = 4\nperiod = \"1m\"\n\n[[routes]]\nservice = \"app\"\nrate_limit = [\"anon\"]\n\n{}",
        service("app", "round_robin", &[a], "")
    ))
}

fn from(p: &Proxy, client: &str) -> Response {
    request(p.addr, &format!("GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {client}\r\nConnection: close\r\n\r\n"))
}

#[test]
fn two_proxies_share_one_limit_and_survive_redis_failures() {
    let port = free_port();
    let mut r = redis(port);
    let a = backend("a");
    let (p1, p2) = (proxy(&a, port, "open"), proxy(&a, port, "closed"));
    // The first decision may race the background connect: warm both up with another client.
    eventually(5, "redis connected", || from(&p1, "192.0.2.200").status == 200 && from(&p2, "192.0.2.201").status == 200);
    let statuses: Vec<u16> = (0..6).map(|i| from(if i % 2 == 0 { &p1 } else { &p2 }, "203.0.113.7").status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429], "one limit across both proxies");
    let remaining = from(&p1, "203.0.113.8").header("x-ratelimit-remaining").map(str::to_string);
    assert_eq!(remaining.as_deref(), Some("3"));

    // Redis dies while traffic runs: fail-open serves every request (each from a
    // client of its own, so none is over its limit), fail-closed answers 503.
    let p1 = std::sync::Arc::new(p1);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (p1, stop) = (p1.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut statuses = Vec::new();
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                statuses.push(from(&p1, &format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255)).status);
            }
            statuses
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let _ = r.0.kill();
    let _ = r.0.wait();
    std::thread::sleep(std::time::Duration::from_millis(1000));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses = traffic.join().unwrap();
    assert!(statuses.len() > 5 && statuses.iter().all(|s| *s == 200), "fail-open across the kill: {statuses:?}");
    // Fail-open still limits, on local counters: a fifth request of one client is denied.
    let local: Vec<u16> = (0..5).map(|_| from(&p1, "203.0.113.50").status).collect();
    assert_eq!(local, [200, 200, 200, 200, 429], "fail-open must fall back to local limits, not to none");
    assert_eq!(from(&p2, "203.0.113.7").status, 503, "fail-closed");
    eventually(5, "failure counted", || p1.metric("ringmaster_rate_limit_store_healthy") == 0.0);
    assert!(p1.stderr().contains("shared rate-limit store (Redis) failed"), "{}", p1.stderr());

    // Redis is back (empty): both proxies recover by themselves and share again.
    r = redis(port);
    eventually(10, "recovered", || from(&p2, "198.51.100.1").status == 200);
    eventually(10, "recovered", || from(&p1, "198.51.100.2").status == 200 && p1.metric("ringmaster_rate_limit_store_healthy") == 1.0);
    let statuses: Vec<u16> = (0..5).map(|i| from(if i % 2 == 0 { &p1 } else { &p2 }, "203.0.113.99").status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 429]);
    assert!(p1.stderr().contains("answers again"), "{}", p1.stderr());
    drop(r);
}

#[test]
fn a_redis_known_down_is_not_waited_for() {
    let port = free_port();
    let r = redis(port);
    let a = backend("a");
    let (open, closed) = (proxy(&a, port, "open"), proxy(&a, port, "closed"));
    eventually(5, "redis connected", || from(&open, "192.0.2.200").status == 200 && from(&closed, "192.0.2.201").status == 200);
    // Stopped, not killed: its connections stay open and every command would wait out the timeout.
    r.signal("STOP");
    from(&open, "192.0.2.1");
    from(&closed, "192.0.2.1");
    eventually(5, "found down", || open.metric("ringmaster_rate_limit_store_healthy") == 0.0);
    eventually(5, "found down", || closed.metric("ringmaster_rate_limit_store_healthy") == 0.0);
    let (failed_open, failed_closed) =
        (open.metric("ringmaster_rate_limit_store_failures_total"), closed.metric("ringmaster_rate_limit_store_failures_total"));
    let statuses: Vec<(u16, u16)> =
        (0..20).map(|i| (from(&open, &format!("10.0.0.{i}")).status, from(&closed, &format!("10.0.1.{i}")).status)).collect();
    assert!(statuses.iter().all(|s| *s == (200, 503)), "fail-open serves, fail-closed refuses: {statuses:?}");
    // None of them asked Redis (and so none waited for it): each was decided at once.
    assert_eq!(open.metric("ringmaster_rate_limit_store_failures_total"), failed_open);
    assert_eq!(closed.metric("ringmaster_rate_limit_store_failures_total"), failed_closed);
    assert!(open.metric("ringmaster_rate_limit_store_skipped_total") >= 20.0);
    assert!(closed.metric("ringmaster_rate_limit_store_skipped_total") >= 20.0);
    // Back: the probe sees it, and shared limits return without a request failing over it.
    r.signal("CONT");
    eventually(5, "probed back", || open.metric("ringmaster_rate_limit_store_healthy") == 1.0);
    eventually(5, "probed back", || closed.metric("ringmaster_rate_limit_store_healthy") == 1.0);
    assert_eq!(from(&closed, "198.51.100.9").status, 200);
    assert!(closed.metric("ringmaster_rate_limit_store_degraded_seconds_total") > 0.0);
}

/// A three-master Redis Cluster on loopback, made with redis-cli.
fn cluster(dir: &std::path::Path) -> (Vec<Proc>, u16) {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let nodes: Vec<Proc> = ports
        .iter()
        .map(|p| {
            let child = Command::new("redis-server")
                .args(["--port", &p.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--cluster-enabled", "yes", "--cluster-config-file", &format!("nodes-{p}.conf")])
                .current_dir(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is installed");
            wait_port(SocketAddr::from(([127, 0, 0, 1], *p)));
            Proc(child)
        })
        .collect();
    let mut args = vec!["--cluster".to_string(), "create".to_string()];
    args.extend(ports.iter().map(|p| format!("127.0.0.1:{p}")));
    args.extend(["--cluster-replicas", "0", "--cluster-yes"].map(String::from));
    let out = Command::new("redis-cli").args(&args).output().expect("redis-cli is installed");
    assert!(out.status.success(), "cluster create: {}", String::from_utf8_lossy(&out.stdout));
    eventually(20, "cluster ok", || {
        ports.iter().all(|p| {
            let o = Command::new("redis-cli").args(["-p", &p.to_string(), "cluster", "info"]).output().unwrap();
            String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok")
        })
    });
    (nodes, ports[1])
}

#[test]
fn a_redis_cluster_shares_limits_whose_keys_span_slots() {
    let dir = tempfile::tempdir().unwrap();
    let (_nodes, seed) = cluster(dir.path());
    let a = backend("a");
    // A per-client policy and a route ceiling: their keys hash to different slots.
    let cfg = format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n\n[rate_limit_store]\nredis = \"redis://127.0.0.1:{seed}\"\ncluster = true\ntimeout = \"500ms\"\non_failure = \"closed\"\n\n\
         [rate_limits.per_client]\nrate = 2\nperiod = \"1m\"\n\n[rate_limits.ceiling]\nrate = 5\nperiod = \"1m\"\nscope = \"route\"\n\n\
         [[routes]]\nname = \"warm\"\npath_prefix = \"/warm/\"\nservice = \"app\"\nrate_limit = [\"per_client\"]\n\n\
         [[routes]]\nname = \"api\"\nservice = \"app\"\nrate_limit = [\"per_client\", \"ceiling\"]\n\n{}",
        service("app", "round_robin", &[&a], "")
    );
    let (p1, p2) = (Proxy::start(&cfg), Proxy::start(&cfg));
    let warm = |p: &Proxy, n: u8| {
        request(p.addr, &format!("GET /warm/ HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.51.100.{n}\r\nConnection: close\r\n\r\n")).status
    };
    let mut n = 0;
    eventually(10, "connected to the cluster", || {
        n += 1;
        warm(&p1, n) == 200 && warm(&p2, n) == 200
    });
    assert_eq!(from(&p1, "192.0.2.1").status, 200);
    assert_eq!(from(&p2, "192.0.2.2").status, 200);
    // Ceiling: 2 spent. Client .3 through both proxies: 2 allowed, then its own policy denies
    // and the ceiling gets back what the client-slot script did not spend.
    let s: Vec<u16> = (0..3).map(|i| from(if i % 2 == 0 { &p1 } else { &p2 }, "192.0.2.3").status).collect();
    assert_eq!(s, [200, 200, 429]);
    // Ceiling: 4 spent, 1 left, shared by both proxies.
    let r = from(&p2, "192.0.2.4");
    assert_eq!(r.status, 200, "{}", p2.stderr());
    assert_eq!((r.status, r.header("x-ratelimit-remaining"), r.header("ratelimit-policy")), (200, Some("0"), Some("\"ceiling\";q=5;w=60")));
    // The ceiling is spent: a fresh client is denied by it, and its own counter gets its request back.
    let r = from(&p1, "192.0.2.5");
    assert_eq!((r.status, r.header("ratelimit-policy")), (429, Some("\"ceiling\";q=5;w=60")));
    // Refunded: on the route with only the per-client policy, .5 has its whole budget (2) left.
    let r = request(p2.addr, "GET /warm/ HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 192.0.2.5\r\nConnection: close\r\n\r\n");
    assert_eq!((r.status, r.header("x-ratelimit-remaining")), (200, Some("1")), "the denied request was given back");
    assert_eq!(p1.metric("ringmaster_rate_limit_store_healthy"), 1.0);
}
