//! Forward: send a request to an endpoint of a pool over a pooled connection,
//! with a request timeout, passive health bookkeeping, and retries of
//! idempotent requests on another endpoint when the connection failed before
//! any byte was sent (bounded by the pool's retry budget).

use super::pool::{Pool, PoolRequest};
use crate::body::{Body, BodyTooLarge};
use http::{Request, Response, Uri};
use std::error::Error as _;

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no endpoint is available")]
    NoEndpoint,
    #[error("could not connect to {endpoint}: {source}")]
    Connect { endpoint: String, source: hyper_util::client::legacy::Error },
    #[error("upstream {endpoint} did not answer in time")]
    Timeout { endpoint: String },
    #[error("upstream {endpoint} failed: {source}")]
    Upstream { endpoint: String, source: hyper_util::client::legacy::Error },
    #[error("{0}")]
    BodyTooLarge(BodyTooLarge),
}

/// The answer of an upstream, and which endpoint gave it.
pub struct Forwarded {
    pub response: Response<Body>,
    pub endpoint: std::sync::Arc<super::Endpoint>,
}

/// Sends `req` (its URI holding only path and query) to `pool`. `retryable` says
/// whether the request may be sent again (idempotent, no body).
pub async fn forward(pool: &Pool, req: Request<Body>, retryable: bool) -> Result<Forwarded, ForwardError> {
    let _in_pool = PoolRequest::new(pool);
    let max_attempts = 1 + if retryable { *pool.retry.attempts.get_ref() as usize } else { 0 };
    let mut tried = [usize::MAX; 11];
    let (parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().cloned();
    let mut body = Some(body);
    // A copy of the head for retries; only idempotent bodiless requests pay for it.
    let spare = if max_attempts > 1 { Some((parts.method.clone(), parts.headers.clone())) } else { None };
    let mut parts = Some(parts);
    let mut last_err = ForwardError::NoEndpoint;
    let mut _retry_guard = None;
    for attempt in 0..max_attempts {
        if attempt > 0 {
            match pool.try_retry() {
                Some(g) => _retry_guard = Some(g),
                None => break,
            }
        }
        let Some(pick) = pool.pick(&tried[..attempt]) else { break };
        tried[attempt] = pick.index;
        let ep = pick.endpoint.clone();
        let mut uparts = match parts.take() {
            Some(p) => p,
            None => {
                let (mut p, _) = Request::new(()).into_parts();
                if let Some((m, h)) = &spare {
                    p.method = m.clone();
                    p.headers = h.clone();
                }
                p
            }
        };
        let mut up = Uri::builder().scheme("http").authority(ep.authority.clone());
        if let Some(pq) = &path {
            up = up.path_and_query(pq.clone());
        } else {
            up = up.path_and_query("/");
        }
        uparts.uri = up.build().expect("valid upstream uri");
        uparts.version = http::Version::HTTP_11;
        let req = Request::from_parts(uparts, body.take().unwrap_or(Body::Empty));
        match tokio::time::timeout(pool.request_timeout, ep.client.request(req)).await {
            Ok(Ok(resp)) => {
                if resp.status().is_server_error() {
                    ep.passive_failure(&pool.passive);
                } else {
                    ep.passive_success();
                }
                let (p, incoming) = resp.into_parts();
                let response = Response::from_parts(p, Body::guarded(incoming, pick.guard));
                return Ok(Forwarded { response, endpoint: ep });
            }
            Ok(Err(e)) => {
                if let Some(too_large) = body_too_large(&e) {
                    return Err(ForwardError::BodyTooLarge(too_large));
                }
                ep.passive_failure(&pool.passive);
                if e.is_connect() {
                    tracing::debug!(endpoint = %ep.name, error = %e, "connect failed");
                    last_err = ForwardError::Connect { endpoint: ep.name.clone(), source: e };
                    continue;
                }
                return Err(ForwardError::Upstream { endpoint: ep.name.clone(), source: e });
            }
            Err(_) => {
                ep.passive_failure(&pool.passive);
                return Err(ForwardError::Timeout { endpoint: ep.name.clone() });
            }
        }
    }
    Err(last_err)
}

fn body_too_large(e: &hyper_util::client::legacy::Error) -> Option<BodyTooLarge> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = src {
        if let Some(t) = s.downcast_ref::<BodyTooLarge>() {
            return Some(BodyTooLarge(t.0));
        }
        src = s.source();
    }
    None
}
