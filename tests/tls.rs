//! TLS termination with real clients (curl): SNI picks the certificate,
//! ALPN gives HTTP/2, X-Forwarded-Proto says https, a bad certificate file is
//! a config error.

mod common;
use common::*;
use std::process::Command;

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let st = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl is installed");
    assert!(st.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&st.stderr));
}

/// A self-signed certificate for `cn` with SAN `names`, ECDSA or RSA.
fn cert(dir: &std::path::Path, file: &str, cn: &str, san: &str, rsa: bool) {
    let key = if rsa { vec!["-newkey", "rsa:2048"] } else { vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"] };
    let mut args = vec!["req", "-x509"];
    args.extend(key);
    let (k, c, subj, ext) = (format!("{file}.key"), format!("{file}.crt"), format!("/CN={cn}"), format!("subjectAltName={san}"));
    args.extend(["-nodes", "-days", "2", "-subj", &subj, "-addext", &ext, "-keyout", &k, "-out", &c]);
    openssl(dir, &args);
}

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl").args(["-s", "-S", "--max-time", "10"]).args(args).output().unwrap();
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn sni_alpn_and_forwarded_proto() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    cert(d, "a", "a.test", "DNS:a.test", false);
    cert(d, "wild", "wild.test", "DNS:*.b.test", true);
    let a = backend("a");
    let https = free_addr();
    let cfg = format!(
        "[[listeners]]\nname = \"tls\"\nlisten = \"{https}\"\nprotocol = \"https\"\ntls = {{ certificates = [{{ cert = \"{d}/a.crt\", key = \"{d}/a.key\", names = [\"a.test\"] }}, {{ cert = \"{d}/wild.crt\", key = \"{d}/wild.key\", names = [\"*.b.test\"] }}] }}\n\n{}{}",
        route_all("app"),
        service("app", "round_robin", &[&a], ""),
        d = d.display()
    );
    let _p = Proxy::start(&cfg);
    let port = https.port();
    // SNI a.test: the ECDSA certificate, verified against itself as the CA; HTTP/2 by ALPN.
    let (out, err) = curl(&[
        "--cacert",
        &format!("{}/a.crt", d.display()),
        "--resolve",
        &format!("a.test:{port}:127.0.0.1"),
        "-w",
        "\\n%{http_version}",
        &format!("https://a.test:{port}/echo"),
    ]);
    assert!(out.ends_with("\n2"), "{out} {err}");
    let body: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(body["headers"]["x-forwarded-proto"], "https");
    assert!(body["headers"]["forwarded"].as_str().unwrap().ends_with("proto=https"));
    // A wildcard name: the RSA certificate; HTTP/1.1 when asked for.
    let (out, err) = curl(&[
        "--cacert",
        &format!("{}/wild.crt", d.display()),
        "--http1.1",
        "--resolve",
        &format!("x.b.test:{port}:127.0.0.1"),
        "-w",
        "%{http_version}",
        "-o",
        "/dev/null",
        &format!("https://x.b.test:{port}/"),
    ]);
    assert_eq!(out, "1.1", "{err}");
    // No SNI match: the default (first) certificate, which does not verify for another name.
    let (out, err) = curl(&[
        "--cacert",
        &format!("{}/a.crt", d.display()),
        "--resolve",
        &format!("c.test:{port}:127.0.0.1"),
        &format!("https://c.test:{port}/"),
    ]);
    assert!(out.is_empty() && err.contains("c.test") && err.contains("subject name"), "a name mismatch on a.test's certificate: {err}");
    assert_eq!(served_subject(https, "c.test"), "a.test", "an unknown name gets the first certificate");
    assert_eq!(served_subject(https, "x.b.test"), "wild.test");
}

/// The common name of the certificate served for SNI `name`, read with openssl s_client.
fn served_subject(addr: std::net::SocketAddr, name: &str) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-servername", name])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let subject = text.lines().find_map(|l| l.trim().strip_prefix("subject=")).unwrap_or_else(|| panic!("no subject in: {text}"));
    subject.rsplit("CN").next().unwrap().trim_start_matches([' ', '=']).trim().to_string()
}

#[test]
fn a_bad_certificate_file_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.crt"), "not a certificate").unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!("[[listeners]]\nname = \"tls\"\nlisten = \"127.0.0.1:1\"\nprotocol = \"https\"\ntls = {{ certificates = [{{ cert = \"{0}/bad.crt\", key = \"{0}/bad.crt\" }}] }}\n", dir.path().display()),
    )
    .unwrap();
    let out = Command::new(BIN).args(["check", "--config", path.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(":5:7:") && err.contains("bad.crt"), "{err}");
}

#[test]
fn redirect_to_https_and_hsts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    cert(d, "a", "a.test", "DNS:a.test", false);
    let a = backend("a");
    let (https, plain) = (free_addr(), free_addr());
    let cfg = format!(
        "[[listeners]]\nname = \"tls\"\nlisten = \"{https}\"\nprotocol = \"https\"\nhsts = \"max-age=31536000; includeSubDomains\"\ntls = {{ certificates = [{{ cert = \"{d}/a.crt\", key = \"{d}/a.key\" }}] }}\n\n[[listeners]]\nname = \"plain\"\nlisten = \"{plain}\"\nredirect_to_https = 8443\n\n{}{}",
        route_all("app"),
        service("app", "round_robin", &[&a], ""),
        d = d.display()
    );
    let p = Proxy::start(&cfg);
    wait_port(plain);
    let r = request(plain, "GET /shop?item=3 HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n");
    assert_eq!((r.status, r.header("location")), (308, Some("https://a.test:8443/shop?item=3")));
    // The main (plain, no redirect) listener has no HSTS; the https one has.
    assert!(p.get("/").header("strict-transport-security").is_none());
    let (out, err) = curl(&[
        "--cacert",
        &format!("{}/a.crt", d.display()),
        "-D",
        "-",
        "-o",
        "/dev/null",
        "--resolve",
        &format!("a.test:{}:127.0.0.1", https.port()),
        &format!("https://a.test:{}/", https.port()),
    ]);
    assert!(out.to_ascii_lowercase().contains("strict-transport-security: max-age=31536000; includesubdomains"), "{out} {err}");
}
