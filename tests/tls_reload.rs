//! Certificates reloaded while connections stay open: on a file change (the
//! watcher), on SIGHUP, and a bad new file that keeps the old certificate.
//! Expiry in /admin/tls and /metrics; session resumption (TLS 1.3 tickets and
//! TLS 1.2) with a rustls client.

mod common;
use common::pki::{client_config, common_name, replace, Ca, TlsConn};
use common::*;

fn https_config(https: std::net::SocketAddr, dir: &std::path::Path, watch: &str, b: &Backend) -> String {
    format!(
        "[[listeners]]\nname = \"tls\"\nlisten = \"{https}\"\nprotocol = \"https\"\ntls = {{ certificates = [{{ cert = \"{d}/site.crt\", key = \"{d}/site.key\", names = [\"a.test\"] }}], watch_interval = \"{watch}\" }}\n\n{}{}",
        route_all("app"),
        service("app", "round_robin", &[b], ""),
        d = dir.display()
    )
}

/// A proxy with an https listener serving `site.crt` (common name `cn`), and a client config trusting its CA.
struct Site {
    dir: tempfile::TempDir,
    ca: Ca,
    https: std::net::SocketAddr,
    p: Proxy,
    cfg: std::sync::Arc<rustls::ClientConfig>,
    _b: Backend,
}

fn site(cn: &str, watch: &str) -> Site {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test ca");
    ca.write_leaf(dir.path(), "site", cn, &["a.test"]);
    let b = backend("b");
    let https = free_addr();
    let p = Proxy::start(&https_config(https, dir.path(), watch, &b));
    wait_port(https);
    let cfg = client_config(&ca.pem, None, &["http/1.1"]);
    Site { dir, ca, https, p, cfg, _b: b }
}

/// 2031-01-01T00:00:00Z and 2032-01-01T00:00:00Z.
const Y2031: i64 = 1_924_992_000;
const Y2032: i64 = 1_956_528_000;

/// The common name of the certificate a new, full handshake gets (a fresh client
/// config: a resumed session would report the certificate of the session it resumes).
fn served(https: std::net::SocketAddr, ca: &Ca) -> String {
    common_name(&TlsConn::open(https, "a.test", &client_config(&ca.pem, None, &["http/1.1"])).unwrap().server_cert())
}

#[test]
fn file_change_reloads_certificates_and_open_connections_stay() {
    let Site { dir, ca, https, p, cfg, _b } = site("old", "100ms");

    let mut open = TlsConn::open(https, "a.test", &cfg).unwrap();
    assert_eq!(common_name(&open.server_cert()), "old");
    assert_eq!(open.get("a.test", "/", "").unwrap().status, 200);
    let tls = p.admin_json("/admin/tls");
    let c = &tls["listeners"][0]["certificates"][0];
    assert_eq!((c["subject"].as_str(), c["not_after"].as_i64()), (Some("CN=old"), Some(Y2031)), "{tls}");
    let series = format!(
        "ringmaster_tls_certificate_not_after_seconds{{listener=\"tls\",cert=\"{}/site.crt\",subject=\"CN=old\"}}",
        dir.path().display()
    );
    assert_eq!(p.metric(&series), Y2031 as f64);

    // A new certificate and key: new handshakes get it, the open connection keeps working.
    // A request is in flight across the swap too.
    let failed = "ringmaster_tls_certificate_reloads_total{listener=\"tls\",result=\"failed\"}";
    let mut slow = TlsConn::open(https, "a.test", &cfg).unwrap();
    let in_flight = std::thread::spawn(move || slow.get("a.test", "/sleep/800", "").map(|r| r.status));
    // And new handshakes run all along: each one completes, with the old or the new certificate.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handshakes = {
        // A client config of its own: its resumed sessions must not answer the checks below.
        let (stop, cfg) = (stop.clone(), client_config(&ca.pem, None, &["http/1.1"]));
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = TlsConn::open(https, "a.test", &cfg).and_then(|mut c| {
                    let cn = common_name(&c.server_cert());
                    c.get("a.test", "/", "").map(|r| (cn, r.status))
                });
                seen.push(r.map_err(|e| e.to_string()));
            }
            seen
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    let (crt, key) = ca.leaf("new", &["a.test"], false, (2032, 1, 1));
    replace(&dir.path().join("site.key"), &key);
    replace(&dir.path().join("site.crt"), &crt);
    eventually(10, "the new certificate is served", || served(https, &ca) == "new");
    let again = open.get("a.test", "/", "").unwrap();
    assert_eq!(again.status, 200, "a connection opened before the reload survives it: {} {}", again.text(), p.stderr());
    assert_eq!(common_name(&open.server_cert()), "old");
    assert_eq!(p.admin_json("/admin/tls")["listeners"][0]["certificates"][0]["not_after"].as_i64(), Some(Y2032));
    assert_eq!(in_flight.join().unwrap().unwrap(), 200, "a request in flight across the swap");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = handshakes.join().unwrap();
    assert!(seen.len() >= 3 && seen.iter().all(|r| matches!(r, Ok((_, 200)))), "handshakes across the swap: {seen:?}");
    // The watcher may have polled between the key's rename and the certificate's
    // (a mismatched pair, refused and counted): count from here.
    let failed_before = p.metric(failed);

    // A broken file: the last good certificate keeps serving, and the failure is counted and logged.
    replace(&dir.path().join("site.crt"), "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n");
    eventually(10, "the failed reload is counted", || p.metric(failed) >= failed_before + 1.0);
    assert_eq!(served(https, &ca), "new");
    assert_eq!(p.metric(failed), failed_before + 1.0, "{}", p.stderr());
    assert!(p.stderr().contains("TLS certificates not reloaded"), "{}", p.stderr());
    assert_eq!(open.get("a.test", "/", "").unwrap().status, 200);
}

#[test]
fn sighup_and_admin_reload_read_certificates_again() {
    let Site { dir, ca, https, p, cfg, _b } = site("first", "0s");
    let mut open = TlsConn::open(https, "a.test", &cfg).unwrap();

    // The watcher is off: nothing changes until told.
    ca.write_leaf(dir.path(), "site", "second", &["a.test"]);
    assert_eq!(served(https, &ca), "first");
    p.proc.signal("HUP");
    eventually(10, "SIGHUP loads the new certificate", || served(https, &ca) == "second");
    ca.write_leaf(dir.path(), "site", "third", &["a.test"]);
    let r = request(p.admin, "POST /admin/reload HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(served(https, &ca), "third");
    assert_eq!(open.get("a.test", "/", "").unwrap().status, 200);
}

#[test]
fn sessions_resume_with_tickets_and_ids() {
    let Site { dir: _dir, ca, https, p, cfg: _cfg, _b } = site("site", "5s");
    // TLS 1.3 (tickets): one client config remembers the session.
    let cfg = client_config(&ca.pem, None, &["http/1.1"]);
    let mut first = TlsConn::open(https, "a.test", &cfg).unwrap();
    // TLS 1.3 tickets arrive after the handshake: read an answer to receive them.
    assert_eq!(first.get("a.test", "/", "").unwrap().status, 200);
    let mut second = TlsConn::open(https, "a.test", &cfg).unwrap();
    assert!(second.resumed(), "the second TLS 1.3 connection resumes");
    assert_eq!(second.get("a.test", "/", "").unwrap().status, 200);
    // TLS 1.2.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(ca_der(&ca.pem))).unwrap();
    let v12 = std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let mut a = TlsConn::open(https, "a.test", &v12).unwrap();
    assert_eq!(a.get("a.test", "/", "").unwrap().status, 200);
    let b2 = TlsConn::open(https, "a.test", &v12).unwrap();
    assert!(b2.resumed(), "the second TLS 1.2 connection resumes");
    assert!(p.metric("ringmaster_tls_handshakes_total{version=\"1.3\",kind=\"resumed\"}") >= 1.0);
    assert!(p.metric("ringmaster_tls_handshakes_total{version=\"1.2\",kind=\"resumed\"}") >= 1.0);
    assert!(p.metric("ringmaster_tls_handshakes_total{version=\"1.3\",kind=\"full\"}") >= 1.0);
}

fn ca_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
}

#[test]
fn plain_http_to_an_https_port_is_counted_as_not_tls() {
    let Site { dir: _dir, ca: _ca, https, p, cfg: _cfg, _b } = site("site", "5s");
    let _ = request_bytes(https, b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n");
    eventually(5, "the failure is counted", || p.metric("ringmaster_tls_handshake_failures_total{reason=\"not_tls\"}") >= 1.0);
    // A client that does not trust the certificate closes with an alert.
    let other = Ca::new("other ca");
    let _ = TlsConn::open(https, "a.test", &client_config(&other.pem, None, &["http/1.1"]));
    eventually(5, "the alert is counted", || p.metric("ringmaster_tls_handshake_failures_total{reason=\"client_alert\"}") >= 1.0);
}
