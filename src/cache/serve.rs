//! Answering from a stored response: Age, X-Cache and Cache-Status (RFC 9211)
//! headers, the client's conditional requests (304), HEAD, and single byte
//! ranges (206).

use super::fields::Fields;
use super::store::Entry;
use crate::body::Body;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

static X_CACHE: header::HeaderName = header::HeaderName::from_static("x-cache");
static CACHE_STATUS: header::HeaderName = header::HeaderName::from_static("cache-status");

/// Sets the cache's own headers on an answer.
pub fn mark(h: &mut HeaderMap, hit: bool, status: &str) {
    mark_value(h, hit, HeaderValue::from_str(status).ok());
}

/// As [`mark`], with the Cache-Status entry made already.
fn mark_value(h: &mut HeaderMap, hit: bool, status: Option<HeaderValue>) {
    h.insert(X_CACHE.clone(), HeaderValue::from_static(if hit { "HIT" } else { "MISS" }));
    if let Some(v) = status {
        h.append(CACHE_STATUS.clone(), v);
    }
}

/// Whether the client's If-None-Match matches `etag` (weak comparison).
fn etag_matches(inm: &HeaderValue, etag: Option<&HeaderValue>) -> bool {
    let Ok(list) = inm.to_str() else { return false };
    if list.trim() == "*" {
        return etag.is_some();
    }
    let Some(etag) = etag.and_then(|e| e.to_str().ok()) else { return false };
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    list.split(',').any(|t| strip(t) == strip(etag))
}

/// Whether the client's conditional headers make the stored response a 304.
pub fn not_modified(req: &HeaderMap, stored: &Fields) -> bool {
    if let Some(inm) = req.get(header::IF_NONE_MATCH) {
        return etag_matches(inm, stored.get(&header::ETAG).as_ref());
    }
    // The stored fields are read only for a conditional request.
    let Some(ims) = super::policy::date_header(req, header::IF_MODIFIED_SINCE) else { return false };
    stored.get(&header::LAST_MODIFIED).as_ref().and_then(super::policy::date_value).is_some_and(|lm| lm <= ims)
}

/// A single `bytes=` range within `len`: Some(Ok((start, end_inclusive))), or
/// Some(Err(())) when unsatisfiable; None when absent or not a single range.
fn range(req: &HeaderMap, len: u64) -> Option<Result<(u64, u64), ()>> {
    let v = req.get(header::RANGE)?.to_str().ok()?;
    let spec = v.strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let r = match (a.is_empty(), b.is_empty()) {
        (true, false) => {
            let n: u64 = b.parse().ok()?;
            if n == 0 || len == 0 {
                return Some(Err(()));
            }
            (len.saturating_sub(n), len - 1)
        }
        (false, _) => {
            let start: u64 = a.parse().ok()?;
            let end: u64 = if b.is_empty() { len.saturating_sub(1) } else { b.parse::<u64>().ok()?.min(len.saturating_sub(1)) };
            if start >= len || end < start {
                return Some(Err(()));
            }
            (start, end)
        }
        (true, true) => return None,
    };
    Some(Ok(r))
}

/// The answer to a request (`method`, headers `req`) from `e`, `now`. The
/// answer's own fields (Age, the cache's, the length) go in its header map;
/// the stored ones go as the block they were stored as, unless the answer is
/// a 304 (which leaves some out) or the block holds a field a later phase may
/// set, when they join the map.
pub fn answer(e: &Entry, method: &Method, req: &HeaderMap, now: u64, status: &str) -> Response<Body> {
    let age = e.timing.age(now);
    let mut headers = HeaderMap::new();
    headers.insert(header::AGE, crate::value::number(age));
    let ttl = e.timing.lifetime as i64 - age as i64;
    let mut digits = [0u8; 20];
    let sign: &[u8] = if ttl < 0 { b"-" } else { b"" };
    let ttl = crate::value::decimal(ttl.unsigned_abs(), &mut digits);
    mark_value(&mut headers, true, crate::value::from_parts(&[b"ringmaster; ", status.as_bytes(), b"; ttl=", sign, ttl]));
    if let Some(date) = e.fields.date() {
        headers.insert(header::DATE, date);
    }
    let mut r = Response::new(Body::Empty);
    if e.status == StatusCode::OK && not_modified(req, &e.fields) {
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        let mut stored = e.fields.to_map();
        for h in [header::CONTENT_TYPE, header::CONTENT_ENCODING, header::CONTENT_RANGE] {
            stored.remove(h);
        }
        headers.extend(stored);
        *r.headers_mut() = headers;
        return r;
    }
    let mut body = e.body.clone();
    *r.status_mut() = e.status;
    if e.status == StatusCode::OK {
        let len = body.len() as u64;
        match range(req, len) {
            Some(Ok((a, b))) => {
                *r.status_mut() = StatusCode::PARTIAL_CONTENT;
                headers.insert(header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes {a}-{b}/{len}")).expect("ascii"));
                body = body.slice(a as usize..=b as usize);
            }
            Some(Err(())) => {
                *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                headers.insert(header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes */{len}")).expect("ascii"));
                body = Bytes::new();
            }
            None => {}
        }
    }
    headers.insert(header::CONTENT_LENGTH, crate::value::number(body.len() as u64));
    let data = (method != Method::HEAD).then_some(body);
    *r.body_mut() = if e.fields.plain() {
        Body::Stored { fields: e.fields.lines(), data }
    } else {
        headers.extend(e.fields.to_map());
        Body::Full(data)
    };
    *r.headers_mut() = headers;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(header::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        m
    }

    #[test]
    fn conditionals() {
        let stored = Fields::from_map(&h(&[("etag", "W/\"v1\""), ("last-modified", "Tue, 24 Nov 2026 10:00:00 GMT")]));
        assert!(not_modified(&h(&[("if-none-match", "\"v0\", \"v1\"")]), &stored));
        assert!(!not_modified(&h(&[("if-none-match", "\"v2\"")]), &stored));
        assert!(not_modified(&h(&[("if-none-match", "*")]), &stored));
        assert!(not_modified(&h(&[("if-modified-since", "Tue, 24 Nov 2026 10:00:00 GMT")]), &stored));
        assert!(!not_modified(&h(&[("if-modified-since", "Tue, 24 Nov 2026 09:00:00 GMT")]), &stored));
    }

    #[test]
    fn ranges() {
        let r = |v: &str| range(&h(&[("range", v)]), 100);
        assert_eq!(r("bytes=0-9"), Some(Ok((0, 9))));
        assert_eq!(r("bytes=90-"), Some(Ok((90, 99))));
        assert_eq!(r("bytes=-5"), Some(Ok((95, 99))));
        assert_eq!(r("bytes=95-200"), Some(Ok((95, 99))));
        assert_eq!(r("bytes=100-"), Some(Err(())));
        assert_eq!(r("bytes=0-1,5-6"), None);
        assert_eq!(r("items=0-1"), None);
    }
}
