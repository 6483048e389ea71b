//! TLS towards pools: the proxy verifies its endpoints against a CA file,
//! sends the configured SNI name, speaks HTTP/2 by ALPN, and presents a client
//! certificate when the endpoint requires one. The TLS endpoint is a second
//! ringmaster terminating TLS in front of a plain backend.

mod common;
use common::pki::Ca;
use common::*;

/// A pool table reaching `addr` over TLS with `tls` settings and `protocol`.
fn tls_service(name: &str, addr: std::net::SocketAddr, protocol: &str, tls: &str) -> String {
    format!(
        "[services.{name}]\nkind = \"replicated\"\nprotocol = \"{protocol}\"\ntls = {{ {tls} }}\n[[services.{name}.endpoints]]\naddress = \"{addr}\"\n\n"
    )
}

fn host_route(host: &str, svc: &str) -> String {
    format!("[[routes]]\nname = \"{svc}\"\nhost = \"{host}\"\nservice = \"{svc}\"\n\n")
}

#[test]
fn pools_verify_endpoints_send_sni_and_present_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("origin ca");
    ca.write_leaf(d, "origin", "origin", &["origin.test"]);
    std::fs::write(d.join("ca.pem"), &ca.pem).unwrap();
    std::fs::write(d.join("other.pem"), &Ca::new("other ca").pem).unwrap();
    let clients = Ca::new("client ca");
    std::fs::write(d.join("clients.pem"), &clients.pem).unwrap();
    let (cc, ck) = clients.leaf("edge", &[], true, (2031, 1, 1));
    std::fs::write(d.join("edge.crt"), cc).unwrap();
    std::fs::write(d.join("edge.key"), ck).unwrap();

    // The origin side: two https listeners, one of them requiring client certificates.
    let b = backend("b");
    let (tls_plain, tls_mtls) = (free_addr(), free_addr());
    let origin = Proxy::start(&format!(
        "[[listeners]]\nname = \"tls\"\nlisten = \"{tls_plain}\"\nprotocol = \"https\"\ntls = {{ certificates = [{{ cert = \"{d}/origin.crt\", key = \"{d}/origin.key\" }}] }}\n\n\
         [[listeners]]\nname = \"mtls\"\nlisten = \"{tls_mtls}\"\nprotocol = \"https\"\ntls = {{ certificates = [{{ cert = \"{d}/origin.crt\", key = \"{d}/origin.key\" }}], client_auth = {{ ca = \"{d}/clients.pem\" }} }}\n\n{}{}",
        route_all("app"),
        service("app", "round_robin", &[&b], ""),
        d = d.display()
    ));
    wait_port(tls_plain);
    wait_port(tls_mtls);

    let ca_file = format!("ca = \"{}/ca.pem\", sni = \"origin.test\"", d.display());
    let edge = Proxy::start(&format!(
        "{}{}{}{}{}{}{}{}{}{}{}{}{}{}",
        host_route("good.test", "good"),
        tls_service("good", tls_plain, "http1", &ca_file),
        host_route("h2.test", "h2"),
        tls_service("h2", tls_plain, "http2", &ca_file),
        host_route("badca.test", "badca"),
        tls_service("badca", tls_plain, "http1", &format!("ca = \"{}/other.pem\", sni = \"origin.test\"", d.display())),
        host_route("badname.test", "badname"),
        tls_service("badname", tls_plain, "http1", &format!("ca = \"{}/ca.pem\", sni = \"elsewhere.test\"", d.display())),
        host_route("mtls.test", "mtls"),
        tls_service("mtls", tls_mtls, "http1", &format!("{ca_file}, cert = \"{0}/edge.crt\", key = \"{0}/edge.key\"", d.display())),
        host_route("nocert.test", "nocert"),
        tls_service("nocert", tls_mtls, "http1", &ca_file),
        host_route("sysroots.test", "sysroots"),
        tls_service("sysroots", tls_plain, "http1", "sni = \"origin.test\""),
    ));
    let via = |host: &str| request(edge.addr, &format!("GET /echo HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"));

    let r = via("good.test");
    assert_eq!(r.status, 200, "{}", r.text());
    // The origin terminated TLS: it tells the backend the request came over https.
    assert_eq!(r.json()["headers"]["x-forwarded-proto"], "https");
    assert_eq!(via("h2.test").status, 200, "HTTP/2 over TLS by ALPN");
    assert_eq!(via("mtls.test").status, 200, "the client certificate is accepted");
    assert_eq!(via("badca.test").status, 502, "a certificate from an untrusted CA is refused");
    assert_eq!(via("badname.test").status, 502, "a certificate for another name is refused");
    assert_eq!(via("nocert.test").status, 502, "the origin refuses a client without a certificate");
    assert_eq!(via("sysroots.test").status, 502, "the system's roots do not trust a private CA");
    assert!(origin.metric("ringmaster_tls_handshakes_total{version=\"1.3\",kind=\"full\"}") >= 3.0);
    assert!(
        origin.metric("ringmaster_tls_handshake_failures_total{reason=\"client_alert\"}") >= 3.0,
        "the edge refused the origin three times"
    );
    // Pooled upstream TLS connections are reused.
    for _ in 0..5 {
        assert_eq!(via("good.test").status, 200);
    }
    let pools = edge.admin_json("/admin/pools");
    let good = pools["pools"].as_array().unwrap().iter().find(|p| p["service"] == "good").unwrap_or_else(|| panic!("{pools}"));
    assert_eq!(good["endpoints"][0]["requests"], 6);
    let opened =
        format!("ringmaster_endpoint_connections_opened_total{{service=\"good\",endpoint=\"{tls_plain}\",address=\"{tls_plain}\"}}");
    assert_eq!(edge.metric(&opened), 1.0, "one TLS connection carried all six requests");
}

#[test]
fn an_unreadable_upstream_ca_file_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[[listeners]]\nname = \"main\"\nlisten = \"127.0.0.1:1\"\n\n[[routes]]\nservice = \"app\"\n\n[services.app]\nkind = \"replicated\"\ntls = { ca = \"/nonexistent/ca.pem\" }\n[[services.app.endpoints]]\naddress = \"127.0.0.1:2\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN).args(["check", "--config", path.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(":10:7:") && err.contains("/nonexistent/ca.pem"), "{err}");
}
