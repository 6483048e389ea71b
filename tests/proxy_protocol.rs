//! PROXY protocol v1 and v2 on a listener: the client address an L4 balancer
//! names reaches the upstream (X-Forwarded-For) and the access log; peers
//! that are not trusted, and connections without a valid header, are closed
//! and counted; a header split over several packets still works.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A proxy with a second listener, behind a balancer that speaks the PROXY protocol.
struct Behind {
    p: Proxy,
    pp: SocketAddr,
    _a: Backend,
}

fn proxy(trusted: &str) -> Behind {
    let a = backend("a");
    let pp = free_addr();
    let top = format!(
        "[[listeners]]\nname = \"behind-balancer\"\nlisten = \"{pp}\"\nproxy_protocol = true\n\n\
         [server]\ntrusted_proxies = [\"{trusted}\"]\n\n[limits]\nheader_read_timeout = \"1s\"\n\n[access_log]\nformat = \"json\"\n\n"
    );
    let p = Proxy::start(&(top + &route_all("app") + &service("app", "round_robin", &[&a], "")));
    wait_port(pp);
    Behind { p, pp, _a: a }
}

/// Sends `parts` with a pause between them and reads until the peer closes.
fn exchange(b: &Behind, parts: &[&[u8]]) -> Vec<u8> {
    let mut s = TcpStream::connect(b.pp).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
        if s.write_all(part).is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

const GET: &[u8] = b"GET /echo HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n";

fn forwarded_for(answer: &[u8]) -> String {
    let r = parse_response(answer).unwrap_or_else(|| panic!("an answer: {:?}", String::from_utf8_lossy(answer)));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["headers"]["x-forwarded-for"].as_str().unwrap().to_string()
}

#[test]
fn v1_and_v2_headers_name_the_client_the_upstream_sees() {
    let b = proxy("127.0.0.0/8");
    let v1 = [b"PROXY TCP4 203.0.113.7 10.0.0.2 5555 80\r\n".as_slice(), GET].concat();
    assert_eq!(forwarded_for(&exchange(&b, &[&v1])), "203.0.113.7");
    // v2, written by the ppp crate as an L4 balancer would send it.
    let v2 = ringmaster::upstream::proxy_header::v2_header("198.51.100.4:6000".parse().unwrap(), "10.0.0.2:80".parse().unwrap());
    assert_eq!(forwarded_for(&exchange(&b, &[&[v2.as_slice(), GET].concat()])), "198.51.100.4");
    // A header in three packets, the request in a fourth.
    assert_eq!(forwarded_for(&exchange(&b, &[&v2[..5], &v2[5..20], &v2[20..], GET])), "198.51.100.4");
    assert_eq!(forwarded_for(&exchange(&b, &[b"PROXY TCP6 2001:db8::9 ", b"2001:db8::1 443 80\r\n", GET])), "2001:db8::9");
    // UNKNOWN (a balancer's health check): the peer's own address.
    assert_eq!(forwarded_for(&exchange(&b, &[b"PROXY UNKNOWN\r\n", GET])), "127.0.0.1");
    eventually(5, "access log lines", || b.p.stdout().lines().count() >= 5);
    assert!(b.p.stdout().lines().next().unwrap().contains("\"client\":\"203.0.113.7\""), "{}", b.p.stdout());
    assert_eq!(b.p.metric("ringmaster_proxy_protocol_accepted_total"), 5.0);
}

#[test]
fn a_connection_without_a_valid_header_is_closed_and_counted() {
    let b = proxy("127.0.0.0/8");
    assert!(exchange(&b, &[GET]).is_empty(), "a request without the header is not served");
    assert!(exchange(&b, &[b"PROXY TCP4 300.1.1.1 10.0.0.2 1 2\r\n", GET]).is_empty());
    assert_eq!(b.p.metric("ringmaster_proxy_protocol_refused_total{reason=\"malformed\"}"), 2.0);
    // Half a header and silence: closed at the header timeout.
    assert!(exchange(&b, &[b"PROXY TCP4 "]).is_empty());
    assert_eq!(b.p.metric("ringmaster_proxy_protocol_refused_total{reason=\"timeout\"}"), 1.0);
    // The listener without proxy_protocol serves as before.
    assert_eq!(b.p.get("/echo").status, 200);
}

#[test]
fn a_peer_that_is_not_a_trusted_proxy_cannot_name_a_client() {
    let b = proxy("10.9.9.9/32");
    let untrusted = || b.p.metric("ringmaster_proxy_protocol_refused_total{reason=\"untrusted\"}");
    // The connection that waited for the port counts first.
    eventually(5, "the port probe counted", || untrusted() >= 1.0);
    let before = untrusted();
    let v1 = [b"PROXY TCP4 203.0.113.7 10.0.0.2 5555 80\r\n".as_slice(), GET].concat();
    assert!(exchange(&b, &[&v1]).is_empty());
    assert_eq!(untrusted(), before + 1.0);
}

#[test]
fn proxy_protocol_without_trusted_proxies_is_a_config_error() {
    let a = backend("a");
    let body = route_all("app") + &service("app", "round_robin", &[&a], "");
    let (passed, err) = check_config(&format!("[[listeners]]\nname = \"main\"\nlisten = \"127.0.0.1:1\"\nproxy_protocol = true\n\n{body}"));
    assert!(!passed && err.contains(":4:") && err.contains("trusted_proxies"), "{err}");
}

/// An upstream that reads the PROXY header each connection starts with (by
/// the ppp crate) and answers each request with the client it named.
fn upstream_reading_headers(seen: Arc<Mutex<Vec<String>>>) -> SocketAddr {
    raw_upstream(move |mut s| {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        // The header and the first request head.
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let client = match ppp::HeaderResult::parse(&buf) {
            ppp::HeaderResult::V1(Ok(h)) => match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => {
                    format!("v1 {}:{} {}:{}", a.source_address, a.source_port, a.destination_address, a.destination_port)
                }
                other => format!("v1 {other:?}"),
            },
            ppp::HeaderResult::V2(Ok(h)) => match h.addresses {
                ppp::v2::Addresses::IPv4(a) => {
                    format!("v2 {}:{} {}:{}", a.source_address, a.source_port, a.destination_address, a.destination_port)
                }
                other => format!("v2 {other:?}"),
            },
            _ => "none".to_string(),
        };
        seen.lock().unwrap().push(client.clone());
        let body = client;
        let _ = s.write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len()).as_bytes());
        // Keep-alive: the proxy must not reuse it for another client.
        let _ = s.read(&mut chunk);
    })
}

#[test]
fn a_pool_can_be_sent_the_clients_address_in_a_proxy_header() {
    for version in ["v1", "v2"] {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let up = upstream_reading_headers(seen.clone());
        // A second listener behind a balancer that sends PROXY headers itself.
        let behind = free_addr();
        let p = Proxy::start(&format!(
            "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n\n\
             [[listeners]]\nname = \"behind\"\nlisten = \"{behind}\"\nproxy_protocol = true\n\n\
             {}[services.app]\nkind = \"replicated\"\nsend_proxy_protocol = \"{version}\"\nendpoints = [{{ address = \"{up}\" }}]\n",
            route_all("app")
        ));
        let ask = |at: SocketAddr, header: &[u8]| {
            let mut c = TcpStream::connect(at).unwrap();
            let me = c.local_addr().unwrap();
            c.write_all(&[header, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"].concat()).unwrap();
            let mut out = Vec::new();
            c.read_to_end(&mut out).unwrap();
            let r = parse_response(&out).unwrap();
            (me, r.status, r.text())
        };
        for _ in 0..2 {
            let (me, status, said) = ask(p.addr, b"");
            assert_eq!(
                (status, said),
                (200, format!("{version} {me} {}", p.addr)),
                "the header names this client and the address it reached"
            );
        }
        assert_eq!(seen.lock().unwrap().len(), 2, "{version}: a connection per client, never reused for another");
        // Behind a balancer: the client and the address it reached are the balancer's header's.
        wait_port(behind);
        let (_, status, said) = ask(behind, b"PROXY TCP4 203.0.113.7 198.51.100.9 5555 443\r\n");
        assert_eq!((status, said), (200, format!("{version} 203.0.113.7:5555 198.51.100.9:443")));
    }
}

#[test]
fn send_proxy_protocol_over_http2_is_a_config_error() {
    let (passed, err) = check_config(&format!(
        "{}[services.app]\nkind = \"replicated\"\nprotocol = \"http2\"\nsend_proxy_protocol = \"v2\"\nendpoints = [{{ address = \"127.0.0.1:9\" }}]\n",
        route_all("app")
    ));
    assert!(!passed && err.contains(":8:23: a PROXY protocol header names one client"), "{err}");
}
