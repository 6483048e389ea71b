//! `ringmaster bench` against a real ringmaster and backend: closed and open
//! loops, latency measured from the intended send time (a stalled target
//! shows in the latency, not hidden by requests never sent), the proxy's own
//! CPU per request from its admin listener, histograms that decode, and the
//! same load with a route's cache on and off.

mod common;
use common::*;
use std::process::Command;

fn cached(backends: &[&Backend]) -> Proxy {
    let cfg = format!(
        "[[routes]]\nname = \"web\"\nservice = \"app\"\ncache = {{ purge_from = [\"127.0.0.1\"] }}\n\n{}",
        service("app", "round_robin", backends, "")
    );
    Proxy::start(&cfg)
}

fn bench(args: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN).arg("bench").args(args).arg("--json").output().unwrap();
    assert!(out.status.success(), "bench {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn a_closed_loop_counts_every_answer_and_the_proxys_cpu() {
    let a = backend("a");
    let p = cached(&[&a]);
    let url = format!("http://{}/echo", p.addr);
    let r = bench(&[&url, "-c", "4", "-d", "2s", "--admin", &p.admin.to_string()]);
    let n = r["requests"].as_u64().unwrap();
    assert!(n > 100, "{r}");
    assert_eq!(r["status"]["2xx"], n);
    assert_eq!(r["errors"], 0);
    assert!(r["latency_us"]["p50"].as_u64().unwrap() > 0 && r["latency_us"]["p99"].as_u64() >= r["latency_us"]["p50"].as_u64());
    assert!(r["proxy"]["cpu_us_per_request"].as_f64().unwrap() > 0.0, "{r}");
    // /echo is not cacheable: every request went upstream.
    assert!(r["upstream_requests"].as_u64().unwrap() >= n, "{r}");
    // The encoded histogram holds every answer (runs can be merged from it).
    let h = ringmaster::loadtest::report::decode(r["histogram"].as_str().unwrap()).unwrap();
    assert_eq!(h.len(), n);
}

#[test]
fn an_open_loop_sends_on_schedule_and_a_stall_shows_in_the_latency() {
    let a = backend("a");
    let p = cached(&[&a]);
    let r = bench(&[&format!("http://{}/echo", p.addr), "--rate", "200", "-d", "2s"]);
    // Every scheduled request is sent: 200/s for 2 s.
    let n = r["requests"].as_u64().unwrap();
    assert!((395..=405).contains(&n), "{r}");
    assert!(r["schedule_lag_us"]["p99"].as_u64().is_some(), "{r}");
    // One connection, answers that take 200 ms, a request due every 100 ms:
    // each waits for the one before, and the wait is latency (the tenth is
    // about a second late). A closed loop would say 200 ms.
    let slow = backend_with("slow", &["--delay-ms", "200"]);
    let r = bench(&[&format!("http://{}/", slow.addr), "--rate", "10", "-d", "1s", "-c", "1"]);
    assert_eq!(r["requests"], 10, "{r}");
    assert!(r["latency_us"]["max"].as_u64().unwrap() >= 1_000_000, "{r}");
    let closed = bench(&[&format!("http://{}/", slow.addr), "-d", "1s", "-c", "1"]);
    assert!(closed["latency_us"]["max"].as_u64().unwrap() < 600_000, "{closed}");
}

#[test]
fn compare_cache_runs_the_load_with_and_without_the_routes_cache() {
    let a = backend("a");
    let p = cached(&[&a]);
    let url = format!("http://{}/cc/page?cc=max-age=60", p.addr);
    let r = bench(&[&url, "-c", "2", "-d", "1s", "--admin", &p.admin.to_string(), "--compare-cache", "web"]);
    let (with, without) = (&r["with_cache"], &r["without_cache"]);
    let (up_with, up_without) = (with["upstream_requests"].as_u64().unwrap(), without["upstream_requests"].as_u64().unwrap());
    assert!(up_with <= 2, "with the cache, the origin is asked once: {r}");
    assert!(up_without >= without["requests"].as_u64().unwrap() && up_without > 50, "{r}");
    // The cache is on again afterwards.
    assert_eq!(p.admin_json("/admin/cache")["caches"][0]["on"], true);
    p.get("/cc/page?cc=max-age=60");
    assert_eq!(p.get("/cc/page?cc=max-age=60").header("x-cache"), Some("HIT"));
    // The table, for people.
    let out = Command::new(BIN)
        .args(["bench", &url, "-c", "1", "-d", "300ms", "--admin", &p.admin.to_string(), "--compare-cache", "web"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("with cache") && table.contains("upstream requests") && table.contains("saved"), "{table}");
    // A route without a cache is refused with the reason.
    let out = Command::new(BIN)
        .args(["bench", &url, "-d", "300ms", "--admin", &p.admin.to_string(), "--compare-cache", "nope"])
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no cached route"));
}

#[test]
fn the_cache_switch_is_an_admin_post_with_its_answers() {
    let a = backend("a");
    let p = cached(&[&a]);
    p.get("/cc/x?cc=max-age=60");
    assert_eq!(p.get("/cc/x?cc=max-age=60").header("x-cache"), Some("HIT"));
    let off = admin_post(&p, "/admin/cache/switch?route=web&on=false");
    assert_eq!(off.status, 200, "{}", off.text());
    assert_eq!(p.get("/cc/x?cc=max-age=60").header("x-cache"), None, "passed by while off");
    assert_eq!(admin_post(&p, "/admin/cache/switch?route=web&on=maybe").status, 400);
    assert_eq!(admin_post(&p, "/admin/cache/switch?route=nope&on=true").status, 404);
    assert_eq!(admin_post(&p, "/admin/cache/switch?route=web&on=true").status, 200);
    assert_eq!(p.get("/cc/x?cc=max-age=60").header("x-cache"), Some("HIT"), "what it held stays");
}

fn admin_post(p: &Proxy, path: &str) -> Response {
    request(p.admin, &format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
}

/// `memcache://`: gets and sets of Zipf keys through the ambassador; and
/// `--compare-hot-keys`: with the root cache mitigating, the hottest key's
/// reads stay at the root, so the shards get far fewer commands than without.
#[test]
fn memcache_loads_and_the_hot_key_comparison() {
    use common::mc::*;
    let (m1, m2) = (memcached(), memcached());
    let listen = free_addr();
    let cfg = ambassador(listen, &[("a", vec![m1.addr]), ("b", vec![m2.addr])], "function = \"maglev\"", "")
        + "[services.cache.heat]\nwindow = \"2s\"\nsample = 1\nhot_share = 0.2\n\n[services.cache.hot_keys]\ncache = true\nttl = \"10s\"\n";
    let p = Proxy::start(&cfg);
    wait_port(listen);
    let url = format!("memcache://{listen}");
    let r = bench(&[&url, "-c", "4", "-d", "1s", "--get-ratio", "0.5", "--keys", "zipf:1.0:100"]);
    let n = r["requests"].as_u64().unwrap();
    assert!(n > 100 && r["errors"] == 0, "{r}");
    assert_eq!(r["memcache"]["error_answers"], 0, "{r}");
    assert!(r["memcache"]["hit_or_stored"].as_u64().unwrap() > n / 2, "sets store and most gets then hit: {r}");
    // Zipf 2.0 over 100 keys: key:0 is most of the traffic, and hot.
    let args = [&url, "-c", "4", "-d", "2s", "--get-ratio", "1.0", "--keys", "zipf:2.0:100", "--admin", &p.admin.to_string()];
    let r = bench(&[&args[..], &["--compare-hot-keys", "cache"]].concat());
    let shard_total =
        |run: &serde_json::Value| run["shard_requests"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum::<u64>();
    let (with, without) = (&r["with_mitigation"], &r["without_mitigation"]);
    let (a, b) = (shard_total(with), shard_total(without));
    let (na, nb) = (with["requests"].as_u64().unwrap(), without["requests"].as_u64().unwrap());
    assert!(b >= nb, "without mitigation every get reaches a shard: {b} of {nb}");
    assert!((a as f64) < 0.6 * na as f64, "with it, the hot key's gets stay at the root: {a} of {na}");
    // Mitigation is on again afterwards, and the switch answers for a service without hot keys.
    let off = request(
        p.admin,
        "POST /admin/heat/mitigation?service=nope&on=false HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(off.status, 404);
}
