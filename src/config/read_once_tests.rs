//! Each file a config names is read once, by the check pass: every file here is
//! a FIFO that can be opened for reading once (a second open would wait forever
//! for a writer), and the test fails if parsing, or starting the listener's TLS
//! from the plan, takes longer than a generous bound.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// A FIFO at `dir/name` that yields `content` to its first reader only.
fn once(dir: &Path, name: &str, content: String) -> PathBuf {
    let path = dir.join(name);
    let made = std::process::Command::new("mkfifo").arg(&path).status().expect("mkfifo runs");
    assert!(made.success(), "mkfifo {}", path.display());
    let p = path.clone();
    std::thread::spawn(move || std::fs::write(p, content));
    path
}

#[test]
fn certificates_and_keys_are_read_once() {
    let dir = std::env::temp_dir().join(format!("ringmaster-read-once-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tls_key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().self_signed(&tls_key).unwrap().pem();
    let key = tls_key.serialize_pem();
    let jwt_key = rcgen::KeyPair::generate().unwrap().public_key_pem();
    let text = format!(
        r#"
[[listeners]]
name = "tls"
listen = "127.0.0.1:1"
protocol = "https"
tls = {{ certificates = [{{ cert = "{}", key = "{}" }}] }}

[identity]
jwt = {{ ec_public_key = "{}" }}

[[routes]]
service = "s"

[services.s]
kind = "replicated"
tls = {{ ca = "{}" }}
endpoints = [{{ address = "localhost:8443" }}]
"#,
        once(&dir, "cert.fifo", cert.clone()).display(),
        once(&dir, "key.fifo", key).display(),
        once(&dir, "jwt.fifo", jwt_key).display(),
        once(&dir, "ca.fifo", cert).display(),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let started = super::parse("t.toml", &text).map_err(|e| e.to_string()).and_then(|plan| {
            let built = super::build(plan, None);
            let l = &built.snapshot.listeners[0];
            let (settings, material) = l.tls.as_ref().ok_or("no TLS in the plan")?;
            crate::tls::server::TlsState::new(&l.name, settings, material)
                .map(|_| built.snapshot.credentials.is_some())
                .map_err(|e| e.to_string())
        });
        let _ = tx.send(started);
    });
    let result = rx.recv_timeout(Duration::from_secs(30)).expect("a file was opened a second time (or parsing hung)");
    assert_eq!(result, Ok(true));
    let _ = std::fs::remove_dir_all(&dir);
}
