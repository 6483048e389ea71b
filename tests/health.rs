//! Readiness probes, passive ejection and fail-open.

mod common;
use common::*;

const PROBES: &str = "health = { path = \"/healthz\", interval = \"100ms\", timeout = \"80ms\", healthy_threshold = 2, unhealthy_threshold = 2, jitter = \"10ms\" }";

fn healthy(p: &Proxy, name: &str) -> bool {
    let pools = p.admin_json("/admin/pools");
    let eps = pools["pools"][0]["endpoints"].as_array().unwrap().clone();
    eps.iter().find(|e| e["name"] == name).unwrap()["healthy"].as_bool().unwrap()
}

#[test]
fn readiness_transitions_take_and_return_traffic() {
    let (a, b) = (backend("a"), backend("b"));
    let p = Proxy::start(&(route_all("app") + &service("app", "round_robin", &[&a, &b], PROBES)));
    assert_eq!(spread(&p, "/", 10).len(), 2);

    assert_eq!(get(b.addr, "/admin/unhealthy").status, 200);
    eventually(5, "b marked unhealthy", || !healthy(&p, "b"));
    let m = spread(&p, "/", 10);
    assert_eq!(m.get("a"), Some(&10), "{m:?}");
    assert_eq!(p.metric("ringmaster_pool_healthy_endpoints{service=\"app\"}"), 1.0);
    assert!(p.stderr().contains("failed its readiness probes"), "{}", p.stderr());

    assert_eq!(get(b.addr, "/admin/healthy").status, 200);
    eventually(5, "b healthy again", || healthy(&p, "b"));
    assert_eq!(spread(&p, "/", 10).len(), 2);
}

#[test]
fn fail_open_when_every_endpoint_is_unhealthy() {
    let (a, b) = (backend("a"), backend("b"));
    let p = Proxy::start(&(route_all("app") + &service("app", "round_robin", &[&a, &b], PROBES)));
    get(a.addr, "/admin/unhealthy");
    get(b.addr, "/admin/unhealthy");
    eventually(5, "both unhealthy", || !healthy(&p, "a") && !healthy(&p, "b"));
    // Every request is still served, spread over all replicas.
    let m = spread(&p, "/", 20);
    assert!(m.contains_key("a") && m.contains_key("b"), "{m:?}");
    assert!(p.metric("ringmaster_pool_fail_open_total{service=\"app\"}") >= 20.0);
    assert!(p.stderr().contains("failing open"), "{}", p.stderr());
}

#[test]
fn passive_ejection_of_a_failing_replica() {
    let a = backend("a");
    let garbage = backend_with("garbage", &["--garbage"]);
    let extra = "passive = { consecutive_failures = 2, ejection_time = \"30s\" }";
    let p = Proxy::start(&(route_all("app") + &service("app", "round_robin", &[&a, &garbage], extra)));
    let mut bad = 0;
    for _ in 0..10 {
        let r = p.get("/");
        if r.status == 502 {
            bad += 1;
        } else {
            assert_eq!(r.backend(), "a");
        }
    }
    // Two failures eject it; later requests all go to the good replica.
    assert_eq!(bad, 2);
    assert!(!healthy(&p, "garbage"));
    let ej = format!("ringmaster_endpoint_ejections_total{{service=\"app\",endpoint=\"garbage\",address=\"{}\"}}", garbage.addr);
    assert_eq!(p.metric(&ej), 1.0);
    assert_eq!(p.metric("ringmaster_local_answers_total{reason=\"upstream_error\"}"), 2.0);
}

#[test]
fn ejection_is_capped_per_pool_and_5xx_counts_only_when_asked() {
    // Two replicas that both answer garbage: one is ejected, the other stays (50% of 2).
    let (g1, g2) = (backend_with("g1", &["--garbage"]), backend_with("g2", &["--garbage"]));
    let p = Proxy::start(&(route_all("app") + &service("app", "round_robin", &[&g1, &g2], "passive = { consecutive_failures = 1 }")));
    for _ in 0..6 {
        p.get("/");
    }
    let ejected = ["g1", "g2"].iter().filter(|n| !healthy(&p, n)).count();
    assert_eq!(ejected, 1, "max_ejection_percent = 50 keeps one of two in");
    assert!(p.metric("ringmaster_pool_ejections_capped_total{service=\"app\"}") >= 1.0);
    // A URL that answers 500 does not get a replica ejected by default...
    let a = backend("a");
    let p = Proxy::start(&(route_all("app") + &service("app", "round_robin", &[&a], "passive = { consecutive_failures = 2 }")));
    for _ in 0..5 {
        assert_eq!(p.get("/status/500").status, 500);
    }
    assert!(healthy(&p, "a"), "ejected for the client's 5xx URL");
    // ...and does with on_5xx (a second replica keeps the pool within the cap).
    let b = backend("b");
    let p = Proxy::start(
        &(route_all("app") + &service("app", "round_robin", &[&a, &b], "passive = { consecutive_failures = 2, on_5xx = true }")),
    );
    for _ in 0..4 {
        p.get("/status/500");
    }
    assert!(!healthy(&p, "a") || !healthy(&p, "b"), "on_5xx ejects");
}
