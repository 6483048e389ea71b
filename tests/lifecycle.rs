//! Config check, reload (valid and invalid, by SIGHUP and by admin API) and
//! graceful shutdown with drain.

mod common;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn check_reports_every_error_with_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[listeners]]\nname = \"main\"\nlisten = \"127.0.0.1:99999\"\n\n[[routes]]\nservice = \"missing\"\n\n[services.app]\nkind = \"replicated\"\nhealth = { timeout = \"5s\", interval = \"1s\" }\nendpoints = [{ address = \"10.0.0.1\" }]\n",
    )
    .unwrap();
    let out = Command::new(BIN).args(["check", "--config", path.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let f = path.display();
    assert!(err.contains(&format!("{f}:3:10: `127.0.0.1:99999` is not a valid listen address")), "{err}");
    assert!(err.contains(&format!("{f}:6:11: route sends to service `missing`")), "{err}");
    assert!(err.contains(&format!("{f}:10:22: health timeout 5s is not shorter than its interval 1s")), "{err}");
    assert!(err.contains(&format!("{f}:11:26: endpoint `10.0.0.1` has no port")), "{err}");
    assert!(err.contains("help: "), "{err}");

    // A duration too long for the clock is an error at its position, not a panic.
    std::fs::write(
        &path,
        "[server]\ngrace_period = \"99999999999999999999999h\"\n[[listeners]]\nname = \"main\"\nlisten = \"127.0.0.1:8080\"\n",
    )
    .unwrap();
    let out = Command::new(BIN).args(["check", "--config", path.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&format!("{f}:2:16:")) && err.contains("longer than the 10 years"), "{err}");

    // A twemproxy key hash on a function that does not use one.
    std::fs::write(
        &path,
        "[[listeners]]\nname = \"main\"\nlisten = \"127.0.0.1:8080\"\n\n[[routes]]\nservice = \"s\"\n\n[services.s]\nkind = \"sharded\"\nsharder = { function = \"maglev\", hash = \"md5\" }\nshards.a = { endpoints = [{ address = \"127.0.0.1:1\" }] }\n",
    )
    .unwrap();
    let out = Command::new(BIN).args(["check", "--config", path.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{f}:10:41: hash `md5` only applies to function `ketama_twemproxy`")), "{err}");

    std::fs::write(&path, "[[listeners]]\nname = \"main\"\nlisten = \"127.0.0.1:8080\"\n").unwrap();
    let out = Command::new(BIN).args(["check", "--config", path.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // `run` refuses a bad config the same way.
    std::fs::write(&path, "[[listeners]]\nname = \"main\"\nlisten = \"127.0.0.1:8080\"\nbogus = 1\n").unwrap();
    let out = Command::new(BIN).args(["run", "--config", path.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(":4:1: unknown field `bogus`"));
}

#[test]
fn reload_valid_and_invalid() {
    let (a, b) = (backend("a"), backend("b"));
    let p = Proxy::start(&(route_all("app") + &service("app", "round_robin", &[&a], "")));
    assert_eq!(spread(&p, "/", 4).get("a"), Some(&4));

    // Valid, through the admin API: b joins; a keeps its counters (carried over).
    p.rewrite(&(route_all("app") + &service("app", "round_robin", &[&a, &b], "")));
    let r = request(p.admin, "POST /admin/reload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["generation"], 2);
    let m = spread(&p, "/", 4);
    assert_eq!((m["a"], m["b"]), (2, 2));
    let series = format!("ringmaster_endpoint_requests_total{{service=\"app\",endpoint=\"a\",address=\"{}\"}}", a.addr);
    assert_eq!(p.metric(&series), 6.0);

    // Invalid: rejected with the error, old config keeps serving.
    p.rewrite("[[routes]]\nservice = \"nope\"\n");
    let r = request(p.admin, "POST /admin/reload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("route sends to service `nope`"), "{}", r.text());
    assert_eq!(spread(&p, "/", 4).len(), 2);
    assert_eq!(p.metric("ringmaster_reload_failures_total"), 1.0);

    // Valid, by SIGHUP: only b remains.
    p.rewrite(&(route_all("app") + &service("app", "round_robin", &[&b], "")));
    p.proc.signal("HUP");
    eventually(5, "SIGHUP reload", || p.metric("ringmaster_reloads_total") == 2.0);
    assert_eq!(spread(&p, "/", 4).get("b"), Some(&4));
    assert_eq!(p.admin_json("/admin/config")["generation"], 3);
}

#[test]
fn reload_adds_and_removes_listeners() {
    let a = backend("a");
    let p = Proxy::start(&(route_all("app") + &service("app", "round_robin", &[&a], "")));
    let extra = free_addr();
    let body = format!(
        "[[listeners]]\nname = \"extra\"\nlisten = \"{extra}\"\n\n{}{}",
        route_all("app"),
        service("app", "round_robin", &[&a], "")
    );
    p.rewrite(&body);
    p.proc.signal("HUP");
    eventually(5, "extra listener", || std::net::TcpStream::connect(extra).is_ok());
    assert_eq!(get(extra, "/").status, 200);
    p.rewrite(&(route_all("app") + &service("app", "round_robin", &[&a], "")));
    p.proc.signal("HUP");
    eventually(5, "extra listener closed", || std::net::TcpStream::connect(extra).is_err());
    assert_eq!(p.get("/").status, 200);
}

#[test]
fn in_flight_request_finishes_on_reload() {
    let a = backend("a");
    let b = backend("b");
    let p = std::sync::Arc::new(Proxy::start(&(route_all("app") + &service("app", "round_robin", &[&a], ""))));
    let p2 = p.clone();
    let slow = std::thread::spawn(move || p2.get("/sleep/700"));
    std::thread::sleep(Duration::from_millis(200));
    p.rewrite(&(route_all("app") + &service("app", "round_robin", &[&b], "")));
    p.proc.signal("HUP");
    eventually(5, "reload", || p.metric("ringmaster_reloads_total") == 1.0);
    let r = slow.join().unwrap();
    assert_eq!((r.status, r.backend()), (200, "a".to_string()));
    assert_eq!(p.get("/").backend(), "b");
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let a = backend("a");
    let mut p =
        Proxy::start(&("[server]\ngrace_period = \"5s\"\n\n".to_string() + &route_all("app") + &service("app", "round_robin", &[&a], "")));
    let addr = p.addr;
    let slow = std::thread::spawn(move || get(addr, "/sleep/800"));
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    p.proc.signal("TERM");
    std::thread::sleep(Duration::from_millis(150));
    assert!(std::net::TcpStream::connect(addr).is_err(), "still accepting after SIGTERM");
    let r = slow.join().unwrap();
    assert_eq!(r.status, 200, "in-flight request was cut: {}", r.text());
    let status = p.proc.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(start.elapsed() < Duration::from_secs(4));
    assert!(p.stderr().contains("drained; exiting"), "{}", p.stderr());
}

#[test]
fn grace_period_bounds_the_drain() {
    let a = backend("a");
    let mut p = Proxy::start(
        &("[server]\ngrace_period = \"300ms\"\n\n".to_string() + &route_all("app") + &service("app", "round_robin", &[&a], "")),
    );
    let addr = p.addr;
    let _hung = std::thread::spawn(move || request_bytes(addr, b"GET /hang HTTP/1.1\r\nHost: a\r\n\r\n"));
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    p.proc.signal("TERM");
    let status = p.proc.0.wait().unwrap();
    assert!(status.success());
    assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
    assert!(p.stderr().contains("grace period ended"), "{}", p.stderr());
}

#[test]
fn reloads_under_load_lose_no_request() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    use std::sync::Arc;
    let (a, b, c) = (backend("a"), backend("b"), backend("c"));
    let cfg = |bs: &[&Backend]| route_all("app") + &service("app", "round_robin", bs, "");
    let p = Arc::new(Proxy::start(&cfg(&[&a, &b])));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // Two clients on keep-alive connections, two opening a connection per request.
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (p, stop, ok, failed) = (p.clone(), stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut conn = KeepAlive::connect(p.addr).unwrap();
                let mut errors = Vec::new();
                while !stop.load(Relaxed) {
                    let r = if i < 2 {
                        conn.get("/")
                    } else {
                        request_bytes(p.addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    };
                    match r {
                        Ok(r) if r.status == 200 => ok.fetch_add(1, Relaxed),
                        Ok(r) => {
                            errors.push(format!("{} {}", r.status, r.text()));
                            failed.fetch_add(1, Relaxed)
                        }
                        Err(e) => {
                            errors.push(e.to_string());
                            conn = KeepAlive::connect(p.addr).unwrap();
                            failed.fetch_add(1, Relaxed)
                        }
                    };
                }
                errors
            })
        })
        .collect();
    // A hundred reloads, each changing the endpoint set: added, removed, replaced.
    let sets: [&[&Backend]; 4] = [&[&a, &b, &c], &[&b, &c], &[&c, &a], &[&a, &b]];
    for n in 1..=100 {
        p.rewrite(&cfg(sets[(n - 1) % 4]));
        p.proc.signal("HUP");
        eventually(5, "reload", || p.metric("ringmaster_reloads_total") == n as f64);
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Relaxed);
    let errors: Vec<String> = clients.into_iter().flat_map(|h| h.join().unwrap()).collect();
    assert_eq!(failed.load(Relaxed), 0, "requests failed across reloads: {errors:?}");
    assert!(ok.load(Relaxed) > 200, "too little traffic to prove anything: {}", ok.load(Relaxed));
    // The last set is served: a and b.
    let seen = spread(&p, "/", 10);
    assert_eq!(seen.keys().filter(|k| *k == "a" || *k == "b").count(), seen.len(), "{seen:?}");
}

#[test]
fn a_reload_with_an_overlong_duration_is_rejected_and_the_proxy_keeps_serving() {
    let a = backend("a");
    let body = route_all("app") + &service("app", "round_robin", &[&a], "");
    let mut p = Proxy::start(&body);
    p.rewrite(&format!("{body}\n[limits]\nkeepalive_timeout = \"99999999999999999999999h\"\n"));
    p.proc.signal("HUP");
    eventually(5, "reload rejected", || p.metric("ringmaster_reload_failures_total") == 1.0);
    assert!(p.proc.0.try_wait().unwrap().is_none(), "the proxy exited on a bad reload");
    assert_eq!(p.get("/").status, 200);
    assert!(p.stderr().contains("longer than the 10 years"), "{}", p.stderr());
}

/// An endpoint removed while slow, non-retryable requests (POSTs with a body)
/// are in flight on it: every one of them is answered, and the removed
/// replica gets nothing new after its removal (by its own count).
#[test]
fn removing_an_endpoint_under_slow_posts_fails_none_and_sends_it_nothing_new() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    use std::sync::{Arc, Mutex};
    let (a, b) = (backend_with("a", &["--delay-ms", "300"]), backend_with("b", &["--delay-ms", "300"]));
    let p = Proxy::start(&(route_all("app") + &service("app", "round_robin", &[&a, &b], "")));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(Mutex::new(Vec::<String>::new())));
    let load: Vec<_> = (0..8)
        .map(|_| {
            let (stop, ok, failed, addr) = (stop.clone(), ok.clone(), failed.clone(), p.addr);
            std::thread::spawn(move || {
                while !stop.load(Relaxed) {
                    let r = request_bytes(addr, b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
                    match r {
                        Ok(r) if r.status == 200 => drop(ok.fetch_add(1, Relaxed)),
                        Ok(r) => failed.lock().unwrap().push(format!("{} {}", r.status, r.text())),
                        Err(e) => failed.lock().unwrap().push(e.to_string()),
                    }
                }
            })
        })
        .collect();
    let b_requests = || get(b.addr, "/admin/requests").text().trim().parse::<u64>().unwrap();
    eventually(10, "b is serving", || b_requests() >= 4);
    // b leaves while POSTs are in flight on it.
    p.rewrite(&(route_all("app") + &service("app", "round_robin", &[&a], "")));
    p.proc.signal("HUP");
    eventually(5, "reload", || p.metric("ringmaster_reloads_total") == 1.0);
    // What was sent to b before the swap has arrived within a second.
    std::thread::sleep(Duration::from_secs(1));
    let at_removal = b_requests();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Relaxed);
    load.into_iter().for_each(|t| t.join().unwrap());
    assert!(failed.lock().unwrap().is_empty(), "failed: {:?}", failed.lock().unwrap());
    assert!(ok.load(Relaxed) > 40, "{}", ok.load(Relaxed));
    assert_eq!(b_requests(), at_removal, "the removed replica got requests after its removal");
}

/// Starts a second ringmaster on `listen` (the first one's port) with its own
/// admin address; its stderr once it is up, or once it exited.
fn second_on(listen: std::net::SocketAddr, body: &str) -> (std::process::Child, std::net::SocketAddr, tempfile::TempDir) {
    let admin = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("second.toml");
    std::fs::write(&config, with_engine(Proxy::head(listen, admin, "") + body)).unwrap();
    let child = Command::new(BIN)
        .args(["run", "--config", config.to_str().unwrap()])
        .stderr(std::process::Stdio::from(std::fs::File::create(dir.path().join("stderr.log")).unwrap()))
        .spawn()
        .unwrap();
    (child, admin, dir)
}

#[test]
fn with_reuse_port_two_processes_share_a_port_and_both_serve() {
    let a = backend("a");
    let body = format!("[server]\nreuse_port = true\n\n{}{}", route_all("app"), service("app", "round_robin", &[&a], ""));
    let first = Proxy::start(&body);
    let (mut child, admin, dir) = second_on(first.addr, &body);
    eventually(20, "the second process serves its admin port", || std::net::TcpStream::connect(admin).is_ok());
    // The kernel spreads new connections over both processes.
    for _ in 0..200 {
        assert_eq!(request(first.addr, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").status, 200);
    }
    let accepted = |admin| {
        let text = admin_get(admin, "/metrics").text();
        text.lines().find_map(|l| l.strip_prefix("ringmaster_connections_accepted_total ")).unwrap().trim().parse::<f64>().unwrap()
    };
    let (one, two) = (accepted(first.admin), accepted(admin));
    assert!(one > 0.0 && two > 0.0 && one + two >= 200.0, "connections accepted: {one} and {two}");
    let _ = child.kill();
    let _ = child.wait();

    // Without it, a second process on the port is refused at start, naming it.
    let plain = format!("{}{}", route_all("app"), service("app", "round_robin", &[&a], ""));
    let (mut refused, _, dir2) = second_on(first.addr, &plain);
    let status = refused.wait().unwrap();
    let err = std::fs::read_to_string(dir2.path().join("stderr.log")).unwrap();
    assert!(!status.success() && err.contains(&format!("cannot listen on {}", first.addr)), "{status}: {err}");
    drop(dir);
}
