//! The `dns` and `kubernetes` tables of a service: where its pools'
//! endpoints come from past one machine, and the guardrails on what an
//! answer may change.

use super::Dur;
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// DNS discovery of a service's pools.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSpec {
    /// An SRV name (`_http._tcp.app.internal`) whose targets and ports are
    /// the whole pool; `endpoints` may then be left out.
    #[serde(default)]
    pub srv: Option<Spanned<String>>,
    /// The resolver to ask, `IP:PORT` (default: the system's, /etc/resolv.conf).
    #[serde(default)]
    pub resolver: Option<Spanned<String>>,
    /// An answer's TTL is kept between these.
    #[serde(default = "d_dns_min_ttl")]
    pub min_ttl: Spanned<Dur>,
    #[serde(default = "d_dns_max_ttl")]
    pub max_ttl: Spanned<Dur>,
    /// The largest share of a pool one answer may take away at once.
    #[serde(default = "d_dns_max_drop")]
    pub max_drop: Spanned<f64>,
    /// How long the last known set keeps serving over a larger drop before it is applied.
    #[serde(default = "d_dns_max_stale")]
    pub max_stale: Spanned<Dur>,
}

fn d_dns_min_ttl() -> Spanned<Dur> {
    Spanned::new(0..0, Dur(crate::discovery::DnsPolicy::default().min_ttl))
}
fn d_dns_max_ttl() -> Spanned<Dur> {
    Spanned::new(0..0, Dur(crate::discovery::DnsPolicy::default().max_ttl))
}
fn d_dns_max_drop() -> Spanned<f64> {
    Spanned::new(0..0, crate::discovery::Guardrails::default().max_drop)
}
fn d_dns_max_stale() -> Spanned<Dur> {
    Spanned::new(0..0, Dur(crate::discovery::Guardrails::default().max_stale))
}

/// Discovery from the EndpointSlices of a Kubernetes Service (the
/// `kubernetes` cargo feature).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubeDiscoverySpec {
    /// The Service whose slices make the pool.
    #[serde(default)]
    pub service: Option<Spanned<String>>,
    /// Or a label selector over slices (`app=cache`): a sharded service's
    /// Services, one per shard.
    #[serde(default)]
    pub selector: Option<Spanned<String>>,
    /// A sharded service: the label whose value names a slice's shard.
    #[serde(default)]
    pub shard_label: Option<Spanned<String>>,
    /// The slice port to reach, by name or number (default: the slice's only port).
    #[serde(default)]
    pub port: Option<Spanned<PortRef>>,
    /// `https://HOST:PORT` (default: from KUBERNETES_SERVICE_HOST and _PORT).
    #[serde(default)]
    pub api_server: Option<Spanned<String>>,
    /// Default: the service account's namespace, else `default`.
    #[serde(default)]
    pub namespace: Option<Spanned<String>>,
    /// A bearer token file (default: the service account's token, when present).
    #[serde(default)]
    pub token_file: Option<Spanned<String>>,
    /// The API server's CA bundle (default: the service account's ca.crt).
    #[serde(default)]
    pub ca: Option<Spanned<String>>,
    #[serde(default = "d_dns_max_drop")]
    pub max_drop: Spanned<f64>,
    #[serde(default = "d_dns_max_stale")]
    pub max_stale: Spanned<Dur>,
}

/// A port by number or by name.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum PortRef {
    Number(u32),
    Name(String),
}
