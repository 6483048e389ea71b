//! The caching layer against real upstream processes: each RFC 9111 rule the
//! route cache implements, the safety rules, coalescing, revalidation,
//! stale-if-error, purges and invalidation.

mod common;
use common::*;

fn cached_proxy(extra: &str) -> (Proxy, Backend) {
    let a = backend("a");
    let cfg = format!(
        "[[routes]]\nname = \"web\"\nservice = \"app\"\ncache = {{ purge_from = [\"127.0.0.1\"], tag_header = \"surrogate-key\"{extra} }}\n\n{}",
        service("app", "round_robin", &[&a], "")
    );
    (Proxy::start(&cfg), a)
}

fn origin_count(b: &Backend) -> u64 {
    get(b.addr, "/admin/count").text().parse().unwrap()
}

fn req(p: &Proxy, method: &str, path: &str, headers: &str) -> Response {
    request(p.addr, &format!("{method} {path} HTTP/1.1\r\nHost: test.local\r\n{headers}Connection: close\r\n\r\n"))
}

#[test]
fn second_request_is_a_hit_with_age_and_status_headers() {
    let (p, a) = cached_proxy("");
    let first = p.get("/cc/a?cc=max-age=60");
    assert_eq!((first.status, first.header("x-cache")), (200, Some("MISS")));
    assert!(first.header("cache-status").unwrap().contains("fwd=uri-miss; stored"), "{:?}", first.headers);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = p.get("/cc/a?cc=max-age=60");
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert_eq!(second.text(), first.text());
    assert!(second.header("age").unwrap().parse::<u64>().unwrap() >= 1);
    assert!(second.header("cache-status").unwrap().starts_with("ringmaster; hit; ttl="), "{:?}", second.headers);
    assert_eq!(origin_count(&a), 1);
    // HEAD is answered from the stored GET, without a body.
    let head = req(&p, "HEAD", "/cc/a?cc=max-age=60", "");
    assert_eq!((head.status, head.header("x-cache"), head.body.len()), (200, Some("HIT"), 0));
    assert_eq!(origin_count(&a), 1);
}

#[test]
fn safety_rules_keep_private_answers_out() {
    let (p, a) = cached_proxy("");
    let twice = |path: &str, headers: &str| {
        req(&p, "GET", path, headers);
        req(&p, "GET", path, headers)
    };
    assert_eq!(twice("/cc/private?cc=private,%20max-age=60", "").header("x-cache"), Some("MISS"));
    assert_eq!(twice("/cc/auth?cc=max-age=60", "Authorization: Bearer t\r\n").header("x-cache"), Some("MISS"));
    assert_eq!(twice("/cc/authpub?cc=public,%20max-age=60", "Authorization: Bearer t\r\n").header("x-cache"), Some("HIT"));
    assert_eq!(twice("/cc/cookie?cc=max-age=60&cookie=1", "").header("x-cache"), Some("MISS"));
    assert_eq!(twice("/cc/nostore?cc=no-store", "").header("x-cache"), Some("MISS"));
    assert_eq!(twice("/cc/star?cc=max-age=60&vary=*", "").header("x-cache"), Some("MISS"));
    assert_eq!(twice("/cc/reqnostore?cc=max-age=60", "Cache-Control: no-store\r\n").header("x-cache"), Some("MISS"));
    let r = req(&p, "GET", "/cc/private?cc=private,%20max-age=60", "");
    assert!(r.header("cache-status").unwrap().contains("detail=private"), "{:?}", r.headers);
    assert_eq!(origin_count(&a), 14);
}

#[test]
fn vary_keeps_one_variant_per_value() {
    let (p, a) = cached_proxy("");
    let fr = req(&p, "GET", "/cc/v?cc=max-age=60&vary=accept-language", "Accept-Language: fr\r\n");
    let de = req(&p, "GET", "/cc/v?cc=max-age=60&vary=accept-language", "Accept-Language: de\r\n");
    assert!(fr.text().ends_with(" fr") && de.text().ends_with(" de"));
    let fr2 = req(&p, "GET", "/cc/v?cc=max-age=60&vary=accept-language", "Accept-Language: fr\r\n");
    let de2 = req(&p, "GET", "/cc/v?cc=max-age=60&vary=accept-language", "Accept-Language: de\r\n");
    assert_eq!((fr2.header("x-cache"), fr2.text()), (Some("HIT"), fr.text()));
    assert_eq!((de2.header("x-cache"), de2.text()), (Some("HIT"), de.text()));
    assert_eq!(origin_count(&a), 2);
}

#[test]
fn concurrent_misses_make_one_upstream_request() {
    let (p, a) = cached_proxy("");
    let p = std::sync::Arc::new(p);
    let handles: Vec<_> = (0..10)
        .map(|_| {
            let p = p.clone();
            std::thread::spawn(move || p.get("/cc/slow?cc=max-age=60&delay=500"))
        })
        .collect();
    let answers: Vec<Response> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(answers.iter().all(|r| r.status == 200 && r.text() == answers[0].text()));
    assert_eq!(origin_count(&a), 1, "N concurrent misses must make exactly one upstream request");
    assert!(p.metric("ringmaster_cache_coalesced_waits_total{route=\"web\"}") >= 9.0);
}

#[test]
fn stale_entries_are_revalidated_and_client_conditionals_answered() {
    let (p, a) = cached_proxy("");
    let first = p.get("/cc/r?cc=max-age=1&etag=v1");
    assert_eq!(first.status, 200);
    // Fresh: the client's own If-None-Match is answered 304 by the cache.
    let c = req(&p, "GET", "/cc/r?cc=max-age=1&etag=v1", "If-None-Match: \"v1\"\r\n");
    assert_eq!((c.status, c.header("x-cache")), (304, Some("HIT")));
    std::thread::sleep(std::time::Duration::from_millis(2100));
    // Stale: revalidated with If-None-Match; the origin's 304 refreshes the entry.
    let r = p.get("/cc/r?cc=max-age=1&etag=v1");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), first.text(), "the stored body is served after a 304");
    assert!(r.header("cache-status").unwrap().contains("fwd=stale; fwd-status=304"), "{:?}", r.headers);
    assert_eq!(origin_count(&a), 2);
    assert_eq!(p.get("/cc/r?cc=max-age=1&etag=v1").header("x-cache"), Some("HIT"));
}

#[test]
fn stale_if_error_serves_the_stored_answer_when_the_upstream_is_gone() {
    let (p, mut a) = cached_proxy("");
    let first = p.get("/cc/e?cc=max-age=1,%20stale-if-error=60");
    assert_eq!(first.status, 200);
    let _ = a.proc.0.kill();
    let _ = a.proc.0.wait();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let r = p.get("/cc/e?cc=max-age=1,%20stale-if-error=60");
    assert_eq!((r.status, r.text()), (200, first.text()));
    assert!(r.header("cache-status").unwrap().contains("stale-if-error"), "{:?}", r.headers);
    // Without stale-if-error the failure shows.
    assert_eq!(p.get("/cc/other?cc=max-age=60").status, 502);
}

#[test]
fn ranges_are_answered_from_the_stored_response() {
    let (p, _a) = cached_proxy("");
    let full = p.get("/cc/range?cc=max-age=60");
    let r = req(&p, "GET", "/cc/range?cc=max-age=60", "Range: bytes=0-5\r\n");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, full.body[..6].to_vec());
    assert_eq!(r.header("content-range").unwrap(), format!("bytes 0-5/{}", full.body.len()));
}

#[test]
fn purge_and_unsafe_methods_invalidate() {
    let (p, a) = cached_proxy("");
    p.get("/cc/p?cc=max-age=60");
    assert_eq!(p.get("/cc/p?cc=max-age=60").header("x-cache"), Some("HIT"));
    let purge = req(&p, "PURGE", "/cc/p?cc=max-age=60", "");
    assert_eq!((purge.status, purge.text().trim()), (200, "{\"purged\":1}"));
    assert_eq!(p.get("/cc/p?cc=max-age=60").header("x-cache"), Some("MISS"));
    // A successful POST to the URI invalidates it.
    assert_eq!(p.get("/cc/p?cc=max-age=60").header("x-cache"), Some("HIT"));
    let post = request(p.addr, "POST /cc/p?cc=max-age=60 HTTP/1.1\r\nHost: test.local\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    assert_eq!(post.status, 200);
    assert_eq!(p.get("/cc/p?cc=max-age=60").header("x-cache"), Some("MISS"));
    assert_eq!(origin_count(&a), 4);
}

#[test]
fn purge_is_refused_from_other_addresses() {
    let a = backend("a");
    let cfg = format!("[[routes]]\nservice = \"app\"\ncache = {{ }}\n\n{}", service("app", "round_robin", &[&a], ""));
    let p = Proxy::start(&cfg);
    assert_eq!(req(&p, "PURGE", "/x", "").status, 403);
}

#[test]
fn the_clients_address_reaches_the_origin_through_the_cache() {
    let (p, _a) = cached_proxy("");
    let r = req(&p, "GET", "/echo", "");
    assert_eq!(r.json()["headers"]["x-forwarded-for"], "127.0.0.1");
}

fn admin_post(p: &Proxy, path: &str) -> Response {
    request(p.admin, &format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
}

#[test]
fn admin_purges_by_tag_prefix_and_key_and_lists_top_keys() {
    let (p, _a) = cached_proxy("");
    for path in [
        "/cc/t1?cc=max-age=60&tag=red",
        "/cc/t2?cc=max-age=60&tag=red%20blue",
        "/cc/t3?cc=max-age=60&tag=blue",
        "/cc/x/1?cc=max-age=60",
        "/cc/x/2?cc=max-age=60",
    ] {
        p.get(path);
        assert_eq!(p.get(path).header("x-cache"), Some("HIT"), "{path}");
    }
    let cache = p.admin_json("/admin/cache");
    assert_eq!(cache["caches"][0]["entries"], 5);
    assert_eq!(cache["caches"][0]["top_keys"][0]["hits"], 1);
    let r = admin_post(&p, "/admin/cache/purge?route=web&tag=red");
    assert_eq!(r.json()["purged"], 2);
    assert_eq!(p.get("/cc/t1?cc=max-age=60&tag=red").header("x-cache"), Some("MISS"));
    assert_eq!(p.get("/cc/t3?cc=max-age=60&tag=blue").header("x-cache"), Some("HIT"));
    let r = admin_post(&p, "/admin/cache/purge?prefix=http://test.local/cc/x/");
    assert_eq!(r.json()["purged"], 2);
    assert_eq!(p.get("/cc/x/1?cc=max-age=60").header("x-cache"), Some("MISS"));
    let r = admin_post(&p, "/admin/cache/purge?key=http://test.local/cc/t3?cc=max-age=60%26tag=blue");
    assert_eq!(r.json()["purged"], 1);
    assert_eq!(admin_post(&p, "/admin/cache/purge?route=nope&tag=x").status, 404);
    assert_eq!(admin_post(&p, "/admin/cache/purge").status, 400);
}

#[test]
fn stale_while_revalidate_serves_stale_and_refreshes_once() {
    let (p, a) = cached_proxy("");
    // max-age=2: the origin's Date has whole seconds, so an answer can be up
    // to a second old when stored; with max-age=1 the refreshed answer could
    // be stale at once and refresh again.
    let path = "/cc/swr?cc=max-age=2,%20stale-while-revalidate=30";
    let first = p.get(path);
    std::thread::sleep(std::time::Duration::from_millis(3100));
    let stale = p.get(path);
    assert_eq!((stale.header("x-cache"), stale.text()), (Some("HIT"), first.text()));
    assert!(stale.header("cache-status").unwrap().contains("stale-while-revalidate"), "{:?}", stale.headers);
    // The background refresh lands; the next answer is the new one, fresh.
    eventually(5, "background refresh", || p.get(path).text() != first.text());
    assert_eq!(origin_count(&a), 2);
}

#[test]
fn head_can_be_left_out_of_cached_methods() {
    let (p, a) = cached_proxy(", methods = [\"GET\"]");
    p.get("/cc/h?cc=max-age=60");
    let head = req(&p, "HEAD", "/cc/h?cc=max-age=60", "");
    assert_eq!(head.header("x-cache"), None, "HEAD went past the cache");
    assert_eq!(origin_count(&a), 2);
    // ...and, being safe, did not invalidate the stored GET.
    assert_eq!(p.get("/cc/h?cc=max-age=60").header("x-cache"), Some("HIT"));
}

#[test]
fn only_if_cached_large_objects_and_heuristic_freshness() {
    let (p, a) = cached_proxy(", max_object_bytes = 10");
    // Nothing stored: only-if-cached gets 504 without going upstream.
    let r = req(&p, "GET", "/cc/oic?cc=max-age=60", "Cache-Control: only-if-cached\r\n");
    assert_eq!(r.status, 504);
    assert_eq!(origin_count(&a), 0);
    // A body over max_object_bytes passes through and is not stored.
    let big = p.get("/cc/this-path-makes-a-long-body?cc=max-age=60");
    assert!(big.body.len() > 10);
    assert_eq!(p.get("/cc/this-path-makes-a-long-body?cc=max-age=60").header("x-cache"), Some("MISS"));
    assert_eq!(p.metric("ringmaster_cache_too_large_total{route=\"web\"}"), 2.0);
    // No Cache-Control, but Last-Modified: heuristically fresh (10% of its age).
    let (p, _a) = cached_proxy("");
    p.get("/cc/h?lm=1");
    let r = p.get("/cc/h?lm=1");
    assert_eq!(r.header("x-cache"), Some("HIT"), "{:?}", r.headers);
}

#[test]
fn request_directives_are_honoured() {
    let (p, a) = cached_proxy("");
    let path = "/cc/rd?cc=max-age=1";
    p.get(path);
    // no-cache: the stored answer may not be used without going upstream.
    let r = req(&p, "GET", path, "Cache-Control: no-cache\r\n");
    assert_eq!(r.header("x-cache"), Some("MISS"));
    assert_eq!(origin_count(&a), 2);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    // Stale now: max-stale accepts it from the cache...
    let r = req(&p, "GET", path, "Cache-Control: max-stale=60\r\n");
    assert_eq!(r.header("x-cache"), Some("HIT"));
    assert_eq!(origin_count(&a), 2);
    // ...a plain request does not.
    assert_eq!(p.get(path).header("x-cache"), Some("MISS"));
    assert_eq!(origin_count(&a), 3);
    // Fresh for a minute, but a client's max-age=0 refuses an answer a second old.
    let long = "/cc/rd2?cc=max-age=60";
    p.get(long);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(p.get(long).header("x-cache"), Some("HIT"));
    let r = req(&p, "GET", long, "Cache-Control: max-age=0\r\n");
    assert_eq!(r.header("x-cache"), Some("MISS"));
    assert_eq!(origin_count(&a), 5);
}

/// The field lines of the answer to `GET path` (the connection closes after
/// it), lower-cased, exactly as they came on the wire.
fn field_lines(p: &Proxy, path: &str) -> Vec<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(p.addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n").unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    let text = String::from_utf8_lossy(&got).into_owned();
    let head = text.split("\r\n\r\n").next().unwrap();
    head.split("\r\n").skip(1).map(|l| l.to_ascii_lowercase()).collect()
}

#[test]
fn a_hit_carries_each_stored_field_once_as_the_miss_did() {
    let a = backend("a");
    let cfg = format!(
        "[rate_limits.anonymous]\nrate = 100\nperiod = \"1m\"\n\n[[routes]]\nname = \"web\"\nservice = \"app\"\nrate_limit = [\"anonymous\"]\ncache = {{ purge_from = [\"127.0.0.1\"] }}\n\n{}",
        service("app", "round_robin", &[&a], "")
    );
    let p = Proxy::start(&cfg);
    // Fields the cache or the limiter set per answer, and the connection's own.
    let per_answer = |l: &String| {
        ["age:", "x-cache:", "cache-status:", "connection:", "x-ratelimit-remaining:", "x-ratelimit-reset:", "ratelimit:"]
            .iter()
            .any(|f| l.starts_with(f))
    };
    let count = |lines: &[String], name: &str| lines.iter().filter(|l| l.starts_with(&format!("{name}:"))).count();
    // A stored head written as it was stored, and one holding a field the limiter
    // sets on every answer (the limiter's value replaces the upstream's, once).
    for path in
        ["/cc/plain?cc=max-age=60&etag=v1&lm=1&h=x-extra:one%2C%20two:%20three", "/cc/limited?cc=max-age=60&h=x-ratelimit-limit:999"]
    {
        let miss = field_lines(&p, path);
        let hit = field_lines(&p, path);
        assert!(miss.contains(&"x-cache: miss".to_string()) && hit.contains(&"x-cache: hit".to_string()), "{miss:?}\n{hit:?}");
        let (mut m, mut h): (Vec<String>, Vec<String>) =
            (miss.iter().filter(|l| !per_answer(l)).cloned().collect(), hit.iter().filter(|l| !per_answer(l)).cloned().collect());
        m.sort();
        h.sort();
        assert_eq!(m, h, "{path}: the hit's stored fields are the miss's");
        for name in ["date", "content-length", "content-type", "x-ratelimit-limit", "x-origin-count"] {
            assert_eq!(count(&hit, name), 1, "{path}: {name} once in {hit:?}");
        }
        assert!(hit.contains(&"x-ratelimit-limit: 100".to_string()), "{hit:?}");
    }
    assert_eq!(origin_count(&a), 2);
}
