//! Who may use the admin listener: the bearer token (kept as its SHA-256 and
//! compared in constant time), POST for what changes state, and no cross-site
//! requests (a browser on an operator's machine must not be able to reload or
//! purge on a page's behalf). `/healthz` and `/readyz` stay open for probes.

use http::{header, Method, Request, StatusCode};

/// The admin bearer token.
pub use crate::identity::Secret as Token;

/// Paths that change state: POST only.
const STATE_CHANGING: [&str; 2] = ["/admin/reload", "/admin/cache/purge"];

/// Why a request is refused, with the status it gets; `None` lets it through.
pub fn refuse<B>(req: &Request<B>, token: Option<&Token>) -> Option<(StatusCode, &'static str)> {
    let path = req.uri().path();
    if matches!(path, "/healthz" | "/readyz") {
        return None;
    }
    if let Some(t) = token {
        let presented = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if !presented.is_some_and(|p| t.admits(p.trim())) {
            return Some((StatusCode::UNAUTHORIZED, "this admin listener needs Authorization: Bearer <admin.token>\n"));
        }
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
        assert_eq!(refuse(&req("GET", "/healthz", &[]), Some(&t)), None);
        assert_eq!(refuse(&req("GET", "/metrics", &[]), Some(&t)).map(|r| r.0), Some(StatusCode::UNAUTHORIZED));
        assert_eq!(
            refuse(&req("GET", "/metrics", &[("authorization", "Bearer nope")]), Some(&t)).map(|r| r.0),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(refuse(&req("GET", "/metrics", &[("authorization", "Bearer s3cret")]), Some(&t)), None);
        assert_eq!(refuse(&req("GET", "/admin/reload", &[]), None).map(|r| r.0), Some(StatusCode::METHOD_NOT_ALLOWED));
        let evil = [("origin", "https://evil.example")];
        assert_eq!(refuse(&req("POST", "/admin/reload", &evil), None).map(|r| r.0), Some(StatusCode::FORBIDDEN));
        let cross = [("sec-fetch-site", "cross-site")];
        assert_eq!(refuse(&req("POST", "/admin/cache/purge", &cross), None).map(|r| r.0), Some(StatusCode::FORBIDDEN));
        assert_eq!(refuse(&req("POST", "/admin/reload", &[("origin", "http://127.0.0.1:9901")]), None), None);
        assert_eq!(refuse(&req("POST", "/admin/reload", &[]), None), None, "curl sends neither");
        assert_eq!(format!("{t:?}"), "Secret(<redacted>)");
    }
}
