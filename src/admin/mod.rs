//! The admin listener: metrics, liveness and readiness, the effective config
//! (secrets redacted), pool state, and reload. Loopback by default (elsewhere
//! only with a token); never on the request path.

mod dashboard;
pub mod guard;
pub mod heat;
pub mod history;
pub mod memcache;
pub mod metrics;
mod process;

use crate::body::Body;
use crate::config::Snapshot;
use crate::tls::server::TlsState;
use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why the server refused a reload (its own error type, which the admin
/// listener sits below and only shows).
pub type ReloadRefused = Box<dyn std::error::Error + Send + Sync>;

/// What the admin listener asks of the running server (which implements it):
/// the admin listener sits below the server and never reaches into it.
pub trait Control: Send + Sync + 'static {
    /// The snapshot requests are served on now.
    fn snapshot(&self) -> Arc<Snapshot>;
    /// Shutdown has begun (`/readyz` fails).
    fn draining(&self) -> bool;
    /// Reloads the config; the new generation, or why it was rejected.
    fn reload(&self) -> BoxFuture<'_, Result<u64, ReloadRefused>>;
    /// The scaler's decisions and this root's standing in the election.
    fn scaling(&self) -> Arc<crate::scale::Scaling>;
    /// The TLS state of every running https listener.
    fn tls_states(&self) -> BoxFuture<'_, Vec<Arc<TlsState>>>;
    /// The last reloads and their results.
    fn reloads(&self) -> Vec<crate::metrics::ReloadRecord>;
    /// What discovery holds for each discovered pool.
    fn discovery(&self) -> std::collections::BTreeMap<String, crate::discovery::PoolStatus>;
}

/// Serves admin requests on `listener` (over TLS with `tls`) until `shutdown`
/// turns true. Accept errors (out of file descriptors, say) back off instead
/// of spinning.
pub async fn serve(
    listener: TcpListener,
    ctl: Arc<dyn Control>,
    tls: Option<Arc<TlsState>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let history = Arc::new(history::History::default());
    tokio::spawn(sample(ctl.clone(), history.clone(), shutdown.clone()));
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff = Duration::from_millis(5);
                stream
            }
            Err(e) => {
                tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "admin accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let (ctl, history) = (ctl.clone(), history.clone());
        // The same header-read timeout as the main listeners: a slow client holds nothing for long.
        let header_read_timeout = ctl.snapshot().conn.header_read_timeout;
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => connection(stream, ctl, history, header_read_timeout).await,
                Some(t) => match tokio::time::timeout(header_read_timeout, t.acceptor().accept(stream)).await {
                    Ok(Ok(s)) => connection(s, ctl, history, header_read_timeout).await,
                    Ok(Err(e)) => tracing::debug!(error = %e, "admin TLS handshake failed"),
                    Err(_) => tracing::debug!("admin TLS handshake timed out"),
                },
            }
        });
    }
}

/// One admin connection, plain or TLS.
async fn connection<I>(io: I, ctl: Arc<dyn Control>, history: Arc<history::History>, header_read_timeout: Duration)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let (ctl, history) = (ctl.clone(), history.clone());
        async move { Ok::<_, Infallible>(handle(req, &*ctl, &history).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    r
}

fn json_reply(status: StatusCode, v: serde_json::Value) -> Response<Body> {
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    reply(status, "application/json", s)
}

/// Once a second, every counter and gauge into the history, until shutdown.
async fn sample(ctl: Arc<dyn Control>, history: Arc<history::History>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let text = metrics::render(&ctl.snapshot(), &ctl.scaling(), &ctl.discovery());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        history.record(now, &text);
    }
}

async fn handle(req: Request<Incoming>, ctl: &dyn Control, history: &history::History) -> Response<Body> {
    let snap = ctl.snapshot();
    let tokens = snap.admin.as_ref().map(|a| guard::Tokens { full: a.token.as_ref(), heat: a.heat_token.as_ref() }).unwrap_or_default();
    let hosts = snap.admin.as_ref().map_or(&[][..], |a| &a.hosts[..]);
    if let Some((status, why)) = guard::refuse(&req, tokens, hosts) {
        crate::metrics::GLOBAL.admin_refused.fetch_add(1, Relaxed);
        tracing::info!(method = %req.method(), path = req.uri().path(), status = status.as_u16(), "admin request refused");
        let mut r = reply(status, "text/plain", why.into());
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        return r;
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let mut text = metrics::render(&snap, &ctl.scaling(), &ctl.discovery());
            metrics::render_tls(&mut text, &ctl.tls_states().await);
            reply(StatusCode::OK, "text/plain; version=0.0.4", text)
        }
        (&Method::GET, "/admin/tls") => json_reply(StatusCode::OK, tls(&ctl.tls_states().await)),
        (&Method::GET, "/" | "/dashboard" | "/dashboard/") => reply(StatusCode::OK, "text/html; charset=utf-8", dashboard::page().into()),
        (&Method::GET, "/dashboard/snapshot") => {
            let views = dashboard::Views {
                config: json!({ "generation": snap.generation, "config": redacted(&snap.config) }),
                pools: pools(&snap),
                shards: shards(&snap),
                heat: heat::json(&snap, &ctl.scaling()),
                cache: caches(&snap),
                tls: tls(&ctl.tls_states().await),
                reloads: json!(ctl.reloads()),
                discovery: json!({ "pools": ctl.discovery() }),
            };
            let mut r = reply(StatusCode::OK, "text/html; charset=utf-8", dashboard::snapshot(views, history));
            r.headers_mut().insert(header::CONTENT_DISPOSITION, header::HeaderValue::from_static("attachment; filename=\"ringmaster-snapshot.html\""));
            r
        }
        (&Method::GET, "/admin/history") => {
            let params = crate::key::query_pairs(req.uri().query().unwrap_or(""));
            let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
            let n = get("last").and_then(|v| v.parse().ok()).unwrap_or(history::SECONDS);
            let prefixes: Vec<&str> = get("match").map(|m| m.split(',').filter(|p| !p.is_empty()).collect()).unwrap_or_default();
            json_reply(StatusCode::OK, history.json(n, &prefixes))
        }
        (&Method::GET, "/admin/reloads") => json_reply(StatusCode::OK, json!(ctl.reloads())),
        (&Method::GET, "/admin/discovery") => json_reply(StatusCode::OK, json!({ "pools": ctl.discovery() })),
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        (&Method::GET, "/readyz") => {
            if ctl.draining() {
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "draining\n".into())
            } else {
                reply(StatusCode::OK, "text/plain", "ready\n".into())
            }
        }
        (&Method::GET, "/admin/config") => json_reply(StatusCode::OK, json!({ "generation": snap.generation, "config": redacted(&snap.config) })),
        (&Method::GET, "/admin/pools") => json_reply(StatusCode::OK, pools(&snap)),
        (&Method::GET, "/admin/shards") => json_reply(StatusCode::OK, shards(&snap)),
        (&Method::GET, "/admin/heat") => json_reply(StatusCode::OK, heat::json(&snap, &ctl.scaling())),
        (&Method::GET, "/admin/cache") => json_reply(StatusCode::OK, caches(&snap)),
        (&Method::POST, "/admin/cache/purge") => purge(&snap, req.uri().query().unwrap_or("")),
        (&Method::POST, "/admin/cache/switch") => switch(&snap, req.uri().query().unwrap_or("")),
        (&Method::POST, "/admin/heat/mitigation") => mitigation(&snap, req.uri().query().unwrap_or("")),
        (&Method::GET, "/admin/process") => json_reply(StatusCode::OK, process::json()),
        (&Method::POST, "/admin/reload") => match ctl.reload().await {
            Ok(g) => json_reply(StatusCode::OK, json!({ "reloaded": true, "generation": g })),
            Err(e) => json_reply(StatusCode::BAD_REQUEST, json!({ "reloaded": false, "error": e.to_string() })),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "admin paths: / (the dashboard) /dashboard/snapshot /admin/history?last=N&match=PREFIX /admin/reloads /admin/discovery /metrics /healthz /readyz /admin/config /admin/pools /admin/shards /admin/cache /admin/tls /admin/process POST /admin/cache/purge?route=R&key=K|prefix=P|tag=T POST /admin/cache/switch?route=R&on=true|false POST /admin/reload\n".into(),
        ),
    }
}

/// `/admin/tls`: each https listener's certificates with their names and expiry.
fn tls(states: &[Arc<crate::tls::server::TlsState>]) -> serde_json::Value {
    let now = crate::tls::unix_now();
    let listeners: Vec<_> = states
        .iter()
        .map(|s| {
            let l = s.loaded();
            let certs: Vec<_> = l
                .certs
                .iter()
                .map(|c| {
                    let mut v = serde_json::to_value(c).unwrap_or_default();
                    if let Some(f) = &c.facts {
                        v["expires_in_days"] = json!((f.not_after - now) as f64 / 86400.0);
                        v["not_after_http_date"] = json!(httpdate::fmt_http_date(
                            std::time::UNIX_EPOCH + std::time::Duration::from_secs(f.not_after.max(0) as u64)
                        ));
                    }
                    v
                })
                .collect();
            json!({
                "listener": s.listener,
                "certificates": certs,
                "client_auth": l.spec.client_auth.as_ref().map(|c| json!({ "ca": c.ca, "required": c.required, "tier": c.tier })),
                "session_tickets": l.spec.session_tickets,
                "session_cache": l.spec.session_cache,
                "loaded_at": httpdate::fmt_http_date(l.at),
                "reloads": s.reloads.load(Relaxed),
                "reload_failures": s.reload_failures.load(Relaxed),
            })
        })
        .collect();
    json!({ "listeners": listeners })
}

/// One pool as JSON: endpoints with health and load.
fn pool_json(p: &crate::upstream::Pool, now: u64) -> serde_json::Value {
    let eps: Vec<_> = p
        .endpoints
        .iter()
        .map(|e| {
            let st = &e.stats;
            json!({
                "name": e.name,
                "address": e.address,
                "weight": e.weight,
                "healthy": e.available(now),
                "probe_healthy": st.probe_healthy.load(Relaxed),
                "ejected_for_ms": st.ejected_until_ms.load(Relaxed).saturating_sub(now),
                "in_flight": st.in_flight.load(Relaxed),
                "requests": st.requests.load(Relaxed),
                "errors": st.errors.load(Relaxed),
                "connections_open": e.conns.stats.open.load(Relaxed),
                "connections_idle": e.conns.stats.idle.load(Relaxed),
            })
        })
        .collect();
    let by_class: Vec<u64> = p.stats.by_class.iter().map(|c| c.load(Relaxed)).collect();
    json!({
        "service": p.service,
        "shard": p.shard,
        "healthy": p.healthy_count(),
        "size": p.endpoints.len(),
        "fail_open": p.stats.fail_open.load(Relaxed),
        "in_flight": p.stats.load.in_flight(),
        "answers_by_class": by_class,
        "endpoints": eps,
    })
}

fn pools(snap: &crate::config::Snapshot) -> serde_json::Value {
    let now = crate::clock::now_ms();
    let pools: Vec<_> = snap.services.values().flat_map(|s| s.pools.iter()).map(|p| pool_json(p, now)).collect();
    json!({ "generation": snap.generation, "pools": pools })
}

fn shards(snap: &crate::config::Snapshot) -> serde_json::Value {
    let now = crate::clock::now_ms();
    let services: Vec<_> = snap
        .services
        .values()
        .filter_map(|s| {
            let sh = s.sharding.as_ref()?;
            Some(json!({
                "service": s.name,
                "function": sh.ring.function().name(),
                "key": sh.rule.key.describe(),
                "shards": s.pools.iter().map(|p| pool_json(p, now)).collect::<Vec<_>>(),
            }))
        })
        .chain(snap.memcache.values().map(|s| memcache::json(s)))
        .collect();
    json!({ "generation": snap.generation, "services": services })
}

fn caches(snap: &crate::config::Snapshot) -> serde_json::Value {
    let routes: Vec<_> = snap
        .router
        .routes
        .iter()
        .filter_map(|r| {
            let c = r.cache.as_ref()?;
            let s = &c.store;
            let top: Vec<_> = s.top_keys(10).into_iter().map(|(k, hits)| json!({ "key": k, "hits": hits })).collect();
            Some(json!({
                "route": r.name,
                "on": !s.bypassed.load(Relaxed),
                "bytes": s.bytes(),
                "capacity_bytes": s.capacity,
                "entries": s.entries(),
                "hits": s.stats.hits.load(Relaxed),
                "misses": s.stats.misses.load(Relaxed),
                "evictions": s.evictions(),
                "top_keys": top,
            }))
        })
        .collect();
    json!({ "caches": routes })
}

/// `POST /admin/cache/purge?route=R&key=K` (exact key), `prefix=P`, or `tag=T`;
/// without `route`, every route's cache.
fn purge(snap: &crate::config::Snapshot, query: &str) -> Response<Body> {
    let params = crate::key::query_pairs(query);
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let route = get("route");
    let stores: Vec<_> =
        snap.router.routes.iter().filter(|r| route.map(|n| n == r.name).unwrap_or(true)).filter_map(|r| r.cache.as_ref()).collect();
    if stores.is_empty() {
        return json_reply(StatusCode::NOT_FOUND, json!({ "error": "no cached route by that name" }));
    }
    if get("prefix") == Some("") {
        let why = "an empty prefix would empty the whole cache; give prefix=http:// and prefix=https:// to mean it";
        return json_reply(StatusCode::BAD_REQUEST, json!({ "error": why }));
    }
    let purged: usize = match (get("key"), get("prefix"), get("tag")) {
        (Some(k), None, None) => stores.iter().map(|c| c.store.remove(k)).sum(),
        (None, Some(p), None) => stores.iter().map(|c| c.store.purge_where(|e| e.key.starts_with(p))).sum(),
        (None, None, Some(t)) => stores.iter().map(|c| c.store.purge_where(|e| e.tags.iter().any(|x| &**x == t))).sum(),
        _ => return json_reply(StatusCode::BAD_REQUEST, json!({ "error": "give exactly one of key=, prefix= or tag=" })),
    };
    json_reply(StatusCode::OK, json!({ "purged": purged }))
}

/// `POST /admin/cache/switch?route=R&on=false`: turns a route's cache off
/// (requests pass it by, nothing is stored; what it holds stays) or back on,
/// so the same load can be measured with and without it.
fn switch(snap: &crate::config::Snapshot, query: &str) -> Response<Body> {
    let params = crate::key::query_pairs(query);
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let on = match get("on") {
        Some("true") => true,
        Some("false") => false,
        _ => return json_reply(StatusCode::BAD_REQUEST, json!({ "error": "give route=NAME and on=true or on=false" })),
    };
    let Some(route) = get("route") else {
        return json_reply(StatusCode::BAD_REQUEST, json!({ "error": "give route=NAME and on=true or on=false" }));
    };
    let Some(cache) = snap.router.routes.iter().find(|r| r.name == route).and_then(|r| r.cache.as_ref()) else {
        return json_reply(StatusCode::NOT_FOUND, json!({ "error": "no cached route by that name" }));
    };
    cache.store.bypassed.store(!on, Relaxed);
    tracing::info!(route, on, "route cache switched");
    json_reply(StatusCode::OK, json!({ "route": route, "on": on }))
}

/// `POST /admin/heat/mitigation?service=S&on=false`: a service's hot-key
/// mitigation (root cache, spread, split) off for now, or back on, so the
/// same load can be measured with and without it.
fn mitigation(snap: &crate::config::Snapshot, query: &str) -> Response<Body> {
    let params = crate::key::query_pairs(query);
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let usage = || json_reply(StatusCode::BAD_REQUEST, json!({ "error": "give service=NAME and on=true or on=false" }));
    let (Some(name), Some(on)) = (get("service"), get("on").and_then(|v| v.parse::<bool>().ok())) else { return usage() };
    let heat = match (snap.services.get(name), snap.memcache.get(name)) {
        (Some(s), _) => &s.heat,
        (None, Some(m)) => &m.heat,
        _ => return json_reply(StatusCode::NOT_FOUND, json!({ "error": "no service by that name" })),
    };
    if !heat.set_mitigating(on) {
        return json_reply(StatusCode::CONFLICT, json!({ "error": "the service mitigates no hot keys (hot_keys is not set)" }));
    }
    tracing::info!(service = name, on, "hot-key mitigation switched");
    json_reply(StatusCode::OK, json!({ "service": name, "on": on }))
}

/// The config as `/admin/config` shows it: the admin token, JWT secrets, API keys
/// and their digests, and a Redis URL's password replaced.
fn redacted(cfg: &crate::config::Config) -> serde_json::Value {
    const HIDDEN: &str = "<redacted>";
    let mut v = serde_json::to_value(cfg).unwrap_or_default();
    let mut hide = |ptr: &str| {
        if let Some(x) = v.pointer_mut(ptr).filter(|x| !x.is_null()) {
            *x = json!(HIDDEN);
        }
    };
    hide("/admin/token");
    hide("/admin/heat_token");
    hide("/identity/jwt/hs256_secret");
    if let Some(keys) = v.pointer_mut("/identity/keys").and_then(|k| k.as_array_mut()) {
        for k in keys {
            for field in ["key", "sha256"] {
                if k.get(field).is_some_and(|x| !x.is_null()) {
                    k[field] = json!(HIDDEN);
                }
            }
        }
    }
    if let Some(url) = v.pointer_mut("/rate_limit_store/redis") {
        if let Some(s) = url.as_str() {
            *url = json!(without_password(s));
        }
    }
    v
}

/// `redis://user:secret@host` as `redis://user:<redacted>@host`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map(|(u, _)| format!("{u}:<redacted>")).unwrap_or_else(|| "<redacted>".into());
            format!("{scheme}://{user}@{host}{path}")
        }
        None => url.to_string(),
    }
}
