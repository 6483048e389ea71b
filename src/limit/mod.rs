//! Limit: rate limits per identity and per route (GCRA), decided in process,
//! reported in X-RateLimit-* and the IETF RateLimit/RateLimit-Policy fields,
//! denied with 429.

pub mod gcra;
pub mod store;

use crate::body::Body;
use gcra::{Decision, Quota};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use std::net::IpAddr;
use store::LocalStore;

/// Whose requests a policy counts together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Each client address (IPv6 grouped by prefix).
    Client,
    /// Every request of the route: a ceiling.
    Route,
}

/// A compiled policy.
#[derive(Clone, Debug)]
pub struct Policy {
    pub name: String,
    pub quota: Quota,
    pub scope: Scope,
    /// Hash of the name, mixed into keys so policies do not share counters.
    pub seed: u64,
}

/// The client address as a limit counts it: IPv6 by prefix (default /64),
/// IPv4 by prefix (default /32).
pub fn group(ip: IpAddr, v4_prefix: u8, v6_prefix: u8) -> u128 {
    match ip {
        IpAddr::V4(v4) => {
            let p = v4_prefix.min(32) as u32;
            let bits = if p == 0 { 0 } else { u32::from(v4) & (u32::MAX << (32 - p)) };
            // Marked so an IPv4 group never equals an IPv6 one.
            bits as u128 | 1u128 << 100
        }
        IpAddr::V6(v6) => {
            let p = v6_prefix.min(128) as u32;
            let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            u128::from(v6) & mask
        }
    }
}

/// The decisions of a request's policies: allowed, and which one to report.
pub struct Verdict {
    pub allowed: bool,
    pub policy: usize,
    pub decision: Decision,
}

/// Decides a request against `policies`: the strictest decides, and a denied
/// request spends nothing from any policy.
pub fn check(store: &LocalStore, policies: &[&Policy], client: u128, now_ns: u64) -> Option<Verdict> {
    if policies.is_empty() {
        return None;
    }
    let key = |p: &Policy| match p.scope {
        Scope::Client => crate::shard::hash::mix64(p.seed ^ (client as u64) ^ crate::shard::hash::mix64((client >> 64) as u64)),
        Scope::Route => p.seed,
    };
    // First look without spending: a denial anywhere spends nothing anywhere.
    let mut worst: Option<Verdict> = None;
    for (i, p) in policies.iter().enumerate() {
        let (d, _) = gcra::decide(&p.quota, store.tat(key(p)), now_ns, 1);
        if !d.allowed && worst.as_ref().map(|w| d.retry_after_ns > w.decision.retry_after_ns).unwrap_or(true) {
            worst = Some(Verdict { allowed: false, policy: i, decision: d });
        }
    }
    if worst.is_some() {
        return worst;
    }
    // Then spend from every policy; the one with the fewest requests left is reported.
    let mut report: Option<Verdict> = None;
    for (i, p) in policies.iter().enumerate() {
        let d = store.decide(key(p), &p.quota, now_ns, 1);
        let v = Verdict { allowed: d.allowed, policy: i, decision: d };
        let stricter = match &report {
            None => true,
            Some(r) => (!v.allowed && r.allowed) || (v.allowed == r.allowed && v.decision.remaining < r.decision.remaining),
        };
        if stricter {
            report = Some(v);
        }
    }
    report
}

fn secs_ceil(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000)
}

/// Adds the rate-limit fields of `v` to response headers.
pub fn headers(h: &mut HeaderMap, policies: &[&Policy], v: &Verdict) {
    let p = &policies[v.policy];
    let d = &v.decision;
    let reset = secs_ceil(d.reset_ns);
    h.insert("x-ratelimit-limit", HeaderValue::from(p.quota.rate));
    h.insert("x-ratelimit-remaining", HeaderValue::from(d.remaining));
    h.insert("x-ratelimit-reset", HeaderValue::from(reset));
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\";q={};w={}", p.name, p.quota.rate, p.quota.window_secs)) {
        h.insert("ratelimit-policy", v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\";r={};t={}", p.name, d.remaining, reset)) {
        h.insert("ratelimit", v);
    }
}

/// The 429 answer for a denied request.
pub fn denied(policies: &[&Policy], v: &Verdict) -> Response<Body> {
    let p = &policies[v.policy];
    let wait = secs_ceil(v.decision.retry_after_ns).max(1);
    let body = serde_json::json!({ "error": "rate limited", "policy": p.name, "retry_after_seconds": wait }).to_string() + "\n";
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(wait));
    headers(r.headers_mut(), policies, v);
    r
}
pub mod redis;
