//! TLS towards a pool's endpoints: verified against a CA bundle or the
//! system's roots, with the configured SNI name (or the endpoint's host), an
//! optional client certificate, and ALPN matching the pool's protocol.
//! Sessions are resumed on reconnects (rustls' in-memory client cache).

use super::{certify, load_chain, load_key, load_roots, provider, TlsError};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use std::sync::{Arc, OnceLock};

/// TLS settings towards a pool's endpoints (PEM file paths).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Settings {
    /// CAs the endpoints' certificates must chain to; the system's roots when absent.
    pub ca: Option<String>,
    /// The name sent as SNI and verified; each endpoint's host when absent.
    pub sni: Option<String>,
    /// A client certificate and its key, presented when asked.
    pub cert: Option<String>,
    pub key: Option<String>,
}

/// The TLS a connection pool speaks to one endpoint.
#[derive(Clone)]
pub struct Upstream {
    pub connector: tokio_rustls::TlsConnector,
    pub name: ServerName<'static>,
}

/// The system's trust anchors, read once.
fn system_roots() -> Result<Arc<rustls::RootCertStore>, TlsError> {
    // The roots, or the problems the search for them met.
    static ROOTS: OnceLock<Result<Arc<rustls::RootCertStore>, Vec<String>>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(found.errors.iter().map(|e| e.to_string()).collect());
            }
            Ok(Arc::new(roots))
        })
        .clone()
        .map_err(|problems| TlsError::NoSystemRoots(problems.join("; ")))
}

/// The rustls client config of a pool; ALPN offers `h2` or `http/1.1`.
pub fn client_config(spec: &Settings, http2: bool) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match &spec.ca {
        Some(ca) => Arc::new(load_roots(ca)?),
        None => system_roots()?,
    };
    let builder = ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?.with_root_certificates(roots);
    let mut cfg = match (&spec.cert, &spec.key) {
        (Some(c), Some(k)) => {
            let (chain, key) = (load_chain(c)?, load_key(k)?);
            certify(chain.clone(), key.clone_key(), c, k)?;
            builder.with_client_auth_cert(chain, key).map_err(|source| TlsError::ClientCert { path: c.clone(), source })?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(TlsError::HalfClientCert),
    };
    cfg.alpn_protocols = if http2 { vec![b"h2".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    Ok(Arc::new(cfg))
}

/// The name to send as SNI and verify: `sni`, else the host of `address`.
pub fn server_name(sni: Option<&str>, address: &str) -> Result<ServerName<'static>, TlsError> {
    let host = match sni {
        Some(s) => s,
        None => match address.rsplit_once(':') {
            Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
            None => address,
        },
    };
    ServerName::try_from(host.to_string()).map_err(|source| TlsError::ServerName { host: host.to_string(), source })
}

impl Upstream {
    pub fn new(config: Arc<ClientConfig>, sni: Option<&str>, address: &str) -> Result<Upstream, TlsError> {
        Ok(Upstream { connector: tokio_rustls::TlsConnector::from(config), name: server_name(sni, address)? })
    }
}
