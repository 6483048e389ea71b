//! TLS on both sides of the proxy: the one crypto provider (aws-lc-rs), PEM
//! loading, and the facts of a certificate that operators watch (subject, names,
//! expiry). Termination lives in `server`, origination towards pools in `client`.

pub mod client;
pub mod handshake;
pub mod server;
mod sni;
pub mod stream;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::{Arc, OnceLock};

/// The crypto provider of every TLS config the proxy makes.
pub fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider())).clone()
}

/// Why certificates, keys or a TLS config could not be made; each names the
/// file or setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate file {path}: {source}")]
    ReadChain { path: String, source: pem::Error },
    #[error("{path} is not a PEM certificate chain: {source}")]
    BadChain { path: String, source: pem::Error },
    #[error("{0} holds no certificate")]
    NoCertificate(String),
    #[error("cannot read a private key from {path}: {source}")]
    ReadKey { path: String, source: pem::Error },
    #[error("{path} is not a usable RSA or ECDSA key: {source}")]
    BadKey { path: String, source: rustls::Error },
    #[error("the key in {key} does not match the certificate in {cert}: {source}")]
    Mismatch { key: String, cert: String, source: rustls::Error },
    #[error("{path} holds a certificate that cannot be a trust anchor: {source}")]
    BadAnchor { path: String, source: rustls::Error },
    #[error("no system CA certificates found ({0}); install ca-certificates or set tls.ca")]
    NoSystemRoots(String),
    #[error("client certificate {path}: {source}")]
    ClientCert { path: String, source: rustls::Error },
    #[error("an upstream client certificate needs both cert and key")]
    HalfClientCert,
    #[error("`{host}` cannot be a TLS server name: {source}")]
    ServerName { host: String, source: rustls_pki_types::InvalidDnsNameError },
    #[error("a TLS listener needs at least one certificate")]
    NoListenerCertificate,
    #[error("client CA bundle {path}: {source}")]
    ClientCa { path: String, source: rustls::server::VerifierBuilderError },
    #[error("cannot make session ticket keys: {0}")]
    Tickets(rustls::Error),
    #[error("{0}")]
    Config(#[from] rustls::Error),
}

/// A certificate chain from a PEM file.
pub fn load_chain(path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|source| TlsError::ReadChain { path: path.to_string(), source })?
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::BadChain { path: path.to_string(), source })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(path.to_string()));
    }
    Ok(chain)
}

/// A private key from a PEM file.
pub fn load_key(path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::ReadKey { path: path.to_string(), source })
}

/// A certificate chain and its key, checked to belong together.
pub fn certified_key(cert: &str, key: &str) -> Result<Arc<CertifiedKey>, TlsError> {
    certify(load_chain(cert)?, load_key(key)?, cert, key).map(Arc::new)
}

/// `chain` and `key_der` (read from files `cert` and `key`) as a signing
/// certificate, checked to belong together.
pub fn certify(
    chain: Vec<CertificateDer<'static>>,
    key_der: PrivateKeyDer<'static>,
    cert: &str,
    key: &str,
) -> Result<CertifiedKey, TlsError> {
    let signing = provider().key_provider.load_private_key(key_der).map_err(|source| TlsError::BadKey { path: key.to_string(), source })?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|source| TlsError::Mismatch { key: key.to_string(), cert: cert.to_string(), source })?;
    Ok(ck)
}

/// Trust anchors from a PEM bundle of CA certificates.
pub fn load_roots(path: &str) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_chain(path)? {
        roots.add(c).map_err(|source| TlsError::BadAnchor { path: path.to_string(), source })?;
    }
    Ok(roots)
}

/// What an operator wants to know of a certificate.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CertFacts {
    pub subject: String,
    pub issuer: String,
    /// DNS names of the subjectAltName extension.
    pub dns_names: Vec<String>,
    /// Expiry, seconds since the Unix epoch.
    pub not_after: i64,
    pub not_before: i64,
}

/// The facts of a DER certificate; `None` when it does not parse as X.509.
pub fn facts(der: &CertificateDer<'_>) -> Option<CertFacts> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let dns_names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Some(CertFacts {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        dns_names,
        not_after: cert.validity().not_after.timestamp(),
        not_before: cert.validity().not_before.timestamp(),
    })
}

/// The identity a client certificate stands for: its subject's common name, or
/// the whole subject when it has none.
pub fn client_identity(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_string);
    Some(cn.unwrap_or_else(|| cert.subject().to_string()))
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}
