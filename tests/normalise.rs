//! Normalise, with real processes: the Host is parsed and made canonical before
//! routing and cache keys (the cache-poisoning reproduction of issue 11), one Host
//! only, the absolute-form target wins, and hop-by-hop headers are gone before a
//! cache variant is computed.

mod common;
use common::*;

fn cached(b: &Backend) -> Proxy {
    Proxy::start(&format!("[[routes]]\nname = \"web\"\nservice = \"app\"\ncache = {{ }}\n\n{}", service("app", "round_robin", &[b], "")))
}

fn raw(p: &Proxy, target: &str, headers: &str) -> Response {
    request(p.addr, &format!("GET {target} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n"))
}

#[test]
fn a_host_with_a_path_cannot_poison_another_pages_cache_entry() {
    let a = backend("a");
    let p = cached(&a);
    // Before: `/cc/p1` for host `example.com/cc` was stored under the key of
    // `/cc/cc/p1` for host `example.com`, so the second request below was a hit.
    let r = raw(&p, "/cc/p1?cc=max-age=60", "Host: example.com/cc\r\n");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("not a valid authority"), "{}", r.text());
    let r = raw(&p, "/cc/cc/p1?cc=max-age=60", "Host: example.com\r\n");
    assert_eq!(r.status, 200);
    assert!(r.header("cache-status").unwrap().contains("fwd=uri-miss"), "{:?}", r.headers);
    for bad in ["a@example.com", "example.com?x", "exa mple.com", "example.com\\x", ""] {
        assert_eq!(raw(&p, "/", &format!("Host: {bad}\r\n")).status, 400, "{bad:?}");
    }
    assert_eq!(p.metric("ringmaster_local_answers_total{reason=\"bad_host\"}"), 6.0);
}

#[test]
fn one_host_canonical_and_the_absolute_target_wins() {
    let a = backend("a");
    let cfg = format!(
        "[[routes]]\nhost = \"example.com\"\nservice = \"app\"\n\n[[routes]]\nname = \"other\"\nservice = \"app\"\npath_prefix = \"/nowhere\"\n\n{}",
        service("app", "round_robin", &[&a], "")
    );
    let p = Proxy::start(&cfg);
    assert_eq!(raw(&p, "/echo", "Host: a.test\r\nHost: b.test\r\n").status, 400, "two Host fields");
    // Upper case, a trailing dot and the default port: the same host, forwarded canonical.
    let r = raw(&p, "/echo", "Host: EXAMPLE.com.:80\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["headers"]["host"], "example.com");
    // An absolute-form target: its authority wins over Host.
    let r = raw(&p, "http://Example.COM/echo", "Host: elsewhere.test\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["headers"]["host"], "example.com");
    // Route host patterns match the host without its port (as nginx's server_name does).
    let r = raw(&p, "/echo", "Host: example.com:8080\r\n");
    assert_eq!((r.status, r.json()["headers"]["host"].as_str()), (200, Some("example.com:8080")));
}

#[test]
fn hop_by_hop_headers_are_gone_before_the_cache_reads_vary() {
    let a = backend("a");
    let p = cached(&a);
    let path = "/cc/v?cc=max-age=60&vary=accept-language";
    // Accept-Language named in Connection is hop-by-hop: the origin never sees it,
    // and the answer is stored as the variant without it, not as the `fr` one.
    let r = raw(&p, path, "Host: test.local\r\nAccept-Language: fr\r\nConnection: accept-language\r\n");
    assert_eq!(r.status, 200);
    assert!(r.text().trim_end().ends_with("origin request 1"), "the origin saw no accept-language: {}", r.text());
    let fr = raw(&p, path, "Host: test.local\r\nAccept-Language: fr\r\n");
    assert!(fr.header("cache-status").unwrap().contains("fwd=uri-miss"), "the fr variant was not stored: {:?}", fr.headers);
    assert!(fr.text().ends_with("fr"), "{}", fr.text());
    let plain = raw(&p, path, "Host: test.local\r\n");
    assert!(plain.header("cache-status").unwrap().starts_with("ringmaster; hit"), "{:?}", plain.headers);
    assert!(plain.text().trim_end().ends_with("origin request 1"), "{}", plain.text());
}

#[test]
fn paths_match_routes_normalised_and_are_forwarded_so() {
    let (a, b) = (backend("a"), backend("b"));
    let cfg = format!(
        "[[routes]]\npath_prefix = \"/admin\"\nservice = \"admin\"\n\n[[routes]]\nservice = \"public\"\n\n{}{}",
        service("admin", "round_robin", &[&a], ""),
        service("public", "round_robin", &[&b], "")
    );
    let p = Proxy::start(&cfg);
    for target in ["/admin/echo", "/public/../admin/echo", "//admin/echo", "/%61dmin/echo", "/admin/./x/../echo"] {
        let r = raw(&p, target, "Host: x\r\n");
        assert_eq!((r.status, r.backend()), (200, "a".to_string()), "{target}: {}", r.text());
        assert_eq!(r.text().trim(), "hello from a: GET /admin/echo", "{target} is forwarded normalised");
    }
    let r = raw(&p, "/admin%2Fecho", "Host: x\r\n");
    assert_eq!(r.status, 400, "an encoded slash cannot be normalised safely");
    assert_eq!(raw(&p, "/a%00b", "Host: x\r\n").status, 400);
    assert_eq!(p.metric("ringmaster_local_answers_total{reason=\"bad_path\"}"), 2.0);
    // The query is kept as it came.
    let r = raw(&p, "/x/../admin/echo?q=%2F..", "Host: x\r\n");
    assert_eq!((r.status, r.backend()), (200, "a".to_string()), "{}", r.text());

    // Off per listener, as Envoy's normalize_path and merge_slashes are (these keys
    // land in the main [[listeners]] table that the harness writes just before).
    let p = Proxy::start(&format!("normalize_path = false\nmerge_slashes = false\n\n{cfg}"));
    let r = raw(&p, "//admin/echo", "Host: x\r\n");
    assert_eq!((r.status, r.backend(), r.text().trim()), (200, "b".to_string(), "hello from b: GET //admin/echo"));
    assert_eq!(raw(&p, "/public/../admin/echo", "Host: x\r\n").backend(), "b");
}

/// The first byte of the header block of the first HEADERS frame the proxy sends
/// back on stream 1 (an HPACK indexed field: 0x88 is `:status 200`, 0x8c `:status 400`).
fn h2_status_byte(p: &Proxy, host: &str) -> u8 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    s.write_all(PREFACE).unwrap();
    s.write_all(&frame(4, 0, 0, &[])).unwrap();
    // GET / with :scheme http, :authority localhost, and a host field (static index 38).
    let mut block = vec![0x82, 0x86, 0x84, 0x01, 9];
    block.extend_from_slice(b"localhost");
    block.extend_from_slice(&[0x0f, 0x17, host.len() as u8]);
    block.extend_from_slice(host.as_bytes());
    s.write_all(&frame(1, 0x5, 1, &block)).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed before answering");
        got.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        while got.len() >= at + 9 {
            let len = (got[at] as usize) << 16 | (got[at + 1] as usize) << 8 | got[at + 2] as usize;
            if got.len() < at + 9 + len {
                break;
            }
            let stream = u32::from_be_bytes(got[at + 5..at + 9].try_into().unwrap()) & 0x7fff_ffff;
            if got[at + 3] == 1 && stream == 1 {
                return got[at + 9];
            }
            at += 9 + len;
        }
    }
}

#[test]
fn over_http2_a_host_field_must_agree_with_authority() {
    let a = backend("a");
    let p = Proxy::start(&(route_all("app") + &service("app", "round_robin", &[&a], "")));
    assert_eq!(h2_status_byte(&p, "localhost"), 0x88, "host equal to :authority: 200");
    assert_eq!(h2_status_byte(&p, "other.test"), 0x8c, "host unlike :authority: 400");
    assert_eq!(p.metric("ringmaster_local_answers_total{reason=\"bad_host\"}"), 1.0);
}
