//! The TLS tables: an https listener's certificates, resumption and client
//! authentication, and TLS towards a pool's endpoints.

use super::{d_true, Dur};
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// A certificate and its key, in PEM files, and the SNI names it serves.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertSpec {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
    /// Exact names or `*.example.com`; the listener's first certificate also
    /// answers clients without SNI or with an unknown name.
    #[serde(default)]
    pub names: Vec<String>,
}

/// TLS settings of an `https` listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    pub certificates: Vec<CertSpec>,
    /// Client certificates (mTLS) checked against a CA bundle.
    #[serde(default)]
    pub client_auth: Option<Spanned<ClientAuthSpec>>,
    /// Stateless resumption (TLS 1.3 and 1.2 session tickets, keys rotated by the proxy).
    #[serde(default = "d_true")]
    pub session_tickets: bool,
    /// Sessions remembered for stateful resumption; 0 turns it off.
    #[serde(default = "d_session_cache")]
    pub session_cache: usize,
    /// How often the certificate and key files are checked for changes; "0s" turns it off
    /// (SIGHUP and `POST /admin/reload` still reload them).
    #[serde(default = "d_tls_watch")]
    pub watch_interval: Dur,
}

/// Client-certificate authentication on an https listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthSpec {
    /// PEM bundle of the CAs that client certificates must chain to.
    pub ca: Spanned<String>,
    /// Refuse the handshake without a client certificate (`false`: ask, accept without).
    #[serde(default = "d_true")]
    pub required: bool,
    /// The identity tier (see `rate_limit_tiers`) of a client with a verified certificate;
    /// its owner is the certificate subject's common name (the whole subject without one).
    #[serde(default)]
    pub tier: Option<Spanned<String>>,
}

/// TLS towards a pool's endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsSpec {
    /// PEM bundle of the CAs the endpoints' certificates must chain to; the system's roots when absent.
    #[serde(default)]
    pub ca: Option<Spanned<String>>,
    /// The name sent as SNI and verified in the certificate; each endpoint's host when absent.
    #[serde(default)]
    pub sni: Option<Spanned<String>>,
    /// A client certificate and key (PEM) presented to endpoints that ask for one.
    #[serde(default)]
    pub cert: Option<Spanned<String>>,
    #[serde(default)]
    pub key: Option<Spanned<String>>,
}

fn d_session_cache() -> usize {
    20_000
}
fn d_tls_watch() -> Dur {
    Dur::secs(5)
}
