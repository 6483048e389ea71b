//! Test certificates (rcgen: a CA, server and client certificates it signs)
//! and a blocking rustls client that keeps its connection open between
//! requests, for tests of TLS termination, mTLS, reloads and resumption.

use super::{parse_response, Response};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A certificate authority that signs test certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
        let pem = issuer.pem();
        Ca { issuer, pem }
    }

    /// A leaf certificate and key (PEM) for common name `cn` and DNS `names`,
    /// valid until `not_after` (year, month, day).
    pub fn leaf(&self, cn: &str, names: &[&str], client: bool, not_after: (i32, u8, u8)) -> (String, String) {
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        p.extended_key_usages = vec![if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A leaf for both server and client authentication (etcd's own gateway
    /// dials etcd with its server certificate when client certificates are required).
    pub fn leaf_for_both(&self, cn: &str, names: &[&str]) -> (String, String) {
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.not_after = rcgen::date_time_ymd(2031, 1, 1);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a server certificate and key as `{file}.crt` and `{file}.key` in `dir`.
    pub fn write_leaf(&self, dir: &Path, file: &str, cn: &str, names: &[&str]) {
        let (c, k) = self.leaf(cn, names, false, (2031, 1, 1));
        replace(&dir.join(format!("{file}.crt")), &c);
        replace(&dir.join(format!("{file}.key")), &k);
    }
}

/// Writes `contents` to `path` by renaming a temporary file over it, as
/// certificate managers do (no reader ever sees half a file).
pub fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A rustls client config trusting `ca_pem`, with an optional client certificate.
pub fn client_config(ca_pem: &str, client: Option<&(String, String)>, alpn: &[&str]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let b =
        rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions().unwrap().with_root_certificates(roots);
    let mut cfg = match client {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes()).map(|c| c.unwrap()).collect();
            b.with_client_auth_cert(chain, PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap()).unwrap()
        }
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    Arc::new(cfg)
}

/// A TLS connection to the proxy, its handshake done.
pub struct TlsConn {
    pub s: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl TlsConn {
    /// Connects to `addr` with SNI `name` and completes the handshake (and, in
    /// TLS 1.3, reads the server's answer to a client certificate).
    pub fn open(addr: SocketAddr, name: &str, cfg: &Arc<rustls::ClientConfig>) -> std::io::Result<TlsConn> {
        let tcp = TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let conn =
            rustls::ClientConnection::new(cfg.clone(), ServerName::try_from(name.to_string()).unwrap()).map_err(std::io::Error::other)?;
        let mut s = rustls::StreamOwned::new(conn, tcp);
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock)?;
        }
        Ok(TlsConn { s })
    }

    /// The server's certificate.
    pub fn server_cert(&self) -> CertificateDer<'static> {
        self.s.conn.peer_certificates().unwrap()[0].clone().into_owned()
    }

    pub fn resumed(&self) -> bool {
        self.s.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    /// One keep-alive HTTP/1.1 GET; the answer must carry Content-Length.
    pub fn get(&mut self, host: &str, path: &str, extra: &str) -> std::io::Result<Response> {
        write!(self.s, "GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n")?;
        self.s.flush()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = self.s.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before a whole answer"));
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let r = parse_response(&buf).unwrap();
                let len: usize = r.header("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    return Ok(r);
                }
            }
        }
    }
}

/// The common name of a DER certificate's subject.
pub fn common_name(der: &CertificateDer<'_>) -> String {
    let (_, c) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    let cn = c.subject().iter_common_name().next().unwrap().as_str().unwrap().to_string();
    cn
}
