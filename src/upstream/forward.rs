//! Forward: send a request to an endpoint of a pool over a pooled connection,
//! with a request timeout, passive health bookkeeping, and retries on another
//! endpoint, within the pool's retry budget, of idempotent requests without a
//! body (RFC 9110 section 9.2.2) whose connection failed, or was closed or reset
//! before the response head arrived (as nginx's `proxy_next_upstream error`):
//! nothing of the answer has reached the client then. A request written to a
//! stale keep-alive connection that the upstream had already closed comes back
//! unsent and is retried whatever its method, as that is always safe.

use super::connpool::{ConnectError, ExchangeError, SendError};
use super::policy::{Failure, UpstreamProtocol};
use super::pool::{Pool, PoolRequest};
use crate::balance::Affinity;
use crate::body::{Body, BodyTooLarge};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use std::sync::Arc;

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no endpoint is available")]
    NoEndpoint,
    #[error("could not connect to {endpoint}: {source}")]
    Connect { endpoint: String, source: ConnectError },
    #[error("upstream {endpoint} did not answer in time")]
    Timeout { endpoint: String },
    #[error("upstream {endpoint} failed: {source}")]
    Upstream { endpoint: String, source: ExchangeError },
    #[error("every connection to {endpoint} is in use")]
    Busy { endpoint: String },
    #[error("{0}")]
    BodyTooLarge(BodyTooLarge),
    #[error("the client sent its request body too slowly")]
    BodyTooSlow,
    #[error("the answer of {endpoint} could not be read whole: {reason}")]
    BrokenBody { endpoint: String, reason: String },
}

impl ForwardError {
    /// The proxy's own answer for this failure to reach pool `pool`.
    pub fn answer(&self, pool: &str) -> http::Response<Body> {
        use crate::metrics::Answer;
        use crate::respond::answer;
        use http::StatusCode;
        match self {
            ForwardError::NoEndpoint => {
                tracing::debug!(pool, "no endpoint available");
                answer(StatusCode::SERVICE_UNAVAILABLE, Answer::NoEndpoint, "no upstream endpoint is available\n")
            }
            ForwardError::Timeout { .. } => {
                tracing::debug!(pool, error = %self, "upstream timeout");
                answer(StatusCode::GATEWAY_TIMEOUT, Answer::GatewayTimeout, "the upstream did not answer in time\n")
            }
            ForwardError::Busy { .. } => {
                tracing::debug!(pool, error = %self, "endpoint busy");
                answer(StatusCode::SERVICE_UNAVAILABLE, Answer::EndpointBusy, "every upstream connection is in use; retry shortly\n")
            }
            ForwardError::BodyTooLarge(_) => answer(StatusCode::PAYLOAD_TOO_LARGE, Answer::BodyTooLarge, "request body is too large\n"),
            ForwardError::BodyTooSlow => answer(StatusCode::REQUEST_TIMEOUT, Answer::BodyTimeout, "the request body arrived too slowly\n"),
            ForwardError::Connect { .. } | ForwardError::Upstream { .. } | ForwardError::BrokenBody { .. } => {
                tracing::debug!(pool, error = %self, "upstream error");
                answer(StatusCode::BAD_GATEWAY, Answer::BadGateway, "the upstream failed to answer\n")
            }
        }
    }
}

/// The answer of an upstream, and which endpoint gave it.
pub struct Forwarded {
    pub response: Response<Body>,
    pub endpoint: Arc<super::Endpoint>,
    /// The cookie balancer pinned the client to `endpoint`: set its cookie.
    pub pin: bool,
}

/// The endpoints a request has tried, and the retries it has left.
struct Attempts {
    tried: [usize; 11],
    n: usize,
    retries_left: usize,
}

impl Attempts {
    fn tried(&self) -> &[usize] {
        &self.tried[..self.n]
    }

    /// Notes endpoint `index` as tried; false when no other may be tried.
    fn mark(&mut self, index: usize) -> bool {
        self.tried[self.n] = index;
        self.n += 1;
        self.n < self.tried.len()
    }

    /// After a failure of endpoint `index`: whether a retry elsewhere is allowed
    /// (attempts left, and the pool's retry budget).
    fn may_retry(&mut self, pool: &Pool, index: usize) -> bool {
        if !self.mark(index) || self.retries_left == 0 {
            return false;
        }
        self.retries_left -= 1;
        pool.try_retry()
    }
}

/// Sends `req` to `pool`. `retryable` says whether it may go to another
/// endpoint after a failure (idempotent, no body).
/// `client` is who the request is for (a PROXY protocol header names it,
/// where the pool sends one).
pub async fn forward(
    pool: &Pool,
    mut req: Request<Body>,
    retryable: bool,
    affinity: &Affinity,
    client: super::proxy_header::Origin,
) -> Result<Forwarded, ForwardError> {
    let _in_pool = PoolRequest::new(pool);
    let mut attempts = Attempts { tried: [usize::MAX; 11], n: 0, retries_left: if retryable { pool.retry.attempts as usize } else { 0 } };
    let mut stale_left = 2;
    let mut last_err = ForwardError::NoEndpoint;
    *req.version_mut() = http::Version::HTTP_11;
    let path = req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    // Over HTTP/2 the request's host travels as :authority (RFC 9113 section 8.3.1).
    let host = req.headers().get(http::header::HOST).and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok());
    // What a retry after the request was sent needs: its method and headers, kept
    // only where another endpoint could take it, and as one flat buffer (cloning the
    // header map cost about 5% of a small proxied request in reference counts).
    // hyper's client keeps no request it wrote, so on its path an idempotent one
    // is also kept to go again after a reused connection closed under it.
    let hyper = pool.endpoints.first().is_some_and(|e| e.conns.is_hyper_http1());
    let spare = ((attempts.retries_left > 0 && pool.endpoints.len() > 1) || (hyper && retryable))
        .then(|| (req.method().clone(), Spare::keep(req.headers())));
    loop {
        let Some(pick) = pool.pick(attempts.tried(), affinity) else { return Err(last_err) };
        let ep = pick.endpoint.clone();
        let mut lease = match ep.conns.lease(Some(client)).await {
            Ok(l) => l,
            // At its connection cap: no failure of the endpoint; another may take it.
            // Nothing was sent, so any method may go on (outside the retry budget).
            Err(ConnectError::Busy(_)) => {
                last_err = ForwardError::Busy { endpoint: ep.name.clone() };
                if attempts.mark(pick.index) {
                    continue;
                }
                return Err(last_err);
            }
            Err(e) => {
                pool.failed(&ep, if e.is_refused() { Failure::Down } else { Failure::Failed });
                tracing::debug!(endpoint = %ep.name, error = %e, "connect failed");
                last_err = ForwardError::Connect { endpoint: ep.name.clone(), source: e };
                if attempts.may_retry(pool, pick.index) {
                    continue;
                }
                return Err(last_err);
            }
        };
        *req.uri_mut() = upstream_uri(&ep, &path, host.as_ref());
        if ep.conns.protocol() == UpstreamProtocol::Http2 {
            req.headers_mut().remove(http::header::HOST);
        }
        match tokio::time::timeout(pool.request_timeout, lease.send(req)).await {
            Ok(Ok(resp)) => {
                if resp.status().is_server_error() {
                    pool.failed(&ep, Failure::ServerError);
                } else {
                    ep.passive_success();
                }
                let (mut p, arrived) = resp.into_parts();
                // After a 101 the connection belongs to the tunnel, never to the pool.
                let body = if p.status == http::StatusCode::SWITCHING_PROTOCOLS {
                    if let Some(conn) = lease.upgraded() {
                        p.extensions.insert(super::tunnel::Upgraded::new(conn));
                    }
                    drop(pick.guard);
                    Body::Empty
                } else {
                    lease.body(arrived, pick.guard, pool.body_idle)
                };
                return Ok(Forwarded { response: Response::from_parts(p, body), endpoint: ep, pin: pick.pin });
            }
            Ok(Err(failed)) => {
                let again = Again { pool, ep: &ep, index: pick.index, spare: spare.as_ref(), retryable };
                req = again.after(failed, &mut stale_left, &mut attempts, &mut last_err)?;
            }
            Err(_) => {
                pool.failed(&ep, Failure::Failed);
                return Err(ForwardError::Timeout { endpoint: ep.name.clone() });
            }
        }
    }
}

/// What decides whether a failed send goes again.
struct Again<'a> {
    pool: &'a Pool,
    ep: &'a super::Endpoint,
    index: usize,
    spare: Option<&'a (http::Method, Spare)>,
    /// Idempotent and bodiless.
    retryable: bool,
}

impl Again<'_> {
    /// The request to send next, or the error to answer with.
    fn after(
        &self,
        SendError { error, unsent, resend, reused }: SendError,
        stale_left: &mut u32,
        attempts: &mut Attempts,
        last_err: &mut ForwardError,
    ) -> Result<Request<Body>, ForwardError> {
        if let Some(too_large) = error.body_error::<BodyTooLarge>() {
            return Err(ForwardError::BodyTooLarge(BodyTooLarge(too_large.0)));
        }
        if error.body_error::<crate::body::BodyTooSlow>().is_some() {
            return Err(ForwardError::BodyTooSlow);
        }
        let endpoint = self.ep.name.clone();
        match unsent {
            // Nothing was written to a connection the upstream had closed while
            // idle: resending is always safe (to the same endpoint).
            Some(r) if reused && *stale_left > 0 => {
                *stale_left -= 1;
                Ok(r)
            }
            Some(r) => {
                self.pool.failed(self.ep, Failure::Failed);
                *last_err = ForwardError::Upstream { endpoint, source: error };
                if attempts.may_retry(self.pool, self.index) {
                    Ok(r)
                } else {
                    Err(std::mem::replace(last_err, ForwardError::NoEndpoint))
                }
            }
            // Sent on a reused connection the upstream closed as it arrived (no
            // byte of an answer): an idempotent request goes again on a fresh
            // connection, as nginx retries a failed keep-alive connection.
            None if reused && self.retryable && *stale_left > 0 && error.is_early() && (resend.is_some() || self.spare.is_some()) => {
                *stale_left -= 1;
                Ok(match (resend, self.spare) {
                    (Some(r), _) => r,
                    (None, Some((method, headers))) => {
                        let mut req = Request::new(Body::Empty);
                        *req.method_mut() = method.clone();
                        *req.headers_mut() = headers.restore();
                        req
                    }
                    (None, None) => unreachable!("checked"),
                })
            }
            // Sent, and the connection closed or was reset before the response
            // head: an idempotent request goes to another endpoint.
            None => {
                self.pool.failed(self.ep, if error.was_reset() { Failure::Down } else { Failure::Failed });
                let early = error.is_early();
                *last_err = ForwardError::Upstream { endpoint, source: error };
                match self.spare {
                    Some((method, headers)) if early && attempts.may_retry(self.pool, self.index) => {
                        let mut req = Request::new(Body::Empty);
                        *req.method_mut() = method.clone();
                        *req.headers_mut() = headers.restore();
                        Ok(req)
                    }
                    _ => Err(std::mem::replace(last_err, ForwardError::NoEndpoint)),
                }
            }
        }
    }
}

/// The request target for `ep`: origin form over HTTP/1.1; HTTP/2 needs scheme
/// and authority: the request's host, else the endpoint's address.
fn upstream_uri(ep: &super::Endpoint, path: &PathAndQuery, host: Option<&http::uri::Authority>) -> Uri {
    match ep.conns.protocol() {
        UpstreamProtocol::Http1 => Uri::from(path.clone()),
        UpstreamProtocol::Http2 => {
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(ep.conns.scheme());
            parts.authority = Some(host.cloned().unwrap_or_else(|| ep.authority.clone()));
            parts.path_and_query = Some(path.clone());
            Uri::from_parts(parts).expect("scheme, authority and path make a URI")
        }
    }
}

/// A request's header fields kept flat (`name:value\n` each; a name holds no `:`
/// and a value no newline), to send again after the request itself was consumed.
struct Spare(Vec<u8>);

impl Spare {
    fn keep(h: &http::HeaderMap) -> Spare {
        let size: usize = h.iter().map(|(k, v)| k.as_str().len() + v.len() + 2).sum();
        let mut buf = Vec::with_capacity(size);
        for (k, v) in h {
            buf.extend_from_slice(k.as_str().as_bytes());
            buf.push(b':');
            buf.extend_from_slice(v.as_bytes());
            buf.push(b'\n');
        }
        Spare(buf)
    }

    fn restore(&self) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for line in self.0.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
            if let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(&line[..colon]), http::HeaderValue::from_bytes(&line[colon + 1..])) {
                h.append(k, v);
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_spare_gives_the_fields_back_as_they_were() {
        let mut h = http::HeaderMap::new();
        h.append("host", "example.com:8080".parse().unwrap());
        h.append("x-forwarded-for", "192.0.2.1".parse().unwrap());
        h.append("x-forwarded-for", "198.51.100.2".parse().unwrap());
        h.append("x-odd", http::HeaderValue::from_bytes(b"a: b \xff").unwrap());
        assert_eq!(super::Spare::keep(&h).restore(), h);
    }
}
