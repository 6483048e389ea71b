//! The phases of the request path, in the order `handle` runs them. Each is
//! short and calls into the module of its pattern; an early answer is `Err`.

// An early answer is a whole response returned by value, as any answer is; boxing
// it would cost an allocation on every cache hit, which answers early.
#![allow(clippy::result_large_err)]

use super::ctx::{Ctx, LogHead};
use super::Early;
use crate::accesslog::Entry;
use crate::balance::{self, Affinity};
use crate::body::Body;
use crate::cache::flow::{self, After, Lookup};
use crate::identity::Who;
use crate::limit::{self, Subject};
use crate::metrics::Answer;
use crate::respond::{answer, answer_json, answer_text, redirect};
use crate::shard::{fanout, Target};
use crate::upstream::forward::forward as send;
use crate::upstream::headers::{self, Hop};
use crate::upstream::proxy_header::Origin;
use crate::upstream::Pool;
use http::header::{HeaderValue, CONTENT_LENGTH, HOST};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use std::sync::Arc;

/// Begin: the request as it arrived, before any phase may answer: the
/// listener's policies, and what the access log will name.
pub fn begin(cx: &mut Ctx, req: &Request<Body>) {
    let opts = &cx.snap.listener_opts;
    cx.listener = if opts.is_empty() { None } else { opts.get(&*cx.conn.listener) };
    if cx.snap.access_log.is_some() {
        cx.log = Some(LogHead {
            method: req.method().clone(),
            path: req.uri().path().to_string(),
            version: req.version(),
            user_agent: header_string(req.headers(), http::header::USER_AGENT),
            referer: header_string(req.headers(), http::header::REFERER),
        });
    }
}

/// Normalise: the canonical host (written back into Host), the normalised path
/// (written back into the target), hop-by-hop headers removed; an ambiguous
/// host or an unsafe path is refused.
pub fn normalise(cx: &mut Ctx, req: &mut Request<Body>) -> Result<(), Early> {
    let rules = cx.listener.map(|o| o.path).unwrap_or_default();
    let bad_path = |why: crate::normalise::Refusal| answer_text(StatusCode::BAD_REQUEST, Answer::BadPath, format!("{why}\n"));
    match crate::normalise::path(req.uri().path(), rules) {
        Ok(None) => {}
        Ok(Some(p)) => *req.uri_mut() = with_path(req.uri(), &p).ok_or_else(|| bad_path(crate::normalise::Refusal::BadPath))?,
        Err(why) => return Err(bad_path(why)),
    }
    let https = cx.conn.https;
    let (version, authority) = (req.version(), req.uri().authority().cloned());
    match crate::normalise::host(req.headers_mut(), authority.as_ref(), version, https) {
        Ok(host) => cx.host = host,
        Err(why) => return Err(answer_text(StatusCode::BAD_REQUEST, Answer::BadHost, format!("{why}\n"))),
    }
    // Upgrade is itself hop-by-hop: a request without such fields asks for none.
    if crate::normalise::any_hop_by_hop(req.headers()) {
        cx.upgrade = crate::normalise::upgrade(req.version(), req.headers()).map(Box::new);
        crate::normalise::strip_hop_by_hop(req.headers_mut());
    }
    if let Some(protocol) = crate::normalise::extended_connect(req) {
        // RFC 8441: a WebSocket over an HTTP/2 stream is routed and forwarded as the
        // HTTP/1.1 upgrade it stands for.
        cx.upgrade = Some(Box::new(protocol));
        *req.method_mut() = http::Method::GET;
    }
    Ok(())
}

/// `uri` with its path replaced (query, scheme and authority kept).
fn with_path(uri: &http::Uri, path: &str) -> Option<http::Uri> {
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(http::uri::PathAndQuery::try_from(pq).ok()?);
    http::Uri::from_parts(parts).ok()
}

/// Listener policy: plain HTTP sent to HTTPS when the listener says so.
pub fn listener_policy(cx: &mut Ctx, req: &Request<Body>) -> Result<(), Early> {
    let Some(port) = cx.listener.and_then(|o| o.redirect_to_https) else { return Ok(()) };
    let host = req.headers().get(HOST).and_then(|h| h.to_str().ok()).or_else(|| req.uri().host()).unwrap_or("localhost");
    let host = crate::key::strip_port(host);
    let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    Err(redirect(&if port == 443 { format!("https://{host}{path}") } else { format!("https://{host}:{port}{path}") }))
}

/// Parse limits hyper does not enforce exactly: header count and bytes, declared body size.
pub fn parse_limits(cx: &mut Ctx, req: &Request<Body>) -> Result<(), Early> {
    let l = &cx.snap.limits;
    let h = req.headers();
    if h.len() > l.max_headers {
        return Err(answer(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, Answer::HeadersTooLarge, "too many request headers\n"));
    }
    let line = req.uri().path_and_query().map(|p| p.as_str().len()).unwrap_or(1) + req.method().as_str().len() + 12;
    let size = h.iter().fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4);
    if size > l.max_header_bytes {
        return Err(answer(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, Answer::HeadersTooLarge, "request headers are too large\n"));
    }
    let declared = h.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > l.max_body_bytes) {
        return Err(answer(StatusCode::PAYLOAD_TOO_LARGE, Answer::BodyTooLarge, "request body is too large\n"));
    }
    Ok(())
}

/// Identify the client: the peer, or behind a trusted proxy the nearest untrusted hop.
pub fn identify(cx: &mut Ctx, req: &Request<Body>) {
    let trusted = &cx.snap.trusted;
    let peer = cx.conn.peer.ip();
    cx.trusted = !trusted.is_empty() && trusted.contains(peer);
    cx.client = if cx.trusted { crate::identity::client_addr(peer, req.headers(), trusted) } else { peer };
}

/// Route: listener, host, path and method to a route.
pub fn route(cx: &mut Ctx, req: &Request<Body>) -> Result<(), Early> {
    let (snap, listener) = (cx.snap, &*cx.conn.listener);
    let r = match snap.router.find(listener, req.method(), cx.host.as_ref().and_then(|h| h.to_str().ok()), req.uri().path()) {
        Some(r) => r,
        None => return Err(answer(StatusCode::NOT_FOUND, Answer::NoRoute, "no route matches this request\n")),
    };
    cx.route = Some(r);
    // TRACE echoes what reached the origin (other hops' headers included), and
    // PURGE is a cache's verb: neither goes on unless the route names it.
    let m = req.method();
    if (m == Method::TRACE || (m.as_str() == "PURGE" && r.cache.is_none())) && !r.methods.contains(m) {
        let mut resp = answer(StatusCode::METHOD_NOT_ALLOWED, Answer::MethodNotAllowed, "this method is not allowed on this route\n");
        resp.headers_mut().insert(http::header::ALLOW, allow(r));
        return Err(resp);
    }
    if let Some(protocol) = &cx.upgrade {
        if !upgrade_allowed(protocol, &r.upgrades) {
            crate::metrics::GLOBAL.upgrades_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if req.version() == http::Version::HTTP_2 {
                // An extended CONNECT has no plain request to fall back to.
                return Err(answer(StatusCode::FORBIDDEN, Answer::UpgradeRefused, "this upgrade is not allowed on this route\n"));
            }
            // Ignored (RFC 9110 section 7.8): served as the plain request it also is.
            cx.upgrade = None;
        }
    }
    Ok(())
}

/// The Allow field of a 405 on `r`: its methods, or the usual ones.
fn allow(r: &crate::route::Route) -> HeaderValue {
    if r.methods.is_empty() {
        return HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
    }
    let list: Vec<&str> = r.methods.iter().map(|m| m.as_str()).collect();
    HeaderValue::from_str(&list.join(", ")).unwrap_or(HeaderValue::from_static("GET"))
}

/// Whether every protocol `protocol` offers (`websocket`, `foo/2, bar`) is in
/// `allowed` (lowercase names, without versions).
fn upgrade_allowed(protocol: &HeaderValue, allowed: &[String]) -> bool {
    let Ok(text) = protocol.to_str() else { return false };
    text.split(',').all(|p| {
        let name = p.split('/').next().unwrap_or("").trim();
        !name.eq_ignore_ascii_case("h2c") && allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
    })
}

/// Rate limit: credentials to an identity (only where a policy needs one), then the verdict.
pub async fn rate_limit<'a>(cx: &mut Ctx<'a>, req: &Request<Body>) -> Result<(), Early> {
    let route = cx.routed();
    if route.limits.is_empty() {
        return Ok(());
    }
    // Credentials in the request (API key, JWT) first, then a verified client certificate.
    let presented = match &cx.snap.credentials {
        Some(c) => c.identify(req.headers(), req.uri().query()),
        None => Ok(Who::Anonymous),
    };
    let who = match presented {
        Ok(Who::Anonymous) => cx.conn.client_cert.clone().map_or(Who::Anonymous, Who::Key),
        Ok(w) => w,
        Err(e) => return Err(answer_json(StatusCode::UNAUTHORIZED, Answer::BadCredentials, serde_json::json!({ "error": e.to_string() }))),
    };
    let subject = match &who {
        Who::Anonymous => Subject::Client(cx.client),
        Who::Key(k) => Subject::Owner { owner: &k.owner, tier: &k.tier, overrides: k.overrides.as_deref() },
    };
    // A fan-out takes a token per shard it reaches: it costs the shards that much.
    let shards = route.service.pools.len() as u64;
    let cost = match &route.service.sharding {
        Some(_) if route.fan_out => shards,
        Some(s) if s.rule.fallback == crate::key::Fallback::All && !s.rule.carried_by(req.uri(), req.headers(), cx.client) => shards,
        _ => 1,
    };
    cx.limit = limit::decide(&cx.snap.limiter, &route.limits, subject, cost).await?;
    Ok(())
}

/// Cache lookup, before forwarding headers (keys and Vary see the client's own):
/// the cache answers (`Err`), or says what to do with the upstream's answer.
pub async fn cache_lookup(cx: &mut Ctx<'_>, head: &mut Parts) -> Result<After, Early> {
    let on = |rc: &&std::sync::Arc<crate::cache::flow::RouteCache>| !rc.store.bypassed.load(std::sync::atomic::Ordering::Relaxed);
    let Some(rc) = cx.routed().cache.as_ref().filter(on).filter(|_| cx.upgrade.is_none()) else { return Ok(After::Nothing) };
    lookup_in(cx, rc, head, b"").await
}

/// Hot keys, after the target: a request whose shard key is hot now is
/// answered from its service's hot-key cache (when its route has no cache of
/// its own, which already answers it) and, with `spread`, may go to any
/// replica of its shard instead of the one its affinity pins. Returns what
/// to do with the answer, and whether to spread.
pub async fn hot_keys(cx: &mut Ctx<'_>, head: &mut Parts, target: &Target, after: After) -> Result<(After, bool), Early> {
    let service = &cx.routed().service;
    if !matches!(target, Target::Pool(_)) {
        return Ok((after, false));
    }
    let Some(key) = service.hot_key(head, cx.client) else { return Ok((after, false)) };
    let spread = service.heat.policy().mitigation.spread;
    match (&service.hot_cache, after) {
        // A credentialed request passes (as Varnish's built-in rules do): the
        // operator never asked for this cache, so it holds only anonymous answers.
        (Some(rc), After::Nothing) if cx.upgrade.is_none() && !rc.rules.credentials.carried_by(head) => {
            // The shard key made this request hot, so it is part of what the answer is for.
            let key = key.into_owned();
            Ok((lookup_in(cx, rc, head, &key).await?, spread))
        }
        (_, after) => Ok((after, spread)),
    }
}

/// A lookup in `rc` (under `partition`, when a part of the request beyond
/// the cache key's decides whose answer it is): the cache answers (`Err`), or
/// says what to do with the upstream's answer.
async fn lookup_in(
    cx: &mut Ctx<'_>,
    rc: &std::sync::Arc<crate::cache::flow::RouteCache>,
    head: &mut Parts,
    partition: &[u8],
) -> Result<After, Early> {
    let mut found = flow::lookup(rc, head, cx.conn.proto(), cx.host_str().unwrap_or(""), partition, cx.conn.peer.ip());
    if let Lookup::Wait(w) = found {
        // Boxed: only coalesced requests wait, and the hit path keeps a small future.
        found = Box::pin(w.wait(head)).await;
    }
    match found {
        Lookup::Answer(r) => Err(r),
        Lookup::AnswerAndRefresh(r, after) => {
            refresh(cx, head, after);
            Err(r)
        }
        Lookup::Forward(after) => Ok(after),
        Lookup::Wait(_) => unreachable!("a wait ends in an answer or a forward"),
    }
}

/// Target: the shard (or every shard) of the route's service.
pub fn target(cx: &Ctx, head: &Parts) -> Result<Target, Early> {
    let route = cx.routed();
    route
        .service
        .target(head, cx.client, route.fan_out)
        .map_err(|m| answer_text(StatusCode::BAD_REQUEST, Answer::MissingKey, format!("{m}\n")))
}

/// Balance: what affinity the pool's balancer needs (read before forwarding headers).
fn balance(cx: &Ctx, pool: &Pool, head: &Parts) -> Result<Affinity, Early> {
    balance::affinity(&pool.balancer, head, cx.client)
        .map_err(|m| answer_text(StatusCode::BAD_REQUEST, Answer::MissingKey, format!("{m}\n")))
}

/// Forward to pool `i` of the service: balance, forwarding headers, the exchange.
pub async fn forward(cx: &mut Ctx<'_>, i: usize, mut head: Parts, body: Body, spread: bool) -> Result<Response<Body>, Early> {
    let service = &cx.routed().service;
    let pool = &service.pools[i];
    let affinity = if spread { Affinity { spread: true, ..Affinity::default() } } else { balance(cx, pool, &head)? };
    forwarding_headers(cx, &mut head);
    // An upgrade goes on as one: its fields back, and the client's side of it kept for the tunnel.
    let over_h2 = head.version == http::Version::HTTP_2;
    let client_upgrade = match &cx.upgrade {
        Some(protocol) => {
            head.headers.insert(http::header::UPGRADE, (**protocol).clone());
            head.headers.insert(http::header::CONNECTION, HeaderValue::from_static("upgrade"));
            if over_h2 {
                crate::upstream::tunnel::websocket_key(&mut head.headers);
            }
            crate::upstream::tunnel::Client::take(&mut head.extensions)
        }
        None => None,
    };
    let retryable = is_idempotent(&head.method) && body.is_end_stream();
    let l = &cx.snap.limits;
    let req = Request::from_parts(head, body.limit(l.max_body_bytes, (l.body_read_timeout, l.body_min_rate)));
    // Boxed: the exchange is the largest state of a request (the request itself, a
    // connection lease, the upstream exchange, retries). Inline, it made every
    // request's future kilobytes larger, copied whole each time hyper moves or
    // spawns it (twice or more per HTTP/2 stream); boxed, it is built once on the heap.
    let (mut resp, endpoint) =
        Box::pin(exchange(pool, req, retryable, &affinity, cx.conn.https, origin(cx, std::slice::from_ref(pool)))).await;
    cx.endpoint = endpoint;
    if let (Some(client), StatusCode::SWITCHING_PROTOCOLS) = (client_upgrade, resp.status()) {
        crate::upstream::tunnel::spawn(
            client,
            crate::upstream::tunnel::Upstream::of(&mut resp),
            pool.body_idle,
            cx.conn.tunnels(),
            &cx.conn.tasks,
        );
        if over_h2 {
            // Over HTTP/2 the switch is a 200 to the CONNECT (RFC 8441 section 5).
            crate::upstream::tunnel::as_h2_answer(&mut resp);
        }
    }
    pool.record(resp.status().as_u16(), cx.start.elapsed());
    if let (Some(h), Some(shard)) = (service.shard_header(), &pool.shard) {
        if let Ok(v) = HeaderValue::from_str(shard) {
            resp.headers_mut().insert(h.clone(), v);
        }
    }
    Ok(resp)
}

/// Fan-out: a bodiless request to every shard, the answers made into one.
pub async fn fan_out(cx: &mut Ctx<'_>, mut head: Parts, body: Body) -> Result<Response<Body>, Early> {
    if !body.is_end_stream() {
        return Err(answer(StatusCode::BAD_REQUEST, Answer::BadRequest, "a request sent to every shard cannot carry a body\n"));
    }
    forwarding_headers(cx, &mut head);
    let service = &cx.routed().service;
    let Some(sharding) = &service.sharding else { unreachable!("only a sharded service fans out") };
    Ok(Box::pin(fanout::fan_out(&service.pools, &sharding.fan_out, sharding.header.as_ref(), &head, origin(cx, &service.pools))).await)
}

/// Forwarding headers (X-Forwarded-*, Forwarded, Via), hop-by-hop ones removed.
fn forwarding_headers(cx: &Ctx, head: &mut Parts) {
    let conn = cx.conn;
    let hop = Hop { peer: conn.peer.ip(), peer_value: &conn.peer_value, trusted: cx.trusted, proto: conn.proto() };
    headers::upstream_request(&mut head.headers, head.version, cx.host.as_ref(), &hop);
}

/// What a PROXY protocol header towards an upstream names: the client the
/// request is for (behind trusted proxies), with its port when it is the
/// peer, and the address it reached (asked of the socket only when one of
/// `pools` sends the header).
fn origin(cx: &Ctx, pools: &[Pool]) -> Origin {
    let port = if cx.client == cx.conn.peer.ip() { cx.conn.peer.port() } else { 0 };
    let client = std::net::SocketAddr::new(cx.client, port);
    let unknown = || std::net::SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0);
    let reached = if pools.iter().any(Pool::sends_proxy_header) { cx.conn.reached().unwrap_or_else(unknown) } else { unknown() };
    Origin { client, reached }
}

/// Sends to one pool and turns the upstream's answer into the client's; the
/// pin cookie when the cookie balancer (re-)pinned the client.
async fn exchange(
    pool: &Pool,
    req: Request<Body>,
    retryable: bool,
    affinity: &Affinity,
    https: bool,
    client: Origin,
) -> (Response<Body>, Option<Arc<crate::upstream::Endpoint>>) {
    match send(pool, req, retryable, affinity, client).await {
        Ok(f) => {
            let (mut p, b) = f.response.into_parts();
            let switched = (p.status == StatusCode::SWITCHING_PROTOCOLS).then(|| p.headers.get(http::header::UPGRADE).cloned()).flatten();
            headers::downstream_response(&mut p.headers, p.version);
            if let Some(protocol) = switched {
                p.headers.insert(http::header::UPGRADE, protocol);
                p.headers.insert(http::header::CONNECTION, HeaderValue::from_static("upgrade"));
            }
            if f.pin {
                if let Some(c) = pool
                    .endpoints
                    .iter()
                    .position(|e| Arc::ptr_eq(e, &f.endpoint))
                    .and_then(|i| balance::pin_cookie(&pool.balancer, i, https))
                {
                    p.headers.append(http::header::SET_COOKIE, c);
                }
            }
            p.version = http::Version::HTTP_11;
            (Response::from_parts(p, b), Some(f.endpoint))
        }
        Err(e) => (e.answer(&pool.name), None),
    }
}

/// Refreshes a stale entry in the background (stale-while-revalidate); the
/// client was already answered from the cache. Only a request with one target
/// pool is refreshed; the refresh is tracked so that shutdown waits for it.
fn refresh(cx: &Ctx, head: &Parts, after: After) {
    let Ok(Target::Pool(i)) = target(cx, head) else { return };
    let service = cx.routed().service.clone();
    let Ok(affinity) = balance(cx, &service.pools[i], head) else { return };
    let mut head = head.clone();
    head.method = Method::GET;
    forwarding_headers(cx, &mut head);
    let (https, client) = (cx.conn.https, origin(cx, std::slice::from_ref(&service.pools[i])));
    cx.conn.tasks.spawn(async move {
        let pool = &service.pools[i];
        let (resp, _) = exchange(pool, Request::from_parts(head, Body::Empty), true, &affinity, https, client).await;
        // Reading the body through stores it.
        let _ = http_body_util::BodyExt::collect(after.complete(resp).into_body()).await;
    });
}

/// The end of every request, answered early or not: respond, then log.
pub fn finish(cx: &Ctx, resp: Response<Body>) -> Response<Body> {
    log(cx, respond(cx, resp))
}

/// Respond: what every answer carries (HSTS, the rate-limit fields).
pub fn respond(cx: &Ctx, mut resp: Response<Body>) -> Response<Body> {
    if let Some(h) = cx.listener.and_then(|o| o.hsts.as_ref()) {
        resp.headers_mut().insert(http::header::STRICT_TRANSPORT_SECURITY, h.clone());
    }
    if let Some(report) = &cx.limit {
        report.apply(resp.headers_mut());
    }
    resp
}

/// Log: route counters and the access log.
pub fn log(cx: &Ctx, resp: Response<Body>) -> Response<Body> {
    let elapsed = cx.start.elapsed();
    if let Some(route) = cx.route {
        route.stats.record(resp.status().as_u16(), elapsed);
    }
    if let (Some(al), Some(l)) = (&cx.snap.access_log, &cx.log) {
        al.log(&Entry {
            client: cx.client,
            method: l.method.as_str(),
            path: &l.path,
            version: l.version,
            host: cx.host_str().unwrap_or("-"),
            status: resp.status().as_u16(),
            bytes: resp.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()),
            duration: elapsed,
            route: cx.route.map(|r| r.name.as_str()).unwrap_or("-"),
            endpoint: cx.endpoint.as_ref().map(|e| e.name.as_str()).unwrap_or("-"),
            user_agent: &l.user_agent,
            referer: &l.referer,
        });
    }
    resp
}

fn header_string(h: &http::HeaderMap, n: http::header::HeaderName) -> String {
    h.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}

/// RFC 9110 section 9.2.2.
fn is_idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}
