//! Normalise: the request as every later phase must read it. Runs before any
//! phase reads a value from the request: the host is parsed as an authority,
//! refused when it is ambiguous, and made canonical (lower case, no trailing dot,
//! no default port); an absolute-form target's authority wins over Host (RFC 9112
//! section 3.2.2); more than one Host is refused (section 3.2); over HTTP/2 a
//! `host` that disagrees with `:authority` is refused; hop-by-hop headers
//! (including those `Connection` names) are removed, so that no key, cache
//! variant or identity is computed from them. The path loses `.` and `..`
//! segments and repeated slashes, and percent-encoded unreserved characters are
//! decoded (RFC 3986 section 6.2.2), so that `/public/../admin`, `//admin` and
//! `/%61dmin` are all `/admin`; an encoded `/`, `\` or NUL is refused.

use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST, TE, TRANSFER_ENCODING, UPGRADE};
use http::uri::Authority;
use http::Version;
use std::borrow::Cow;

/// Why a request was refused, as its 400 says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("more than one Host header")]
    ManyHosts,
    #[error("the Host is not a valid authority")]
    BadHost,
    #[error("the host header disagrees with :authority")]
    HostMismatch,
    #[error("the path holds an encoded /, \\ or NUL, or a broken percent-encoding")]
    BadPath,
}

/// What a listener does to paths (Envoy's `normalize_path` and `merge_slashes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathRules {
    /// Remove dot segments and decode percent-encoded unreserved characters.
    pub dot_segments_and_decoding: bool,
    pub merge_slashes: bool,
}

impl Default for PathRules {
    fn default() -> Self {
        PathRules { dot_segments_and_decoding: true, merge_slashes: true }
    }
}

/// The normalised form of `path` (no query); `None` when it is already normal.
pub fn path(path: &str, rules: PathRules) -> Result<Option<String>, Refusal> {
    let suspicious = |p: &str| p.contains('%') || p.contains("/.") || (rules.merge_slashes && p.contains("//"));
    if !suspicious(path) {
        return Ok(None);
    }
    let mut p = if rules.dot_segments_and_decoding { decode_unreserved(path)? } else { path.to_string() };
    if rules.merge_slashes {
        while p.contains("//") {
            p = p.replace("//", "/");
        }
    }
    if rules.dot_segments_and_decoding {
        p = remove_dot_segments(&p);
    }
    Ok((p != path).then_some(p))
}

/// Decodes `%XX` of unreserved characters, upper-cases the hex of the others
/// (RFC 3986 section 6.2.2.1-2); refuses an encoded `/`, `\` or NUL, and a `%`
/// not followed by two hex digits.
fn decode_unreserved(path: &str) -> Result<String, Refusal> {
    let b = path.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            out.push(b[i] as char);
            i += 1;
            continue;
        }
        let hex = |c: u8| (c as char).to_digit(16);
        let (Some(h), Some(l)) = (b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) else {
            return Err(Refusal::BadPath);
        };
        let c = (h * 16 + l) as u8;
        match c {
            b'/' | b'\\' | 0 => return Err(Refusal::BadPath),
            c if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') => out.push(c as char),
            c => out.push_str(&format!("%{c:02X}")),
        }
        i += 3;
    }
    Ok(out)
}

/// RFC 3986 section 5.2.4, on an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *seg {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The protocol an HTTP/1.1 request asks to upgrade to (`Connection: upgrade`
/// with an `Upgrade` field, RFC 9110 section 7.8), read before hop-by-hop
/// fields are stripped; HTTP/2 has no such upgrade.
pub fn upgrade(version: Version, h: &HeaderMap) -> Option<HeaderValue> {
    if version != Version::HTTP_11 {
        return None;
    }
    let protocol = h.get(UPGRADE)?;
    let asked = h
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asked.then(|| protocol.clone())
}

/// The protocol of an HTTP/2 extended CONNECT (RFC 8441: `:protocol`, for a
/// WebSocket over one stream).
pub fn extended_connect<B>(req: &http::Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_2 || req.method() != http::Method::CONNECT {
        return None;
    }
    let protocol = req.extensions().get::<hyper::ext::Protocol>()?;
    HeaderValue::from_str(protocol.as_str()).ok()
}

/// Whether `h` has a hop-by-hop field at all. The common case, none, costs one
/// walk over the names (cheap comparisons of standard names) rather than a
/// lookup per name.
pub fn any_hop_by_hop(h: &HeaderMap) -> bool {
    h.keys().any(|k| k == CONNECTION || k == TE || k == TRANSFER_ENCODING || k == UPGRADE || k == KEEP_ALIVE || k == PROXY_CONNECTION)
}

/// An h2c upgrade's settings (RFC 7540 section 3.2.1): hop-by-hop even when
/// Connection does not name it.
static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Removes hop-by-hop headers, including those the Connection header names.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    if !any_hop_by_hop(h) {
        return;
    }
    if h.contains_key(CONNECTION) {
        let named: Vec<HeaderName> = h
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for n in named {
            h.remove(n);
        }
        h.remove(CONNECTION);
    }
    for n in [&KEEP_ALIVE, &PROXY_CONNECTION, &TE, &TRANSFER_ENCODING, &UPGRADE, &HTTP2_SETTINGS] {
        if h.contains_key(n) {
            h.remove(n);
        }
    }
}

/// The canonical host of a request, written back into its Host header; `None`
/// when the request names none (HTTP/1.0 without Host).
pub fn host(headers: &mut HeaderMap, authority: Option<&Authority>, version: Version, https: bool) -> Result<Option<HeaderValue>, Refusal> {
    let mut fields = headers.get_all(HOST).iter();
    let field = fields.next().cloned();
    if fields.next().is_some() {
        return Err(Refusal::ManyHosts);
    }
    let raw = match (authority, field) {
        // HTTP/2: :authority is the target; a host field must say the same.
        (Some(a), Some(h)) if version == Version::HTTP_2 => {
            if !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()) {
                return Err(Refusal::HostMismatch);
            }
            h
        }
        // An absolute-form target's authority wins over Host.
        (Some(a), _) => HeaderValue::from_str(a.as_str()).map_err(|_| Refusal::BadHost)?,
        (None, Some(h)) => h,
        (None, None) => return Ok(None),
    };
    let value = match canonical(raw.as_bytes(), if https { 443 } else { 80 }).ok_or(Refusal::BadHost)? {
        // The common case: the client sent it canonical; nothing is copied or rewritten.
        Cow::Borrowed(_) if authority.is_none() => return Ok(Some(raw)),
        Cow::Borrowed(_) => raw,
        Cow::Owned(c) => HeaderValue::from_str(&c).map_err(|_| Refusal::BadHost)?,
    };
    headers.insert(HOST, value.clone());
    Ok(Some(value))
}

/// `host[:port]` made canonical: lower case, no trailing dot, no port when it is
/// `default_port`; `None` for anything that is not a plain authority (a user
/// part, a path, a query or fragment, a backslash, whitespace or control
/// characters, an empty host, a bad port).
pub fn canonical(raw: &[u8], default_port: u16) -> Option<Cow<'_, str>> {
    let text = std::str::from_utf8(raw).ok()?;
    if text.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || matches!(b, b'/' | b'?' | b'#' | b'@' | b'\\')) {
        return None;
    }
    let (host, port) = split_port(text)?;
    let dotted = host.strip_suffix('.');
    let host = dotted.unwrap_or(host);
    if host.is_empty() || host.starts_with('.') || host.contains("..") {
        return None;
    }
    let valid = if host.starts_with('[') {
        host.ends_with(']') && host[1..host.len() - 1].parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    };
    if !valid {
        return None;
    }
    if dotted.is_none() && port != Some(default_port) && !host.bytes().any(|b| b.is_ascii_uppercase()) {
        return Some(Cow::Borrowed(text));
    }
    let mut out = host.to_ascii_lowercase();
    if let Some(p) = port.filter(|&p| p != default_port) {
        out.push(':');
        out.push_str(&p.to_string());
    }
    Some(Cow::Owned(out))
}

/// `example.com:8080` -> (`example.com`, Some(8080)); a bracketed IPv6 literal keeps its brackets.
fn split_port(text: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = match text.rfind(':') {
        Some(i) if !text.starts_with('[') || text[..i].ends_with(']') => (&text[..i], Some(&text[i + 1..])),
        _ => (text, None),
    };
    match port {
        None => Some((host, None)),
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some((host, Some(p.parse().ok()?))),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised() {
        let r = PathRules::default();
        for (raw, want) in [
            ("/public/../admin", "/admin"),
            ("//admin", "/admin"),
            ("/%61dmin", "/admin"),
            ("/a/./b/../c/", "/a/c/"),
            ("/a/%2e%2e/b", "/b"),
            ("/../../etc", "/etc"),
            ("/a/..", "/"),
            ("/a/.", "/a/"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/a%20b", "/a%20b"),
        ] {
            assert_eq!(path(raw, r).unwrap().as_deref().unwrap_or(raw), want, "{raw}");
        }
        assert_eq!(path("/plain/path", r), Ok(None), "nothing to do costs nothing");
        for bad in ["/a%2fb", "/a%2Fb", "/a%5cb", "/a%00", "/a%zz", "/a%4"] {
            assert_eq!(path(bad, r), Err(Refusal::BadPath), "{bad}");
        }
        let off = PathRules { dot_segments_and_decoding: false, merge_slashes: false };
        assert_eq!(path("//a/../%61", off), Ok(None));
        let merge_only = PathRules { dot_segments_and_decoding: false, merge_slashes: true };
        assert_eq!(path("//a/../b", merge_only), Ok(Some("/a/../b".into())));
    }

    #[test]
    fn hosts_are_made_canonical() {
        assert_eq!(canonical(b"Example.COM", 80).as_deref(), Some("example.com"));
        assert_eq!(canonical(b"example.com.:80", 80).as_deref(), Some("example.com"));
        assert_eq!(canonical(b"example.com:443", 443).as_deref(), Some("example.com"));
        assert_eq!(canonical(b"example.com:8080", 80).as_deref(), Some("example.com:8080"));
        assert_eq!(canonical(b"[::1]:80", 80).as_deref(), Some("[::1]"));
        assert_eq!(canonical(b"[::1]:8443", 443).as_deref(), Some("[::1]:8443"));
        assert_eq!(canonical(b"127.0.0.1:9000", 80).as_deref(), Some("127.0.0.1:9000"));
    }

    #[test]
    fn ambiguous_hosts_are_refused() {
        for bad in ["example.com/cc", "a@b", "a?b", "a#b", "a\\b", "a b", "", ":80", "a:", "a:x", "a:99999", "[::1", "..", "a..b", "\u{1}a"]
        {
            assert_eq!(canonical(bad.as_bytes(), 80), None, "{bad:?}");
        }
    }

    fn headers(hosts: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in hosts {
            h.append(HOST, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn one_host_written_back_and_the_target_authority_wins() {
        let mut h = headers(&["Example.com:80"]);
        assert_eq!(host(&mut h, None, Version::HTTP_11, false).unwrap().unwrap(), "example.com");
        assert_eq!(h[HOST], "example.com");
        let mut h = headers(&["a.test", "b.test"]);
        assert_eq!(host(&mut h, None, Version::HTTP_11, false), Err(Refusal::ManyHosts));
        let mut h = headers(&["other.test"]);
        let v = host(&mut h, Some(&"target.test".parse().unwrap()), Version::HTTP_11, false).unwrap().unwrap();
        assert_eq!((v.to_str().unwrap(), h[HOST].to_str().unwrap()), ("target.test", "target.test"));
        let mut h = headers(&["other.test"]);
        assert_eq!(host(&mut h, Some(&"target.test".parse().unwrap()), Version::HTTP_2, true), Err(Refusal::HostMismatch));
        let mut h = HeaderMap::new();
        assert_eq!(host(&mut h, None, Version::HTTP_10, false), Ok(None));
    }
}
