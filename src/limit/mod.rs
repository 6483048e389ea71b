//! Limit: rate limits per identity and per route (GCRA), decided in process
//! or through Redis, reported in X-RateLimit-* and the IETF
//! RateLimit/RateLimit-Policy fields, denied with 429. [`decide`] is the one
//! call the request path makes: a subject and a route's policies in, a verdict out.

// An early answer is a whole response returned by value, as any answer is; boxing
// it would cost an allocation on every cache hit, which answers early.
#![allow(clippy::result_large_err)]

pub mod gcra;
pub mod store;

use crate::body::Body;
use crate::metrics::Answer;
use crate::respond;
use gcra::{Decision, Quota};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use store::LocalStore;

/// The rate-limit state of a snapshot: the local counters (carried over every
/// reload), the shared store when configured, and how client addresses group.
pub struct Limiter {
    pub local: Arc<LocalStore>,
    pub redis: Option<Arc<redis::RedisStore>>,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
}

/// A route's policies: for every request, and by identity tier (`anonymous`,
/// or an API key's or token's tier).
#[derive(Clone, Default)]
pub struct RoutePolicies {
    pub all: Vec<Policy>,
    pub tiers: HashMap<String, Vec<Policy>>,
}

impl RoutePolicies {
    /// Every policy, once per tier it appears in.
    pub fn every(&self) -> impl Iterator<Item = &Policy> {
        self.all.iter().chain(self.tiers.values().flatten())
    }

    /// No policy of any tier: requests need no identity and no decision.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty() && self.tiers.is_empty()
    }
}

/// Whom a request is counted against.
pub enum Subject<'a> {
    /// An anonymous client, by its address (grouped by prefix).
    Client(IpAddr),
    /// An authenticated owner of a tier; `overrides` replace the tier's policies.
    Owner { owner: &'a str, tier: &'a str, overrides: Option<&'a [Policy]> },
}

/// What an allowed request reports in its response headers: the strictest
/// policy and its decision.
pub struct Report {
    policy: Policy,
    decision: Decision,
}

impl Report {
    /// Adds the rate-limit fields to a response.
    pub fn apply(&self, h: &mut HeaderMap) {
        headers(h, &self.policy, &self.decision);
    }
}

/// The verdict for one request: `Ok(None)` when no policy applies, `Ok(Some)`
/// when allowed (with what to report), `Err` with the answer when denied (429)
/// or when the shared store fails and fails closed (503). `cost`: the tokens the
/// request takes (one, or one per shard for a fan-out).
pub async fn decide<'a>(
    limiter: &Limiter,
    route: &'a RoutePolicies,
    who: Subject<'a>,
    cost: u64,
) -> Result<Option<Report>, Response<Body>> {
    let mut policies: Vec<&'a Policy> = route.all.iter().collect();
    let (tier, key) = match who {
        Subject::Client(ip) => (route.tiers.get("anonymous").map(Vec::as_slice), group(ip, limiter.ipv4_prefix, limiter.ipv6_prefix)),
        Subject::Owner { owner, tier, overrides } => (overrides.or_else(|| route.tiers.get(tier).map(Vec::as_slice)), owner_key(owner)),
    };
    policies.extend(tier.into_iter().flatten());
    if policies.is_empty() {
        return Ok(None);
    }
    let verdict = match &limiter.redis {
        None => check(&limiter.local, &policies, key, crate::clock::now_ns(), cost),
        // Boxed: a network round trip dwarfs the allocation, and the script's
        // state would otherwise enlarge every request's future.
        Some(redis) => match Box::pin(redis.check(&policies, key, cost)).await {
            Ok(v) => Some(v),
            Err(_) if redis.on_failure == redis::OnFailure::Open => check(&limiter.local, &policies, key, crate::clock::now_ns(), cost),
            Err(e) => {
                tracing::debug!(error = %e, "rate limits unavailable");
                return Err(respond::answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Answer::LimitsUnavailable,
                    "rate limits cannot be checked right now; retry shortly\n",
                ));
            }
        },
    };
    match verdict {
        None => Ok(None),
        Some(v) if !v.allowed => Err(denied(&policies, &v)),
        Some(v) => Ok(Some(Report { policy: policies[v.policy].clone(), decision: v.decision })),
    }
}

/// The counter key of an authenticated owner: a hash of the owner, marked so
/// that it never equals a client address group (see [`group`]).
pub fn owner_key(owner: &str) -> u128 {
    crate::hash::xxh3(owner.as_bytes()) as u128 | 1u128 << 101
}

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
    /// Shared, so that a report of it costs no copy.
    pub name: std::sync::Arc<str>,
    pub quota: Quota,
    pub scope: Scope,
    /// Hash of the name, mixed into keys so policies do not share counters.
    pub seed: u64,
    /// Requests this policy denied (429) since the config was loaded; shared
    /// by the clones routes and tiers hold.
    pub denied: std::sync::Arc<std::sync::atomic::AtomicU64>,
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
pub fn check(store: &LocalStore, policies: &[&Policy], client: u128, now_ns: u64, cost: u64) -> Option<Verdict> {
    if policies.is_empty() {
        return None;
    }
    let key = |p: &Policy| match p.scope {
        Scope::Client => crate::hash::mix64(p.seed ^ (client as u64) ^ crate::hash::mix64((client >> 64) as u64)),
        Scope::Route => p.seed,
    };
    // First look without spending: a denial anywhere spends nothing anywhere.
    let mut worst: Option<Verdict> = None;
    for (i, p) in policies.iter().enumerate() {
        let (d, _) = gcra::decide(&p.quota, store.tat(key(p)), now_ns, cost);
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
        let d = store.decide(key(p), &p.quota, now_ns, cost);
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

/// Adds the rate-limit fields of decision `d` under policy `p` to response headers.
pub fn headers(h: &mut HeaderMap, p: &Policy, d: &Decision) {
    let reset = secs_ceil(d.reset_ns);
    h.insert("x-ratelimit-limit", crate::value::number(p.quota.rate));
    h.insert("x-ratelimit-remaining", crate::value::number(d.remaining));
    h.insert("x-ratelimit-reset", crate::value::number(reset));
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
    p.denied.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let wait = secs_ceil(v.decision.retry_after_ns).max(1);
    let body = serde_json::json!({ "error": "rate limited", "policy": &*p.name, "retry_after_seconds": wait });
    let mut r = respond::answer_json(StatusCode::TOO_MANY_REQUESTS, Answer::RateLimited, body);
    r.headers_mut().insert(http::header::RETRY_AFTER, crate::value::number(wait));
    headers(r.headers_mut(), p, &v.decision);
    r
}
pub mod redis;
