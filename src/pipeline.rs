//! The request path, top to bottom: parse limits, identify, route, balance and
//! forward, then response headers, metrics and the access log. Each stage is a
//! call into its own module; this file only puts them in order.

use crate::accesslog::Entry;
use crate::admin::metrics::{count_answer, Answer};
use crate::body::Body;
use crate::cache::{self, step::Before};
use crate::config::compile::Snapshot;
use crate::identity;
use crate::server::Shared;
use crate::service::Target;
use crate::upstream::forward::{forward, ForwardError};
use crate::upstream::headers::{self, Hop};
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, HOST};
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// What the pipeline knows of the client connection.
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The peer's IP as a header value, made once per connection.
    pub peer_value: HeaderValue,
    pub listener: Arc<str>,
    pub proto: &'static str,
    /// The rate-limit identity of a verified client certificate (mTLS with a tier).
    pub client_cert: Option<Arc<identity::KeyInfo>>,
    /// Requests being handled now, and handled so far (the connection timeouts read them).
    pub in_flight: std::sync::atomic::AtomicU32,
    pub requests_started: std::sync::atomic::AtomicU64,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, listener: Arc<str>, proto: &'static str) -> ConnInfo {
        let ip = identity::canonical(peer.ip());
        let peer_value = HeaderValue::from_str(&ip.to_string()).expect("an IP is a valid header value");
        ConnInfo {
            peer: SocketAddr::new(ip, peer.port()),
            peer_value,
            listener,
            proto,
            client_cert: None,
            in_flight: Default::default(),
            requests_started: Default::default(),
        }
    }
}

/// A short plain-text answer of the proxy's own, counted by reason.
pub fn answer(status: StatusCode, why: Answer, text: &'static str) -> Response<Body> {
    count_answer(why);
    let mut r = Response::new(Body::Full(Some(Bytes::from_static(text.as_bytes()))));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// A 308 to the same URL over https on `port`.
fn redirect_https(req: &Request<Incoming>, port: u16) -> Response<Body> {
    let host = req.headers().get(HOST).and_then(|h| h.to_str().ok()).or_else(|| req.uri().host()).unwrap_or("localhost");
    let host = crate::route::strip_port(host);
    let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let location = if port == 443 { format!("https://{host}{path}") } else { format!("https://{host}:{port}{path}") };
    let mut r = Response::new(Body::Empty);
    *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    r
}

/// An answer of the proxy's own with a text made for this request.
pub fn answer_text(status: StatusCode, why: Answer, text: String) -> Response<Body> {
    let mut r = answer(status, why, "");
    *r.body_mut() = Body::full(text);
    r
}

/// Handles one request from a client.
pub async fn handle(req: Request<Incoming>, conn: &ConnInfo, shared: &Shared) -> Response<Body> {
    let start = Instant::now();
    let snap = shared.snapshot.load_full();

    // listener policies: redirect plain HTTP to HTTPS
    let opts = if snap.listener_opts.is_empty() { None } else { snap.listener_opts.get(&*conn.listener) };
    if let Some(port) = opts.and_then(|o| o.redirect_to_https) {
        return redirect_https(&req, port);
    }

    // parse: limits hyper does not enforce exactly.
    if let Some(resp) = check_limits(&req, &snap) {
        return resp;
    }

    // identify
    let trusted = !snap.trusted.is_empty() && snap.trusted.contains(conn.peer.ip());
    let client = if trusted { identity::client_addr(conn.peer.ip(), req.headers(), &snap.trusted) } else { conn.peer.ip() };

    // route
    let host_value =
        req.headers().get(HOST).cloned().or_else(|| req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
    let host = host_value.as_ref().and_then(|h| h.to_str().ok());
    let Some(route) = snap.router.find(&conn.listener, req.method(), host, req.uri().path()) else {
        return answer(StatusCode::NOT_FOUND, Answer::NoRoute, "no route matches this request\n");
    };

    // identify (credentials) and limit: the route's rate limits for this client
    let limited = !(route.limits.is_empty() && route.tier_limits.is_empty());
    // Credentials in the request (API key, JWT) first, then a verified client certificate.
    let cert_or_anonymous = || conn.client_cert.clone().map_or(identity::Who::Anonymous, identity::Who::Key);
    let who = match (&snap.credentials, limited) {
        (Some(c), true) => match c.identify(req.headers(), req.uri().query()) {
            Ok(identity::Who::Anonymous) => cert_or_anonymous(),
            Ok(w) => w,
            Err(e) => {
                let body = serde_json::json!({ "error": e.to_string() }).to_string() + "\n";
                let mut r = answer_text(StatusCode::UNAUTHORIZED, Answer::BadCredentials, body);
                r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                return r;
            }
        },
        (None, true) => cert_or_anonymous(),
        _ => identity::Who::Anonymous,
    };
    let mut policies: Vec<&crate::limit::Policy> = Vec::new();
    let verdict = if !limited {
        None
    } else {
        policies.extend(route.limits.iter());
        let (tier_policies, who_key) = match &who {
            identity::Who::Anonymous => (
                route.tier_limits.get("anonymous"),
                crate::limit::group(client, *snap.config.identity.ipv4_prefix.get_ref(), *snap.config.identity.ipv6_prefix.get_ref()),
            ),
            identity::Who::Key(k) => (
                k.overrides.as_ref().or_else(|| route.tier_limits.get(&k.tier)),
                crate::shard::hash::xxh3(k.owner.as_bytes()) as u128 | 1u128 << 101,
            ),
        };
        policies.extend(tier_policies.into_iter().flatten());
        let local = || crate::limit::check(&snap.limit_store, &policies, who_key, crate::clock::now_ns());
        match &snap.redis {
            None => local(),
            Some(_) if policies.is_empty() => None,
            // Boxed: a network round trip dwarfs the allocation, and the script's
            // state would otherwise enlarge every request's future.
            Some(redis) => match Box::pin(redis.check(&policies, who_key)).await {
                Ok(v) => Some(v),
                Err(_) if redis.on_failure == crate::limit::redis::OnFailure::Open => local(),
                Err(e) => {
                    tracing::debug!(error = %e, "rate limits unavailable");
                    return answer(
                        StatusCode::SERVICE_UNAVAILABLE,
                        Answer::LimitsUnavailable,
                        "rate limits cannot be checked right now; retry shortly\n",
                    );
                }
            },
        }
    };
    if let Some(v) = verdict.as_ref().filter(|v| !v.allowed) {
        crate::admin::metrics::count_answer(Answer::RateLimited);
        let resp = crate::limit::denied(&policies, v);
        route.stats.record(resp.status().as_u16(), start.elapsed());
        return resp;
    }

    // shard: which pool (or pools) of the service
    let (mut parts, incoming) = req.into_parts();
    let service = &route.service;
    let target = match service.target(&parts, client, route.fan_out) {
        Ok(t) => t,
        Err(missing) => return answer_text(StatusCode::BAD_REQUEST, Answer::MissingKey, format!("{missing}\n")),
    };

    // forward
    let retryable = is_idempotent(&parts.method) && incoming.is_end_stream();
    let bodiless = incoming.is_end_stream();
    // The balancer reads its key before forwarding headers are added.
    let affinity = match target {
        Target::Pool(i) => match crate::balance::affinity(&service.pools[i].balancer, &parts, client) {
            Ok(a) => a,
            Err(missing) => return answer_text(StatusCode::BAD_REQUEST, Answer::MissingKey, format!("{missing}\n")),
        },
        Target::All => Default::default(),
    };
    // cache lookup (before forwarding headers, so keys and Vary see the client's own)
    let cache = match (target, &route.cache) {
        (Target::Pool(_), Some(c)) => Some((c, cache::step::before(c, &mut parts, host.unwrap_or(""), conn.peer.ip()).await)),
        _ => None,
    };
    // Forwarding headers, unless the cache already answered and nothing goes upstream.
    if !matches!(cache, Some((_, Before::Answer(_)))) {
        let hop = Hop { peer: conn.peer.ip(), peer_value: &conn.peer_value, trusted, proto: conn.proto };
        headers::upstream_request(&mut parts.headers, parts.version, host_value.as_ref(), &hop);
    }
    let log = snap.access_log.as_ref().map(|_| LogHead {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        version: parts.version,
        ua: header_string(&parts.headers, http::header::USER_AGENT),
        referer: header_string(&parts.headers, http::header::REFERER),
    });
    let (resp, endpoint) = match target {
        Target::Pool(i) => {
            let pool = &service.pools[i];
            let (mut resp, endpoint) = match cache {
                None => send(pool, parts, incoming, retryable, &affinity, conn, &snap).await,
                Some((_, Before::Answer(r))) => (r, None),
                Some((c, Before::AnswerAndRefresh(r, miss))) => {
                    spawn_refresh(service.clone(), i, parts, affinity, c.clone(), miss);
                    (r, None)
                }
                Some((c, Before::Forward(miss))) => {
                    let (resp, ep) = send(pool, parts, incoming, retryable, &affinity, conn, &snap).await;
                    (cache::step::after(c, miss, resp), ep)
                }
                Some((c, Before::Bypass { invalidate })) => {
                    let (resp, ep) = send(pool, parts, incoming, retryable, &affinity, conn, &snap).await;
                    cache::step::after_bypass(c, invalidate, resp.status());
                    (resp, ep)
                }
            };
            pool.record(resp.status().as_u16(), start.elapsed());
            if let (Some(h), Some(shard)) = (service.sharding.as_ref().and_then(|s| s.header.as_ref()), &pool.shard) {
                if let Ok(v) = HeaderValue::from_str(shard) {
                    resp.headers_mut().insert(h.clone(), v);
                }
            }
            (resp, endpoint)
        }
        Target::All if !bodiless => {
            (answer(StatusCode::BAD_REQUEST, Answer::BadRequest, "a request sent to every shard cannot carry a body\n"), None)
        }
        Target::All => (Box::pin(crate::shard::fanout::fan_out(service, &parts, client)).await, None),
    };

    let mut resp = resp;
    if let Some(h) = opts.and_then(|o| o.hsts.as_ref()) {
        resp.headers_mut().insert(http::header::STRICT_TRANSPORT_SECURITY, h.clone());
    }
    if let Some(v) = &verdict {
        crate::limit::headers(resp.headers_mut(), &policies, v);
    }
    let elapsed = start.elapsed();
    route.stats.record(resp.status().as_u16(), elapsed);
    if let (Some(al), Some(l)) = (&snap.access_log, log) {
        al.log(&Entry {
            client,
            method: l.method.as_str(),
            path: &l.path,
            version: l.version,
            host: host.unwrap_or("-"),
            status: resp.status().as_u16(),
            bytes: resp.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()),
            duration: elapsed,
            route: &route.name,
            endpoint: endpoint.as_ref().map(|e| e.name.as_str()).unwrap_or("-"),
            user_agent: &l.ua,
            referer: &l.referer,
        });
    }
    resp
}

/// Forwards to one pool and turns the upstream's answer into the client's.
async fn send(
    pool: &crate::upstream::Pool,
    parts: http::request::Parts,
    incoming: Incoming,
    retryable: bool,
    affinity: &crate::balance::Affinity,
    conn: &ConnInfo,
    snap: &Snapshot,
) -> (Response<Body>, Option<Arc<crate::upstream::Endpoint>>) {
    let l = &snap.config.limits;
    let body = Body::limited(incoming, snap.limits.max_body_bytes, (l.body_read_timeout.0, l.body_min_rate));
    // Boxed: the forwarding future is the largest state of a request (a
    // connection lease, the upstream exchange, retries). Inline, it made every
    // request's future about 4 KiB, copied whole each time hyper moves or spawns
    // it (twice or more per HTTP/2 stream); boxed, it is built once on the heap.
    match Box::pin(forward(pool, Request::from_parts(parts, body), retryable, affinity)).await {
        Ok(f) => {
            let (mut p, b) = f.response.into_parts();
            headers::downstream_response(&mut p.headers, p.version);
            if f.pin {
                if let Some(i) = pool.endpoints.iter().position(|e| Arc::ptr_eq(e, &f.endpoint)) {
                    if let Some(c) = crate::balance::pin_cookie(&pool.balancer, i, conn.proto == "https") {
                        p.headers.append(http::header::SET_COOKIE, c);
                    }
                }
            }
            p.version = http::Version::HTTP_11;
            (Response::from_parts(p, b), Some(f.endpoint))
        }
        Err(e) => (error_answer(&e, &pool.name), None),
    }
}

/// Refreshes a stale entry in the background (stale-while-revalidate); the
/// client was already answered from the cache.
fn spawn_refresh(
    service: Arc<crate::service::Service>,
    pool: usize,
    mut parts: http::request::Parts,
    affinity: crate::balance::Affinity,
    cache: Arc<cache::step::RouteCache>,
    miss: Box<cache::step::Miss>,
) {
    parts.method = Method::GET;
    tokio::spawn(async move {
        let pool = &service.pools[pool];
        let resp = match forward(pool, Request::from_parts(parts, Body::Empty), true, &affinity).await {
            Ok(f) => {
                let (mut p, b) = f.response.into_parts();
                headers::downstream_response(&mut p.headers, p.version);
                Response::from_parts(p, b)
            }
            Err(e) => error_answer(&e, &pool.name),
        };
        // Reading the body through stores it.
        let _ = http_body_util::BodyExt::collect(cache::step::after(&cache, miss, resp).into_body()).await;
    });
}

struct LogHead {
    method: Method,
    path: String,
    version: http::Version,
    ua: String,
    referer: String,
}

fn header_string(h: &http::HeaderMap, n: http::header::HeaderName) -> String {
    h.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}

fn is_idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

fn check_limits(req: &Request<Incoming>, snap: &Snapshot) -> Option<Response<Body>> {
    let l = &snap.limits;
    let h = req.headers();
    if h.len() > l.max_headers {
        return Some(answer(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, Answer::HeadersTooLarge, "too many request headers\n"));
    }
    let mut size = req.uri().path_and_query().map(|p| p.as_str().len()).unwrap_or(1) + req.method().as_str().len() + 12;
    for (k, v) in h {
        size += k.as_str().len() + v.len() + 4;
    }
    if size > l.max_header_bytes {
        return Some(answer(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, Answer::HeadersTooLarge, "request headers are too large\n"));
    }
    if let Some(len) = h.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok()) {
        if len > l.max_body_bytes {
            return Some(answer(StatusCode::PAYLOAD_TOO_LARGE, Answer::BodyTooLarge, "request body is too large\n"));
        }
    }
    None
}

pub fn error_answer(e: &ForwardError, service: &str) -> Response<Body> {
    match e {
        ForwardError::NoEndpoint => {
            tracing::debug!(service, "no endpoint available");
            answer(StatusCode::SERVICE_UNAVAILABLE, Answer::NoEndpoint, "no upstream endpoint is available\n")
        }
        ForwardError::Timeout { .. } => {
            tracing::debug!(service, error = %e, "upstream timeout");
            answer(StatusCode::GATEWAY_TIMEOUT, Answer::GatewayTimeout, "the upstream did not answer in time\n")
        }
        ForwardError::BodyTooLarge(_) => answer(StatusCode::PAYLOAD_TOO_LARGE, Answer::BodyTooLarge, "request body is too large\n"),
        ForwardError::BodyTooSlow => answer(StatusCode::REQUEST_TIMEOUT, Answer::BodyTimeout, "the request body arrived too slowly\n"),
        ForwardError::Connect { .. } | ForwardError::Upstream { .. } | ForwardError::BrokenBody { .. } => {
            tracing::debug!(service, error = %e, "upstream error");
            answer(StatusCode::BAD_GATEWAY, Answer::BadGateway, "the upstream failed to answer\n")
        }
    }
}
