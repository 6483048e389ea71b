//! Config shapes of a route's HTTP cache.

use super::super::duration::Dur;
use super::d_true;
pub use crate::cache::flow::NoCacheMode;
pub use crate::cache::key::{CacheKeySpec, QueryMode};
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// A route's RFC 9111 cache.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSpec {
    #[serde(default = "d_true")]
    pub enabled: bool,
    /// Memory budget of the route's store, in bytes.
    #[serde(default = "d_cache_memory")]
    pub memory_bytes: Spanned<u64>,
    /// Larger responses are passed through and not stored.
    #[serde(default = "d_cache_object")]
    pub max_object_bytes: Spanned<u64>,
    /// Freshness of responses that say nothing about it (0: not stored).
    #[serde(default = "d_zero")]
    pub default_ttl: Dur,
    #[serde(default = "d_cache_max_ttl")]
    pub max_ttl: Dur,
    /// Cap of the Last-Modified heuristic (10% of the document's age).
    #[serde(default = "d_cache_heuristic")]
    pub heuristic_cap: Dur,
    #[serde(default)]
    pub key: CacheKeySpec,
    /// Methods answered from the cache: GET, and HEAD (from stored GETs).
    #[serde(default = "d_cache_methods")]
    pub methods: Vec<Spanned<String>>,
    /// Store responses that set cookies (not by default: they are usually per user).
    #[serde(default)]
    pub store_set_cookie: bool,
    /// Grace when the response does not say: serve stale while revalidating...
    #[serde(default = "d_zero")]
    pub stale_while_revalidate: Dur,
    /// ...and when the upstream fails.
    #[serde(default = "d_zero")]
    pub stale_if_error: Dur,
    /// Requests waiting for another's upstream answer give up after this.
    #[serde(default = "d_coalesce")]
    pub coalesce_timeout: Dur,
    /// Peers allowed to send PURGE (CIDR or address); none by default.
    #[serde(default)]
    pub purge_from: Vec<Spanned<String>>,
    /// Response header listing an entry's tags, for purge by tag.
    #[serde(default)]
    pub tag_header: Option<String>,
    /// A response field of our own that, when present, directs this cache instead
    /// of Cache-Control and Expires (RFC 9213); checked before CDN-Cache-Control.
    #[serde(default)]
    pub targeted_field: Option<Spanned<String>>,
    /// Honour `CDN-Cache-Control` (RFC 9213) before Cache-Control.
    #[serde(default = "d_true")]
    pub cdn_cache_control: bool,
    /// Variants stored per key (by Vary); the least recently used one goes first.
    #[serde(default = "d_max_variants")]
    pub max_variants: Spanned<usize>,
    /// What a client's `Cache-Control: no-cache` (or `Pragma: no-cache`) does.
    #[serde(default)]
    pub request_no_cache: NoCacheMode,
}

fn d_max_variants() -> Spanned<usize> {
    Spanned::new(0..0, 16)
}
fn d_cache_methods() -> Vec<Spanned<String>> {
    vec![Spanned::new(0..0, "GET".into()), Spanned::new(0..0, "HEAD".into())]
}
fn d_cache_memory() -> Spanned<u64> {
    Spanned::new(0..0, 256 * 1024 * 1024)
}
fn d_cache_object() -> Spanned<u64> {
    Spanned::new(0..0, 8 * 1024 * 1024)
}
fn d_zero() -> Dur {
    Dur::secs(0)
}
fn d_cache_max_ttl() -> Dur {
    Dur::secs(86_400)
}
fn d_cache_heuristic() -> Dur {
    Dur::secs(86_400)
}
fn d_coalesce() -> Dur {
    Dur::secs(5)
}
