//! TLS termination: rustls (aws-lc-rs) with TLS 1.3 and 1.2 and secure
//! defaults only, ALPN h2 and http/1.1, certificates chosen by SNI (exact and
//! wildcard names), the first certificate being the default for clients
//! without SNI or with an unknown name. RSA and ECDSA keys.

use crate::config::schema::TlsSpec;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::sync::Arc;

/// Picks a certificate by the client's SNI name.
#[derive(Debug)]
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` stored as `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else { return Some(self.default.clone()) };
        let name = name.to_ascii_lowercase();
        if let Some(c) = self.exact.get(&name) {
            return Some(c.clone());
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(c) = self.wildcard.get(parent) {
                return Some(c.clone());
            }
        }
        Some(self.default.clone())
    }
}

/// Loads a certificate chain and its key from PEM files.
fn certified_key(cert: &str, key: &str) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read certificate file {cert}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{cert} is not a PEM certificate chain: {e}"))?;
    if chain.is_empty() {
        return Err(format!("{cert} holds no certificate"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("cannot read a private key from {key}: {e}"))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing = provider.key_provider.load_private_key(key_der).map_err(|e| format!("{key} is not a usable RSA or ECDSA key: {e}"))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| format!("the key in {key} does not match the certificate in {cert}: {e}"))?;
    Ok(Arc::new(ck))
}

/// The rustls server configuration of a listener.
pub fn server_config(spec: &TlsSpec) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut exact = HashMap::new();
    let mut wildcard = HashMap::new();
    let mut default = None;
    for c in &spec.certificates {
        let ck = certified_key(c.cert.get_ref(), c.key.get_ref())?;
        default.get_or_insert_with(|| ck.clone());
        for n in &c.names {
            let n = n.to_ascii_lowercase();
            match n.strip_prefix("*.") {
                Some(parent) => wildcard.insert(parent.to_string(), ck.clone()),
                None => exact.insert(n, ck.clone()),
            };
        }
    }
    let default = default.ok_or("a TLS listener needs at least one certificate")?;
    let resolver = SniResolver { exact, wildcard, default };
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
