//! A small JSON-over-HTTP client for the control planes the scaler talks to:
//! the Kubernetes API server (scale subresources, Leases) and etcd's v3 JSON
//! gateway (leases and transactions). A few calls a second at most, so one
//! connection per call, over hyper (and rustls for https), each bounded in
//! time and in the size of what comes back.

use super::{CallFailure, ScaleError};
use bytes::Bytes;
use http::{Method, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use std::time::Duration;

/// The most of an answer read.
const MAX_ANSWER: usize = 4 << 20;

/// Where a control plane answers, and how to reach it.
#[derive(Clone)]
pub struct Api {
    /// `http://host:port` or `https://host:port`.
    pub base: Uri,
    /// TLS towards `base` (https only).
    pub tls: Option<crate::tls::client::Upstream>,
    /// A bearer token, re-read at each call (service-account tokens rotate).
    pub token: Option<PathBuf>,
    /// One call, connect to last byte.
    pub timeout: Duration,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Api({})", self.base)
    }
}

impl PartialEq for Api {
    fn eq(&self, o: &Api) -> bool {
        self.base == o.base && self.token == o.token && self.timeout == o.timeout && self.tls.is_some() == o.tls.is_some()
    }
}

/// An answer: its status and its body parsed as JSON (`Null` when empty or not JSON).
pub type Answer = (StatusCode, serde_json::Value);

impl Api {
    /// `method path` with `body` as JSON; an error says what failed to whom.
    pub async fn call(&self, method: Method, path: &str, body: Option<&serde_json::Value>) -> Result<Answer, ScaleError> {
        let what = || format!("{method} {}{path}", self.base);
        match tokio::time::timeout(self.timeout, self.exchange(method.clone(), path, body)).await {
            Ok(r) => r.map_err(|why| ScaleError::Call { what: what(), why }),
            Err(_) => Err(ScaleError::NoAnswer { what: what(), timeout: self.timeout }),
        }
    }

    async fn exchange(&self, method: Method, path: &str, body: Option<&serde_json::Value>) -> Result<Answer, CallFailure> {
        let authority = self.base.authority().ok_or(CallFailure::NoHost)?.clone();
        let tcp = tokio::net::TcpStream::connect(authority.as_str()).await.map_err(|e| CallFailure::Connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, authority.as_str())
            .header(http::header::ACCEPT, "application/json");
        if let Some(file) = &self.token {
            let token = tokio::fs::read_to_string(file)
                .await
                .map_err(|e| CallFailure::Token { path: file.display().to_string(), why: e.to_string() })?;
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {}", token.trim()));
        }
        let payload = match body {
            Some(b) => {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(b).map_err(|e| CallFailure::Request(e.to_string()))?)
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(payload)).map_err(|e| CallFailure::Request(e.to_string()))?;
        let res = match &self.tls {
            Some(tls) => {
                let stream = tls.connector.connect(tls.name.clone(), tcp).await.map_err(|e| CallFailure::Tls(e.to_string()))?;
                send(TokioIo::new(stream), req).await?
            }
            None => send(TokioIo::new(tcp), req).await?,
        };
        Ok(res)
    }
}

async fn send<I>(io: I, req: http::Request<Full<Bytes>>) -> Result<Answer, CallFailure>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut tx, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| CallFailure::Exchange(e.to_string()))?;
    tokio::spawn(conn);
    let res = tx.send_request(req).await.map_err(|e| CallFailure::Exchange(e.to_string()))?;
    let status = res.status();
    let body = Limited::new(res.into_body(), MAX_ANSWER).collect().await.map_err(|e| CallFailure::Body(e.to_string()))?.to_bytes();
    Ok((status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null)))
}

/// What an answer that is not a success says, for an error message.
pub fn refusal(a: &Answer) -> String {
    let msg = a.1.get("message").and_then(|m| m.as_str()).or_else(|| a.1.get("error").and_then(|m| m.as_str()));
    match msg {
        Some(m) => format!("{} ({m})", a.0),
        None => a.0.to_string(),
    }
}
