//! The cache key of a request: host, path and query (optionally with the query
//! parameters sorted or dropped), plus named request headers or cookies.
//! GET and HEAD share a key, so a HEAD is answered from a stored GET.

use http::request::Parts;
use serde::{Deserialize, Serialize};

/// How the query string enters the cache key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryMode {
    #[default]
    Keep,
    /// Parameters sorted, so `?b=1&a=2` and `?a=2&b=1` share an entry.
    Sort,
    Ignore,
}

/// The parts of a request that make its cache key, beyond method, host and path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheKeySpec {
    #[serde(default)]
    pub query: QueryMode,
    /// Request headers whose values are part of the key.
    #[serde(default)]
    pub headers: Vec<String>,
    /// Cookies whose values are part of the key.
    #[serde(default)]
    pub cookies: Vec<String>,
}

/// The cache key of `head`, which arrived over `scheme` for `host` (already
/// normalised: no `/` can be in it, so host and path never run together; and an
/// answer over http is never served to an https request).
pub fn cache_key(spec: &CacheKeySpec, head: &Parts, scheme: &str, host: &str) -> String {
    let mut k = String::with_capacity(64);
    k.push_str(scheme);
    k.push_str("://");
    let at = k.len();
    k.push_str(host);
    k[at..].make_ascii_lowercase();
    k.push_str(head.uri.path());
    if let Some(q) = head.uri.query() {
        match spec.query {
            QueryMode::Keep => {
                k.push('?');
                k.push_str(q);
            }
            QueryMode::Sort => {
                let mut parts: Vec<&str> = q.split('&').filter(|p| !p.is_empty()).collect();
                parts.sort_unstable();
                if !parts.is_empty() {
                    k.push('?');
                    k.push_str(&parts.join("&"));
                }
            }
            QueryMode::Ignore => {}
        }
    }
    for h in &spec.headers {
        k.push('\u{1}');
        k.push_str(h);
        k.push('=');
        for v in head.headers.get_all(h.as_str()) {
            k.push_str(&String::from_utf8_lossy(v.as_bytes()));
        }
    }
    for c in &spec.cookies {
        k.push('\u{2}');
        k.push_str(c);
        k.push('=');
        if let Some(v) = crate::key::cookie(&head.headers, c) {
            k.push_str(&String::from_utf8_lossy(v));
        }
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::key::tests::head;

    #[test]
    fn keys() {
        let mut spec = CacheKeySpec::default();
        assert_eq!(cache_key(&spec, &head("/a?b=2&a=1", &[]), "http", "Example.com"), "http://example.com/a?b=2&a=1");
        assert_eq!(cache_key(&spec, &head("/a", &[]), "https", "x"), "https://x/a");
        spec.query = QueryMode::Sort;
        assert_eq!(cache_key(&spec, &head("/a?b=2&a=1", &[]), "http", "x"), "http://x/a?a=1&b=2");
        spec.query = QueryMode::Ignore;
        assert_eq!(cache_key(&spec, &head("/a?b=2", &[]), "http", "x"), "http://x/a");
        spec.headers = vec!["accept-language".into()];
        spec.cookies = vec!["tier".into()];
        let k = cache_key(&spec, &head("/a", &[("accept-language", "fr"), ("cookie", "tier=gold")]), "http", "x");
        assert_eq!(k, "http://x/a\u{1}accept-language=fr\u{2}tier=gold");
    }
}
