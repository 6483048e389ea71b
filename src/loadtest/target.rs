//! The ringmaster under test, through its admin listener: its own CPU time
//! and context switches (`/admin/process`), the upstream requests it made
//! (`/admin/pools`, per shard from `/admin/shards`), and a route's cache or
//! a service's hot-key mitigation switched off and on.

use super::report::ProxyUsage;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;

/// The admin listener of the proxy under test.
#[derive(Clone)]
pub struct Admin {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

/// Why the admin listener could not be asked.
#[derive(Debug, thiserror::Error)]
#[error("admin listener {addr}: {why}")]
pub struct AdminError {
    addr: SocketAddr,
    why: String,
}

impl Admin {
    async fn call(&self, method: http::Method, path: &str) -> Result<serde_json::Value, AdminError> {
        let fail = |why: String| AdminError { addr: self.addr, why };
        let tcp = tokio::net::TcpStream::connect(self.addr).await.map_err(|e| fail(e.to_string()))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(|e| fail(e.to_string()))?;
        tokio::spawn(conn);
        let mut req = http::Request::builder().method(method).uri(path).header(http::header::HOST, self.addr.to_string());
        if let Some(t) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(Empty::<Bytes>::new()).map_err(|e| fail(e.to_string()))?;
        let resp = send.send_request(req).await.map_err(|e| fail(e.to_string()))?;
        let status = resp.status();
        let body = resp.into_body().collect().await.map_err(|e| fail(e.to_string()))?.to_bytes();
        if !status.is_success() {
            return Err(fail(format!("{path} answered {status}: {}", String::from_utf8_lossy(&body).trim())));
        }
        serde_json::from_slice(&body).map_err(|e| fail(format!("{path}: {e}")))
    }

    /// The proxy's CPU time and switches so far.
    pub async fn usage(&self) -> Result<ProxyUsage, AdminError> {
        let v = self.call(http::Method::GET, "/admin/process").await?;
        serde_json::from_value(v).map_err(|e| AdminError { addr: self.addr, why: format!("/admin/process: {e}") })
    }

    /// Requests the proxy sent to every endpoint of every pool so far.
    pub async fn upstream_requests(&self) -> Result<u64, AdminError> {
        let v = self.call(http::Method::GET, "/admin/pools").await?;
        let pools = v["pools"].as_array().cloned().unwrap_or_default();
        Ok(pools
            .iter()
            .flat_map(|p| p["endpoints"].as_array().cloned().unwrap_or_default())
            .map(|e| e["requests"].as_u64().unwrap_or(0))
            .sum())
    }

    /// Requests each shard of `service` was sent so far (its endpoints' sum),
    /// memcache or HTTP.
    pub async fn shard_requests(&self, service: &str) -> Result<Vec<(String, u64)>, AdminError> {
        let v = self.call(http::Method::GET, "/admin/shards").await?;
        let services = v["services"].as_array().cloned().unwrap_or_default();
        let Some(svc) = services.iter().find(|s| s["service"] == service) else {
            return Err(AdminError { addr: self.addr, why: format!("no sharded service `{service}` in /admin/shards") });
        };
        Ok(svc["shards"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|sh| {
                let n = sh["endpoints"].as_array().map_or(0, |e| e.iter().map(|e| e["requests"].as_u64().unwrap_or(0)).sum());
                (sh["shard"].as_str().unwrap_or("?").to_string(), n)
            })
            .collect())
    }

    /// Turns `service`'s hot-key mitigation on or off.
    pub async fn switch_hot_keys(&self, service: &str, on: bool) -> Result<(), AdminError> {
        let service = url_escape(service);
        self.call(http::Method::POST, &format!("/admin/heat/mitigation?service={service}&on={on}")).await.map(|_| ())
    }

    /// Turns `route`'s cache on or off.
    pub async fn switch_cache(&self, route: &str, on: bool) -> Result<(), AdminError> {
        let route: String = url_escape(route);
        self.call(http::Method::POST, &format!("/admin/cache/switch?route={route}&on={on}")).await.map(|_| ())
    }
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
