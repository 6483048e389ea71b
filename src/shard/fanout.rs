//! Fan-out: a request sent to every shard of a sharded service, with bounded
//! concurrency and a per-shard timeout, and the answers made into one. Every
//! amplifier is bounded: fan-outs in flight per service (beyond the cap a request
//! waits `queue_timeout`, then gets 503), shards asked at once, and the bytes
//! kept per shard and per fan-out over all shards (then 502).
//!
//! Policy `all`: every shard must answer 2xx; JSON array bodies are merged into
//! one array by splicing their raw elements (no value tree is built), other
//! bodies are concatenated in shard order; otherwise the first failure (in shard
//! order) is the answer. Policy `first`: the first 2xx answer to arrive wins and
//! the other requests are cancelled.

use crate::body::Body;
use crate::metrics::Answer;
use crate::respond::answer;
use crate::upstream::forward::{forward, ForwardError};
use crate::upstream::Pool;
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// One shard's answer, read whole.
enum ShardAnswer {
    Ok { status: StatusCode, headers: HeaderMap, body: Bytes },
    Failed(Response<Body>),
}

impl ShardAnswer {
    fn is_success(&self) -> bool {
        matches!(self, ShardAnswer::Ok { status, .. } if status.is_success())
    }

    fn into_response(self) -> Response<Body> {
        match self {
            ShardAnswer::Ok { status, headers, body } => {
                let mut r = Response::new(Body::full(body));
                *r.status_mut() = status;
                *r.headers_mut() = headers;
                r
            }
            ShardAnswer::Failed(r) => r,
        }
    }
}

/// How a fan-out request's answers become one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FanOutPolicy {
    /// Every shard must answer 2xx; JSON array bodies are merged into one array,
    /// other bodies concatenated in shard order; otherwise the first error is returned.
    All,
    /// The first 2xx answer wins.
    First,
}

/// The fan-out settings of a sharded service.
#[derive(Debug, Clone)]
pub struct FanOut {
    pub policy: FanOutPolicy,
    /// Shards asked at once.
    pub concurrency: usize,
    /// Each shard's answer must arrive, body and all, within this.
    pub timeout: Duration,
    /// Largest answer body kept per shard.
    pub max_body_bytes: usize,
    /// Largest sum of the answer bodies of one fan-out.
    pub max_total_bytes: usize,
    /// Fan-outs in flight over the service (its permits), at most `max_in_flight`.
    pub in_flight: std::sync::Arc<Semaphore>,
    pub max_in_flight: usize,
    /// How long a fan-out waits for a permit before 503.
    pub queue_timeout: Duration,
}

/// Sends a bodiless request (`head`, forwarding headers already set) to every
/// shard's pool. The shard requests run together on the request's own task (no
/// task per shard), at most `concurrency` at once; `header` names the shards
/// that answered.
pub async fn fan_out(
    pools: &[Pool],
    spec: &FanOut,
    header: Option<&HeaderName>,
    head: &http::request::Parts,
    client: crate::upstream::proxy_header::Origin,
) -> Response<Body> {
    let Ok(Ok(_running)) = tokio::time::timeout(spec.queue_timeout, spec.in_flight.acquire()).await else {
        tracing::debug!("fan-outs in flight at their cap; refused");
        return answer(StatusCode::SERVICE_UNAVAILABLE, Answer::FanOutBusy, "too many requests to every shard at once; retry shortly\n");
    };
    let limit = Semaphore::new(spec.concurrency.max(1));
    let kept = std::sync::atomic::AtomicUsize::new(0);
    let mut tasks = FuturesUnordered::new();
    for (i, pool) in pools.iter().enumerate() {
        let mut req = Request::new(Body::Empty);
        *req.method_mut() = head.method.clone();
        *req.uri_mut() = head.uri.clone();
        *req.headers_mut() = head.headers.clone();
        let affinity = crate::balance::affinity(&pool.balancer, head, client.client.ip()).unwrap_or_default();
        let (limit, kept) = (&limit, &kept);
        tasks.push(async move {
            let _permit = limit.acquire().await.expect("never closed");
            let start = Instant::now();
            let result = tokio::time::timeout(spec.timeout, async {
                let f = forward(pool, req, true, &affinity, client).await.map_err(Some)?;
                let endpoint = f.endpoint.name.clone();
                let (p, body) = f.response.into_parts();
                let body =
                    read_within(body, spec, kept).await.map_err(|e| e.map(|reason| ForwardError::BrokenBody { endpoint, reason }))?;
                Ok::<_, Option<ForwardError>>((p.status, p.headers, body))
            })
            .await;
            let answer = match result {
                Ok(Ok((status, headers, body))) => ShardAnswer::Ok { status, headers, body },
                Ok(Err(Some(e))) => ShardAnswer::Failed(e.answer(&pool.name)),
                Ok(Err(None)) => ShardAnswer::Failed(answer(
                    StatusCode::BAD_GATEWAY,
                    Answer::FanOutTooLarge,
                    "the shards' answers together are larger than the fan-out allows\n",
                )),
                Err(_) => {
                    ShardAnswer::Failed(answer(StatusCode::GATEWAY_TIMEOUT, Answer::GatewayTimeout, "a shard did not answer in time\n"))
                }
            };
            let status = match &answer {
                ShardAnswer::Ok { status, .. } => status.as_u16(),
                ShardAnswer::Failed(r) => r.status().as_u16(),
            };
            pool.record(status, start.elapsed());
            (i, answer)
        });
    }
    let names = || pools.iter().filter_map(|p| p.shard.as_deref()).collect::<Vec<_>>().join(",");
    let mut resp = match spec.policy {
        FanOutPolicy::First => {
            let mut first_failure: Option<(usize, ShardAnswer)> = None;
            let mut winner = None;
            while let Some((i, a)) = tasks.next().await {
                if a.is_success() {
                    winner = Some((i, a));
                    break;
                }
                if first_failure.as_ref().map(|(j, _)| i < *j).unwrap_or(true) {
                    first_failure = Some((i, a));
                }
            }
            // The others are cancelled as `tasks` drops.
            match winner.or(first_failure) {
                Some((i, a)) => {
                    let mut r = a.into_response();
                    set_shard(&mut r, header, pools[i].shard.as_deref().unwrap_or(""));
                    return r;
                }
                None => answer(StatusCode::BAD_GATEWAY, Answer::BadGateway, "no shard answered\n"),
            }
        }
        FanOutPolicy::All => {
            let mut answers: Vec<Option<ShardAnswer>> = (0..pools.len()).map(|_| None).collect();
            while let Some((i, a)) = tasks.next().await {
                answers[i] = Some(a);
            }
            merge_all(answers)
        }
    };
    set_shard(&mut resp, header, &names());
    resp
}

/// A shard's answer body, read whole within the per-shard limit and the
/// fan-out's budget (`kept`, shared by its shards). `Err(None)`: over a limit.
async fn read_within(mut body: Body, spec: &FanOut, kept: &std::sync::atomic::AtomicUsize) -> Result<Bytes, Option<String>> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Some(e.to_string()))?;
        if let Some(d) = frame.data_ref() {
            let total = kept.fetch_add(d.len(), Relaxed) + d.len();
            if buf.len() + d.len() > spec.max_body_bytes || total > spec.max_total_bytes {
                return Err(None);
            }
            buf.extend_from_slice(d);
        }
    }
    Ok(buf.freeze())
}

fn set_shard(r: &mut Response<Body>, header: Option<&HeaderName>, value: &str) {
    if let Some(h) = header {
        if let Ok(v) = HeaderValue::from_str(value) {
            r.headers_mut().insert(h.clone(), v);
        }
    }
}

/// Policy `all`: the first failure, or every body made into one.
fn merge_all(answers: Vec<Option<ShardAnswer>>) -> Response<Body> {
    let mut oks = Vec::with_capacity(answers.len());
    for a in answers {
        match a {
            Some(a) if a.is_success() => oks.push(a),
            Some(a) => return a.into_response(),
            None => return answer(StatusCode::BAD_GATEWAY, Answer::BadGateway, "a shard's request failed\n"),
        }
    }
    let bodies: Vec<(HeaderMap, Bytes)> = oks
        .into_iter()
        .map(|a| match a {
            ShardAnswer::Ok { headers, body, .. } => (headers, body),
            ShardAnswer::Failed(_) => unreachable!("only successes are kept"),
        })
        .collect();
    // Each body as its array's raw elements, borrowed: nothing is parsed into values.
    let arrays: Option<Vec<Vec<&serde_json::value::RawValue>>> = bodies.iter().map(|(_, b)| serde_json::from_slice(b).ok()).collect();
    let (body, content_type) = match arrays {
        Some(arrays) => {
            let size: usize = bodies.iter().map(|(_, b)| b.len()).sum();
            let mut merged = Vec::with_capacity(size + 2);
            merged.push(b'[');
            for (i, raw) in arrays.iter().flatten().enumerate() {
                if i > 0 {
                    merged.push(b',');
                }
                merged.extend_from_slice(raw.get().as_bytes());
            }
            merged.push(b']');
            (Bytes::from(merged), HeaderValue::from_static("application/json"))
        }
        None => {
            let mut all = Vec::new();
            for (_, b) in &bodies {
                all.extend_from_slice(b);
            }
            let ct = bodies
                .first()
                .and_then(|(h, _)| h.get(http::header::CONTENT_TYPE).cloned())
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            (Bytes::from(all), ct)
        }
    };
    let mut r = Response::new(Body::full(body));
    r.headers_mut().insert(http::header::CONTENT_TYPE, content_type);
    r
}
