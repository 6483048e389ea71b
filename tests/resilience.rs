//! A dying replica costs no request: idempotent requests whose connection is
//! refused, closed or reset before the answer began go to another replica, and
//! the dead one is ejected at once.

mod common;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Keep-alive GET load from `clients` threads until `stop`; the count of 200s and every failure.
fn load(p: &Arc<Proxy>, clients: usize, path: &'static str, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<(u64, Vec<String>)>> {
    (0..clients)
        .map(|_| {
            let (p, stop) = (p.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut conn = KeepAlive::connect(p.addr).unwrap();
                let (mut ok, mut errors) = (0, Vec::new());
                while !stop.load(Relaxed) {
                    match conn.get(path) {
                        Ok(r) if r.status == 200 => ok += 1,
                        Ok(r) => errors.push(format!("{} {}", r.status, r.text().trim())),
                        Err(e) => {
                            errors.push(e.to_string());
                            conn = KeepAlive::connect(p.addr).unwrap();
                        }
                    }
                }
                (ok, errors)
            })
        })
        .collect()
}

fn finish(clients: Vec<std::thread::JoinHandle<(u64, Vec<String>)>>) -> (u64, Vec<String>) {
    clients.into_iter().map(|h| h.join().unwrap()).fold((0, Vec::new()), |(ok, mut errs), (o, e)| {
        errs.extend(e);
        (ok + o, errs)
    })
}

#[test]
fn killing_one_of_three_replicas_under_keepalive_load_loses_no_request() {
    let (a, b, c) = (backend("a"), backend("b"), backend("c"));
    let p = Arc::new(Proxy::start(&(route_all("app") + &service("app", "round_robin", &[&a, &b, &c], ""))));
    let stop = Arc::new(AtomicBool::new(false));
    // Each answer takes 5 ms, so requests are in flight on b when it dies.
    let clients = load(&p, 8, "/sleep/5", &stop);
    std::thread::sleep(Duration::from_millis(500));
    b.proc.signal("KILL");
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Relaxed);
    let (ok, errors) = finish(clients);
    let denied = p.metric("ringmaster_pool_retries_denied_total{service=\"app\"}");
    assert!(
        errors.is_empty(),
        "{} requests failed when a replica died: {errors:?} (retries denied: {denied})\n{}",
        errors.len(),
        p.stderr()
    );
    assert!(ok > 300, "too little traffic to prove anything: {ok}");
    // b is out at once (refused or reset), not after five failures.
    let ej = format!("ringmaster_endpoint_ejections_total{{service=\"app\",endpoint=\"b\",address=\"{}\"}}", b.addr);
    assert_eq!(p.metric(&ej), 1.0, "{}", p.stderr());
    assert!(p.metric("ringmaster_pool_retries_total{service=\"app\"}") >= 1.0);
    let seen = spread(&p, "/", 9);
    assert_eq!(seen.get("b"), None, "{seen:?}");
}

#[test]
fn a_request_with_a_body_is_not_resent_after_it_was_written() {
    let (a, b) = (backend("a"), backend("b"));
    let hash = "hash = { key = { header = \"x-user\" } }";
    let p = Proxy::start(&(route_all("app") + &service("app", "hash", &[&a, &b], hash)));
    // The same key goes to the same replica: learn it, then kill it under a POST.
    let home = request(p.addr, "GET / HTTP/1.1\r\nHost: x\r\nx-user: u1\r\nConnection: close\r\n\r\n").backend();
    let victim = if home == "a" { &a } else { &b };
    let post = std::thread::spawn({
        let addr = p.addr;
        move || request(addr, "POST /sleep/2000 HTTP/1.1\r\nHost: x\r\nx-user: u1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
    });
    std::thread::sleep(Duration::from_millis(300));
    victim.proc.signal("KILL");
    let r = post.join().unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(p.metric("ringmaster_pool_retries_total{service=\"app\"}"), 0.0);
}
