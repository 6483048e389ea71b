//! Sharded services with real processes: 3 shards x 2 replicas behind a root.

mod common;
use common::*;
use std::collections::{HashMap, HashSet};

struct Cluster {
    shards: Vec<(String, Vec<Backend>)>,
}

impl Cluster {
    fn new(names: &[&str]) -> Cluster {
        Cluster { shards: names.iter().map(|s| (s.to_string(), vec![backend(&format!("{s}1")), backend(&format!("{s}2"))])).collect() }
    }

    fn config(&self, sharder: &str) -> String {
        let mut c = String::from("[[routes]]\nname = \"all\"\npath_prefix = \"/all\"\nservice = \"users\"\nfan_out = true\n\n");
        c.push_str("[[routes]]\nname = \"users\"\nservice = \"users\"\n\n");
        c.push_str(&format!("[services.users]\nkind = \"sharded\"\nshard_header = \"x-shard\"\nsharder = {sharder}\n\n"));
        for (name, reps) in &self.shards {
            c.push_str(&format!("[services.users.shards.{name}]\nendpoints = ["));
            for r in reps {
                c.push_str(&format!("{{ name = \"{}\", address = \"{}\" }}, ", r.name, r.addr));
            }
            c.push_str("]\n\n");
        }
        c
    }
}

fn user(p: &Proxy, path: &str, u: &str) -> Response {
    request(p.addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\nX-User: {u}\r\nConnection: close\r\n\r\n"))
}

const BY_USER: &str = "{ key = { header = \"x-user\" }, fallback = \"all\" }";

#[test]
fn same_key_same_shard_and_replicas_cover_for_each_other() {
    let mut c = Cluster::new(&["a", "b", "c"]);
    let p = Proxy::start(&c.config(BY_USER));
    let users: Vec<String> = (0..60).map(|i| format!("u{i}")).collect();
    let mut home = HashMap::new();
    for u in &users {
        let r = user(&p, "/", u);
        assert_eq!(r.status, 200);
        let shard = r.header("x-shard").unwrap().to_string();
        assert!(r.backend().starts_with(&shard), "{} served shard {shard}", r.backend());
        home.insert(u.clone(), shard);
    }
    let used: HashSet<&String> = home.values().collect();
    assert_eq!(used.len(), 3, "{home:?}");
    for u in &users {
        assert_eq!(user(&p, "/", u).header("x-shard").unwrap(), home[u]);
    }
    // A replica of shard a dies: the shard keeps serving from the other one.
    let dead = c.shards[0].1.remove(0);
    drop(dead);
    for u in users.iter().filter(|u| home[*u] == "a") {
        let r = user(&p, "/", u);
        assert_eq!((r.status, r.backend().as_str()), (200, "a2"));
    }
    // Per-shard metrics and the admin view.
    assert!(p.metric("ringmaster_pool_requests_total{service=\"users\",shard=\"a\",class=\"2xx\"}") > 0.0);
    let shards = p.admin_json("/admin/shards");
    let list = shards["services"][0]["shards"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[0]["endpoints"].as_array().unwrap().len(), 2);
}

#[test]
fn fan_out_merges_json_arrays_from_every_shard() {
    let c = Cluster::new(&["a", "b", "c"]);
    let p = Proxy::start(&c.config(BY_USER));
    // A fan-out route, and a request without the key (fallback "all").
    for r in [p.get("/all/items"), p.get("/items")] {
        assert_eq!(r.status, 200, "{}", r.text());
        let items: Vec<String> = serde_json::from_slice(&r.body).unwrap();
        let shards: Vec<char> = items.iter().map(|s| s.chars().next().unwrap()).collect();
        assert_eq!(shards, vec!['a', 'b', 'c'], "{items:?}");
        assert_eq!(r.header("x-shard"), Some("a,b,c"));
    }
    // A body cannot be fanned out.
    let r = request(p.addr, "POST /all/items HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi");
    assert_eq!(r.status, 400);
    // One shard failing (both replicas of b gone, a and c healthy) fails the whole
    // fan-out with that shard's error.
    let mut c = c;
    drop(c.shards.remove(1));
    let r = p.get("/all/items");
    assert_eq!(r.status, 502, "{}", r.text());
}

/// A cluster whose shards answer after `delay_ms` each (one replica per shard).
fn slow_cluster(names: &[&str], delay_ms: &[u64]) -> Cluster {
    let shards = names
        .iter()
        .zip(delay_ms)
        .map(|(s, d)| (s.to_string(), vec![backend_with(&format!("{s}1"), &["--delay-ms", &d.to_string()])]))
        .collect();
    Cluster { shards }
}

#[test]
fn fan_out_timeout_and_concurrency_are_kept() {
    let fan = |c: &Cluster, spec: &str| {
        Proxy::start(&c.config(BY_USER).replace("shard_header = \"x-shard\"", &format!("shard_header = \"x-shard\"\nfan_out = {spec}")))
    };
    // One shard hangs past the per-shard timeout: the fan-out answers 504 at the
    // timeout, not when the slow shard finally answers.
    let c = slow_cluster(&["a", "b", "c"], &[0, 6000, 0]);
    let p = fan(&c, "{ timeout = \"300ms\" }");
    let t = std::time::Instant::now();
    let r = p.get("/all/items");
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(t.elapsed() < std::time::Duration::from_secs(5), "waited {:?} for a shard past its timeout", t.elapsed());
    // With policy first, the slow shard does not hold the answer back.
    let p = fan(&c, "{ policy = \"first\", timeout = \"5s\" }");
    let r = p.get("/all/items");
    assert_eq!(r.status, 200);
    assert_ne!(r.header("x-shard"), Some("b"));
    // Concurrency 1: three shards of 300 ms each are asked one after another.
    let c = slow_cluster(&["a", "b", "c"], &[300, 300, 300]);
    let p = fan(&c, "{ concurrency = 1, timeout = \"5s\" }");
    let t = std::time::Instant::now();
    let r = p.get("/all/items");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(t.elapsed() >= std::time::Duration::from_millis(900), "concurrency 1 ran shards together: {:?}", t.elapsed());
    let items: Vec<String> = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(items.len(), 3, "{items:?}");
}

#[test]
fn fan_outs_in_flight_and_their_bytes_are_bounded() {
    let fan = |c: &Cluster, spec: &str| {
        Proxy::start(&c.config(BY_USER).replace("shard_header = \"x-shard\"", &format!("shard_header = \"x-shard\"\nfan_out = {spec}")))
    };
    // One fan-out at a time, a short queue: of three at once, two wait past it and get 503.
    let c = slow_cluster(&["a", "b"], &[400, 400]);
    let p = std::sync::Arc::new(fan(&c, "{ max_in_flight = 1, queue_timeout = \"50ms\" }"));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let p = p.clone();
            std::thread::spawn(move || p.get("/all/items").status)
        })
        .collect();
    let mut statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 503, 503]);
    assert_eq!(p.metric("ringmaster_local_answers_total{reason=\"fan_out_busy\"}"), 2.0);
    // The shards' answers together over the budget (each is within its own limit): 502, counted.
    let c = Cluster::new(&["a", "b", "c"]);
    let one = c.shards[0].1[0].addr;
    let size = get(one, "/items").body.len();
    let p = fan(&c, &format!("{{ max_total_bytes = {} }}", size * 2));
    let r = p.get("/all/items");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(p.metric("ringmaster_local_answers_total{reason=\"fan_out_too_large\"}"), 1.0);
    let p = fan(&c, &format!("{{ max_total_bytes = {} }}", size * 3 + 10));
    assert_eq!(p.get("/all/items").status, 200);
}

#[test]
fn a_fan_out_takes_a_rate_limit_token_per_shard() {
    let c = Cluster::new(&["a", "b", "c"]);
    let limits = "[rate_limits.few]\nrate = 6\nperiod = \"1m\"\n\n";
    let cfg = c.config(BY_USER).replace("fan_out = true\n", "fan_out = true\nrate_limit = [\"few\"]\n").replacen(
        "[[routes]]\nname = \"users\"\nservice = \"users\"\n",
        "[[routes]]\nname = \"users\"\nservice = \"users\"\nrate_limit = [\"few\"]\n",
        1,
    );
    let p = Proxy::start(&(limits.to_string() + &cfg));
    // Three shards a fan-out: six tokens are two fan-outs.
    let statuses: Vec<u16> = (0..3).map(|_| p.get("/all/items").status).collect();
    assert_eq!(statuses, [200, 200, 429]);
    // Without the key (fallback "all") a request reaches every shard too, and pays for each.
    let p = Proxy::start(&(limits.to_string() + &cfg));
    assert_eq!(user(&p, "/items", "u1").status, 200, "one token");
    let statuses: Vec<u16> = (0..3).map(|_| p.get("/items").status).collect();
    assert_eq!(statuses, [200, 429, 429], "five tokens left: one fan-out of three");
}

#[test]
fn fan_out_first_takes_the_first_success() {
    let c = Cluster::new(&["a", "b"]);
    let cfg = c
        .config(BY_USER)
        .replace("shard_header = \"x-shard\"", "shard_header = \"x-shard\"\nfan_out = { policy = \"first\", timeout = \"2s\" }");
    let p = Proxy::start(&cfg);
    let r = p.get("/all/items");
    assert_eq!(r.status, 200);
    let items: Vec<String> = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(items.len(), 1);
    assert!(["a", "b"].contains(&r.header("x-shard").unwrap()));
}

#[test]
fn missing_key_without_fallback_is_rejected() {
    let c = Cluster::new(&["a", "b"]);
    let p = Proxy::start(&c.config("{ key = { query = \"user\" }, fallback = \"reject\" }"));
    let r = p.get("/profile");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("query parameter user"), "{}", r.text());
    assert_eq!(p.get("/profile?user=7").status, 200);
}

#[test]
fn adding_a_shard_by_reload_moves_keys_only_to_it() {
    let mut c = Cluster::new(&["a", "b", "c"]);
    let sharder = "{ key = { header = \"x-user\" }, function = \"ketama\" }";
    let p = Proxy::start(&c.config(sharder));
    let users: Vec<String> = (0..120).map(|i| format!("u{i}")).collect();
    let before: Vec<String> = users.iter().map(|u| user(&p, "/", u).header("x-shard").unwrap().to_string()).collect();
    c.shards.push(("d".into(), vec![backend("d1"), backend("d2")]));
    p.rewrite(&c.config(sharder));
    p.proc.signal("HUP");
    eventually(5, "reload", || p.metric("ringmaster_reloads_total") == 1.0);
    let after: Vec<String> = users.iter().map(|u| user(&p, "/", u).header("x-shard").unwrap().to_string()).collect();
    let mut moved = 0;
    for (b, a) in before.iter().zip(&after) {
        if b != a {
            assert_eq!(a, "d", "a key moved between unchanged shards");
            moved += 1;
        }
    }
    assert!(moved > 10, "the new shard took {moved} of 120 keys");
}

#[test]
fn placement_is_identical_across_processes() {
    let run = || {
        let out = std::process::Command::new(BIN)
            .args(["ring", "locate", "--function", "maglev", "--shards", "a,b,c,d=2", "user:1", "user:2", "user:3", "{tag}x", "{tag}y"])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let (first, second) = (run(), run());
    assert_eq!(first, second);
    assert_eq!(first.lines().count(), 5);
}
