//! TLS towards a pool's endpoints: verified against a CA bundle or the
//! system's roots, with the configured SNI name (or the endpoint's host), an
//! optional client certificate, and ALPN matching the pool's protocol.
//! Sessions are resumed on reconnects (rustls' in-memory client cache).

use super::{certify, load_chain, load_key, load_roots, provider};
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
fn system_roots() -> Result<Arc<rustls::RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<rustls::RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(format!(
                    "no system CA certificates found ({}); install ca-certificates or set tls.ca",
                    found.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
                ));
            }
            Ok(Arc::new(roots))
        })
        .clone()
}

/// The rustls client config of a pool; ALPN offers `h2` or `http/1.1`.
pub fn client_config(spec: &Settings, http2: bool) -> Result<Arc<ClientConfig>, String> {
    let roots = match &spec.ca {
        Some(ca) => Arc::new(load_roots(ca)?),
        None => system_roots()?,
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut cfg = match (&spec.cert, &spec.key) {
        (Some(c), Some(k)) => {
            let (chain, key) = (load_chain(c)?, load_key(k)?);
            certify(chain.clone(), key.clone_key(), c, k)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("client certificate {c}: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("an upstream client certificate needs both cert and key".into()),
    };
    cfg.alpn_protocols = if http2 { vec![b"h2".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    Ok(Arc::new(cfg))
}

/// The name to send as SNI and verify: `sni`, else the host of `address`.
pub fn server_name(sni: Option<&str>, address: &str) -> Result<ServerName<'static>, String> {
    let host = match sni {
        Some(s) => s,
        None => match address.rsplit_once(':') {
            Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
            None => address,
        },
    };
    ServerName::try_from(host.to_string()).map_err(|e| format!("`{host}` cannot be a TLS server name: {e}"))
}

impl Upstream {
    pub fn new(config: Arc<ClientConfig>, sni: Option<&str>, address: &str) -> Result<Upstream, String> {
        Ok(Upstream { connector: tokio_rustls::TlsConnector::from(config), name: server_name(sni, address)? })
    }
}
