//! Conversion of the TOML shapes (`schema`) into the runtime policy types each
//! module owns. Pure and total: every value here was validated first.

use super::schema;
use crate::tls;
use crate::upstream::{HealthCheck, Passive, Retry};

pub fn health(h: &schema::HealthSpec) -> HealthCheck {
    HealthCheck {
        path: h.path.get_ref().clone(),
        interval: h.interval.get_ref().0,
        timeout: h.timeout.get_ref().0,
        healthy_threshold: *h.healthy_threshold.get_ref(),
        unhealthy_threshold: *h.unhealthy_threshold.get_ref(),
        jitter: h.jitter.get_ref().0,
    }
}

pub fn passive(p: &schema::PassiveSpec) -> Passive {
    Passive {
        consecutive_failures: p.consecutive_failures,
        ejection_time: p.ejection_time.get_ref().0,
        max_ejection_time: p.max_ejection_time.get_ref().0,
    }
}

pub fn retry(r: &schema::RetrySpec) -> Retry {
    Retry { attempts: *r.attempts.get_ref(), budget_percent: *r.budget_percent.get_ref(), min_concurrency: r.min_concurrency }
}

pub fn upstream_tls(t: &schema::UpstreamTlsSpec) -> tls::client::Settings {
    let s = |v: &Option<toml::Spanned<String>>| v.as_ref().map(|v| v.get_ref().clone());
    tls::client::Settings { ca: s(&t.ca), sni: s(&t.sni), cert: s(&t.cert), key: s(&t.key) }
}

pub fn hash(h: &schema::HashSpec) -> crate::balance::HashSettings {
    crate::balance::HashSettings {
        rule: crate::key::KeyRule { key: h.key.clone(), fallback_key: h.fallback_key.clone(), fallback: *h.fallback.get_ref() },
        function: *h.function.get_ref(),
        key_hash: h.key_hash(),
        balance_factor: *h.balance_factor.get_ref(),
        tag: h.hash_tag.as_ref().and_then(|t| <[u8; 2]>::try_from(t.get_ref().as_bytes()).ok()),
    }
}

pub fn cookie(c: &schema::CookieSpec) -> crate::balance::CookieSettings {
    crate::balance::CookieSettings { name: c.name.get_ref().clone(), path: c.path.clone(), ttl: c.ttl.map(|t| t.0) }
}

pub fn fan_out(f: &schema::FanOutSpec) -> crate::shard::FanOut {
    crate::shard::FanOut {
        policy: f.policy,
        concurrency: *f.concurrency.get_ref(),
        timeout: f.timeout.get_ref().0,
        max_body_bytes: f.max_body_bytes,
    }
}

pub fn cache(c: &schema::CacheSpec, store: std::sync::Arc<crate::cache::store::Store>) -> crate::cache::flow::RouteCache {
    crate::cache::flow::RouteCache {
        settings: crate::cache::policy::Settings {
            default_ttl: c.default_ttl.0.as_secs(),
            max_ttl: c.max_ttl.0.as_secs(),
            heuristic_cap: c.heuristic_cap.0.as_secs(),
            store_set_cookie: c.store_set_cookie,
            stale_while_revalidate: c.stale_while_revalidate.0.as_secs(),
            stale_if_error: c.stale_if_error.0.as_secs(),
        },
        key: c.key.clone(),
        methods: c.methods.iter().filter_map(|m| m.get_ref().parse().ok()).collect(),
        coalesce_timeout: c.coalesce_timeout.0,
        max_object_bytes: *c.max_object_bytes.get_ref() as usize,
        purge_from: c.purge_from.iter().filter_map(|p| super::validate::parse_cidr(p.get_ref())).collect(),
        tag_header: c.tag_header.as_ref().and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok()),
        store,
    }
}

pub fn jwt_keys(j: &schema::JwtSpec) -> crate::jwt::KeySources<'_> {
    fn s(v: &Option<toml::Spanned<String>>) -> Option<&str> {
        v.as_ref().map(|v| v.get_ref().as_str())
    }
    crate::jwt::KeySources {
        hs256_secret: j.hs256_secret.as_deref(),
        rsa_public_key: s(&j.rsa_public_key),
        ec_public_key: s(&j.ec_public_key),
        jwks_file: s(&j.jwks_file),
    }
}

pub fn access_log(a: &schema::AccessLogSpec) -> crate::accesslog::Settings {
    crate::accesslog::Settings { format: a.format, path: a.path.clone() }
}

pub fn tls(t: &schema::TlsSpec) -> crate::tls::server::Settings {
    use crate::tls::server::{CertFiles, ClientAuth};
    crate::tls::server::Settings {
        certificates: t
            .certificates
            .iter()
            .map(|c| CertFiles { cert: c.cert.get_ref().clone(), key: c.key.get_ref().clone(), names: c.names.clone() })
            .collect(),
        client_auth: t.client_auth.as_ref().map(|c| {
            let c = c.get_ref();
            ClientAuth { ca: c.ca.get_ref().clone(), required: c.required, tier: c.tier.as_ref().map(|t| t.get_ref().clone()) }
        }),
        session_tickets: t.session_tickets,
        session_cache: t.session_cache,
        watch_interval: t.watch_interval.0,
    }
}
