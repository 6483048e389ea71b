//! The cache's correctness and privacy rules against real upstream processes:
//! zero lifetimes, exact Age and Expires, targeted cache control (RFC 9213),
//! credentialed requests, the variant cap, and what a client's no-cache does.

mod common;
use common::*;

fn cached(extra: &str, top: &str) -> (Proxy, Backend) {
    let a = backend("a");
    let cfg = format!(
        "{top}[[routes]]\nname = \"web\"\nservice = \"app\"\ncache = {{ {extra} }}\n\n{}",
        service("app", "round_robin", &[&a], "")
    );
    (Proxy::start(&cfg), a)
}

fn origin_count(b: &Backend) -> u64 {
    get(b.addr, "/admin/count").text().parse().unwrap()
}

fn req(p: &Proxy, path: &str, headers: &str) -> Response {
    request(p.addr, &format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n{headers}Connection: close\r\n\r\n"))
}

/// The second of two identical requests.
fn twice(p: &Proxy, path: &str, headers: &str) -> Response {
    req(p, path, headers);
    req(p, path, headers)
}

#[test]
fn a_zero_lifetime_is_never_served_without_revalidation() {
    let (p, a) = cached("", "");
    for path in ["/cc/expires0?h=expires:0", "/cc/epoch?h=expires:Thu,%2001%20Jan%201970%2000:00:00%20GMT", "/cc/maxage0?cc=max-age=0"] {
        let before = origin_count(&a);
        let r = twice(&p, &format!("{path}&etag=v1"), "");
        let status = r.header("cache-status").unwrap_or_default().to_string();
        assert!(!status.contains("stale-while-revalidate") && !status.starts_with("ringmaster; hit"), "{path}: {status}");
        assert_eq!(origin_count(&a), before + 2, "{path}: the second request went to the origin");
    }
    // An Age that is not delta-seconds is ignored; a valid one that exceeds the lifetime makes it stale.
    assert_eq!(twice(&p, "/cc/age-bad?cc=max-age=60&h=age:soon", "").header("x-cache"), Some("HIT"));
    assert_eq!(twice(&p, "/cc/age-plus?cc=max-age=60&h=age:+100", "").header("x-cache"), Some("HIT"));
    assert_eq!(twice(&p, "/cc/age-old?cc=max-age=60&h=age:100", "").header("x-cache"), Some("MISS"));
    // max-age too large to represent is 2^31 seconds, not zero.
    assert_eq!(twice(&p, "/cc/huge?cc=max-age=99999999999999999999999", "").header("x-cache"), Some("HIT"));
}

#[test]
fn targeted_fields_direct_this_cache_before_cache_control() {
    let (p, _a) = cached("targeted_field = \"ringmaster-cache-control\"", "");
    assert_eq!(twice(&p, "/cc/cdn?cc=no-store&h=cdn-cache-control:max-age=60", "").header("x-cache"), Some("HIT"));
    assert_eq!(twice(&p, "/cc/cdn-no?cc=max-age=60&h=cdn-cache-control:no-store", "").header("x-cache"), Some("MISS"));
    // Our own field first; Expires is ignored under a targeted field.
    let own = "/cc/own?cc=no-store&h=cdn-cache-control:no-store&h=ringmaster-cache-control:max-age=60&h=expires:0";
    let r = twice(&p, own, "");
    assert_eq!(r.header("x-cache"), Some("HIT"));
    // The fields still reach the client (they are meant for every cache on the path).
    assert_eq!(r.header("cdn-cache-control"), Some("no-store"));
    let (p, _a) = cached("cdn_cache_control = false", "");
    assert_eq!(twice(&p, "/cc/cdn?cc=no-store&h=cdn-cache-control:max-age=60", "").header("x-cache"), Some("MISS"));
}

#[test]
fn answers_to_credentialed_requests_are_not_stored() {
    let identity = "[identity]\napi_key = { header = \"x-api-key\", query = \"api_key\" }\n[[identity.keys]]\nkey = \"k1\"\ntier = \"free\"\nowner = \"acme\"\n\n";
    let (p, a) = cached("", identity);
    let r = twice(&p, "/cc/account?cc=max-age=60", "Cookie: session=victim\r\n");
    assert_eq!(r.header("x-cache"), Some("MISS"));
    assert!(r.header("cache-status").unwrap().contains("detail=credentials"), "{:?}", r.headers);
    assert_eq!(twice(&p, "/cc/keyed?cc=max-age=60", "X-Api-Key: k1\r\n").header("x-cache"), Some("MISS"));
    assert_eq!(twice(&p, "/cc/q?cc=max-age=60&api_key=k1", "").header("x-cache"), Some("MISS"));
    // The victim's answer is not there for anyone else either.
    req(&p, "/cc/victim?cc=max-age=60", "Cookie: session=victim\r\n");
    let before = origin_count(&a);
    assert_eq!(req(&p, "/cc/victim?cc=max-age=60", "").header("x-cache"), Some("MISS"));
    assert_eq!(origin_count(&a), before + 1);
    // Unless the response says a shared cache may keep it.
    assert_eq!(twice(&p, "/cc/pub?cc=public,%20max-age=60", "Cookie: session=1\r\n").header("x-cache"), Some("HIT"));
    assert_eq!(twice(&p, "/cc/smax?cc=s-maxage=60", "X-Api-Key: k1\r\n").header("x-cache"), Some("HIT"));
    // A cache key that names cookies makes a Cookie part of what the answer is for.
    let (p, _a) = cached("key = { cookies = [\"lang\"] }", "");
    assert_eq!(twice(&p, "/cc/lang?cc=max-age=60", "Cookie: lang=fr\r\n").header("x-cache"), Some("HIT"));
}

#[test]
fn variants_per_key_are_capped_least_recently_used_first() {
    let (p, a) = cached("max_variants = 2", "");
    let path = "/cc/v?cc=max-age=60&vary=accept-language";
    let lang = |l: &str| req(&p, path, &format!("Accept-Language: {l}\r\n"));
    lang("en");
    lang("fr");
    assert_eq!(lang("en").header("x-cache"), Some("HIT"), "en is the most recently used now");
    lang("de");
    assert_eq!(p.metric("ringmaster_cache_variant_evictions_total{route=\"web\"}"), 1.0);
    let before = origin_count(&a);
    assert_eq!(lang("en").header("x-cache"), Some("HIT"));
    assert_eq!(lang("de").header("x-cache"), Some("HIT"));
    assert_eq!(lang("fr").header("x-cache"), Some("MISS"), "fr was the least recently used");
    assert_eq!(origin_count(&a), before + 1);
}

/// `n` concurrent requests with `Cache-Control: no-cache` for a stored entry; the origin's requests they made.
fn no_cache_burst(mode: &str, n: usize) -> u64 {
    let (p, a) = cached(&format!("request_no_cache = \"{mode}\""), "");
    let path = "/cc/nc?cc=max-age=60&etag=v1&delay=300";
    req(&p, path, "");
    let before = origin_count(&a);
    let p = std::sync::Arc::new(p);
    let clients: Vec<_> = (0..n)
        .map(|_| {
            let p = p.clone();
            std::thread::spawn(move || req(&p, path, "Cache-Control: no-cache\r\n"))
        })
        .collect();
    for c in clients {
        let r = c.join().unwrap();
        assert_eq!(r.status, 200, "{mode}: {}", r.text());
    }
    origin_count(&a) - before
}

#[test]
fn a_clients_no_cache_revalidates_once_for_all_or_as_configured() {
    assert_eq!(no_cache_burst("revalidate", 10), 1, "concurrent no-cache requests share one validation");
    assert_eq!(no_cache_burst("honour", 10), 10);
    assert_eq!(no_cache_burst("ignore", 10), 0);
}
