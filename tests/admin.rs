//! The admin listener's guard: a bearer token when configured, POST only for
//! what changes state, no cross-site requests, secrets redacted, slow clients
//! cut off, an empty purge prefix refused, and no token-less admin off loopback.

mod common;
use common::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn admin(p: &Proxy, method: &str, path: &str, headers: &str) -> Response {
    request(p.admin, &format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n", p.admin))
}

const BEARER: &str = "Authorization: Bearer t0ken-7\r\n";

#[test]
fn a_token_guards_everything_but_the_probes() {
    let a = backend("a");
    let p = Proxy::start_with_admin("token = \"t0ken-7\"", &(route_all("app") + &service("app", "round_robin", &[&a], "")));
    assert_eq!(admin(&p, "GET", "/healthz", "").status, 200);
    assert_eq!(admin(&p, "GET", "/readyz", "").status, 200);
    let r = admin(&p, "GET", "/metrics", "");
    assert_eq!((r.status, r.header("www-authenticate")), (401, Some("Bearer")));
    assert_eq!(admin(&p, "GET", "/admin/config", "Authorization: Bearer wrong\r\n").status, 401);
    assert_eq!(admin(&p, "POST", "/admin/reload", "").status, 401);
    assert_eq!(admin(&p, "POST", "/admin/reload", BEARER).status, 200);
    let m = admin(&p, "GET", "/metrics", BEARER).text();
    assert!(m.contains("ringmaster_admin_refused_total 3"), "{m}");
    // Redacted, even for the token holder.
    let cfg = admin(&p, "GET", "/admin/config", BEARER).text();
    assert!(!cfg.contains("t0ken-7") && cfg.contains("<redacted>"), "{cfg}");
}

#[test]
fn state_changes_need_post_from_the_same_site() {
    let a = backend("a");
    let p = Proxy::start(&(route_all("app") + &service("app", "round_robin", &[&a], "")));
    assert_eq!(admin(&p, "GET", "/admin/reload", "").status, 405);
    assert_eq!(admin(&p, "GET", "/admin/cache/purge", "").status, 405);
    assert_eq!(admin(&p, "POST", "/admin/reload", "Origin: https://evil.example\r\n").status, 403);
    assert_eq!(admin(&p, "POST", "/admin/reload", "Sec-Fetch-Site: cross-site\r\n").status, 403);
    assert_eq!(p.metric("ringmaster_reloads_total"), 0.0, "no refused reload ran");
    assert_eq!(admin(&p, "POST", "/admin/reload", "Sec-Fetch-Site: same-origin\r\n").status, 200);
    assert_eq!(admin(&p, "POST", "/admin/reload", &format!("Origin: http://{}\r\n", p.admin)).status, 200);
    assert_eq!(p.metric("ringmaster_reloads_total"), 2.0);
}

#[test]
fn secrets_are_redacted_in_the_config_view() {
    let a = backend("a");
    let body = format!(
        "[identity]\napi_key = {{ header = \"x-api-key\" }}\njwt = {{ hs256_secret = \"jwt-secret-9\" }}\n[[identity.keys]]\nkey = \"plain-key-5\"\ntier = \"t\"\nowner = \"o\"\n\n[rate_limit_store]\nredis = \"redis://user:redis-pw-3@127.0.0.1:1/0\"\n\n{}{}",
        route_all("app"),
        service("app", "round_robin", &[&a], "")
    );
    let p = Proxy::start(&body);
    let cfg = admin(&p, "GET", "/admin/config", "").text();
    for secret in ["jwt-secret-9", "plain-key-5", "redis-pw-3"] {
        assert!(!cfg.contains(secret), "{secret} shown:\n{cfg}");
    }
    assert!(cfg.contains("redis://user:<redacted>@127.0.0.1:1/0"), "{cfg}");
}

#[test]
fn an_empty_purge_prefix_is_refused() {
    let a = backend("a");
    let p = Proxy::start(&format!(
        "[[routes]]\nname = \"web\"\nservice = \"app\"\ncache = {{}}\n\n{}",
        service("app", "round_robin", &[&a], "")
    ));
    p.get("/cc/x?cc=max-age=60");
    let r = admin(&p, "POST", "/admin/cache/purge?route=web&prefix=", "");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(p.get("/cc/x?cc=max-age=60").header("x-cache"), Some("HIT"));
}

#[test]
fn a_slow_admin_client_is_cut_off() {
    let a = backend("a");
    let p = Proxy::start(&format!(
        "[limits]\nheader_read_timeout = \"500ms\"\n\n{}{}",
        route_all("app"),
        service("app", "round_robin", &[&a], "")
    ));
    let mut s = std::net::TcpStream::connect(p.admin).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(started.elapsed() < Duration::from_secs(5), "the admin listener waited {:?} for a header", started.elapsed());
}

#[test]
fn an_admin_off_loopback_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[admin]\nlisten = \"0.0.0.0:9901\"\n\n[[listeners]]\nname = \"m\"\nlisten = \"127.0.0.1:1\"\n").unwrap();
    let out = std::process::Command::new(BIN).args(["check", "--config", cfg.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && err.contains(":2:10: the admin listener on 0.0.0.0:9901 is reachable from other machines"), "{err}");
    std::fs::write(&cfg, "[admin]\nlisten = \"0.0.0.0:9901\"\ntoken = \"x\"\n\n[[listeners]]\nname = \"m\"\nlisten = \"127.0.0.1:1\"\n")
        .unwrap();
    let out = std::process::Command::new(BIN).args(["check", "--config", cfg.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// DNS rebinding: a page served under a name that resolves to the admin
/// listener reads nothing and reloads nothing; IP addresses, `localhost` and
/// the names in `admin.hosts` are answered.
#[test]
fn the_admin_answers_only_its_own_names_in_host() {
    let a = backend("a");
    let p = Proxy::start_with_admin("hosts = [\"admin.example\"]", &(route_all("app") + &service("app", "round_robin", &[&a], "")));
    let ask = |method: &str, path: &str, host: &str| {
        request(p.admin, &format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
    };
    for host in ["evil.example", "evil.example:80", &format!("rebound.example:{}", p.admin.port())] {
        let r = ask("GET", "/admin/config", host);
        assert_eq!(r.status, 403, "{host}: {}", r.text());
        assert!(r.text().contains("admin.hosts"), "{}", r.text());
        assert_eq!(ask("POST", "/admin/reload", host).status, 403, "{host}");
    }
    for host in [p.admin.to_string(), "localhost".to_string(), format!("admin.example:{}", p.admin.port())] {
        assert_eq!(ask("GET", "/admin/config", &host).status, 200, "{host}");
    }
    assert_eq!(ask("GET", "/readyz", "evil.example").status, 200, "probes stay open");
    assert!(p.metric("ringmaster_admin_refused_total") >= 6.0);
}

/// A read-only token for what peers and scrapers read: GET `/admin/heat` and
/// `/metrics` with it, nothing else; the full token still opens everything.
#[test]
fn the_heat_token_reads_heat_and_metrics_only() {
    let a = backend("a");
    let p = Proxy::start_with_admin(
        "token = \"t0ken-7\"\nheat_token = \"peek-3\"",
        &(route_all("app") + &service("app", "round_robin", &[&a], "")),
    );
    let peek = "Authorization: Bearer peek-3\r\n";
    assert_eq!(admin(&p, "GET", "/admin/heat", peek).status, 200);
    assert_eq!(admin(&p, "GET", "/metrics", peek).status, 200);
    for (method, path) in [("GET", "/admin/config"), ("GET", "/admin/pools"), ("POST", "/admin/reload"), ("POST", "/admin/cache/purge")] {
        assert_eq!(admin(&p, method, path, peek).status, 401, "{method} {path} with the read-only token");
    }
    assert_eq!(admin(&p, "GET", "/admin/config", BEARER).status, 200);
    assert_eq!(admin(&p, "GET", "/admin/heat", BEARER).status, 200);
    assert!(!admin(&p, "GET", "/admin/config", BEARER).text().contains("peek-3"), "the heat token is redacted too");
}

/// The admin listener over HTTPS (`[admin] tls`): answered over TLS, not in
/// plain text.
#[test]
fn the_admin_listener_speaks_tls_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let ca = common::pki::Ca::new("admin test CA");
    ca.write_leaf(dir.path(), "admin", "admin", &["admin.test"]);
    let d = |f: &str| dir.path().join(f).display().to_string();
    let a = backend("a");
    let p = Proxy::start_with_admin(
        &format!(
            "hosts = [\"admin.test\"]\ntls = {{ certificates = [{{ cert = \"{}\", key = \"{}\" }}] }}",
            d("admin.crt"),
            d("admin.key")
        ),
        &(route_all("app") + &service("app", "round_robin", &[&a], "")),
    );
    let cfg = common::pki::client_config(&ca.pem, None, &["http/1.1"]);
    let r = common::pki::TlsConn::open(p.admin, "admin.test", &cfg).unwrap().get("admin.test", "/admin/heat", "").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["services"].is_array());
    assert!(request_bytes(p.admin, b"GET /admin/heat HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_or(true, |r| r.status != 200));
}
