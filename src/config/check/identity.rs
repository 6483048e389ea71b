//! Identity and rate limiting checked and converted: the named policies, API
//! keys and bearer-token keys (read once), the shared Redis store, the prefixes
//! by which client addresses are counted.

use super::{all, header_name, optional};
use crate::config::error::Reporter;
use crate::config::schema::{Config, FailMode, LimitScope};
use crate::identity::{Credentials, KeyInfo};
use crate::limit::gcra::Quota;
use crate::limit::{Policy, Scope};
use std::collections::HashMap;
use std::sync::Arc;
use toml::Spanned;

/// The named rate-limit policies: the quota and scope of each, `None` for one
/// whose table was reported wrong.
pub type Defs = HashMap<String, Option<(Quota, LimitScope)>>;

pub fn rate_limits(cfg: &Config, r: &mut Reporter) -> Defs {
    let mut defs = HashMap::new();
    for (name, spec) in &cfg.rate_limits {
        let start = r.mark();
        if *spec.rate.get_ref() == 0 {
            r.error(spec.rate.span(), "a rate of 0 would refuse every request", "use at least 1");
        }
        if spec.period.get_ref().0.is_zero() {
            r.error(spec.period.span(), "a rate-limit period must be positive", "for example \"1m\" or \"1h\"");
        }
        if let Some(b) = &spec.burst {
            if *b.get_ref() == 0 {
                r.error(b.span(), "a burst of 0 would refuse every request", "use at least 1");
            }
        }
        let rate = *spec.rate.get_ref();
        let quota = Quota::new(rate, spec.period.get_ref().0, spec.burst.as_ref().map(|b| *b.get_ref()).unwrap_or(rate));
        defs.insert(name.get_ref().clone(), r.clean_since(start).then_some((quota, spec.scope)));
    }
    // Names no route reaches are checked too.
    for svc in cfg.services.values() {
        for n in svc.rate_limit.iter().chain(svc.rate_limit_tiers.values().flatten()) {
            known(&defs, n, r);
        }
    }
    defs
}

fn known(defs: &Defs, n: &Spanned<String>, r: &mut Reporter) {
    if !defs.contains_key(n.get_ref()) {
        r.error(n.span(), format!("rate limit `{}` is not defined", n.get_ref()), "define it in a [rate_limits.NAME] table");
    }
}

/// The policy `name` as applied on route `route`. A client's counter is shared
/// by every route applying the policy; a route ceiling is the route's own.
/// `missing` says what is wrong when no policy has the name.
pub fn policy(defs: &Defs, name: &Spanned<String>, route: &str, r: &mut Reporter, missing: impl FnOnce(&str) -> String) -> Option<Policy> {
    let n = name.get_ref();
    let Some(def) = defs.get(n) else {
        r.error(name.span(), missing(n), "define it in a [rate_limits.NAME] table");
        return None;
    };
    let (quota, scope) = (*def)?;
    let (scope, seed_text) = match scope {
        LimitScope::Client => (Scope::Client, n.clone()),
        LimitScope::Route => (Scope::Route, format!("{route}/{n}")),
    };
    Some(Policy { name: n.as_str().into(), quota, scope, seed: crate::hash::xxh3(seed_text.as_bytes()), denied: Default::default() })
}

/// API keys and bearer-token verification, when configured.
pub fn credentials(cfg: &Config, defs: &Defs, r: &mut Reporter) -> Option<Option<Credentials>> {
    let id = &cfg.identity;
    let header = optional(id.api_key.as_ref().and_then(|s| s.header.as_ref()), |h| {
        header_name(h, |h| format!("`{h}` is not a header name"), "for example \"x-api-key\"", r)
    });
    let keys = keys(cfg, defs, r);
    let jwt = optional(id.jwt.as_ref(), |j| jwt(j, r));
    if !id.keys.is_empty() && id.api_key.is_none() {
        r.error(
            id.keys[0].owner.span(),
            "API keys are listed but no `api_key` source says where clients present them",
            "add [identity] api_key = { header = \"x-api-key\" }",
        );
    }
    for route in &cfg.routes {
        for n in route.rate_limit_tiers.values().flatten() {
            known(defs, n, r);
        }
    }
    let (header, keys, jwt) = (header?, keys?, jwt?);
    if id.api_key.is_none() && id.jwt.is_none() {
        return Some(None);
    }
    Some(Some(Credentials {
        header,
        query: id.api_key.as_ref().and_then(|s| s.query.clone()),
        keys,
        jwt,
        reject_invalid: id.invalid_credentials == crate::config::schema::InvalidCredentials::Reject,
    }))
}

/// The API keys by digest, each with its tier, owner and own policies.
fn keys(cfg: &Config, defs: &Defs, r: &mut Reporter) -> Option<HashMap<[u8; 32], Arc<KeyInfo>>> {
    let mut seen = std::collections::HashSet::new();
    let entries = all(cfg.identity.keys.iter().map(|k| {
        let digest = match (&k.key, &k.sha256) {
            (Some(_), Some(h)) => {
                r.error(h.span(), "give an API key or its sha256, not both", "");
                None
            }
            (Some(plain), None) => Some(crate::identity::key_digest(plain.get_ref().as_bytes())),
            (None, Some(hex)) => {
                let d = parse_sha256(hex.get_ref());
                if d.is_none() {
                    r.error(hex.span(), "sha256 must be 64 hex digits", "compute it with: printf %s KEY | sha256sum");
                }
                d
            }
            (None, None) => {
                r.error(k.tier.span(), "an API key needs `key` or `sha256`", "");
                None
            }
        };
        let overrides = optional(k.rate_limit.as_ref(), |names| {
            all(names.iter().map(|n| policy(defs, n, "", r, |n| format!("rate limit `{n}` is not defined"))))
        });
        let digest = digest?;
        if !seen.insert(digest) {
            r.error(k.owner.span(), "this API key is listed twice", "list each key once");
        }
        let info = KeyInfo { tier: k.tier.get_ref().clone(), owner: k.owner.get_ref().clone(), overrides: overrides? };
        Some((digest, Arc::new(info)))
    }))?;
    Some(entries.into_iter().collect())
}

/// A SHA-256 digest written as 64 hex digits.
fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Bearer-token verification, its keys read once.
fn jwt(j: &Spanned<crate::config::schema::JwtSpec>, r: &mut Reporter) -> Option<crate::jwt::JwtVerifier> {
    let spec = j.get_ref();
    fn s(v: &Option<Spanned<String>>) -> Option<&str> {
        v.as_ref().map(|v| v.get_ref().as_str())
    }
    let sources = crate::jwt::KeySources {
        hs256_secret: spec.hs256_secret.as_deref(),
        rsa_public_key: s(&spec.rsa_public_key),
        ec_public_key: s(&spec.ec_public_key),
        jwks_file: s(&spec.jwks_file),
    };
    let keys = match crate::jwt::load_keys(sources) {
        Ok(keys) if keys.is_empty() => {
            r.error(j.span(), "JWT verification has no key", "give hs256_secret, rsa_public_key, ec_public_key or jwks_file");
            return None;
        }
        Ok(keys) => keys,
        Err(why) => {
            r.error(j.span(), why.to_string(), "point it at a readable PEM or JWKS file");
            return None;
        }
    };
    Some(crate::jwt::JwtVerifier {
        keys,
        issuer: spec.issuer.clone(),
        audience: spec.audience.clone(),
        leeway_secs: spec.leeway.0.as_secs(),
        tier_claim: spec.tier_claim.clone(),
        owner_claim: spec.owner_claim.clone(),
    })
}

/// The shared rate-limit store, when configured: its URL parsed, not yet connected.
pub fn redis(cfg: &Config, r: &mut Reporter) -> Option<Option<crate::limit::redis::Settings>> {
    optional(cfg.rate_limit_store.as_ref(), |s| match redis::Client::open(s.redis.get_ref().as_str()) {
        Ok(client) => Some(crate::limit::redis::Settings {
            client,
            url: s.redis.get_ref().clone(),
            cluster: s.cluster,
            timeout: s.timeout.0,
            on_failure: match s.on_failure {
                FailMode::Open => crate::limit::redis::OnFailure::Open,
                FailMode::Closed => crate::limit::redis::OnFailure::Closed,
            },
            prefix: s.prefix.clone(),
        }),
        Err(_) => {
            r.error(s.redis.span(), format!("`{}` is not a Redis URL", s.redis.get_ref()), "write it as \"redis://127.0.0.1:6379\"");
            None
        }
    })
}

/// The prefixes by which IPv4 and IPv6 clients are counted.
pub fn prefixes(cfg: &Config, r: &mut Reporter) -> Option<(u8, u8)> {
    let (v4, v6) = (&cfg.identity.ipv4_prefix, &cfg.identity.ipv6_prefix);
    if *v4.get_ref() > 32 {
        r.error(v4.span(), "an IPv4 prefix is at most 32", "");
    }
    if *v6.get_ref() > 128 {
        r.error(v6.span(), "an IPv6 prefix is at most 128", "");
    }
    (*v4.get_ref() <= 32 && *v6.get_ref() <= 128).then_some((*v4.get_ref(), *v6.get_ref()))
}
