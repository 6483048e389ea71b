//! Forwarding headers with trusted and untrusted peers, the access log, and
//! HTTP/2 prior knowledge from clients.

mod common;
use common::*;

fn echo_headers(p: &Proxy, extra: &str) -> serde_json::Value {
    let r = request(p.addr, &format!("GET /echo HTTP/1.1\r\nHost: shop.example\r\n{extra}Connection: close, x-drop-me\r\nX-Drop-Me: 1\r\nKeep-Alive: timeout=5\r\n\r\n"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("via"), Some("1.1 ringmaster"));
    r.json()["headers"].clone()
}

#[test]
fn untrusted_peer_cannot_spoof_its_address() {
    let a = backend("a");
    let log = "[access_log]\nformat = \"json\"\n\n";
    let p = Proxy::start(&(log.to_string() + &route_all("app") + &service("app", "round_robin", &[&a], "")));
    let h = echo_headers(&p, "X-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-Forwarded-Proto: https\r\n");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example");
    assert_eq!(h["forwarded"], "for=127.0.0.1;host=shop.example;proto=http");
    assert_eq!(h["via"], "1.1 ringmaster");
    assert_eq!(h["host"], "shop.example");
    assert!(h.get("x-drop-me").is_none() && h.get("keep-alive").is_none(), "hop-by-hop leaked: {h}");
    eventually(5, "access log line", || p.stdout().contains("\"/echo\""));
    let line: serde_json::Value = serde_json::from_str(p.stdout().lines().next().unwrap()).unwrap();
    assert_eq!(line["client"], "127.0.0.1");
    assert_eq!(line["status"], 200);
    assert_eq!(line["endpoint"], "a");
    assert_eq!(line["route"], "all");
}

#[test]
fn trusted_proxy_chain_is_kept_and_client_is_the_real_one() {
    let a = backend("a");
    let top = "[server]\ntrusted_proxies = [\"127.0.0.0/8\", \"10.0.0.0/8\"]\n\n[access_log]\nformat = \"combined\"\n\n";
    let p = Proxy::start(&(top.to_string() + &route_all("app") + &service("app", "round_robin", &[&a], "")));
    let h = echo_headers(&p, "X-Forwarded-For: 203.0.113.9, 10.1.2.3\r\nX-Forwarded-Proto: https\r\nForwarded: for=203.0.113.9\r\n");
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 10.1.2.3, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["forwarded"], "for=203.0.113.9, for=127.0.0.1;host=shop.example;proto=http");
    // The client every later stage sees is the nearest untrusted hop.
    eventually(5, "access log line", || p.stdout().contains("/echo"));
    assert!(p.stdout().starts_with("203.0.113.9 - - ["), "{}", p.stdout());
    assert!(p.stdout().contains("\"GET /echo HTTP/1.1\" 200"), "{}", p.stdout());
}

#[tokio::test]
async fn http2_prior_knowledge_reaches_an_http1_upstream() {
    use http_body_util::{BodyExt, Empty};
    let a = backend("a");
    let p = Proxy::start(&(route_all("app") + &service("app", "round_robin", &[&a], "")));
    let stream = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let req = http::Request::get(format!("http://{}/echo", p.addr)).body(Empty::<bytes::Bytes>::new()).unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["version"], "HTTP/1.1");
        assert_eq!(v["headers"]["via"], "2 ringmaster");
        assert_eq!(v["headers"]["host"], p.addr.to_string());
    }
}

#[test]
fn expect_100_continue_is_answered_without_a_deadlock() {
    let a = backend("a");
    let p = Proxy::start(&format!("[limits]\nmax_body_bytes = 100000\n\n{}{}", route_all("app"), service("app", "round_robin", &[&a], "")));
    let dir = tempfile::tempdir().unwrap();
    let curl = |size: usize| {
        let file = dir.path().join(format!("body-{size}"));
        std::fs::write(&file, "x".repeat(size)).unwrap();
        let started = std::time::Instant::now();
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "--expect100-timeout",
                "20",
                "--max-time",
                "30",
                "-H",
                "Expect: 100-continue",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .args(["--data-binary", &format!("@{}", file.display())])
            .arg(format!("http://{}/echo", p.addr))
            .output()
            .unwrap();
        (String::from_utf8_lossy(&out.stdout).to_string(), started.elapsed())
    };
    // The body is asked for (100 Continue) and forwarded.
    let (status, took) = curl(50_000);
    assert_eq!(status, "200");
    assert!(took < std::time::Duration::from_secs(10), "curl waited {took:?} for 100 Continue");
    // Over the limit by its Content-Length: refused at once, the body never asked for.
    let (status, took) = curl(200_000);
    assert_eq!(status, "413");
    assert!(took < std::time::Duration::from_secs(10), "curl waited {took:?}");
}

/// logrotate without `copytruncate`: the log file is renamed away, SIGHUP
/// makes ringmaster write its next lines to a new file of the configured name.
#[test]
fn sighup_reopens_the_access_log_file_after_a_rename() {
    let a = backend("a");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let log = format!("[access_log]\nformat = \"combined\"\npath = \"{}\"\n\n", path.display());
    let p = Proxy::start(&(log + &route_all("app") + &service("app", "round_robin", &[&a], "")));
    assert_eq!(p.get("/first").status, 200);
    eventually(5, "the first line", || std::fs::read_to_string(&path).unwrap_or_default().contains("/first"));
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    p.proc.signal("HUP");
    eventually(5, "a new file of the configured name", || path.exists());
    assert_eq!(p.get("/second").status, 200);
    eventually(5, "the second line in the new file", || std::fs::read_to_string(&path).unwrap_or_default().contains("/second"));
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("/first") && !old.contains("/second"), "{old}");
}
