//! Distribution per balancer, and failover when a backend dies mid-run.

mod common;
use common::*;

#[test]
fn round_robin_is_even_and_counted() {
    let (a, b, c) = (backend("a"), backend("b"), backend("c"));
    let p = Proxy::start(&(route_all("app") + &service("app", "round_robin", &[&a, &b, &c], "")));
    let m = spread(&p, "/", 60);
    assert_eq!((m["a"], m["b"], m["c"]), (20, 20, 20), "{m:?}");
    let series = format!("ringmaster_endpoint_requests_total{{service=\"app\",endpoint=\"a\",address=\"{}\"}}", a.addr);
    assert_eq!(p.metric(&series), 20.0);
    assert_eq!(p.metric("ringmaster_requests_total{route=\"all\",service=\"app\",class=\"2xx\"}"), 60.0);
}

#[test]
fn weighted_round_robin_follows_weights() {
    let (a, b) = (backend("a"), backend("b"));
    let cfg = format!(
        "{}[services.app]\nkind = \"replicated\"\nendpoints = [{{ name = \"a\", address = \"{}\", weight = 1 }}, {{ name = \"b\", address = \"{}\", weight = 3 }}]\n",
        route_all("app"),
        a.addr,
        b.addr
    );
    let p = Proxy::start(&cfg);
    let m = spread(&p, "/", 40);
    assert_eq!((m["a"], m["b"]), (10, 30), "{m:?}");
}

#[test]
fn random_reaches_every_endpoint() {
    let (a, b, c) = (backend("a"), backend("b"), backend("c"));
    let p = Proxy::start(&(route_all("app") + &service("app", "random", &[&a, &b, &c], "")));
    let m = spread(&p, "/", 300);
    for k in ["a", "b", "c"] {
        assert!(m[k] > 60, "{m:?}");
    }
}

#[test]
fn least_request_avoids_the_slow_replica() {
    let slow = backend_with("slow", &["--delay-ms", "300"]);
    let fast = backend("fast");
    let p = std::sync::Arc::new(Proxy::start(&(route_all("app") + &service("app", "least_request", &[&slow, &fast], ""))));
    // 8 clients in parallel, 10 requests each: the slow replica keeps requests in
    // flight, so the power of two choices sends most new ones to the fast one.
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let p = p.clone();
            std::thread::spawn(move || (0..10).map(|_| p.get("/").backend()).collect::<Vec<_>>())
        })
        .collect();
    let all: Vec<String> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let fast_share = all.iter().filter(|b| *b == "fast").count() as f64 / all.len() as f64;
    assert!(fast_share > 0.75, "fast replica got {fast_share}");
}

#[test]
fn failover_when_a_backend_dies_mid_run() {
    let (a, b) = (backend("a"), backend("b"));
    let mut c = backend("c");
    let p = Proxy::start(&(route_all("app") + &service("app", "round_robin", &[&a, &b, &c], "")));
    let m = spread(&p, "/", 9);
    assert_eq!(m.len(), 3);
    let _ = c.proc.0.kill();
    let _ = c.proc.0.wait();
    // Every GET still succeeds: connect failures are retried on another replica.
    let m = spread(&p, "/", 30);
    assert!(!m.contains_key("c"), "{m:?}");
    assert_eq!(m.values().sum::<usize>(), 30);
    assert!(p.metric("ringmaster_pool_retries_total{service=\"app\"}") >= 1.0);
    // ...and after enough failures the dead replica is ejected.
    let pools = p.admin_json("/admin/pools");
    let dead = pools["pools"][0]["endpoints"].as_array().unwrap().iter().find(|e| e["name"] == "c").unwrap().clone();
    assert_eq!(dead["healthy"], false, "{dead}");
}

#[test]
fn non_idempotent_requests_are_not_retried() {
    let a = backend("a");
    let dead = free_addr();
    let cfg = format!(
        "{}[services.app]\nkind = \"replicated\"\npassive = {{ consecutive_failures = 0 }}\nendpoints = [{{ name = \"dead\", address = \"{dead}\" }}, {{ name = \"a\", address = \"{}\" }}]\n",
        route_all("app"),
        a.addr
    );
    let p = Proxy::start(&cfg);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = request(p.addr, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi");
        statuses.push(r.status);
    }
    statuses.sort();
    // Round robin alternates: the two POSTs that hit the dead endpoint fail with 502.
    assert_eq!(statuses, vec![200, 200, 502, 502]);
}
