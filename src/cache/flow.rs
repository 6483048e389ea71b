//! The cache flow on the request path, as explicit states: [`lookup`] answers
//! from the store (fresh, or stale while a refresh runs), waits for a coalesced
//! request, or prepares a conditional request; the request then goes upstream
//! and [`After::complete`] stores the answer as it streams, refreshes a
//! revalidated entry, serves stale on error, or invalidates after an unsafe method.

use super::fields::Fields;
use super::policy::{self, CacheControl, Reuse, Settings, Timing, Usable};
use super::serve;
use super::store::{Entry, Landing, Store};
use super::tee::{self, Tee};
use crate::body::Body;
use crate::metrics::Answer;
use crate::respond::{answer, answer_json};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// A route's cache: its settings and its store (kept across reloads).
pub struct RouteCache {
    pub rules: Rules,
    pub store: Arc<Store>,
}

/// How a route's cache behaves: freshness settings, the key, what it answers.
#[derive(Clone)]
pub struct Rules {
    pub settings: Settings,
    /// What beyond host and path makes the key.
    pub key: super::key::CacheKeySpec,
    /// Methods answered from the cache (GET, HEAD).
    pub methods: Vec<Method>,
    /// Requests waiting for another's upstream answer give up after this.
    pub coalesce_timeout: Duration,
    /// Larger responses are passed through and not stored.
    pub max_object_bytes: usize,
    /// Peers allowed to send PURGE.
    pub purge_from: Vec<ipnet::IpNet>,
    /// Response header listing an entry's tags, for purge by tag.
    pub tag_header: Option<HeaderName>,
    /// What a request's `no-cache` does.
    pub no_cache: NoCacheMode,
    /// Variants kept per key.
    pub max_variants: usize,
    /// Request credentials beyond Authorization that keep an answer out of the store.
    pub credentials: Credentials,
}

impl Rules {
    /// The rules of a sharded service's hot-key cache: RFC 9111's shared-cache
    /// rules with the defaults (nothing private, personal, with Set-Cookie or
    /// no-store), kept at most `ttl` seconds, and that long when the response
    /// says nothing of its freshness (micro-caching, as nginx's
    /// `proxy_cache_valid 1s`); GET and HEAD, one variant per key.
    pub fn hot_keys(ttl: u64, max_object_bytes: usize, credentials: Credentials) -> Rules {
        Rules {
            settings: Settings {
                default_ttl: ttl,
                max_ttl: ttl,
                heuristic_cap: ttl,
                store_set_cookie: false,
                stale_while_revalidate: 0,
                stale_if_error: 0,
                targeted: Vec::new(),
            },
            key: Default::default(),
            methods: vec![Method::GET, Method::HEAD],
            coalesce_timeout: Duration::from_secs(5),
            max_object_bytes,
            purge_from: Vec::new(),
            tag_header: None,
            no_cache: NoCacheMode::Revalidate,
            max_variants: 1,
            credentials,
        }
    }
}

/// What a request's `no-cache` makes the cache do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoCacheMode {
    /// Validate with the origin; concurrent ones share one validation.
    #[default]
    Revalidate,
    /// Each goes to the origin (RFC 9111 to the letter; not coalesced).
    Honour,
    /// Answered from the cache as if the client had not asked (nginx's and Varnish's default).
    Ignore,
}

/// Where a request carries credentials that make its answer personal: the
/// API-key header and query parameter, and cookies unless the key names them.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub header: Option<HeaderName>,
    pub query: Option<String>,
    /// The cache key names cookies, so a Cookie is part of what the answer is for.
    pub cookies_in_key: bool,
}

impl Credentials {
    /// Whether `head` carries credentials (RFC 9111 section 3.5, extended to the
    /// credentials ringmaster knows about).
    pub fn carried_by(&self, head: &Parts) -> bool {
        let h = &head.headers;
        h.contains_key(header::AUTHORIZATION)
            || (!self.cookies_in_key && h.contains_key(header::COOKIE))
            || self.header.as_ref().is_some_and(|n| h.contains_key(n))
            || self.query.as_ref().is_some_and(|q| head.uri.query().is_some_and(|qs| crate::key::query_param(qs, q).is_some()))
    }
}

/// What the request path does after [`lookup`].
pub enum Lookup {
    /// The cache answers.
    Answer(Response<Body>),
    /// The cache answers with a stale entry; refresh it in the background
    /// (forward a GET, then complete `After` with its answer).
    AnswerAndRefresh(Response<Body>, After),
    /// Go upstream, then complete `After` with the answer.
    Forward(After),
    /// Another request for the key is upstream: wait for it ([`Waiting::wait`]).
    Wait(Waiting),
}

/// A request coalesced behind another one for the same key.
pub struct Waiting {
    rc: Arc<RouteCache>,
    flight: Arc<super::store::Flight>,
    miss: Box<Miss>,
}

impl Waiting {
    /// Waits (up to the coalesce timeout) for the leading request to land, then
    /// answers from the store, or goes upstream itself.
    pub async fn wait(self, head: &Parts) -> Lookup {
        let Waiting { rc, flight, miss } = self;
        let store = &rc.store;
        let notified = flight.done.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if !flight.landed.load(Relaxed) {
            let _ = tokio::time::timeout(rc.rules.coalesce_timeout, notified).await;
        }
        if let Some(e) = store.get(&miss.key, &head.headers) {
            let now = policy::now_secs();
            // What the leader brought back was fetched or validated just now: it
            // answers a client's no-cache too (unless every one must go upstream).
            let landed = flight.landed.load(Relaxed) && rc.rules.no_cache == NoCacheMode::Revalidate;
            let req_cc = if landed { without_no_cache(&miss.req_cc) } else { miss.req_cc.clone() };
            if policy::usable(&req_cc, e.reuse, &e.timing, now, &rc.rules.settings) == Usable::Fresh {
                store.stats.hits.fetch_add(1, Relaxed);
                e.hits.fetch_add(1, Relaxed);
                return Lookup::Answer(serve::answer(&e, &head.method, &head.headers, now, "hit; detail=coalesced"));
            }
        }
        store.stats.misses.fetch_add(1, Relaxed);
        Lookup::Forward(After::Store(rc.clone(), miss))
    }
}

/// What the cache does with the upstream's answer.
pub enum After {
    /// Nothing: no cache, or a method the cache leaves alone.
    Nothing,
    /// Store it (or refresh, or serve stale on error): a miss or a revalidation.
    Store(Arc<RouteCache>, Box<Miss>),
    /// An unsafe method: a success invalidates what is stored for the URI.
    Invalidate(Arc<RouteCache>, String),
}

impl After {
    /// Applies the cache's part to `resp`, the upstream's answer or the proxy's own error.
    pub fn complete(self, resp: Response<Body>) -> Response<Body> {
        match self {
            After::Nothing => resp,
            After::Store(rc, miss) => store(&rc, miss, resp),
            After::Invalidate(rc, key) => {
                invalidate(&rc, key, resp.status());
                resp
            }
        }
    }
}

/// A request the cache sends upstream.
pub struct Miss {
    key: String,
    method: Method,
    /// The client's request headers as they arrived (Vary values, conditionals).
    req: HeaderMap,
    req_cc: CacheControl,
    /// The request carried credentials.
    credentialed: bool,
    request_time: u64,
    stale: Option<Arc<Entry>>,
    if_error: bool,
    /// Our own conditional headers were added for `stale`.
    revalidating: bool,
    landing: Option<Landing>,
}

static PURGE: &[u8] = b"PURGE";

/// Before forwarding. `head` may gain conditional headers. Never waits: a
/// request that must wait for another's answer gets [`Lookup::Wait`].
pub fn lookup(rc: &Arc<RouteCache>, head: &mut Parts, scheme: &str, host: &str, partition: &[u8], peer: IpAddr) -> Lookup {
    let store = &rc.store;
    let mut key = super::key::cache_key(&rc.rules.key, head, scheme, host);
    if !partition.is_empty() {
        key.push('\u{3}');
        key.push_str(&String::from_utf8_lossy(partition));
    }
    if head.method.as_str().as_bytes() == PURGE {
        let peer = crate::identity::canonical(peer);
        if !rc.rules.purge_from.iter().any(|n| n.contains(&peer)) {
            return Lookup::Answer(answer(StatusCode::FORBIDDEN, Answer::PurgeForbidden, "PURGE is not allowed from this address\n"));
        }
        let n = store.remove(&key);
        return Lookup::Answer(answer_json(StatusCode::OK, Answer::Purged, serde_json::json!({ "purged": n })));
    }
    let cached_method = (head.method == Method::GET || head.method == Method::HEAD) && rc.rules.methods.contains(&head.method);
    if !cached_method {
        let unsafe_method = !matches!(head.method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE);
        return Lookup::Forward(if unsafe_method { After::Invalidate(rc.clone(), key) } else { After::Nothing });
    }
    let mut req_cc = CacheControl::parse(&head.headers);
    if rc.rules.no_cache == NoCacheMode::Ignore {
        req_cc.no_cache = false;
    }
    let now = policy::now_secs();
    let found = store.get(&key, &head.headers).map(|e| {
        let usable = policy::usable(&req_cc, e.reuse, &e.timing, now, &rc.rules.settings);
        (e, usable)
    });
    if let Some((e, Usable::Fresh)) = &found {
        // The hit path: nothing of the request is copied.
        store.stats.hits.fetch_add(1, Relaxed);
        e.hits.fetch_add(1, Relaxed);
        return Lookup::Answer(serve::answer(e, &head.method, &head.headers, now, "hit"));
    }
    let mut miss = Miss {
        key,
        method: head.method.clone(),
        req: head.headers.clone(),
        req_cc,
        credentialed: rc.rules.credentials.carried_by(head),
        request_time: now,
        stale: None,
        if_error: false,
        revalidating: false,
        landing: None,
    };
    if let Some((e, usable)) = found {
        match usable {
            Usable::Fresh | Usable::StaleWhileRevalidate => {
                store.stats.stale_served.fetch_add(1, Relaxed);
                e.hits.fetch_add(1, Relaxed);
                let answer = serve::answer(&e, &head.method, &head.headers, now, "hit; detail=stale-while-revalidate");
                // One background refresh per key: only the flight's leader refreshes.
                if let Ok(_flight) = store.take_off(&miss.key) {
                    miss.landing = Some(Landing { store: store.clone(), key_hash: super::store::key_hash(&miss.key) });
                    prepare_revalidation(&mut miss, &e, head);
                    miss.method = Method::GET;
                    return Lookup::AnswerAndRefresh(answer, After::Store(rc.clone(), Box::new(miss)));
                }
                return Lookup::Answer(answer);
            }
            Usable::Validate { if_error } => {
                // Only the client's no-cache stands between this entry and a hit:
                // one validation per key, which concurrent ones wait for.
                if rc.rules.no_cache == NoCacheMode::Revalidate
                    && miss.req_cc.no_cache
                    && policy::usable(&without_no_cache(&miss.req_cc), e.reuse, &e.timing, now, &rc.rules.settings) == Usable::Fresh
                {
                    match store.take_off(&miss.key) {
                        Ok(_) => miss.landing = Some(Landing { store: store.clone(), key_hash: super::store::key_hash(&miss.key) }),
                        Err(flight) => {
                            store.stats.coalesced_waits.fetch_add(1, Relaxed);
                            return Lookup::Wait(Waiting { rc: rc.clone(), flight, miss: Box::new(miss) });
                        }
                    }
                }
                miss.if_error = if_error;
                prepare_revalidation(&mut miss, &e, head);
                return Lookup::Forward(After::Store(rc.clone(), Box::new(miss)));
            }
        }
    }
    if miss.req_cc.only_if_cached {
        return Lookup::Answer(answer(StatusCode::GATEWAY_TIMEOUT, Answer::NotCached, "not in the cache, and only-if-cached was asked\n"));
    }
    // Coalesce: one request per key goes upstream; the others wait for it.
    match store.take_off(&miss.key) {
        Ok(_) => miss.landing = Some(Landing { store: store.clone(), key_hash: super::store::key_hash(&miss.key) }),
        Err(flight) => {
            store.stats.coalesced_waits.fetch_add(1, Relaxed);
            return Lookup::Wait(Waiting { rc: rc.clone(), flight, miss: Box::new(miss) });
        }
    }
    store.stats.misses.fetch_add(1, Relaxed);
    Lookup::Forward(After::Store(rc.clone(), Box::new(miss)))
}

/// A request's directives without its no-cache.
fn without_no_cache(cc: &CacheControl) -> CacheControl {
    CacheControl { no_cache: false, ..cc.clone() }
}

/// Adds our validators to the upstream request when the client sent none of its own.
fn prepare_revalidation(miss: &mut Miss, e: &Arc<Entry>, head: &mut Parts) {
    miss.stale = Some(e.clone());
    let client_conditional = head.headers.contains_key(header::IF_NONE_MATCH) || head.headers.contains_key(header::IF_MODIFIED_SINCE);
    if client_conditional || e.status != StatusCode::OK {
        return;
    }
    if let Some(etag) = e.fields.get(&header::ETAG) {
        head.headers.insert(header::IF_NONE_MATCH, etag);
        miss.revalidating = true;
    } else if let Some(lm) = e.fields.get(&header::LAST_MODIFIED) {
        head.headers.insert(header::IF_MODIFIED_SINCE, lm);
        miss.revalidating = true;
    }
}

/// After forwarding a miss: `resp` is the upstream's answer or the proxy's own error.
fn store(rc: &Arc<RouteCache>, miss: Box<Miss>, resp: Response<Body>) -> Response<Body> {
    let mut miss = *miss;
    let store = &rc.store;
    let now = policy::now_secs();
    let status = resp.status();
    if let Some(stale) = miss.stale.clone() {
        if miss.revalidating && status == StatusCode::NOT_MODIFIED {
            store.stats.revalidations.fetch_add(1, Relaxed);
            store.stats.revalidated_304.fetch_add(1, Relaxed);
            let refreshed = refresh(rc, &stale, resp.headers(), miss.request_time, now);
            let answer = serve::answer(&refreshed, &miss.method, &miss.req, now, "fwd=stale; fwd-status=304; stored");
            store.insert(refreshed, rc.rules.max_variants);
            return answer;
        }
        if miss.revalidating {
            store.stats.revalidations.fetch_add(1, Relaxed);
        }
        if status.is_server_error() && miss.if_error {
            store.stats.stale_served.fetch_add(1, Relaxed);
            return serve::answer(
                &stale,
                &miss.method,
                &miss.req,
                now,
                &format!("hit; detail=stale-if-error; fwd-status={}", status.as_u16()),
            );
        }
    }
    let (mut parts, body) = resp.into_parts();
    let fwd = if miss.stale.is_some() { "stale" } else { "uri-miss" };
    if miss.method != Method::GET {
        serve::mark(&mut parts.headers, false, &format!("ringmaster; fwd={fwd}"));
        return Response::from_parts(parts, body);
    }
    let cc = CacheControl::for_response(&parts.headers, &rc.rules.settings.targeted);
    match policy::storable(&miss.method, miss.credentialed, &miss.req_cc, status, &parts.headers, &cc, &rc.rules.settings) {
        Ok(lifetime) => {
            serve::mark(&mut parts.headers, false, &format!("ringmaster; fwd={fwd}; stored"));
            let entry = Entry {
                key: std::mem::take(&mut miss.key).into_boxed_str(),
                status,
                fields: Fields::from_map(&parts.headers),
                body: bytes::Bytes::new(),
                timing: Timing::new(miss.request_time, now, &parts.headers, lifetime),
                vary: vary_values(&parts.headers, &miss.req),
                tags: tags(rc, &parts.headers),
                reuse: Reuse::of(&cc),
                hits: Default::default(),
                last_used: Default::default(),
            };
            let job = tee::Pending { store: store.clone(), entry, max_variants: rc.rules.max_variants, landing: miss.landing.take() };
            let max = rc.rules.max_object_bytes;
            Response::from_parts(parts, Body::boxed(Tee::new(body, max, job)))
        }
        Err(why) => {
            store.stats.not_stored.fetch_add(1, Relaxed);
            serve::mark(&mut parts.headers, false, &format!("ringmaster; fwd={fwd}; detail={}", why.reason()));
            Response::from_parts(parts, body)
        }
    }
}

/// After a request that bypassed the cache: a successful unsafe method
/// invalidates the stored responses of its URI (RFC 9111 section 4.4).
fn invalidate(rc: &RouteCache, key: String, status: StatusCode) {
    if (status.is_success() || status.is_redirection()) && rc.store.remove(&key) > 0 {
        rc.store.stats.invalidated.fetch_add(1, Relaxed);
    }
}

/// A stored entry with the headers of a 304 merged in and fresh timing.
fn refresh(rc: &RouteCache, stale: &Entry, fresh: &HeaderMap, request_time: u64, now: u64) -> Entry {
    let mut headers = stale.fields.to_map();
    for name in fresh.keys() {
        if matches!(*name, header::CONTENT_LENGTH | header::TRANSFER_ENCODING | header::CONTENT_ENCODING) {
            continue;
        }
        headers.remove(name);
        for v in fresh.get_all(name) {
            headers.append(name.clone(), v.clone());
        }
    }
    let cc = CacheControl::for_response(&headers, &rc.rules.settings.targeted);
    let lifetime = policy::freshness_lifetime(stale.status, &headers, &cc, &rc.rules.settings);
    let timing = Timing::new(request_time, now, fresh, lifetime);
    Entry {
        key: stale.key.clone(),
        status: stale.status,
        body: stale.body.clone(),
        vary: stale.vary.clone(),
        tags: tags(rc, &headers),
        fields: Fields::from_map(&headers),
        reuse: Reuse::of(&cc),
        timing,
        hits: Default::default(),
        last_used: Default::default(),
    }
}

fn vary_values(resp: &HeaderMap, req: &HeaderMap) -> Box<[(HeaderName, Option<HeaderValue>)]> {
    resp.get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .map(|n| {
            let v = req.get(&n).cloned();
            (n, v)
        })
        .collect()
}

fn tags(rc: &RouteCache, h: &HeaderMap) -> Box<[Box<str>]> {
    let Some(name) = &rc.rules.tag_header else { return Box::default() };
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([' ', ',']))
        .filter(|t| !t.is_empty())
        .map(Box::from)
        .collect()
}
