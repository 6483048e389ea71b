//! The edge's refusals of what would pass routes, limits and auth: upgrades
//! other than the route allows (h2c never), and TRACE and PURGE where no
//! route asks for them.

mod common;
use common::*;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

/// A backend that switches to any protocol it is asked to (as a careless h2c
/// server would) and then echoes raw bytes; otherwise it answers 200 with the
/// request head it received as its body. Every head is kept.
fn switching_backend() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    let addr = raw_upstream(move |mut s| {
        let Some(head) = read_head(&mut s) else { return };
        let text = String::from_utf8_lossy(&head).to_string();
        seen.lock().unwrap().push(text.clone());
        if let Some(line) = text.lines().find(|l| l.to_ascii_lowercase().starts_with("upgrade:")) {
            let proto = line[8..].trim();
            let _ = write!(s, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {proto}\r\n\r\n");
            let mut buf = [0u8; 1024];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        } else {
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}", text.len());
        }
    });
    (addr, heads)
}

fn proxy(backend: std::net::SocketAddr, route_extra: &str) -> Proxy {
    Proxy::start(&format!(
        "[[routes]]\nservice = \"app\"\n{route_extra}\n\n[services.app]\nkind = \"replicated\"\nendpoints = [{{ address = \"{backend}\" }}]\n"
    ))
}

/// The status line of what the proxy answers to `raw`.
fn status_of(p: &Proxy, raw: &str) -> String {
    let mut s = std::net::TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
        got.push(b[0]);
    }
    String::from_utf8_lossy(&got).trim().to_string()
}

/// h2c smuggling: `Upgrade: h2c` with HTTP2-Settings would give the client a
/// raw tunnel to the backend past every route. It is never forwarded: the
/// request goes on as plain HTTP/1.1 (as RFC 9113 lets a server ignore it).
#[test]
fn h2c_upgrades_are_never_forwarded() {
    let (addr, heads) = switching_backend();
    for route in ["", "upgrades = [\"websocket\"]"] {
        let p = proxy(addr, route);
        let line = status_of(
            &p,
            "GET /internal HTTP/1.1\r\nHost: test.local\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        );
        assert_eq!(line, "HTTP/1.1 200 OK", "{route:?}");
        // HTTP2-Settings not named in Connection is dropped too.
        let line = status_of(
            &p,
            "GET /internal HTTP/1.1\r\nHost: test.local\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        );
        assert_eq!(line, "HTTP/1.1 200 OK", "{route:?}");
        let last = heads.lock().unwrap().last().cloned().unwrap().to_ascii_lowercase();
        assert!(!last.contains("upgrade") && !last.contains("http2-settings"), "{last}");
        assert!(p.metric("ringmaster_upgrades_refused_total") >= 2.0, "refusals are counted");
        assert_eq!(p.metric("ringmaster_upgrades_total"), 0.0);
    }
}

/// Upgrades are allowed per route from a list (WebSocket by default); any
/// other protocol is not forwarded unless the route names it.
#[test]
fn a_route_forwards_only_the_upgrades_it_lists() {
    let (addr, heads) = switching_backend();
    let ask = "GET /x HTTP/1.1\r\nHost: test.local\r\nUpgrade: custom-proto\r\nConnection: Upgrade\r\n\r\n";
    let p = proxy(addr, "");
    assert_eq!(status_of(&p, ask), "HTTP/1.1 200 OK");
    assert!(!heads.lock().unwrap().last().unwrap().to_ascii_lowercase().contains("upgrade"));
    let p = proxy(addr, "upgrades = [\"custom-proto\"]");
    assert_eq!(status_of(&p, ask), "HTTP/1.1 101 Switching Protocols");
    assert_eq!(p.metric("ringmaster_upgrades_total"), 1.0);
}

#[test]
fn h2c_in_a_routes_upgrades_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[[routes]]\nservice = \"app\"\nupgrades = [\"websocket\", \"h2c\"]\n\n[services.app]\nkind = \"replicated\"\nendpoints = [{ address = \"127.0.0.1:1\" }]\n").unwrap();
    let out = std::process::Command::new(BIN).args(["check", "--config", cfg.to_str().unwrap()]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(said.contains("h2c") && said.contains(":3:"), "{said}");
}

/// TRACE (which echoes what the client sent, cookies of other hops included)
/// and PURGE (a cache's verb) are answered 405 where no route names them, and
/// never reach the origin.
#[test]
fn trace_and_purge_reach_no_origin_unless_a_route_allows_them() {
    let a = backend("a");
    let requests = || get(a.addr, "/admin/requests").text().trim().parse::<u64>().unwrap();
    let p = Proxy::start(&(route_all("app") + &service("app", "round_robin", &[&a], "")));
    let before = requests();
    for method in ["TRACE", "PURGE"] {
        let r = request(p.addr, &format!("{method} /x HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n"));
        assert_eq!(r.status, 405, "{method}");
        assert!(r.header("allow").is_some(), "{method}: a 405 says what is allowed");
    }
    assert_eq!(requests(), before, "the origin saw none of them");
    assert_eq!(p.metric("ringmaster_local_answers_total{reason=\"method_not_allowed\"}"), 2.0);
    // A route that names TRACE forwards it.
    let p = Proxy::start(&format!(
        "[[routes]]\nservice = \"app\"\nmethods = [\"GET\", \"TRACE\"]\n\n{}",
        service("app", "round_robin", &[&a], "")
    ));
    let r = request(p.addr, "TRACE /x HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n");
    assert_ne!(r.status, 405);
    assert_eq!(requests(), before + 1);
}
