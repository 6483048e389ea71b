//! The admin listener: metrics, liveness and readiness, the effective config,
//! pool state, and reload. Loopback by default; never on the request path.

pub mod metrics;

use crate::body::Body;
use crate::server::{reload, Shared};
use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Serves admin requests on `listener` forever.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(req, &shared).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
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

async fn handle(req: Request<Incoming>, shared: &Arc<Shared>) -> Response<Body> {
    let snap = shared.snapshot.load_full();
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => reply(StatusCode::OK, "text/plain; version=0.0.4", metrics::render(&snap)),
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        (&Method::GET, "/readyz") => {
            if shared.draining.load(Relaxed) {
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "draining\n".into())
            } else {
                reply(StatusCode::OK, "text/plain", "ready\n".into())
            }
        }
        (&Method::GET, "/admin/config") => json_reply(StatusCode::OK, json!({ "generation": snap.generation, "config": snap.config })),
        (&Method::GET, "/admin/pools") => json_reply(StatusCode::OK, pools(&snap)),
        (&Method::GET, "/admin/shards") => json_reply(StatusCode::OK, shards(&snap)),
        (&Method::POST, "/admin/reload") => match reload::reload(shared).await {
            Ok(g) => json_reply(StatusCode::OK, json!({ "reloaded": true, "generation": g })),
            Err(e) => json_reply(StatusCode::BAD_REQUEST, json!({ "reloaded": false, "error": e })),
        },
        (_, "/admin/reload") => reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use POST /admin/reload\n".into()),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "admin paths: /metrics /healthz /readyz /admin/config /admin/pools /admin/shards POST /admin/reload\n".into(),
        ),
    }
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
        "in_flight": p.stats.in_flight.load(Relaxed),
        "answers_by_class": by_class,
        "endpoints": eps,
    })
}

fn pools(snap: &crate::config::compile::Snapshot) -> serde_json::Value {
    let now = crate::clock::now_ms();
    let pools: Vec<_> = snap.services.values().flat_map(|s| s.pools.iter()).map(|p| pool_json(p, now)).collect();
    json!({ "generation": snap.generation, "pools": pools })
}

fn shards(snap: &crate::config::compile::Snapshot) -> serde_json::Value {
    let now = crate::clock::now_ms();
    let services: Vec<_> = snap
        .services
        .values()
        .filter_map(|s| {
            let sh = s.sharding.as_ref()?;
            Some(json!({
                "service": s.name,
                "function": sh.sharder.function.get_ref().name(),
                "key": sh.sharder.key.describe(),
                "shards": s.pools.iter().map(|p| pool_json(p, now)).collect::<Vec<_>>(),
            }))
        })
        .collect();
    json!({ "generation": snap.generation, "services": services })
}
