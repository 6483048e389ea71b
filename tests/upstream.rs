//! Upstream connections: keep-alive reuse, stale pooled connections, HTTP/2 to
//! the upstream.

mod common;
use common::*;

fn ep_metric(p: &Proxy, name: &str, b: &Backend) -> f64 {
    p.metric(&format!("{name}{{service=\"app\",endpoint=\"{}\",address=\"{}\"}}", b.name, b.addr))
}

#[test]
fn upstream_connections_are_kept_alive_and_reused() {
    let a = backend("a");
    let p = Proxy::start(&(route_all("app") + &service("app", "round_robin", &[&a], "")));
    for _ in 0..20 {
        assert_eq!(p.get("/").status, 200);
    }
    // Sequential requests over fresh client connections share one upstream connection.
    assert_eq!(ep_metric(&p, "ringmaster_endpoint_connections_opened_total", &a), 1.0);
    assert_eq!(ep_metric(&p, "ringmaster_endpoint_connections_reused_total", &a), 19.0);
    assert_eq!(ep_metric(&p, "ringmaster_endpoint_connections_idle", &a), 1.0);
}

#[test]
fn a_backend_restart_does_not_fail_requests_on_stale_connections() {
    let mut a = backend("a");
    let p = Proxy::start(&(route_all("app") + &service("app", "round_robin", &[&a], "")));
    // Several pooled connections.
    let handles: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn({
                let addr = p.addr;
                move || get(addr, "/sleep/100").status
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 200);
    }
    assert!(ep_metric(&p, "ringmaster_endpoint_connections_idle", &a) >= 2.0);
    // Restart the backend on the same address: every pooled connection is now dead.
    let addr = a.addr;
    let _ = a.proc.0.kill();
    let _ = a.proc.0.wait();
    let child = std::process::Command::new(BIN)
        .args(["backend", "--listen", &addr.to_string(), "--name", "a"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    a.proc = Proc(child);
    wait_port(addr);
    // POST is not idempotent, yet it must not fail: nothing was written to the dead connections.
    for _ in 0..3 {
        let r = request(p.addr, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["body_len"], 3);
    }
}

#[test]
fn http2_to_the_upstream() {
    let a = backend("a");
    let p = Proxy::start(&(route_all("app") + &service("app", "round_robin", &[&a], "protocol = \"http2\"")));
    for _ in 0..5 {
        let r = p.get("/echo?x=1");
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["version"], "HTTP/2.0");
        // The client's host travels as :authority (RFC 9113 section 8.3.1), as Host
        // does over HTTP/1.1, and no separate host field can disagree with it.
        assert_eq!(v["uri"], "http://test.local/echo?x=1");
        assert!(v["headers"].get("host").is_none(), "{v}");
    }
    assert_eq!(ep_metric(&p, "ringmaster_endpoint_connections_opened_total", &a), 1.0);
}

/// `n` concurrent GETs of `path`; their statuses, sorted.
fn burst(p: &std::sync::Arc<Proxy>, n: usize, path: &'static str) -> Vec<u16> {
    let clients: Vec<_> = (0..n)
        .map(|_| {
            let p = p.clone();
            std::thread::spawn(move || p.get(path).status)
        })
        .collect();
    let mut s: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    s.sort();
    s
}

#[test]
fn connections_per_endpoint_are_capped_with_a_queue() {
    let a = backend("a");
    let cfg = |queue: &str| {
        route_all("app")
            + &service("app", "round_robin", &[&a], &format!("max_connections_per_endpoint = 2\ntimeouts = {{ queue = \"{queue}\" }}"))
    };
    // Two connections, four requests of 600 ms, a short queue: two wait past it.
    let p = std::sync::Arc::new(Proxy::start(&cfg("100ms")));
    assert_eq!(burst(&p, 4, "/sleep/600"), [200, 200, 503, 503]);
    assert_eq!(p.metric("ringmaster_local_answers_total{reason=\"endpoint_busy\"}"), 2.0);
    let pools = p.admin_json("/admin/pools");
    assert!(pools["pools"][0]["endpoints"][0]["connections_open"].as_u64().unwrap() <= 2, "{pools}");
    // A queue longer than a request: each waits for a connection to come back.
    let p = std::sync::Arc::new(Proxy::start(&cfg("3s")));
    assert_eq!(burst(&p, 4, "/sleep/300"), [200, 200, 200, 200]);
    // A busy endpoint sends the request to another (nothing was sent, so any method may go).
    let b = backend("b");
    let two =
        route_all("app") + &service("app", "round_robin", &[&a, &b], "max_connections_per_endpoint = 1\ntimeouts = { queue = \"50ms\" }");
    let p = std::sync::Arc::new(Proxy::start(&two));
    assert_eq!(burst(&p, 2, "/sleep/400"), [200, 200]);
}

/// An upstream that keeps a connection alive after each answer but closes it
/// when the next request arrives, without answering (it timed the connection
/// out as the request was on its way: the race every keep-alive pool meets).
fn closes_on_second_request() -> std::net::SocketAddr {
    use std::io::{Read, Write};
    raw_upstream(|mut s| {
        if read_head(&mut s).is_none() {
            return;
        }
        let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        // The next request's first byte: then close without a word.
        let _ = s.read(&mut [0u8; 1]);
    })
}

/// A GET written to a reused connection that the upstream closes as it
/// arrives is sent again on a fresh connection (nginx retries a failed
/// keep-alive connection too); a POST is not, as the upstream may have acted on it.
#[test]
fn an_idempotent_request_on_a_connection_closed_as_it_arrived_goes_again() {
    let up = closes_on_second_request();
    let p = Proxy::start(&format!(
        "[[routes]]\nservice = \"app\"\n\n[services.app]\nkind = \"replicated\"\nendpoints = [{{ address = \"{up}\" }}]\n"
    ));
    for i in 0..10 {
        assert_eq!(p.get("/").status, 200, "GET {i} on a connection the upstream closed as it arrived");
    }
    let post = || {
        let mut s = std::net::TcpStream::connect(p.addr).unwrap();
        std::io::Write::write_all(&mut s, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
        let mut got = String::new();
        std::io::Read::read_to_string(&mut s, &mut got).unwrap();
        got.lines().next().unwrap_or("").to_string()
    };
    assert_eq!(post(), "HTTP/1.1 502 Bad Gateway", "a POST on the pooled connection is not sent twice");
}

/// An upstream that answers before it has read the request's body (a 413, a
/// 401) reaches the client at once, while the client is still uploading, as
/// through HAProxy and Envoy; the client connection closes after the answer
/// (its body is unread).
#[test]
fn an_answer_sent_before_the_body_was_read_reaches_the_client_during_the_upload() {
    use std::io::{Read, Write};
    let up = raw_upstream(|mut s| {
        if read_head(&mut s).is_none() {
            return;
        }
        let _ = s.write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n\r\ntoo large");
        // Keeps the connection open, reading nothing more, for longer than the test waits.
        std::thread::sleep(std::time::Duration::from_secs(8));
    });
    let p = Proxy::start(&format!(
        "[[routes]]\nservice = \"app\"\n\n[services.app]\nkind = \"replicated\"\nendpoints = [{{ address = \"{up}\" }}]\n"
    ));
    let mut s = std::net::TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(4))).unwrap();
    // A million bytes announced, ten sent: the rest never comes while we wait.
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n0123456789").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"too large") {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("no answer during the upload ({e}); got {:?}", String::from_utf8_lossy(&got)),
        }
    }
    let got = String::from_utf8_lossy(&got).to_string();
    assert!(got.starts_with("HTTP/1.1 413 "), "{got}");
    // Our server loop says so (hyper's closes without the field).
    if std::env::var("RINGMASTER_TEST_HTTP1").as_deref() != Ok("hyper") {
        assert!(got.to_ascii_lowercase().contains("connection: close"), "the client connection closes after it: {got}");
    }
}
