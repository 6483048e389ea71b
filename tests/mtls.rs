//! Client-certificate authentication (mTLS): a required client certificate
//! refuses clients without one or with one from another CA; an optional one
//! makes a verified client an identity with a tier for rate limits.

mod common;
use common::pki::{client_config, Ca, TlsConn};
use common::*;

/// A server CA with the listener's certificate in `d/site.crt`, and a client CA
/// whose bundle is `d/clients.pem`.
fn pki(d: &std::path::Path) -> (Ca, Ca) {
    let server_ca = Ca::new("server ca");
    server_ca.write_leaf(d, "site", "site", &["a.test"]);
    let clients = Ca::new("client ca");
    std::fs::write(d.join("clients.pem"), &clients.pem).unwrap();
    (server_ca, clients)
}

#[test]
fn required_client_certificates_accept_and_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (server_ca, clients) = pki(d);
    let b = backend("b");
    let https = free_addr();
    let cfg = format!(
        "[[listeners]]\nname = \"mtls\"\nlisten = \"{https}\"\nprotocol = \"https\"\ntls = {{ certificates = [{{ cert = \"{d}/site.crt\", key = \"{d}/site.key\" }}], client_auth = {{ ca = \"{d}/clients.pem\" }} }}\n\n{}{}",
        route_all("app"),
        service("app", "round_robin", &[&b], ""),
        d = d.display()
    );
    let p = Proxy::start(&cfg);
    wait_port(https);
    let attempt = |client: Option<&(String, String)>| {
        let cfg = client_config(&server_ca.pem, client, &["http/1.1"]);
        TlsConn::open(https, "a.test", &cfg).and_then(|mut c| c.get("a.test", "/", ""))
    };
    let alice = clients.leaf("alice", &[], true, (2031, 1, 1));
    assert_eq!(attempt(Some(&alice)).unwrap().status, 200);
    assert!(attempt(None).is_err(), "no client certificate must be refused");
    let mallory = Ca::new("other ca").leaf("mallory", &[], true, (2031, 1, 1));
    assert!(attempt(Some(&mallory)).is_err(), "a certificate from another CA must be refused");
    let expired = clients.leaf("old", &[], true, (2020, 1, 1));
    assert!(attempt(Some(&expired)).is_err(), "an expired client certificate must be refused");
    eventually(5, "failures are counted by reason", || {
        p.metric("ringmaster_tls_handshake_failures_total{reason=\"client_cert_missing\"}") == 1.0
            && p.metric("ringmaster_tls_handshake_failures_total{reason=\"client_cert_invalid\"}") == 2.0
    });
    let tls = p.admin_json("/admin/tls");
    assert_eq!(tls["listeners"][0]["client_auth"]["required"], true, "{tls}");
}

#[test]
fn a_verified_client_certificate_is_an_identity_for_rate_limits() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (server_ca, clients) = pki(d);
    let b = backend("b");
    let https = free_addr();
    let cfg = format!(
        "[[listeners]]\nname = \"mtls\"\nlisten = \"{https}\"\nprotocol = \"https\"\ntls = {{ certificates = [{{ cert = \"{d}/site.crt\", key = \"{d}/site.key\" }}], client_auth = {{ ca = \"{d}/clients.pem\", required = false, tier = \"partner\" }} }}\n\n\
         [rate_limits.anon]\nrate = 2\nperiod = \"1m\"\n\n[rate_limits.partner]\nrate = 50\nperiod = \"1m\"\n\n\
         [[routes]]\nname = \"api\"\nservice = \"app\"\nrate_limit_tiers = {{ anonymous = [\"anon\"], partner = [\"partner\"] }}\n\n{}",
        service("app", "round_robin", &[&b], ""),
        d = d.display()
    );
    let _p = Proxy::start(&cfg);
    wait_port(https);
    let anon = client_config(&server_ca.pem, None, &["http/1.1"]);
    let mut c = TlsConn::open(https, "a.test", &anon).unwrap();
    let r = c.get("a.test", "/", "").unwrap();
    assert_eq!((r.status, r.header("x-ratelimit-limit")), (200, Some("2")));
    c.get("a.test", "/", "").unwrap();
    assert_eq!(c.get("a.test", "/", "").unwrap().status, 429, "the anonymous tier is spent");

    // Two connections of one certificate share the owner's counter (its common name).
    let alice = client_config(&server_ca.pem, Some(&clients.leaf("alice", &[], true, (2031, 1, 1))), &["http/1.1"]);
    let mut a1 = TlsConn::open(https, "a.test", &alice).unwrap();
    let r = a1.get("a.test", "/", "").unwrap();
    assert_eq!((r.status, r.header("x-ratelimit-limit"), r.header("x-ratelimit-remaining")), (200, Some("50"), Some("49")));
    let mut a2 = TlsConn::open(https, "a.test", &alice).unwrap();
    assert_eq!(a2.get("a.test", "/", "").unwrap().header("x-ratelimit-remaining"), Some("48"));
}

#[test]
fn a_bad_client_ca_bundle_and_a_zero_keepalive_timeout_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_server_ca, _clients) = pki(d);
    std::fs::write(d.join("bad.pem"), "not a certificate").unwrap();
    let path = d.join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[limits]\nkeepalive_timeout = \"0s\"\n\n[[listeners]]\nname = \"mtls\"\nlisten = \"127.0.0.1:1\"\nprotocol = \"https\"\ntls = {{ certificates = [{{ cert = \"{d}/site.crt\", key = \"{d}/site.key\" }}], client_auth = {{ ca = \"{d}/bad.pem\" }} }}\n",
            d = d.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(BIN).args(["check", "--config", path.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(":2:21: a timeout of zero would close every connection"), "{err}");
    assert!(err.contains(":8:7:") && err.contains("bad.pem"), "{err}");
}
