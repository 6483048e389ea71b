//! Kubernetes discovery (the `kubernetes` feature) against the fake API
//! server of `common::kube`, which lists and watches EndpointSlices: a pool
//! follows its Service's slices through the watch and through a relist after
//! a 410; readiness and terminating come from the slices' conditions; a
//! sharded service's shards are named by a label; the guardrails hold a
//! large drop, an empty pool and an API outage while the last set serves.
#![cfg(feature = "kubernetes")]

mod common;
use common::kube::{endpoint_slice, FakeKube};
use common::*;
use serde_json::json;
use std::net::Ipv4Addr;

/// A backend on `127.0.0.LAST:port` (a slice's endpoints share its port).
fn backend_at(last: u8, port: u16) -> Proc {
    backend_on(Ipv4Addr::new(127, 0, 0, last), port)
}

fn endpoints(p: &Proxy, pool: &str) -> Vec<String> {
    let d = p.admin_json("/admin/discovery");
    let mut v: Vec<String> =
        d["pools"][pool]["endpoints"].as_array().map(|a| a.iter().map(|e| e.as_str().unwrap().to_string()).collect()).unwrap_or_default();
    v.sort();
    v
}

fn holds(p: &Proxy, pool: &str, reason: &str) -> f64 {
    p.metric(&format!("ringmaster_discovery_holds_total{{pool=\"{pool}\",reason=\"{reason}\"}}"))
}

/// (IP, ready, serving, terminating)
fn ready(last: u8) -> (String, bool, bool, bool) {
    (format!("127.0.0.{last}"), true, true, false)
}

fn slice_of(name: &str, port: u16, eps: &[(String, bool, bool, bool)]) -> serde_json::Value {
    let eps: Vec<(&str, bool, bool, bool)> = eps.iter().map(|(ip, r, s, t)| (ip.as_str(), *r, *s, *t)).collect();
    endpoint_slice(name, json!({ "kubernetes.io/service-name": "app" }), ("http", port), &eps)
}

#[test]
fn a_pool_follows_its_services_endpointslices_and_the_guardrails_hold() {
    let port = free_port();
    let _backends: Vec<Proc> = (2..=5).map(|l| backend_at(l, port)).collect();
    let kube = FakeKube::start();
    // 4 is not ready yet; another Service's slice is not watched.
    kube.slice(slice_of("app-x1", port, &[ready(2), ready(3), ("127.0.0.4".into(), false, false, false)]), false);
    kube.slice(
        endpoint_slice("other-1", json!({ "kubernetes.io/service-name": "other" }), ("http", port), &[("127.0.0.5", true, true, false)]),
        false,
    );
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t0k3n\n").unwrap();
    let p = Proxy::start(&format!(
        "{}[services.app]\nkind = \"replicated\"\n\
         kubernetes = {{ service = \"app\", port = \"http\", api_server = \"{}\", namespace = \"default\", max_stale = \"3s\", token_file = \"{}\" }}\n",
        route_all("app"),
        kube.url(),
        token.display()
    ));
    let at = |l: u8| format!("127.0.0.{l}:{port}");
    eventually(10, "the ready endpoints are the pool", || endpoints(&p, "app") == [at(2), at(3)]);
    let auth = kube.state.lock().unwrap().auth.clone();
    assert!(!auth.is_empty() && auth.iter().all(|a| a == "Bearer t0k3n"), "the token file's bearer token: {auth:?}");
    let served: std::collections::HashSet<String> = (0..8).map(|_| p.get("/").backend()).collect();
    assert_eq!(served, ["127.0.0.2".to_string(), "127.0.0.3".to_string()].into_iter().collect());

    // Through the watch: 4 becomes ready; then 3 terminates (still serving, so not new traffic).
    kube.slice(slice_of("app-x1", port, &[ready(2), ready(3), ready(4)]), false);
    eventually(10, "4 is ready", || endpoints(&p, "app") == [at(2), at(3), at(4)]);
    kube.slice(slice_of("app-x1", port, &[ready(2), ("127.0.0.3".into(), false, true, true), ready(4)]), false);
    eventually(10, "3 terminates", || endpoints(&p, "app") == [at(2), at(4)]);

    // A change the watch never hears of, then a 410: the watcher lists again and sees it.
    let lists = kube.slice_lists();
    kube.slice(slice_of("app-x1", port, &[ready(2), ready(4), ready(5)]), true);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(endpoints(&p, "app"), [at(2), at(4)], "the quiet change is not seen before the relist");
    kube.expire();
    eventually(10, "the relist shows 5", || endpoints(&p, "app") == [at(2), at(4), at(5)]);
    assert!(kube.slice_lists() > lists, "listed again after the 410");
    assert_eq!(holds(&p, "app", "api_failed"), 0.0, "a 410 is not an outage");

    // Two of three gone at once: held past max_drop, then applied after max_stale.
    kube.slice(slice_of("app-x1", port, &[ready(2)]), false);
    eventually(10, "a large drop is held", || holds(&p, "app", "max_drop") >= 1.0);
    assert_eq!(endpoints(&p, "app"), [at(2), at(4), at(5)]);
    eventually(15, "applied after max_stale", || endpoints(&p, "app") == [at(2)]);

    // The slice deleted: discovery never empties a pool.
    kube.delete_slice("app-x1");
    eventually(10, "an empty pool is held", || holds(&p, "app", "empty") >= 1.0);
    assert_eq!(endpoints(&p, "app"), [at(2)]);
    assert!((0..4).all(|_| p.get("/").status == 200));

    // The API server goes down: held, serving, with the hold's age shown.
    kube.set_down(true);
    eventually(15, "an outage is held", || holds(&p, "app", "api_failed") >= 1.0);
    eventually(10, "the hold's age is shown", || p.metric("ringmaster_discovery_held_seconds{pool=\"app\"}") >= 1.0);
    assert_eq!(p.admin_json("/admin/discovery")["pools"]["app"]["held"], "api_failed");
    assert!((0..4).all(|_| p.get("/").status == 200));
    // Back, with the slice again: the watch starts over and the hold ends.
    kube.slice(slice_of("app-x1", port, &[ready(2), ready(3)]), false);
    kube.set_down(false);
    eventually(30, "back after the outage", || endpoints(&p, "app") == [at(2), at(3)]);
    assert!(p.admin_json("/admin/discovery")["pools"]["app"]["held"].is_null());
    assert_eq!(p.metric("ringmaster_reloads_total"), 0.0, "pool updates, not reloads");
}

#[test]
fn each_shard_is_the_slices_its_label_names() {
    let port = free_port();
    let _backends: Vec<Proc> = (2..=4).map(|l| backend_at(l, port)).collect();
    let kube = FakeKube::start();
    let shard = |s: &str| json!({ "app": "cache", "ringmaster.dev/shard": s });
    kube.slice(endpoint_slice("cache-a-1", shard("a"), ("http", port), &[("127.0.0.2", true, true, false)]), false);
    kube.slice(endpoint_slice("cache-b-1", shard("b"), ("http", port), &[("127.0.0.3", true, true, false)]), false);
    // A shard the service does not have, and another app's slice with a shard label.
    kube.slice(endpoint_slice("cache-z-1", shard("z"), ("http", port), &[("127.0.0.4", true, true, false)]), false);
    kube.slice(
        endpoint_slice(
            "web-a-1",
            json!({ "app": "web", "ringmaster.dev/shard": "a" }),
            ("http", port),
            &[("127.0.0.4", true, true, false)],
        ),
        false,
    );
    let p = Proxy::start(&format!(
        "[[routes]]\nservice = \"users\"\n\n\
         [services.users]\nkind = \"sharded\"\nsharder = {{ key = {{ path_segment = 1 }} }}\n\
         kubernetes = {{ selector = \"app=cache\", shard_label = \"ringmaster.dev/shard\", api_server = \"{}\", namespace = \"default\" }}\n\n\
         [services.users.shards.a]\n[services.users.shards.b]\n",
        kube.url()
    ));
    let at = |l: u8| format!("127.0.0.{l}:{port}");
    eventually(10, "shard a", || endpoints(&p, "users/a") == [at(2)]);
    eventually(10, "shard b", || endpoints(&p, "users/b") == [at(3)]);
    let mut seen = std::collections::HashSet::new();
    for k in 0..40 {
        let first = p.get(&format!("/users/k{k}"));
        assert_eq!(first.status, 200);
        assert_eq!(p.get(&format!("/users/k{k}")).backend(), first.backend(), "a key stays on its shard");
        seen.insert(first.backend());
    }
    assert_eq!(seen, ["127.0.0.2".to_string(), "127.0.0.3".to_string()].into_iter().collect(), "z and web serve nothing");
    // Shard b gains a replica.
    kube.slice(endpoint_slice("cache-b-2", shard("b"), ("http", port), &[("127.0.0.4", true, true, false)]), false);
    eventually(10, "shard b has two", || endpoints(&p, "users/b") == [at(3), at(4)]);
    assert_eq!(endpoints(&p, "users/a"), [at(2)]);
    let names = p.admin_json("/admin/discovery")["pools"]["users/a"]["names"][0].as_str().unwrap().to_string();
    assert!(names.contains("app=cache") && names.contains("ringmaster.dev/shard=a"), "{names}");
}

#[test]
fn kubernetes_discovery_mistakes_are_config_errors() {
    let text = "[[listeners]]\nname = \"main\"\nlisten = \"127.0.0.1:8080\"\n\n[[routes]]\nservice = \"users\"\n\n\
        [services.users]\nkind = \"sharded\"\nsharder = { key = { path_segment = 1 } }\n\
        kubernetes = { service = \"Users_1\", port = 0, api_server = \"http://127.0.0.1:6443\" }\n\
        dns = { }\n\n\
        [services.users.shards.a]\nendpoints = [{ address = \"127.0.0.1:9000\" }]\n\n\
        [services.app]\nkind = \"replicated\"\n\
        kubernetes = { selector = \"app=x\", shard_label = \"s\" }\n\n\
        [services.mc]\nprotocol = \"memcache\"\nkind = \"replicated\"\nendpoints = [{ address = \"127.0.0.1:11211\" }]\n\
        kubernetes = { service = \"mc\" }\n";
    let (passed, err) = check_config(text);
    assert!(!passed, "{err}");
    for said in [
        "`Users_1` is not a Service name",
        "0 is not a port",
        "dns or from kubernetes, not both",
        "needs the label that names a slice's shard",
        "the config lists none",
        "shard_label is for a sharded service",
        "no Kubernetes API server",
        "memcache service `mc` has a kubernetes table",
    ] {
        assert!(err.contains(said), "{said}: {err}");
    }
}

/// A reload that takes the kubernetes table away gives the service back to
/// the endpoints its config lists, at once.
#[test]
fn a_reload_without_the_table_gives_the_pool_back_to_the_config() {
    let port = free_port();
    let _backends: Vec<Proc> = (2..=3).map(|l| backend_at(l, port)).collect();
    let kube = FakeKube::start();
    kube.slice(slice_of("app-x1", port, &[ready(2)]), false);
    let p = Proxy::start(&format!(
        "{}[services.app]\nkind = \"replicated\"\nkubernetes = {{ service = \"app\", api_server = \"{}\", namespace = \"default\" }}\n",
        route_all("app"),
        kube.url()
    ));
    eventually(10, "the slice's endpoint serves", || p.get("/").backend() == "127.0.0.2");
    p.rewrite(&format!("{}[services.app]\nkind = \"replicated\"\nendpoints = [{{ address = \"127.0.0.3:{port}\" }}]\n", route_all("app")));
    let r = request(p.admin, "POST /admin/reload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    eventually(5, "the config's endpoint serves", || (0..4).all(|_| p.get("/").backend() == "127.0.0.3"));
    eventually(5, "no pool is discovered", || p.admin_json("/admin/discovery")["pools"].as_object().is_some_and(|m| m.is_empty()));
}

/// Over HTTPS, as in a pod: the API server's certificate is verified
/// against the `ca` given (a ringmaster terminates TLS in front of the fake
/// API server); a CA that did not sign it is an outage, held.
#[test]
fn the_api_server_is_reached_over_tls_and_verified_against_its_ca() {
    let port = free_port();
    let _backends: Vec<Proc> = (2..=3).map(|l| backend_at(l, port)).collect();
    let kube = FakeKube::start();
    kube.slice(slice_of("app-x1", port, &[ready(2), ready(3)]), false);
    let dir = tempfile::tempdir().unwrap();
    let ca = common::pki::Ca::new("kube test CA");
    ca.write_leaf(dir.path(), "api", "kube-apiserver", &["127.0.0.1"]);
    std::fs::write(dir.path().join("ca.crt"), &ca.pem).unwrap();
    std::fs::write(dir.path().join("other.crt"), &common::pki::Ca::new("another CA").pem).unwrap();
    let d = |f: &str| dir.path().join(f).display().to_string();
    let https = free_addr();
    let _front = Proxy::start(&format!(
        "[[listeners]]\nname = \"tls\"\nlisten = \"{https}\"\nprotocol = \"https\"\n\
         tls = {{ certificates = [{{ cert = \"{}\", key = \"{}\" }}] }}\n\n\
         [[routes]]\nservice = \"api\"\n\n[services.api]\nkind = \"replicated\"\nendpoints = [{{ address = \"{}\" }}]\n",
        d("api.crt"),
        d("api.key"),
        kube.addr
    ));
    wait_port(https);
    let discovering = |ca: &str| {
        Proxy::start(&format!(
            "{}[services.app]\nkind = \"replicated\"\n\
             kubernetes = {{ service = \"app\", api_server = \"https://{https}\", ca = \"{}\", namespace = \"default\" }}\n",
            route_all("app"),
            d(ca)
        ))
    };
    let p = discovering("ca.crt");
    let at = |l: u8| format!("127.0.0.{l}:{port}");
    eventually(15, "the pool from the API over TLS", || endpoints(&p, "app") == [at(2), at(3)]);
    let wrong = discovering("other.crt");
    eventually(15, "a certificate the CA did not sign is held as an outage", || {
        wrong.admin_json("/admin/discovery")["pools"]["app"]["held"] == "api_failed"
    });
    assert!(endpoints(&wrong, "app").is_empty());
}
