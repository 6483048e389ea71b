//! A small built-in backend replica, used by `ringmaster demo` and by the tests
//! (`ringmaster backend`). It names itself in every answer and can misbehave on
//! request: fail its health check, answer any status, be slow, hang, break off
//! mid-response, or (in garbage mode) answer bytes that are not HTTP.

use crate::body::BoxError;
use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A backend's identity and switches.
pub struct Backend {
    pub name: String,
    pub healthy: AtomicBool,
    pub requests: AtomicU64,
    /// Requests to /cc/ paths, which a cache in front should save.
    pub origin: AtomicU64,
    /// Added to every answer.
    pub delay: Duration,
}

/// Serves HTTP/1.1 and HTTP/2 on `listener` forever.
pub async fn serve(listener: TcpListener, name: String, delay: Duration) {
    let b = Arc::new(Backend { name, healthy: AtomicBool::new(true), requests: AtomicU64::new(0), origin: AtomicU64::new(0), delay });
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let b = b.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let b = b.clone();
                async move { Ok::<_, Infallible>(handle(req, &b).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

/// Answers every connection with bytes that are not HTTP, then closes it.
pub async fn serve_garbage(listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let _ = stream.write_all(b"SSH-2.0-not-http\r\n\x00\x01\x02garbage\r\n\r\n").await;
            let _ = stream.shutdown().await;
        });
    }
}

type Body = BoxBody<Bytes, BoxError>;

/// A body that sends some bytes, waits a moment (so they are flushed), then
/// fails, which makes hyper drop the connection.
struct BreaksOff(Option<Bytes>, std::pin::Pin<Box<tokio::time::Sleep>>);

impl http_body::Body for BreaksOff {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        if let Some(b) = self.0.take() {
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(b))));
        }
        std::task::ready!(self.1.as_mut().poll(cx));
        std::task::Poll::Ready(Some(Err("backend breaks off mid-response".into())))
    }
}

fn text(b: &Backend, status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert("x-backend", b.name.parse().unwrap_or(header::HeaderValue::from_static("backend")));
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
    r
}

async fn handle(req: Request<Incoming>, b: &Backend) -> Response<Body> {
    let path = req.uri().path();
    if path != "/healthz" && !path.starts_with("/admin/") {
        b.requests.fetch_add(1, Relaxed);
    }
    if !b.delay.is_zero() && req.uri().path() != "/healthz" {
        tokio::time::sleep(b.delay).await;
    }
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/healthz" => {
            if b.healthy.load(Relaxed) {
                text(b, StatusCode::OK, "ok\n")
            } else {
                text(b, StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n")
            }
        }
        "/admin/unhealthy" => {
            b.healthy.store(false, Relaxed);
            text(b, StatusCode::OK, "now unhealthy\n")
        }
        "/admin/healthy" => {
            b.healthy.store(true, Relaxed);
            text(b, StatusCode::OK, "now healthy\n")
        }
        "/small" => text(b, StatusCode::OK, vec![b'x'; 100]),
        "/admin/count" => text(b, StatusCode::OK, b.origin.load(Relaxed).to_string()),
        // Every request but health checks and these admin paths.
        "/admin/requests" => text(b, StatusCode::OK, b.requests.load(Relaxed).to_string()),
        p if p.starts_with("/cc/") => cacheable(b, &req).await,
        p if p.ends_with("/items") => {
            // A JSON array naming this replica, for fan-out merges.
            let mut r = text(b, StatusCode::OK, serde_json::json!([b.name]).to_string());
            r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
            r
        }
        "/4k" => text(b, StatusCode::OK, vec![b'x'; 4096]),
        "/echo" => {
            let method = req.method().to_string();
            let uri = req.uri().to_string();
            let version = format!("{:?}", req.version());
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .keys()
                .map(|k| {
                    let vals: Vec<&str> = req.headers().get_all(k).iter().filter_map(|v| v.to_str().ok()).collect();
                    (k.as_str().to_string(), serde_json::Value::from(vals.join(", ")))
                })
                .collect();
            let body_len = match req.into_body().collect().await {
                Ok(c) => c.to_bytes().len(),
                Err(_) => return text(b, StatusCode::BAD_REQUEST, "body read failed\n"),
            };
            let v = serde_json::json!({ "backend": b.name, "method": method, "uri": uri, "version": version, "headers": headers, "body_len": body_len });
            let mut r = text(b, StatusCode::OK, v.to_string());
            r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
            r
        }
        "/hang" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            text(b, StatusCode::OK, "late\n")
        }
        "/close-mid" => {
            // Promise 1000 bytes, send 10, then drop the connection.
            let mut r = text(b, StatusCode::OK, "");
            *r.body_mut() =
                BreaksOff(Some(Bytes::from_static(b"0123456789")), Box::pin(tokio::time::sleep(Duration::from_millis(100)))).boxed();
            r.headers_mut().insert(header::CONTENT_LENGTH, header::HeaderValue::from_static("1000"));
            r
        }
        "/stall" => {
            // Promise 1000 bytes, send 10, then send nothing more for an hour.
            let mut r = text(b, StatusCode::OK, "");
            *r.body_mut() =
                BreaksOff(Some(Bytes::from_static(b"0123456789")), Box::pin(tokio::time::sleep(Duration::from_secs(3600)))).boxed();
            r.headers_mut().insert(header::CONTENT_LENGTH, header::HeaderValue::from_static("1000"));
            r
        }
        p if p.contains("/status/") => {
            let at = p.find("/status/").unwrap_or(0) + 8;
            let code = p[at..].parse::<u16>().ok().and_then(|c| StatusCode::from_u16(c).ok()).unwrap_or(StatusCode::BAD_REQUEST);
            text(b, code, format!("status {} from {}\n", code.as_u16(), b.name))
        }
        p if p.starts_with("/sleep/") => {
            let ms = p[7..].parse::<u64>().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            text(b, StatusCode::OK, format!("slept {ms}ms on {}\n", b.name))
        }
        _ => text(b, StatusCode::OK, format!("hello from {}: {} {}\n", b.name, req.method(), path)),
    }
}

/// `/cc/...?cc=VALUE&etag=V&lm=1&vary=H&tag=T&cookie=1&delay=MS&status=N&h=NAME:VALUE`
/// (`h` repeated for any other response fields):
/// a response with those caching headers whose body counts the origin's
/// requests, so tests can tell cache hits from upstream answers. A matching
/// If-None-Match gets 304.
async fn cacheable(b: &Backend, req: &Request<Incoming>) -> Response<Body> {
    let n = b.origin.fetch_add(1, Relaxed) + 1;
    let q: Vec<(String, String)> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.split_once('=').map(|(k, v)| (k.to_string(), v.replace("%20", " ").replace("%2C", ","))))
        .collect();
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if let Some(ms) = get("delay").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let etag = get("etag").map(|e| format!("\"{e}\""));
    if let (Some(e), Some(inm)) = (&etag, req.headers().get(header::IF_NONE_MATCH)) {
        if inm.as_bytes() == e.as_bytes() {
            let mut r = text(b, StatusCode::NOT_MODIFIED, "");
            r.headers_mut().insert(header::ETAG, header::HeaderValue::from_str(e).expect("etag"));
            if let Some(cc) = get("cc") {
                r.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_str(cc).expect("cc"));
            }
            r.headers_mut().insert("x-origin-count", n.into());
            return r;
        }
    }
    let status = get("status").and_then(|s| s.parse().ok()).and_then(|s| StatusCode::from_u16(s).ok()).unwrap_or(StatusCode::OK);
    let vary_value =
        get("vary").and_then(|h| req.headers().get(h)).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).unwrap_or_default();
    let mut r = text(b, status, format!("origin request {n} {vary_value}"));
    let h = r.headers_mut();
    h.insert("x-origin-count", n.into());
    let mut set = |k: &'static str, v: Option<String>| {
        if let Some(v) = v.and_then(|v| header::HeaderValue::from_str(&v).ok()) {
            h.insert(k, v);
        }
    };
    set("cache-control", get("cc").map(str::to_string));
    set("etag", etag);
    set("last-modified", get("lm").map(|_| "Tue, 24 Nov 2026 00:00:00 GMT".to_string()));
    set("vary", get("vary").map(str::to_string));
    set("surrogate-key", get("tag").map(str::to_string));
    set("set-cookie", get("cookie").map(|_| "session=abc".to_string()));
    for (name, value) in q.iter().filter(|(k, _)| k == "h").filter_map(|(_, v)| v.split_once(':')) {
        if let (Ok(n), Ok(v)) = (header::HeaderName::from_bytes(name.as_bytes()), header::HeaderValue::from_str(value)) {
            h.insert(n, v);
        }
    }
    r
}
