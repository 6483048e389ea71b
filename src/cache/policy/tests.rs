//! RFC 9111 rules, one by one.

use super::*;
use http::HeaderValue;

fn h(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in pairs {
        m.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    m
}

fn settings() -> Settings {
    Settings {
        default_ttl: 0,
        max_ttl: 86_400,
        heuristic_cap: 3_600,
        store_set_cookie: false,
        stale_while_revalidate: 0,
        stale_if_error: 0,
        targeted: vec![http::HeaderName::from_static("ringmaster-cache-control"), http::HeaderName::from_static("cdn-cache-control")],
    }
}

fn store(req: &[(&str, &str)], status: u16, resp: &[(&str, &str)]) -> Result<u64, NotStored> {
    let (rq, rs) = (h(req), h(resp));
    storable(
        &Method::GET,
        rq.contains_key(http::header::AUTHORIZATION),
        &CacheControl::parse(&rq),
        StatusCode::from_u16(status).unwrap(),
        &rs,
        &CacheControl::parse(&rs),
        &settings(),
    )
}

#[test]
fn parses_directives() {
    let cc = CacheControl::parse(&h(&[
        ("cache-control", "public, max-age=60, s-maxage=\"120\""),
        ("cache-control", "no-cache=\"set-cookie, x\", stale-if-error=30"),
    ]));
    assert!(cc.public && cc.no_cache);
    assert_eq!((cc.max_age, cc.s_maxage, cc.stale_if_error), (Some(60), Some(120), Some(30)));
    let cc = CacheControl::parse(&h(&[("cache-control", "max-stale, min-fresh=5, only-if-cached")]));
    assert_eq!((cc.max_stale, cc.min_fresh, cc.only_if_cached), (Some(None), Some(5), true));
    assert!(CacheControl::parse(&h(&[("pragma", "no-cache")])).no_cache);
    assert!(!CacheControl::parse(&h(&[("pragma", "no-cache"), ("cache-control", "max-age=5")])).no_cache);
}

#[test]
fn storability_rules() {
    assert_eq!(store(&[], 200, &[("cache-control", "max-age=60")]), Ok(60));
    assert_eq!(store(&[], 200, &[("cache-control", "s-maxage=30, max-age=60")]), Ok(30));
    assert_eq!(store(&[], 200, &[("cache-control", "no-store, max-age=60")]), Err(NotStored::NoStore));
    assert_eq!(store(&[("cache-control", "no-store")], 200, &[("cache-control", "max-age=60")]), Err(NotStored::NoStore));
    assert_eq!(store(&[], 200, &[("cache-control", "private, max-age=60")]), Err(NotStored::Private));
    assert_eq!(store(&[("authorization", "Bearer x")], 200, &[("cache-control", "max-age=60")]), Err(NotStored::Credentials));
    assert_eq!(store(&[("authorization", "Bearer x")], 200, &[("cache-control", "public, max-age=60")]), Ok(60));
    assert_eq!(store(&[("authorization", "Bearer x")], 200, &[("cache-control", "s-maxage=9")]), Ok(9));
    assert_eq!(store(&[], 200, &[("cache-control", "max-age=60"), ("set-cookie", "a=1")]), Err(NotStored::SetCookie));
    assert_eq!(store(&[], 200, &[("cache-control", "max-age=60"), ("vary", "accept, *")]), Err(NotStored::VaryStar));
    assert_eq!(store(&[], 206, &[("cache-control", "max-age=60")]), Err(NotStored::Status));
    assert_eq!(store(&[], 500, &[]), Err(NotStored::Status));
    assert_eq!(store(&[], 200, &[]), Err(NotStored::NoFreshness));
    // max_ttl caps.
    assert_eq!(store(&[], 200, &[("cache-control", "max-age=999999")]), Ok(86_400));
}

#[test]
fn expires_and_heuristics() {
    let date = "Tue, 24 Nov 2026 10:00:00 GMT";
    assert_eq!(store(&[], 200, &[("date", date), ("expires", "Tue, 24 Nov 2026 10:05:00 GMT")]), Ok(300));
    // An invalid Expires is already expired (but kept when it can be revalidated).
    assert_eq!(store(&[], 200, &[("date", date), ("expires", "0"), ("etag", "\"v1\"")]), Ok(0));
    // 10% of the time since Last-Modified, capped.
    assert_eq!(store(&[], 200, &[("date", date), ("last-modified", "Tue, 24 Nov 2026 09:00:00 GMT")]), Ok(360));
    assert_eq!(store(&[], 200, &[("date", date), ("last-modified", "Tue, 01 Jan 2019 00:00:00 GMT")]), Ok(3_600));
    // Not heuristically cacheable: 302 needs explicit freshness.
    assert_eq!(store(&[], 302, &[("date", date), ("last-modified", "Tue, 24 Nov 2026 09:00:00 GMT")]), Err(NotStored::Status));
}

#[test]
fn age_calculation() {
    let resp = h(&[("age", "10")]);
    // Sent at 100, answered at 103 (3 s delay), Age 10: initial age 13.
    let t = Timing::new(100, 103, &resp, 60);
    assert_eq!(t.age(103), 13);
    assert_eq!(t.age(150), 60);
    assert!(t.is_fresh(149) && !t.is_fresh(150));
    assert_eq!(t.staleness(160), 10);
}

#[test]
fn request_directives_and_revalidation() {
    let s = settings();
    let t = Timing::new(0, 0, &HeaderMap::new(), 60);
    let none = CacheControl::default();
    let cc = |v: &str| CacheControl::parse(&h(&[("cache-control", v)]));
    assert_eq!(usable(&none, Reuse::of(&none), &t, 30, &s), Usable::Fresh);
    assert_eq!(usable(&cc("no-cache"), Reuse::of(&none), &t, 30, &s), Usable::Validate { if_error: true });
    assert_eq!(usable(&cc("max-age=10"), Reuse::of(&none), &t, 30, &s), Usable::Validate { if_error: true });
    assert_eq!(usable(&cc("min-fresh=40"), Reuse::of(&none), &t, 30, &s), Usable::Validate { if_error: true });
    assert_eq!(usable(&none, Reuse::of(&none), &t, 70, &s), Usable::Validate { if_error: false });
    assert_eq!(usable(&cc("max-stale=20"), Reuse::of(&none), &t, 70, &s), Usable::Fresh);
    assert_eq!(usable(&cc("max-stale"), Reuse::of(&none), &t, 7000, &s), Usable::Fresh);
    // must-revalidate forbids serving stale, even when asked.
    assert_eq!(usable(&cc("max-stale"), Reuse::of(&cc("must-revalidate")), &t, 70, &s), Usable::Validate { if_error: false });
    // Response no-cache: always validate.
    assert_eq!(usable(&none, Reuse::of(&cc("no-cache")), &t, 1, &s), Usable::Validate { if_error: false });
    // stale-while-revalidate and stale-if-error from the response.
    let swr = cc("max-age=60, stale-while-revalidate=30, stale-if-error=100");
    assert_eq!(usable(&none, Reuse::of(&swr), &t, 80, &s), Usable::StaleWhileRevalidate);
    assert_eq!(usable(&none, Reuse::of(&swr), &t, 120, &s), Usable::Validate { if_error: true });
    assert_eq!(usable(&none, Reuse::of(&swr), &t, 200, &s), Usable::Validate { if_error: false });
    // ...and from the operator's grace.
    let grace = Settings { stale_while_revalidate: 30, ..settings() };
    assert_eq!(usable(&none, Reuse::of(&none), &t, 80, &grace), Usable::StaleWhileRevalidate);
}

#[test]
fn delta_seconds_are_digits_and_saturate() {
    assert_eq!(delta_seconds("60"), Some(60));
    assert_eq!(delta_seconds("+60"), None);
    assert_eq!(delta_seconds("-1"), None);
    assert_eq!(delta_seconds(""), None);
    assert_eq!(delta_seconds("99999999999999999999999"), Some(1 << 31));
    let cc = CacheControl::parse(&h(&[("cache-control", "max-age=99999999999999999999")]));
    assert_eq!(cc.max_age, Some(1 << 31));
}

#[test]
fn a_targeted_field_replaces_cache_control_and_expires() {
    let s = settings();
    let resp = h(&[("cache-control", "no-store"), ("cdn-cache-control", "max-age=30"), ("expires", "0")]);
    let cc = CacheControl::for_response(&resp, &s.targeted);
    assert!(cc.targeted && !cc.no_store);
    assert_eq!(freshness_lifetime(StatusCode::OK, &resp, &cc, &s), 30);
    let resp = h(&[("cache-control", "max-age=5"), ("cdn-cache-control", "")]);
    assert_eq!(CacheControl::for_response(&resp, &s.targeted).max_age, Some(5), "an empty targeted field is skipped");
}

#[test]
fn no_grace_means_a_zero_lifetime_entry_must_be_validated() {
    let t = Timing { request_time: 100, response_time: 100, initial_age: 0, lifetime: 0 };
    let none = CacheControl::default();
    assert_eq!(usable(&none, Reuse::of(&none), &t, 100, &settings()), Usable::Validate { if_error: false });
    let grace = Settings { stale_while_revalidate: 5, ..settings() };
    assert_eq!(usable(&none, Reuse::of(&none), &t, 100, &grace), Usable::StaleWhileRevalidate);
}
