//! The config of the admin listener, `[admin]`: where it listens, the
//! tokens it asks for, the names it answers to, how it shows keys, and its
//! optional TLS.

use super::{d_true, TlsSpec};
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// The admin listener: metrics, health, pools, reload.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSpec {
    #[serde(default = "d_true")]
    pub enabled: bool,
    #[serde(default = "d_admin_listen")]
    pub listen: Spanned<String>,
    /// A bearer token every admin request but /healthz and /readyz must carry;
    /// required when `listen` is not a loopback address.
    #[serde(default)]
    pub token: Option<Spanned<String>>,
    /// The token, read from a file (a Kubernetes secret, say).
    #[serde(default)]
    pub token_file: Option<Spanned<String>>,
    /// A second, read-only token: GET `/admin/heat` and `/metrics` only (what
    /// peers and scrapers need), never the config or a reload.
    #[serde(default)]
    pub heat_token: Option<Spanned<String>>,
    #[serde(default)]
    pub heat_token_file: Option<Spanned<String>>,
    /// Names this listener answers to in Host, beyond IP addresses and
    /// `localhost` (a DNS-rebinding defence: a page served under another
    /// name that resolves here is refused).
    #[serde(default)]
    pub hosts: Vec<Spanned<String>>,
    /// How `/admin/heat` shows keys, which come from clients (session ids,
    /// e-mails): a keyed hash, a short prefix with it, or raw.
    #[serde(default)]
    pub show_keys: ShowKeys,
    /// HTTPS for the admin listener (as a listener's `tls` table).
    #[serde(default)]
    pub tls: Option<Spanned<TlsSpec>>,
}

/// How keys appear in admin views.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShowKeys {
    /// `#` and 16 hex digits of a hash keyed per process: tells keys apart, reveals none.
    #[default]
    Hashed,
    /// The first 4 bytes, `…`, and the hash.
    Prefix,
    Raw,
}

impl Default for AdminSpec {
    fn default() -> Self {
        AdminSpec {
            enabled: true,
            listen: d_admin_listen(),
            token: None,
            token_file: None,
            heat_token: None,
            heat_token_file: None,
            hosts: Vec::new(),
            show_keys: ShowKeys::Hashed,
            tls: None,
        }
    }
}

fn d_admin_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:9901".to_string())
}
