//! Heat with real processes: under skewed load the hot shard ranks first in
//! `/admin/heat` with the skew it causes, and the key ranking finds the keys
//! planted among many others, for an HTTP sharded service and for the
//! memcache ambassador.

mod common;
use common::*;
use std::time::Duration;

/// `n` keyed requests: every `every`-th goes to `hot`, the others spread over 500 ids.
fn skewed(p: &Proxy, n: usize, every: usize, hot: &str) {
    let mut c = KeepAlive::connect(p.addr).unwrap();
    for i in 0..n {
        let id = if i % every == 0 { hot.to_string() } else { format!("u{}", i % 500) };
        assert_eq!(c.get(&format!("/users/{id}")).unwrap().status, 200);
    }
}

fn shard_of(p: &Proxy, id: &str) -> String {
    p.get(&format!("/users/{id}")).header("x-shard").unwrap().to_string()
}

#[test]
fn the_hot_shard_and_the_planted_key_rank_first_for_http() {
    let backends: Vec<Backend> = ["a", "b", "c"].iter().map(|n| backend(n)).collect();
    let mut cfg = String::from("[[routes]]\nname = \"users\"\nservice = \"users\"\n\n");
    cfg.push_str("[services.users]\nkind = \"sharded\"\nshard_header = \"x-shard\"\n");
    cfg.push_str("sharder = { key = { path_segment = 1 }, function = \"maglev\" }\n");
    cfg.push_str("heat = { window = \"2s\", sample = 1, top_keys = 16, hot_share = 0.2 }\n\n");
    for b in &backends {
        cfg.push_str(&format!("[services.users.shards.{}]\nendpoints = [{{ address = \"{}\" }}]\n\n", b.name, b.addr));
    }
    let p = Proxy::start_with_admin("show_keys = \"raw\"", &cfg);
    // Half of the requests name one user: its shard takes about two thirds of them.
    skewed(&p, 3000, 2, "celebrity");
    let hot = shard_of(&p, "celebrity");
    let mut heat = serde_json::Value::Null;
    eventually(10, "rates measured", || {
        heat = p.admin_json("/admin/heat");
        heat["services"][0]["shards"][0]["rate"].as_f64().unwrap_or(0.0) > 0.0
    });
    let svc = &heat["services"][0];
    assert_eq!(svc["service"], "users");
    assert_eq!(svc["protocol"], "http");
    assert_eq!(svc["shards"][0]["shard"], hot.as_str(), "{heat:#}");
    assert!(svc["skew"].as_f64().unwrap() > 1.5, "{heat:#}");
    let rates: Vec<f64> = svc["shards"].as_array().unwrap().iter().map(|s| s["rate"].as_f64().unwrap()).collect();
    assert!(rates.windows(2).all(|w| w[0] >= w[1]), "not sorted by heat: {rates:?}");
    assert_eq!(svc["shards"][0]["endpoints"][0]["address"], backends.iter().find(|b| b.name == hot).unwrap().addr.to_string());
    let top = &svc["top_keys"];
    assert_eq!(top[0]["key"], "celebrity", "{heat:#}");
    assert_eq!(top[0]["hot"], true);
    assert!((0.4..0.6).contains(&top[0]["share"].as_f64().unwrap()), "{top:#}");
    assert_eq!(top[1]["hot"], false, "{top:#}");
    assert_eq!(p.metric("ringmaster_heat_hot_keys{service=\"users\"}"), 1.0);
    assert!(p.metric("ringmaster_heat_skew{service=\"users\"}") > 1.5);
    let shard_rate = p.metric(&format!("ringmaster_heat_shard_rate{{service=\"users\",shard=\"{hot}\"}}"));
    assert!(shard_rate > 0.0);
    // The load moves away: the celebrity's count decays while other keys' grow.
    eventually(20, "the ranking follows the traffic", || {
        skewed(&p, 500, 1_000_000, "nobody");
        let h = p.admin_json("/admin/heat");
        h["services"][0]["top_keys"][0]["key"] != "celebrity" && h["services"][0]["top_keys"][0]["hot"] == false
    });
}

#[test]
fn the_ambassador_ranks_its_hot_shard_and_keys() {
    use common::mc::{ambassador, memcached, Raw};
    let servers: Vec<_> = (0..3).map(|_| memcached()).collect();
    let listen = free_addr();
    let shards: Vec<(&str, Vec<std::net::SocketAddr>)> =
        vec![("a", vec![servers[0].addr]), ("b", vec![servers[1].addr]), ("c", vec![servers[2].addr])];
    let cfg =
        ambassador(listen, &shards, "function = \"maglev\"", "") + "[services.cache.heat]\nwindow = \"2s\"\nsample = 1\nhot_share = 0.2\n";
    let p = Proxy::start_with_admin("show_keys = \"raw\"", &cfg);
    wait_port(listen);
    let mut c = Raw::connect(listen);
    assert_eq!(c.line("set hot-item 0 0 5\r\nhello\r\n"), "STORED\r\n");
    let mut batch = Vec::new();
    for i in 0..2000 {
        let key = if i % 2 == 0 { "hot-item".to_string() } else { format!("k{}", i % 300) };
        batch.extend_from_slice(format!("get {key}\r\n").as_bytes());
    }
    batch.extend_from_slice(b"mn\r\n");
    c.ask(&batch, b"MN\r\n", 1);
    let mut heat = serde_json::Value::Null;
    eventually(10, "rates measured", || {
        heat = p.admin_json("/admin/heat");
        heat["services"][0]["shards"][0]["rate"].as_f64().unwrap_or(0.0) > 0.0
    });
    let svc = heat["services"].as_array().unwrap().iter().find(|s| s["protocol"] == "memcache").unwrap().clone();
    assert_eq!(svc["top_keys"][0]["key"], "hot-item", "{svc:#}");
    assert_eq!(svc["top_keys"][0]["hot"], true);
    let stats = String::from_utf8(c.ask(b"stats shards\r\n", b"END\r\n", 1)).unwrap();
    let busiest = stats
        .lines()
        .filter_map(|l| l.strip_prefix("STAT ")?.split_once(":requests ").map(|(s, n)| (n.trim().parse::<u64>().unwrap(), s.to_string())))
        .max()
        .unwrap()
        .1;
    assert_eq!(svc["shards"][0]["shard"], busiest.as_str(), "{svc:#}\n{stats}");
    assert!(svc["shards"][0]["bytes_rate"].as_f64().unwrap() > 0.0, "{svc:#}");
    assert!(svc["skew"].as_f64().unwrap() > 1.3, "{svc:#}");
    drop(p);
    std::thread::sleep(Duration::from_millis(10));
}

/// Keys come from clients (session ids, e-mails, tenants): `/admin/heat`
/// shows a keyed hash by default, a short prefix with it on request, and the
/// raw key only when `admin.show_keys = "raw"`.
#[test]
fn admin_heat_shows_no_raw_key_unless_asked() {
    let backends: Vec<Backend> = ["a", "b"].iter().map(|n| backend(n)).collect();
    let mut cfg = String::from("[[routes]]\nname = \"users\"\nservice = \"users\"\n\n");
    cfg.push_str("[services.users]\nkind = \"sharded\"\nsharder = { key = { path_segment = 1 }, function = \"maglev\" }\n");
    cfg.push_str("heat = { window = \"2s\", sample = 1, top_keys = 16, hot_share = 0.2 }\n\n");
    for b in &backends {
        cfg.push_str(&format!("[services.users.shards.{}]\nendpoints = [{{ address = \"{}\" }}]\n\n", b.name, b.addr));
    }
    let secret = "alice@example.com";
    let mut shown = Vec::new();
    for mode in ["", "show_keys = \"prefix\"", "show_keys = \"raw\""] {
        let p = Proxy::start_with_admin(mode, &cfg);
        skewed(&p, 400, 2, secret);
        let mut key = String::new();
        eventually(10, "the key ranked", || {
            key = p.admin_json("/admin/heat")["services"][0]["top_keys"][0]["key"].as_str().unwrap_or("").to_string();
            !key.is_empty()
        });
        shown.push(key);
    }
    let (hashed, prefix, raw) = (&shown[0], &shown[1], &shown[2]);
    assert!(hashed.starts_with('#') && !hashed.contains("alice") && !hashed.contains("example"), "{hashed}");
    assert!(prefix.starts_with("alic") && !prefix.contains("example"), "{prefix}");
    assert_eq!(raw, secret);
}
