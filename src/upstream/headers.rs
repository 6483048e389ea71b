//! Forwarding headers: what a request and its response look like on the other
//! side of the proxy. Hop-by-hop headers (RFC 9110 section 7.6.1) are dropped;
//! X-Forwarded-For/-Proto/-Host, RFC 7239 Forwarded and Via are set, believing
//! incoming values only from trusted proxies.

use http::header::{HeaderMap, HeaderName, HeaderValue, FORWARDED, HOST, VIA};
use http::Version;
use std::net::IpAddr;

static XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
static XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
static XFH: HeaderName = HeaderName::from_static("x-forwarded-host");

/// What the forwarding headers need to know about the client connection.
pub struct Hop<'a> {
    /// The peer that connected to us.
    pub peer: IpAddr,
    /// `peer` as a header value, made once per connection.
    pub peer_value: &'a HeaderValue,
    /// Whether the peer's forwarding headers are believed.
    pub trusted: bool,
    /// "http" or "https".
    pub proto: &'static str,
}

use crate::normalise::strip_hop_by_hop;

/// The Via token for a message received with `v`.
fn via_token(v: Version) -> &'static str {
    match v {
        Version::HTTP_10 => "1.0 ringmaster",
        Version::HTTP_2 => "2 ringmaster",
        Version::HTTP_3 => "3 ringmaster",
        _ => "1.1 ringmaster",
    }
}

fn append_or_set(h: &mut HeaderMap, name: &HeaderName, value: &HeaderValue, keep_old: bool) {
    if !keep_old || !h.contains_key(name) {
        h.insert(name.clone(), value.clone());
        return;
    }
    let mut joined: Vec<u8> = Vec::with_capacity(64);
    for v in h.get_all(name) {
        if !joined.is_empty() {
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    joined.extend_from_slice(b", ");
    joined.extend_from_slice(value.as_bytes());
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        h.insert(name.clone(), v);
    }
}

/// Rewrites request headers for the upstream. `host` is the request's host (from
/// the Host header or the URI authority, for HTTP/2).
pub fn upstream_request(h: &mut HeaderMap, version: Version, host: Option<&HeaderValue>, hop: &Hop) {
    strip_hop_by_hop(h);
    if let Some(host) = host {
        if !h.contains_key(HOST) {
            h.insert(HOST, host.clone());
        }
    }
    append_or_set(h, &XFF, hop.peer_value, hop.trusted);
    if !(hop.trusted && h.contains_key(&XFP)) {
        h.insert(XFP.clone(), HeaderValue::from_static(hop.proto));
    }
    if !(hop.trusted && h.contains_key(&XFH)) {
        if let Some(host) = host {
            h.insert(XFH.clone(), host.clone());
        }
    }
    let mut fwd = String::with_capacity(64);
    fwd.push_str("for=");
    match hop.peer {
        IpAddr::V4(v4) => fwd.push_str(&v4.to_string()),
        IpAddr::V6(v6) => {
            fwd.push_str("\"[");
            fwd.push_str(&v6.to_string());
            fwd.push_str("]\"");
        }
    }
    if let Some(host) = host.and_then(|v| v.to_str().ok()) {
        if host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b)) {
            fwd.push_str(";host=");
            fwd.push_str(host);
        } else {
            fwd.push_str(";host=\"");
            fwd.push_str(&host.replace('"', ""));
            fwd.push('"');
        }
    }
    fwd.push_str(";proto=");
    fwd.push_str(hop.proto);
    if let Ok(v) = HeaderValue::from_str(&fwd) {
        append_or_set(h, &FORWARDED, &v, hop.trusted);
    }
    append_or_set(h, &VIA, &HeaderValue::from_static(via_token(version)), true);
}

/// Rewrites response headers for the client. A Content-Length beside a
/// Transfer-Encoding is dropped (RFC 9112 section 6.3): the body was framed by
/// its chunks, and the length would make the client read the wrong bytes.
pub fn downstream_response(h: &mut HeaderMap, upstream_version: Version) {
    if h.contains_key(http::header::TRANSFER_ENCODING) {
        h.remove(http::header::CONTENT_LENGTH);
    }
    strip_hop_by_hop(h);
    append_or_set(h, &VIA, &HeaderValue::from_static(via_token(upstream_version)), true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{CONNECTION, TE};

    fn hop<'a>(v: &'a HeaderValue, trusted: bool) -> Hop<'a> {
        Hop { peer: "192.0.2.1".parse().unwrap(), peer_value: v, trusted, proto: "http" }
    }

    #[test]
    fn drops_hop_by_hop_and_connection_named() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(TE, "trailers".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn untrusted_forwarding_headers_are_replaced() {
        let v = HeaderValue::from_static("192.0.2.1");
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        h.insert("forwarded", "for=6.6.6.6".parse().unwrap());
        let host = HeaderValue::from_static("example.com");
        upstream_request(&mut h, Version::HTTP_11, Some(&host), &hop(&v, false));
        assert_eq!(h["x-forwarded-for"], "192.0.2.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com");
        assert_eq!(h["forwarded"], "for=192.0.2.1;host=example.com;proto=http");
        assert_eq!(h["via"], "1.1 ringmaster");
        assert_eq!(h["host"], "example.com");
    }

    #[test]
    fn trusted_forwarding_headers_are_appended() {
        let v = HeaderValue::from_static("192.0.2.1");
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "1.1.1.1".parse().unwrap());
        h.append("x-forwarded-for", "2.2.2.2".parse().unwrap());
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        h.insert("forwarded", "for=1.1.1.1".parse().unwrap());
        h.insert("via", "1.1 edge".parse().unwrap());
        upstream_request(&mut h, Version::HTTP_2, None, &hop(&v, true));
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 192.0.2.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["forwarded"], "for=1.1.1.1, for=192.0.2.1;proto=http");
        assert_eq!(h["via"], "1.1 edge, 2 ringmaster");
    }
}
