//! RFC 9111 for a shared cache, as pure functions: Cache-Control parsing,
//! whether a response may be stored, its freshness lifetime and current age,
//! and whether a stored response may answer a request.
//!
//! Times are whole seconds since the Unix epoch, as HTTP dates are.

use http::{HeaderMap, HeaderValue, Method, StatusCode};
use std::time::{SystemTime, UNIX_EPOCH};

/// Cache-Control directives of a request or a response (RFC 9111 section 5.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub no_store: bool,
    /// Qualified forms (`no-cache="Set-Cookie"`) are treated as unqualified.
    pub no_cache: bool,
    /// Qualified forms (`private="x"`) are treated as unqualified: not stored.
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
    /// Request: `max-stale` (None inside means any staleness).
    pub max_stale: Option<Option<u64>>,
    pub min_fresh: Option<u64>,
    pub only_if_cached: bool,
    /// Read from a targeted field (RFC 9213), so `Expires` is ignored.
    pub targeted: bool,
}

/// A delta-seconds value (RFC 9111 section 1.2.2): digits only; one too large to
/// represent counts as 2^31.
pub fn delta_seconds(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(v.parse::<u64>().map_or(1 << 31, |n| n.min(1 << 31)))
}

impl CacheControl {
    /// Parses every Cache-Control field of `h`; a request's `Pragma: no-cache`
    /// counts as `no-cache` when it has no Cache-Control.
    pub fn parse(h: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::from_fields(h.get_all(http::header::CACHE_CONTROL));
        if !h.contains_key(http::header::CACHE_CONTROL)
            && h.get_all(http::header::PRAGMA).iter().any(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"))
        {
            cc.no_cache = true;
        }
        cc
    }

    /// A response's directives for this cache: from the first of the `targeted`
    /// fields (RFC 9213: our own, then `CDN-Cache-Control`) that has a value, else
    /// from Cache-Control.
    pub fn for_response(h: &HeaderMap, targeted: &[http::HeaderName]) -> CacheControl {
        for name in targeted {
            let values = h.get_all(name);
            if values.iter().any(|v| v.to_str().is_ok_and(|s| !s.trim().is_empty())) {
                return CacheControl { targeted: true, ..CacheControl::from_fields(values) };
            }
        }
        CacheControl::from_fields(h.get_all(http::header::CACHE_CONTROL))
    }

    fn from_fields(fields: http::header::GetAll<'_, http::HeaderValue>) -> CacheControl {
        let mut cc = CacheControl::default();
        for v in fields {
            let Ok(s) = v.to_str() else { continue };
            for d in split_directives(s) {
                let (name, value) = match d.split_once('=') {
                    Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                    None => (d.trim(), None),
                };
                let secs = || value.and_then(delta_seconds);
                match name.to_ascii_lowercase().as_str() {
                    "max-age" => cc.max_age = secs().or(Some(0)),
                    "s-maxage" => cc.s_maxage = secs().or(Some(0)),
                    "no-store" => cc.no_store = true,
                    "no-cache" => cc.no_cache = true,
                    "private" => cc.private = true,
                    "public" => cc.public = true,
                    "must-revalidate" => cc.must_revalidate = true,
                    "proxy-revalidate" => cc.proxy_revalidate = true,
                    "stale-while-revalidate" => cc.stale_while_revalidate = secs(),
                    "stale-if-error" => cc.stale_if_error = secs(),
                    "max-stale" => cc.max_stale = Some(secs()),
                    "min-fresh" => cc.min_fresh = secs(),
                    "only-if-cached" => cc.only_if_cached = true,
                    _ => {}
                }
            }
        }
        cc
    }
}

/// Splits directives on commas outside quoted strings.
fn split_directives(s: &str) -> impl Iterator<Item = &str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter().map(str::trim).filter(|d| !d.is_empty())
}

/// Seconds since the epoch, now.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// An HTTP date header as epoch seconds.
pub fn date_header(h: &HeaderMap, name: http::header::HeaderName) -> Option<u64> {
    date_value(h.get(name)?)
}

/// An HTTP-date value, in seconds since the epoch.
pub fn date_value(v: &HeaderValue) -> Option<u64> {
    let t = httpdate::parse_http_date(v.to_str().ok()?).ok()?;
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Statuses a cache may store with heuristic freshness (RFC 9110 section 15.1).
pub fn heuristically_cacheable(s: StatusCode) -> bool {
    matches!(s.as_u16(), 200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501)
}

/// Operator settings that bend the defaults.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Freshness when the response says nothing and has no Last-Modified (0: not stored).
    pub default_ttl: u64,
    /// Freshness is never longer than this.
    pub max_ttl: u64,
    /// Cap of the Last-Modified heuristic.
    pub heuristic_cap: u64,
    /// Store responses that set cookies.
    pub store_set_cookie: bool,
    /// Grace: stale answers allowed while revalidating, and when the upstream fails,
    /// when the response does not say.
    pub stale_while_revalidate: u64,
    pub stale_if_error: u64,
    /// Targeted cache-control fields, first match wins (RFC 9213).
    pub targeted: Vec<http::HeaderName>,
}

/// Why a response was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotStored {
    Method,
    Status,
    NoStore,
    Private,
    Credentials,
    SetCookie,
    VaryStar,
    NoFreshness,
}

impl NotStored {
    pub fn reason(self) -> &'static str {
        match self {
            NotStored::Method => "method",
            NotStored::Status => "status",
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::Credentials => "credentials",
            NotStored::SetCookie => "set-cookie",
            NotStored::VaryStar => "vary-star",
            NotStored::NoFreshness => "no-freshness",
        }
    }
}

/// Whether a response to a request may be stored, and for how long it is fresh.
/// `credentialed`: the request carried credentials (Authorization, a cookie, an
/// API key).
pub fn storable(
    method: &Method,
    credentialed: bool,
    req_cc: &CacheControl,
    status: StatusCode,
    resp: &HeaderMap,
    cc: &CacheControl,
    s: &Settings,
) -> Result<u64, NotStored> {
    if method != Method::GET {
        return Err(NotStored::Method);
    }
    if status.is_informational() || status == StatusCode::PARTIAL_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Err(NotStored::Status);
    }
    if req_cc.no_store || cc.no_store {
        return Err(NotStored::NoStore);
    }
    if cc.private {
        return Err(NotStored::Private);
    }
    // RFC 9111 section 3.5: only what the response says a shared cache may keep.
    if credentialed && !(cc.public || cc.must_revalidate || cc.s_maxage.is_some()) {
        return Err(NotStored::Credentials);
    }
    if resp.contains_key(http::header::SET_COOKIE) && !s.store_set_cookie {
        return Err(NotStored::SetCookie);
    }
    if resp.get_all(http::header::VARY).iter().any(|v| v.to_str().map(|v| v.split(',').any(|t| t.trim() == "*")).unwrap_or(false)) {
        return Err(NotStored::VaryStar);
    }
    let explicit = cc.s_maxage.is_some() || cc.max_age.is_some() || (!cc.targeted && resp.contains_key(http::header::EXPIRES));
    if !explicit && !cc.public && !heuristically_cacheable(status) {
        return Err(NotStored::Status);
    }
    let lifetime = freshness_lifetime(status, resp, cc, s);
    // A response that is stale at once is still worth keeping when it can be
    // revalidated; one with nothing to go on is not.
    if lifetime == 0 && !explicit && !has_validator(resp) {
        return Err(NotStored::NoFreshness);
    }
    Ok(lifetime)
}

/// Whether a response carries a validator (ETag or Last-Modified).
pub fn has_validator(h: &HeaderMap) -> bool {
    h.contains_key(http::header::ETAG) || h.contains_key(http::header::LAST_MODIFIED)
}

/// Freshness lifetime in seconds (RFC 9111 section 4.2.1), capped at `max_ttl`.
pub fn freshness_lifetime(status: StatusCode, resp: &HeaderMap, cc: &CacheControl, s: &Settings) -> u64 {
    let date = date_header(resp, http::header::DATE).unwrap_or_else(now_secs);
    let life = if let Some(v) = cc.s_maxage.or(cc.max_age) {
        v
    } else if !cc.targeted && resp.contains_key(http::header::EXPIRES) {
        // An invalid Expires means already expired (RFC 9111 section 5.3).
        date_header(resp, http::header::EXPIRES).map(|e| e.saturating_sub(date)).unwrap_or(0)
    } else if let (true, Some(lm)) = (heuristically_cacheable(status), date_header(resp, http::header::LAST_MODIFIED)) {
        (date.saturating_sub(lm) / 10).min(s.heuristic_cap)
    } else if heuristically_cacheable(status) {
        s.default_ttl
    } else {
        0
    };
    life.min(s.max_ttl)
}

/// What the cache knows of a stored response's timing.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub request_time: u64,
    pub response_time: u64,
    /// Age the response had on arrival (RFC 9111 section 4.2.3's corrected initial age).
    pub initial_age: u64,
    pub lifetime: u64,
}

impl Timing {
    /// Timing of a response that arrived at `response_time` for a request sent at `request_time`.
    pub fn new(request_time: u64, response_time: u64, resp: &HeaderMap, lifetime: u64) -> Timing {
        // An invalid Age is ignored (RFC 9111 section 5.1).
        let age_value = resp.get(http::header::AGE).and_then(|v| v.to_str().ok()).and_then(|v| delta_seconds(v.trim())).unwrap_or(0);
        let date = date_header(resp, http::header::DATE).unwrap_or(response_time);
        let apparent_age = response_time.saturating_sub(date);
        let corrected_age = age_value + response_time.saturating_sub(request_time);
        Timing { request_time, response_time, initial_age: apparent_age.max(corrected_age), lifetime }
    }

    pub fn age(&self, now: u64) -> u64 {
        self.initial_age + now.saturating_sub(self.response_time)
    }

    pub fn is_fresh(&self, now: u64) -> bool {
        self.lifetime > self.age(now)
    }

    pub fn staleness(&self, now: u64) -> u64 {
        self.age(now).saturating_sub(self.lifetime)
    }
}

/// How a stored response may answer a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usable {
    /// Fresh enough for this request: answer from the cache.
    Fresh,
    /// Stale, and may be served while one background request refreshes it.
    StaleWhileRevalidate,
    /// Must be validated (or fetched anew) before use; `if_error` says whether it
    /// may still be served if the upstream fails.
    Validate { if_error: bool },
}

/// What a stored response's own directives say about using it again: all a
/// stored entry keeps of its Cache-Control.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reuse {
    /// must-revalidate, proxy-revalidate or s-maxage: never served stale.
    pub strict: bool,
    pub no_cache: bool,
    /// Seconds (delta-seconds are capped at 2^31, so they fit).
    pub stale_while_revalidate: Option<u32>,
    pub stale_if_error: Option<u32>,
}

impl Reuse {
    pub fn of(cc: &CacheControl) -> Reuse {
        let secs = |v: Option<u64>| v.map(|v| v.min(u32::MAX as u64) as u32);
        Reuse {
            strict: cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some(),
            no_cache: cc.no_cache,
            stale_while_revalidate: secs(cc.stale_while_revalidate),
            stale_if_error: secs(cc.stale_if_error),
        }
    }
}

/// Whether a stored response (`cc`, `t`) may answer a request (`req_cc`), now.
pub fn usable(req_cc: &CacheControl, cc: Reuse, t: &Timing, now: u64, s: &Settings) -> Usable {
    let age = t.age(now);
    let stale = t.staleness(now);
    let strict = cc.strict;
    // A grace of zero allows nothing stale: a response stale at once (a zero
    // lifetime) is never served without revalidation.
    let fresh = t.is_fresh(now);
    let within = |grace: u64| fresh || (grace > 0 && stale <= grace);
    let if_error = !strict && within(cc.stale_if_error.map_or(s.stale_if_error, u64::from));
    if cc.no_cache {
        // Never used without a successful validation, not even when the upstream fails.
        return Usable::Validate { if_error: false };
    }
    if req_cc.no_cache {
        return Usable::Validate { if_error };
    }
    if let Some(max) = req_cc.max_age {
        if age > max {
            return Usable::Validate { if_error };
        }
    }
    if t.is_fresh(now) {
        if let Some(min) = req_cc.min_fresh {
            if t.lifetime.saturating_sub(age) < min {
                return Usable::Validate { if_error };
            }
        }
        return Usable::Fresh;
    }
    if !strict {
        if let Some(max_stale) = req_cc.max_stale {
            if max_stale.map(|m| stale <= m).unwrap_or(true) {
                return Usable::Fresh;
            }
        }
        if within(cc.stale_while_revalidate.map_or(s.stale_while_revalidate, u64::from)) {
            return Usable::StaleWhileRevalidate;
        }
    }
    Usable::Validate { if_error }
}

#[cfg(test)]
mod tests;
