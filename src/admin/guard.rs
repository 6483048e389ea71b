//! Who may use the admin listener: the bearer token (kept as its SHA-256 and
//! compared in constant time), POST for what changes state, no cross-site
//! requests (a browser on an operator's machine must not be able to reload or
//! purge on a page's behalf), and only the admin's own names in Host (a page
//! on a name rebound to this address must not read the config either).
//! `/healthz` and `/readyz` stay open for probes, and the dashboard's page
//! (which holds no data) for browsers.

use http::{header, Method, Request, StatusCode};

/// The admin bearer token.
pub use crate::identity::Secret as Token;

/// The tokens an admin listener asks for.
#[derive(Clone, Copy, Default)]
pub struct Tokens<'a> {
    /// Everything.
    pub full: Option<&'a Token>,
    /// GET of [`READ_ONLY`] only.
    pub heat: Option<&'a Token>,
}

/// What the read-only token opens (peers' heat, scrapers' metrics).
const READ_ONLY: [&str; 2] = ["/admin/heat", "/metrics"];

/// Paths that change state: POST only.
const STATE_CHANGING: [&str; 4] = ["/admin/reload", "/admin/cache/purge", "/admin/cache/switch", "/admin/heat/mitigation"];

/// Why a request is refused, with the status it gets; `None` lets it through.
/// `hosts` are the names accepted in Host beyond IP addresses and `localhost`.
pub fn refuse<B>(req: &Request<B>, tokens: Tokens<'_>, hosts: &[String]) -> Option<(StatusCode, &'static str)> {
    let path = req.uri().path();
    // The dashboard's page holds no data (its script asks for the views
    // with the token the operator types in); probes carry no token.
    if matches!(path, "/healthz" | "/readyz") || (req.method() == Method::GET && matches!(path, "/" | "/dashboard" | "/dashboard/")) {
        return None;
    }
    if let Some(t) = tokens.full {
        let presented = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        let reads = req.method() == Method::GET && READ_ONLY.contains(&path);
        let admitted = |p: &str| t.admits(p.trim()) || (reads && tokens.heat.is_some_and(|h| h.admits(p.trim())));
        if !presented.is_some_and(admitted) {
            return Some((StatusCode::UNAUTHORIZED, "this admin listener needs Authorization: Bearer <admin.token>\n"));
        }
    } else if !host_allowed(req.headers().get(header::HOST).map(|h| h.as_bytes()), hosts) {
        // Without a token, the Host is what tells a rebound page from the operator
        // (a page cannot present a token it does not know).
        return Some((
            StatusCode::FORBIDDEN,
            "this Host is not a name of the admin listener: use its IP address or localhost, or add the name to admin.hosts\n",
        ));
    }
    if STATE_CHANGING.contains(&path) {
        if req.method() != Method::POST {
            return Some((StatusCode::METHOD_NOT_ALLOWED, "state-changing admin paths take POST only\n"));
        }
        if cross_site(req) {
            return Some((StatusCode::FORBIDDEN, "cross-site admin requests are refused\n"));
        }
    }
    None
}

/// Whether `host` (a Host field, with or without a port) names this listener:
/// an IP address (which no DNS answer can rebind), `localhost`, or one of
/// `hosts`. A request without Host (HTTP/1.0) comes from no browser.
fn host_allowed(host: Option<&[u8]>, hosts: &[String]) -> bool {
    let Some(host) = host else { return true };
    let Ok(host) = std::str::from_utf8(host) else { return false };
    if let Some(v6) = host.strip_prefix('[') {
        return v6.split_once(']').is_some_and(|(ip, port)| {
            ip.parse::<std::net::Ipv6Addr>().is_ok() && (port.is_empty() || port.strip_prefix(':').is_some_and(is_port))
        });
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if is_port(port) => name,
        Some(_) => return false,
        None => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// A browser says the request comes from another site: `Sec-Fetch-Site` other
/// than same-origin or none (typed by the user), or an `Origin` whose host is
/// not the one addressed.
fn cross_site<B>(req: &Request<B>) -> bool {
    let h = req.headers();
    if let Some(site) = h.get("sec-fetch-site") {
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return true;
        }
    }
    match h.get(header::ORIGIN) {
        None => false,
        Some(origin) => {
            let host = h.get(header::HOST).map(|v| v.as_bytes()).unwrap_or_default();
            let origin_host = origin.to_str().ok().and_then(|o| o.split_once("://")).map(|(_, rest)| rest.as_bytes());
            origin_host != Some(host)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(path).header("host", "127.0.0.1:9901");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn token_method_and_site_rules() {
        let t = Token::new("s3cret");
        assert_eq!(refuse(&req("GET", "/healthz", &[]), Tokens { full: Some(&t), heat: None }, &[]), None);
        assert_eq!(
            refuse(&req("GET", "/metrics", &[]), Tokens { full: Some(&t), heat: None }, &[]).map(|r| r.0),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            refuse(&req("GET", "/metrics", &[("authorization", "Bearer nope")]), Tokens { full: Some(&t), heat: None }, &[]).map(|r| r.0),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            refuse(&req("GET", "/metrics", &[("authorization", "Bearer s3cret")]), Tokens { full: Some(&t), heat: None }, &[]),
            None
        );
        assert_eq!(refuse(&req("GET", "/admin/reload", &[]), Tokens::default(), &[]).map(|r| r.0), Some(StatusCode::METHOD_NOT_ALLOWED));
        let evil = [("origin", "https://evil.example")];
        assert_eq!(refuse(&req("POST", "/admin/reload", &evil), Tokens::default(), &[]).map(|r| r.0), Some(StatusCode::FORBIDDEN));
        let cross = [("sec-fetch-site", "cross-site")];
        assert_eq!(refuse(&req("POST", "/admin/cache/purge", &cross), Tokens::default(), &[]).map(|r| r.0), Some(StatusCode::FORBIDDEN));
        assert_eq!(refuse(&req("POST", "/admin/reload", &[("origin", "http://127.0.0.1:9901")]), Tokens::default(), &[]), None);
        assert_eq!(refuse(&req("POST", "/admin/reload", &[]), Tokens::default(), &[]), None, "curl sends neither");
        assert_eq!(format!("{t:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn only_the_admins_own_names_in_host() {
        let with_host = |h: &str| Request::builder().uri("/admin/config").header("host", h).body(()).unwrap();
        let named = ["admin.example".to_string()];
        for ok in [
            "127.0.0.1:9901",
            "127.0.0.1",
            "10.1.2.3:9901",
            "[::1]:9901",
            "[::1]",
            "localhost",
            "LOCALHOST:9901",
            "localhost.:1",
            "admin.example:9901",
            "Admin.Example",
        ] {
            assert_eq!(refuse(&with_host(ok), Tokens::default(), &named), None, "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9901",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "[::1]x",
            "localhost:x",
            "admin.example.evil",
            "",
        ] {
            assert_eq!(refuse(&with_host(bad), Tokens::default(), &named).map(|r| r.0), Some(StatusCode::FORBIDDEN), "{bad}");
        }
        let no_host = Request::builder().uri("/admin/config").body(()).unwrap();
        assert_eq!(refuse(&no_host, Tokens::default(), &[]), None, "HTTP/1.0 without Host");
        assert_eq!(
            refuse(&Request::builder().uri("/healthz").header("host", "evil.example").body(()).unwrap(), Tokens::default(), &[]),
            None,
            "probes stay open"
        );
        let t = Token::new("s3cret");
        let peer =
            Request::builder().uri("/admin/heat").header("host", "root-2.roots").header("authorization", "Bearer s3cret").body(()).unwrap();
        assert_eq!(
            refuse(&peer, Tokens { full: Some(&t), heat: None }, &[]),
            None,
            "a request with the token is the operator's, whatever its Host"
        );
    }
}
