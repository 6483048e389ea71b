//! Hot-key mitigation for an HTTP sharded service, with real backends: once
//! the heat ranking calls a key hot, its answers come from the root's hot-key
//! cache (within RFC 9111's shared-cache rules, at most `ttl`), a write
//! through the root drops them, and with `spread` its reads go to every
//! replica of its shard instead of the one the affinity pins.

mod common;
use common::*;

fn config(backends: &[(&str, Vec<&Backend>)], hot_keys: &str) -> String {
    let mut cfg = String::from("[[routes]]\nservice = \"users\"\n\n");
    cfg.push_str("[services.users]\nkind = \"sharded\"\nshard_header = \"x-shard\"\nbalancer = \"hash\"\nhash = { key = \"client_ip\" }\n");
    cfg.push_str("sharder = { key = { path_segment = 1 }, function = \"maglev\" }\n");
    cfg.push_str("heat = { window = \"2s\", sample = 1, top_keys = 16, hot_share = 0.2 }\n");
    cfg.push_str(&format!("hot_keys = {{ {hot_keys} }}\n\n"));
    for (shard, bs) in backends {
        let eps: Vec<String> = bs.iter().map(|b| format!("{{ name = \"{}\", address = \"{}\" }}", b.name, b.addr)).collect();
        cfg.push_str(&format!("[services.users.shards.{shard}]\nendpoints = [{}]\n\n", eps.join(", ")));
    }
    cfg
}

/// Half the requests name `hot`, the others 200 other ids, until the heat tick calls it hot.
fn make_hot(p: &Proxy, hot: &str) {
    let mut c = KeepAlive::connect(p.addr).unwrap();
    eventually(15, "the key is hot", || {
        for i in 0..200 {
            let id = if i % 2 == 0 { hot.to_string() } else { format!("u{i}") };
            assert_eq!(c.get(&format!("/cc/{id}")).unwrap().status, 200);
        }
        p.admin_json("/admin/heat")["services"][0]["top_keys"][0]["hot"] == true
    });
    // The hot set the request path reads is rebuilt by the next heat tick.
    std::thread::sleep(std::time::Duration::from_millis(1200));
}

#[test]
fn a_hot_keys_answers_come_from_the_root_and_a_write_drops_them() {
    let (a, b) = (backend("a1"), backend("b1"));
    let p = Proxy::start(&config(&[("a", vec![&a]), ("b", vec![&b])], "cache = true, ttl = \"30s\""));
    make_hot(&p, "star");
    let mut c = KeepAlive::connect(p.addr).unwrap();
    c.get("/cc/star").unwrap();
    let first = c.get("/cc/star").unwrap();
    assert_eq!(first.header("x-cache"), Some("HIT"), "{:?}", first.headers);
    // What the origins counted themselves (a hit replays the x-origin-count it stored).
    let origin = || {
        get(a.addr, "/admin/count").text().trim().parse::<u64>().unwrap()
            + get(b.addr, "/admin/count").text().trim().parse::<u64>().unwrap()
    };
    let before = origin();
    for _ in 0..50 {
        let r = c.get("/cc/star").unwrap();
        assert_eq!((r.status, r.header("x-cache")), (200, Some("HIT")));
    }
    assert_eq!(origin(), before, "the shard sees none of them");
    // A cold key is never kept: the route itself has no cache.
    for _ in 0..5 {
        let r = c.get("/cc/cold").unwrap();
        assert_eq!((r.status, r.header("x-cache")), (200, None));
    }
    assert_eq!(origin(), before + 5, "each cold request reached its origin");
    let origin = first.header("x-origin-count").unwrap().to_string();
    // What RFC 9111 keeps out of a shared cache stays out of this one too.
    for q in ["cc=no-store", "cc=private", "cookie=1"] {
        c.get(&format!("/cc/star?{q}")).unwrap();
        assert_ne!(c.get(&format!("/cc/star?{q}")).unwrap().header("x-cache"), Some("HIT"), "{q}");
    }
    let heat = p.admin_json("/admin/heat");
    assert!(heat["services"][0]["mitigation"]["cache"]["entries"].as_u64().unwrap() >= 1, "{heat:#}");
    // A write through the root drops the key's answer at once.
    let w = request(p.addr, "POST /cc/star HTTP/1.1\r\nHost: test.local\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    assert_eq!(w.status, 200);
    let after = c.get("/cc/star").unwrap();
    assert_ne!(after.header("x-cache"), Some("HIT"));
    assert_ne!(after.header("x-origin-count"), Some(origin.as_str()));
}

#[test]
fn a_hot_keys_reads_spread_over_its_shards_replicas() {
    let (a1, a2, b) = (backend("a1"), backend("a2"), backend("b1"));
    let p = Proxy::start(&config(&[("a", vec![&a1, &a2]), ("b", vec![&b])], "spread = true"));
    // Ids on shard a: one is made hot, the other stays cold.
    let on_a: Vec<String> =
        (0..400).map(|i| format!("k{i}")).filter(|id| p.get(&format!("/cc/{id}")).header("x-shard") == Some("a")).take(2).collect();
    let (hot, cold) = (&on_a[0], &on_a[1]);
    make_hot(&p, hot);
    let replicas = |id: &str| (0..40).map(|_| p.get(&format!("/cc/{id}")).backend()).collect::<std::collections::HashSet<_>>();
    assert_eq!(replicas(cold).len(), 1, "a cold key stays on the replica its client's hash pins");
    assert_eq!(replicas(hot), ["a1", "a2"].iter().map(|s| s.to_string()).collect(), "a hot key's reads use every replica");
}

/// Two tenants hot on the same URL: the shard key (here a header) is what
/// made each request hot, so each tenant's answer is cached for that tenant
/// only; a request with the identity's API-key header is never answered
/// from the hot-key cache, nor stored in it.
#[test]
fn a_hot_keys_cache_never_serves_one_tenants_answer_to_another() {
    let a = backend("a1");
    let mut cfg = String::from("[identity]\napi_key = { header = \"x-api-key\" }\n\n[[routes]]\nservice = \"feed\"\n\n");
    cfg.push_str("[services.feed]\nkind = \"sharded\"\nsharder = { key = { header = \"x-tenant\" }, function = \"maglev\" }\n");
    cfg.push_str("heat = { window = \"2s\", sample = 1, top_keys = 16, hot_share = 0.2 }\nhot_keys = { cache = true, ttl = \"30s\" }\n\n");
    cfg.push_str(&format!("[services.feed.shards.a]\nendpoints = [{{ name = \"a1\", address = \"{}\" }}]\n", a.addr));
    let p = Proxy::start(&cfg);
    let ask = |c: &mut KeepAlive, tenant: &str, extra: &str| -> Response {
        c.request(&format!("GET /echo HTTP/1.1\r\nHost: test.local\r\nx-tenant: {tenant}\r\n{extra}\r\n")).unwrap()
    };
    let mut c = KeepAlive::connect(p.addr).unwrap();
    eventually(15, "both tenants are hot", || {
        for i in 0..100 {
            assert_eq!(ask(&mut c, if i % 2 == 0 { "alice" } else { "bob" }, "").status, 200);
        }
        let heat = p.admin_json("/admin/heat");
        let hot = heat["services"][0]["top_keys"].as_array().unwrap().iter().filter(|k| k["hot"] == true).count();
        hot == 2
    });
    std::thread::sleep(std::time::Duration::from_millis(1200));
    for _ in 0..3 {
        ask(&mut c, "alice", "");
    }
    assert_eq!(ask(&mut c, "alice", "").header("x-cache"), Some("HIT"), "alice's own answer is cached");
    for _ in 0..3 {
        let r = ask(&mut c, "bob", "");
        assert_eq!(r.json()["headers"]["x-tenant"], "bob", "bob was served another tenant's answer");
    }
    // An API key is a credential: such a request is neither answered from nor stored in the cache.
    let origin = || get(a.addr, "/admin/requests").text().trim().parse::<u64>().unwrap();
    let before = origin();
    for _ in 0..3 {
        let r = ask(&mut c, "carol", "x-api-key: k\r\n");
        assert_ne!(r.header("x-cache"), Some("HIT"));
    }
    let r = ask(&mut c, "alice", "x-api-key: secret-of-alice\r\n");
    assert_ne!(r.header("x-cache"), Some("HIT"), "a request with an API key was answered from the shared cache");
    assert_eq!(origin(), before + 4, "every credentialed request reached the origin");
}
