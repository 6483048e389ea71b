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

    // Redis dies: fail-open serves on local counters, fail-closed answers 503.
    let _ = r.0.kill();
    let _ = r.0.wait();
    assert_eq!(from(&p1, "203.0.113.7").status, 200, "fail-open: local limits take over");
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
