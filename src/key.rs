//! Keys: what a balancer or sharder hashes, taken from the request.
//!
//! Configured as `"client_ip"`, `"host"`, `"path"`, or a table naming a
//! `header`, `cookie`, `query` parameter or `path_segment` (0-based).

use http::request::Parts;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::net::IpAddr;

#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySpec {
    /// The client address, after trusted-proxy handling.
    ClientIp,
    /// The Host header (or the URI authority over HTTP/2), without the port.
    Host,
    /// The whole path, without the query.
    Path,
    Header(String),
    Cookie(String),
    Query(String),
    /// The Nth segment of the path, counting from 0: `/a/b` has `a` at 0.
    PathSegment(usize),
}

impl KeySpec {
    /// A short label for errors and metrics: `header x-user`, `path segment 2`.
    pub fn describe(&self) -> String {
        match self {
            KeySpec::ClientIp => "client_ip".into(),
            KeySpec::Host => "host".into(),
            KeySpec::Path => "path".into(),
            KeySpec::Header(h) => format!("header {h}"),
            KeySpec::Cookie(c) => format!("cookie {c}"),
            KeySpec::Query(q) => format!("query parameter {q}"),
            KeySpec::PathSegment(n) => format!("path segment {n}"),
        }
    }

    /// The key of a request, or `None` when the request does not carry it.
    pub fn extract<'a>(&self, head: &'a Parts, client: IpAddr) -> Option<Cow<'a, [u8]>> {
        self.extract_from(&head.uri, &head.headers, client)
    }

    /// As [`KeySpec::extract`], from a request's target and fields.
    pub fn extract_from<'a>(&self, uri: &'a http::Uri, headers: &'a http::HeaderMap, client: IpAddr) -> Option<Cow<'a, [u8]>> {
        match self {
            KeySpec::ClientIp => Some(Cow::Owned(match client {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                IpAddr::V6(v6) => v6.octets().to_vec(),
            })),
            KeySpec::Host => {
                let h = headers.get(http::header::HOST).map(|v| v.as_bytes()).or_else(|| uri.authority().map(|a| a.as_str().as_bytes()))?;
                Some(Cow::Borrowed(strip_port_bytes(h)))
            }
            KeySpec::Path => Some(Cow::Borrowed(uri.path().as_bytes())),
            KeySpec::Header(name) => {
                let v = headers.get(name.as_str())?.as_bytes();
                (!v.is_empty()).then_some(Cow::Borrowed(v))
            }
            KeySpec::Cookie(name) => cookie(headers, name).map(Cow::Borrowed),
            KeySpec::Query(name) => query_param(uri.query()?, name),
            KeySpec::PathSegment(n) => {
                let seg = uri.path().split('/').filter(|s| !s.is_empty()).nth(*n)?;
                Some(Cow::Borrowed(seg.as_bytes()))
            }
        }
    }
}

/// What to do with a request that lacks the configured key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// Any endpoint (or shard), at random.
    Random,
    /// Answer 400, naming the missing key.
    Reject,
    /// Every shard (sharded services only): the request fans out.
    All,
}

/// A key, a second key to try when a request lacks the first, and what to do
/// when it lacks both: the one extraction a hash balancer and a sharder share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRule {
    pub key: KeySpec,
    pub fallback_key: Option<KeySpec>,
    pub fallback: Fallback,
}

impl KeyRule {
    /// The key of a request (or its fallback key); `None` when it has neither.
    pub fn extract<'a>(&self, head: &'a Parts, client: IpAddr) -> Option<Cow<'a, [u8]>> {
        self.key.extract(head, client).or_else(|| self.fallback_key.as_ref().and_then(|k| k.extract(head, client)))
    }

    /// Whether a request (its target and fields) carries the key or its fallback key.
    pub fn carried_by(&self, uri: &http::Uri, headers: &http::HeaderMap, client: IpAddr) -> bool {
        self.key.extract_from(uri, headers, client).is_some()
            || self.fallback_key.as_ref().is_some_and(|k| k.extract_from(uri, headers, client).is_some())
    }

    /// The error of a request without the key, when the fallback rejects it.
    pub fn missing(&self) -> MissingKey {
        MissingKey(self.key.describe())
    }
}

/// A request that lacks the key its hash balancer or sharder needs, with no fallback.
#[derive(Debug, thiserror::Error)]
#[error("this request has no {0}, which decides where it goes")]
pub struct MissingKey(pub String);

/// `example.com:8080` -> `example.com`; `[::1]:80` -> `[::1]`.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// [`strip_port`] on raw header bytes.
pub fn strip_port_bytes(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return match host.iter().position(|&b| b == b']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(i) if host[i + 1..].iter().all(u8::is_ascii_digit) => &host[..i],
        _ => host,
    }
}

/// The value of cookie `name` in the request's Cookie headers.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a [u8]> {
    for v in headers.get_all(http::header::COOKIE) {
        for pair in v.as_bytes().split(|&b| b == b';') {
            let pair = trim(pair);
            if let Some(eq) = pair.iter().position(|&b| b == b'=') {
                if &pair[..eq] == name.as_bytes() {
                    let v = trim(&pair[eq + 1..]);
                    let v = v.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(v);
                    return (!v.is_empty()).then_some(v);
                }
            }
        }
    }
    None
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if *first == b' ' || *first == b'\t' {
            b = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = b {
        if *last == b' ' || *last == b'\t' {
            b = rest;
        } else {
            break;
        }
    }
    b
}

/// The value of query parameter `name`, decoded as forms are (`+` is a space,
/// `%XX` a byte, names decoded too); the first non-empty one. The one query
/// decoding every phase uses (shard and balancer keys, API keys, admin queries).
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<Cow<'a, [u8]>> {
    if !query.contains(['%', '+']) {
        // The common case: nothing to decode, nothing copied.
        return query.split('&').find_map(|pair| match pair.split_once('=') {
            Some((k, v)) if k == name && !v.is_empty() => Some(Cow::Borrowed(v.as_bytes())),
            _ => None,
        });
    }
    form_urlencoded::parse(query.as_bytes()).find(|(k, v)| k == name && !v.is_empty()).map(|(_, v)| Cow::Owned(v.into_owned().into_bytes()))
}

/// Every query parameter, decoded as forms are.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A request head for tests of keys (used by the cache key's tests too).
    pub(crate) fn head(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::get(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn key(spec: KeySpec, h: &Parts) -> Option<Vec<u8>> {
        spec.extract(h, "192.0.2.1".parse().unwrap()).map(|c| c.into_owned())
    }

    #[test]
    fn each_kind_of_key() {
        let h = head(
            "/users/42/orders?id=7&name=a%20b+c",
            &[("host", "Shop.example:8080"), ("x-user", "u1"), ("cookie", "a=1; session=\"s-9\" ; b=2")],
        );
        assert_eq!(key(KeySpec::ClientIp, &h).unwrap(), vec![192, 0, 2, 1]);
        assert_eq!(key(KeySpec::Host, &h).unwrap(), b"Shop.example");
        assert_eq!(key(KeySpec::Path, &h).unwrap(), b"/users/42/orders");
        assert_eq!(key(KeySpec::Header("x-user".into()), &h).unwrap(), b"u1");
        assert_eq!(key(KeySpec::Cookie("session".into()), &h).unwrap(), b"s-9");
        assert_eq!(key(KeySpec::Query("id".into()), &h).unwrap(), b"7");
        assert_eq!(key(KeySpec::Query("name".into()), &h).unwrap(), b"a b c");
        assert_eq!(key(KeySpec::PathSegment(1), &h).unwrap(), b"42");
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("a.com:80"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port_bytes(b"a.com:80"), b"a.com");
    }

    #[test]
    fn query_values_are_decoded_one_way() {
        assert_eq!(query_param("a=1&user=u%201+x", "user").as_deref(), Some(&b"u 1 x"[..]));
        assert_eq!(query_param("%75ser=7", "user").as_deref(), Some(&b"7"[..]), "names are decoded too");
        assert_eq!(query_param("user=&user=2", "user").as_deref(), Some(&b"2"[..]), "the first non-empty one");
        assert!(matches!(query_param("user=plain", "user"), Some(Cow::Borrowed(_))), "nothing to decode, nothing copied");
        assert_eq!(query_pairs("k=a%26b&t=x+y"), vec![("k".to_string(), "a&b".to_string()), ("t".to_string(), "x y".to_string())]);
    }

    #[test]
    fn missing_keys() {
        let h = head("/", &[("cookie", "other=1")]);
        assert_eq!(key(KeySpec::Header("x-user".into()), &h), None);
        assert_eq!(key(KeySpec::Cookie("session".into()), &h), None);
        assert_eq!(key(KeySpec::Query("id".into()), &h), None);
        assert_eq!(key(KeySpec::PathSegment(0), &h), None);
    }

    #[test]
    fn config_forms() {
        #[derive(Deserialize)]
        struct T {
            a: KeySpec,
            b: KeySpec,
            c: KeySpec,
        }
        let t: T = toml::from_str("a = \"client_ip\"\nb = { header = \"x-user\" }\nc = { path_segment = 2 }").unwrap();
        assert_eq!((t.a, t.b, t.c), (KeySpec::ClientIp, KeySpec::Header("x-user".into()), KeySpec::PathSegment(2)));
    }
}
