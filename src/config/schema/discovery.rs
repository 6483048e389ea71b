//! The `dns` table of a service: where its pools' endpoints come from past
//! one machine, and the guardrails on what an answer may change.

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
    Spanned::new(0..0, crate::discovery::DnsPolicy::default().max_drop)
}
fn d_dns_max_stale() -> Spanned<Dur> {
    Spanned::new(0..0, Dur(crate::discovery::DnsPolicy::default().max_stale))
}
