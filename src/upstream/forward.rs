//! Forward: send a request to an endpoint of a pool over a pooled connection,
//! with a request timeout, passive health bookkeeping, and retries on another
//! endpoint, within the pool's retry budget, of idempotent requests without a
//! body (RFC 9110 section 9.2.2) whose connection failed, or was closed or reset
//! before the response head arrived (as nginx's `proxy_next_upstream error`):
//! nothing of the answer has reached the client then. A request written to a
//! stale keep-alive connection that the upstream had already closed comes back
//! unsent and is retried whatever its method, as that is always safe.

use super::connpool::{ConnectError, SendError};
use super::policy::{Failure, UpstreamProtocol};
use super::pool::{Pool, PoolRequest};
use crate::balance::Affinity;
use crate::body::{Body, BodyTooLarge};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use http_body::Body as _;
use std::error::Error as _;
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
    Upstream { endpoint: String, source: hyper::Error },
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

/// Sends `req` to `pool`. `retryable` says whether it may go to another
/// endpoint after a connect failure (idempotent, no body).
pub async fn forward(pool: &Pool, mut req: Request<Body>, retryable: bool, affinity: &Affinity) -> Result<Forwarded, ForwardError> {
    let _in_pool = PoolRequest::new(pool);
    let mut retries_left = if retryable { pool.retry.attempts as usize } else { 0 };
    let mut stale_left = 2;
    let mut tried = [usize::MAX; 11];
    let mut n_tried = 0;
    let mut last_err = ForwardError::NoEndpoint;
    *req.version_mut() = http::Version::HTTP_11;
    let path = req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    // Over HTTP/2 the request's host travels as :authority (RFC 9113 section 8.3.1).
    let host = req.headers().get(http::header::HOST).and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok());
    // What a retry after the request was sent needs: its method and headers, kept
    // only where another endpoint could take it, and as one flat buffer (cloning the
    // header map cost about 5% of a small proxied request in reference counts).
    let spare = (retries_left > 0 && pool.endpoints.len() > 1).then(|| (req.method().clone(), Spare::keep(req.headers())));
    loop {
        let Some(pick) = pool.pick(&tried[..n_tried], affinity) else { return Err(last_err) };
        let pin = pick.pin;
        let ep = pick.endpoint.clone();
        // Whether another endpoint may be tried after a failure that sent nothing.
        let mut may_retry = |tried: &mut [usize; 11], n: &mut usize| {
            tried[*n] = pick.index;
            *n += 1;
            if retries_left == 0 || *n >= tried.len() {
                return false;
            }
            retries_left -= 1;
            pool.try_retry()
        };
        let mut lease = match ep.conns.lease().await {
            Ok(l) => l,
            // At its connection cap: no failure of the endpoint; another may take it.
            // Nothing was sent, so any method may go on (outside the retry budget).
            Err(ConnectError::Busy(_)) => {
                last_err = ForwardError::Busy { endpoint: ep.name.clone() };
                tried[n_tried] = pick.index;
                n_tried += 1;
                if n_tried < tried.len() {
                    continue;
                }
                return Err(last_err);
            }
            Err(e) => {
                pool.failed(&ep, if e.is_refused() { Failure::Down } else { Failure::Failed });
                tracing::debug!(endpoint = %ep.name, error = %e, "connect failed");
                last_err = ForwardError::Connect { endpoint: ep.name.clone(), source: e };
                if may_retry(&mut tried, &mut n_tried) {
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
                let (p, incoming) = resp.into_parts();
                // After a 101 the connection belongs to the tunnel, never to the pool.
                let conn = if p.status == http::StatusCode::SWITCHING_PROTOCOLS { None } else { super::endpoint::reusable(lease) };
                let body = response_body(incoming, pick.guard.keep(conn), pool.body_idle);
                return Ok(Forwarded { response: Response::from_parts(p, body), endpoint: ep, pin });
            }
            Ok(Err(SendError { error, unsent, reused })) => {
                if let Some(too_large) = body_too_large(&error) {
                    return Err(ForwardError::BodyTooLarge(too_large));
                }
                if body_error_is::<crate::body::BodyTooSlow>(&error) {
                    return Err(ForwardError::BodyTooSlow);
                }
                match unsent {
                    // Nothing was written to a connection the upstream had closed
                    // while idle: resending is always safe.
                    Some(r) if reused && stale_left > 0 => {
                        stale_left -= 1;
                        req = r;
                    }
                    Some(r) => {
                        pool.failed(&ep, Failure::Failed);
                        req = r;
                        last_err = ForwardError::Upstream { endpoint: ep.name.clone(), source: error };
                        if !may_retry(&mut tried, &mut n_tried) {
                            return Err(last_err);
                        }
                    }
                    // Sent, and the connection closed or was reset before the
                    // response head: an idempotent request goes to another endpoint.
                    None => {
                        let reset = was_reset(&error);
                        pool.failed(&ep, if reset { Failure::Down } else { Failure::Failed });
                        last_err = ForwardError::Upstream { endpoint: ep.name.clone(), source: error };
                        match &spare {
                            Some((method, headers)) if (reset || closed_early(&last_err)) && may_retry(&mut tried, &mut n_tried) => {
                                req = Request::new(Body::Empty);
                                *req.method_mut() = method.clone();
                                *req.headers_mut() = headers.restore();
                            }
                            _ => return Err(last_err),
                        }
                    }
                }
            }
            Err(_) => {
                pool.failed(&ep, Failure::Failed);
                return Err(ForwardError::Timeout { endpoint: ep.name.clone() });
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

/// The response body, holding the endpoint (and its connection) until it has been read;
/// an empty one gives them back at once.
fn response_body(incoming: hyper::body::Incoming, held: crate::body::Held, idle: std::time::Duration) -> Body {
    if incoming.is_end_stream() {
        held.finish();
        Body::Empty
    } else {
        Body::upstream(incoming, held, idle)
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

/// Whether the upstream reset the connection (or it broke) under the request.
fn was_reset(e: &hyper::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    let mut src: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(io.kind(), ConnectionReset | ConnectionAborted | BrokenPipe);
        }
        src = s.source();
    }
    false
}

/// Whether the upstream closed the connection before its answer began (not a
/// malformed answer, which another endpoint would not be asked for).
fn closed_early(e: &ForwardError) -> bool {
    matches!(e, ForwardError::Upstream { source, .. } if source.is_incomplete_message() || source.is_canceled())
}

fn body_too_large(e: &hyper::Error) -> Option<BodyTooLarge> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = src {
        if let Some(t) = s.downcast_ref::<BodyTooLarge>() {
            return Some(BodyTooLarge(t.0));
        }
        src = s.source();
    }
    None
}

/// Whether one of `e`'s sources is an `E`.
fn body_error_is<E: std::error::Error + 'static>(e: &hyper::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = src {
        if s.is::<E>() {
            return true;
        }
        src = s.source();
    }
    false
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
