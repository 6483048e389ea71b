//! Session affinity in replicated services: the hash balancer with bounded
//! load, and the cookie balancer.

mod common;
use common::*;

fn get_with(p: &Proxy, path: &str, headers: &str) -> Response {
    request(p.addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n"))
}

const HASH_BY_USER: &str = "hash = { key = { header = \"x-user\" }, fallback = \"reject\" }";

#[test]
fn same_key_same_replica_and_only_a_failed_replicas_keys_move() {
    let (a, b, c) = (backend("a"), backend("b"), backend("c"));
    let p = Proxy::start(&(route_all("app") + &service("app", "hash", &[&a, &b, &c], HASH_BY_USER)));
    let users: Vec<String> = (0..60).map(|i| format!("user-{i}")).collect();
    let first: Vec<String> = users.iter().map(|u| get_with(&p, "/", &format!("X-User: {u}\r\n")).backend()).collect();
    for _ in 0..2 {
        let again: Vec<String> = users.iter().map(|u| get_with(&p, "/", &format!("X-User: {u}\r\n")).backend()).collect();
        assert_eq!(first, again, "the same key went elsewhere");
    }
    for n in ["a", "b", "c"] {
        assert!(first.iter().filter(|x| *x == n).count() >= 8, "{first:?}");
    }
    // Replica b fails: its users move, nobody else's do.
    get(b.addr, "/admin/unhealthy");
    drop(b);
    let after: Vec<String> = users.iter().map(|u| get_with(&p, "/", &format!("X-User: {u}\r\n")).backend()).collect();
    for (before, now) in first.iter().zip(&after) {
        if before == "b" {
            assert_ne!(now, "b");
        } else {
            assert_eq!(before, now, "a key of a healthy replica moved");
        }
    }
}

#[test]
fn missing_key_is_rejected_with_its_name() {
    let a = backend("a");
    let p = Proxy::start(&(route_all("app") + &service("app", "hash", &[&a], HASH_BY_USER)));
    let r = p.get("/");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("header x-user"), "{}", r.text());
    assert_eq!(p.metric("ringmaster_local_answers_total{reason=\"missing_key\"}"), 1.0);
}

#[test]
fn bounded_load_spills_a_hot_key() {
    let (a, b, c) = (backend("a"), backend("b"), backend("c"));
    let extra = "hash = { key = { header = \"x-user\" }, balance_factor = 1.25 }";
    let p = std::sync::Arc::new(Proxy::start(&(route_all("app") + &service("app", "hash", &[&a, &b, &c], extra))));
    let home = get_with(&p, "/", "X-User: hot\r\n").backend();
    // 12 concurrent slow requests for one key: its replica may hold at most
    // ceil(1.25 * in-flight / 3); the rest spill to the next replicas in ring order.
    let handles: Vec<_> = (0..12)
        .map(|_| {
            let p = p.clone();
            std::thread::spawn(move || get_with(&p, "/sleep/400", "X-User: hot\r\n").backend())
        })
        .collect();
    let got: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let at_home = got.iter().filter(|b| **b == home).count();
    assert!((4..12).contains(&at_home), "home {home} took {at_home} of {got:?}");
    // Without load, the key is home again.
    assert_eq!(get_with(&p, "/", "X-User: hot\r\n").backend(), home);
}

#[test]
fn cookie_affinity_pins_survives_reload_and_repins_on_failure() {
    let (a, b, c) = (backend("a"), backend("b"), backend("c"));
    let extra = "cookie = { name = \"rm\", ttl = \"1h\" }\nhealth = { interval = \"100ms\", timeout = \"80ms\", unhealthy_threshold = 1, healthy_threshold = 1 }";
    let svc = |bs: &[&Backend]| route_all("app") + &service("app", "cookie", bs, extra);
    let p = Proxy::start(&svc(&[&a, &b, &c]));
    let first = p.get("/");
    let set = first.header("set-cookie").expect("first answer pins").to_string();
    assert!(set.starts_with("rm=") && set.contains("HttpOnly") && set.contains("Max-Age=3600"), "{set}");
    assert!(!set.contains("127.0.0.1"), "the cookie reveals an address: {set}");
    let cookie = set.split(';').next().unwrap().to_string();
    let pinned = first.backend();
    for _ in 0..6 {
        let r = get_with(&p, "/", &format!("Cookie: other=1; {cookie}\r\n"));
        assert_eq!(r.backend(), pinned);
        assert!(r.header("set-cookie").is_none(), "no new cookie while pinned");
    }
    // A reload (one more replica) keeps the pin.
    let d = backend("d");
    p.rewrite(&svc(&[&a, &b, &c, &d]));
    p.proc.signal("HUP");
    eventually(5, "reload", || p.metric("ringmaster_reloads_total") == 1.0);
    assert_eq!(get_with(&p, "/", &format!("Cookie: {cookie}\r\n")).backend(), pinned);
    // Forged values are ignored, and answered with a fresh pin.
    let r = get_with(&p, "/", "Cookie: rm=0123456789abcdef\r\n");
    assert_eq!(r.status, 200);
    assert!(r.header("set-cookie").is_some());
    // The pinned replica fails: the client is re-pinned elsewhere.
    let victim = [&a, &b, &c].into_iter().find(|x| x.name == pinned).unwrap();
    get(victim.addr, "/admin/unhealthy");
    eventually(5, "re-pinned", || get_with(&p, "/", &format!("Cookie: {cookie}\r\n")).backend() != pinned);
    let r = get_with(&p, "/", &format!("Cookie: {cookie}\r\n"));
    assert!(r.header("set-cookie").unwrap().starts_with("rm="));
}
