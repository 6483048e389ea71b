//! Fan-out: a request sent to every shard of a sharded service, with bounded
//! concurrency and a per-shard timeout, and the answers made into one.
//!
//! Policy `all`: every shard must answer 2xx; JSON array bodies are merged into
//! one array, other bodies are concatenated in shard order; otherwise the first
//! failure (in shard order) is the answer. Policy `first`: the first 2xx answer
//! to arrive wins and the other requests are cancelled.

use crate::body::Body;
use crate::config::schema::FanOutPolicy;
use crate::metrics::Answer;
use crate::respond::answer;
use crate::service::Service;
use crate::upstream::forward::{forward, ForwardError};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

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

/// Sends a bodiless request (`head`, forwarding headers already set) to every shard.
pub async fn fan_out(service: &Arc<Service>, head: &http::request::Parts, client: IpAddr) -> Response<Body> {
    let sharding = service.sharding.as_ref().expect("fan-out only targets sharded services");
    let spec = sharding.fan_out.clone();
    let limit = Arc::new(Semaphore::new(*spec.concurrency.get_ref()));
    let mut tasks = JoinSet::new();
    for i in 0..service.pools.len() {
        let service = service.clone();
        let limit = limit.clone();
        let mut req = Request::new(Body::Empty);
        *req.method_mut() = head.method.clone();
        *req.uri_mut() = head.uri.clone();
        *req.headers_mut() = head.headers.clone();
        let spec = spec.clone();
        let affinity = crate::balance::affinity(&service.pools[i].balancer, head, client).unwrap_or_default();
        tasks.spawn(async move {
            let _permit = limit.acquire().await.expect("never closed");
            let pool = &service.pools[i];
            let start = Instant::now();
            let result = tokio::time::timeout(spec.timeout.get_ref().0, async {
                let f = forward(pool, req, true, &affinity).await?;
                let endpoint = f.endpoint.name.clone();
                let (p, body) = f.response.into_parts();
                let body = http_body_util::Limited::new(body, spec.max_body_bytes)
                    .collect()
                    .await
                    .map_err(|e| ForwardError::BrokenBody { endpoint, reason: e.to_string() })?;
                Ok::<_, ForwardError>((p.status, p.headers, body.to_bytes()))
            })
            .await;
            let answer = match result {
                Ok(Ok((status, headers, body))) => ShardAnswer::Ok { status, headers, body },
                Ok(Err(e)) => ShardAnswer::Failed(e.answer(&pool.name)),
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
    let names = || service.pools.iter().filter_map(|p| p.shard.as_deref()).collect::<Vec<_>>().join(",");
    let mut resp = match spec.policy {
        FanOutPolicy::First => {
            let mut first_failure: Option<(usize, ShardAnswer)> = None;
            let mut winner = None;
            while let Some(done) = tasks.join_next().await {
                let Ok((i, a)) = done else { continue };
                if a.is_success() {
                    winner = Some((i, a));
                    break;
                }
                if first_failure.as_ref().map(|(j, _)| i < *j).unwrap_or(true) {
                    first_failure = Some((i, a));
                }
            }
            tasks.abort_all();
            match winner.or(first_failure) {
                Some((i, a)) => {
                    let mut r = a.into_response();
                    set_shard(&mut r, service, service.pools[i].shard.as_deref().unwrap_or(""));
                    return r;
                }
                None => answer(StatusCode::BAD_GATEWAY, Answer::BadGateway, "no shard answered\n"),
            }
        }
        FanOutPolicy::All => {
            let mut answers: Vec<Option<ShardAnswer>> = (0..service.pools.len()).map(|_| None).collect();
            while let Some(done) = tasks.join_next().await {
                if let Ok((i, a)) = done {
                    answers[i] = Some(a);
                }
            }
            merge_all(answers)
        }
    };
    set_shard(&mut resp, service, &names());
    resp
}

fn set_shard(r: &mut Response<Body>, service: &Service, value: &str) {
    if let Some(h) = service.sharding.as_ref().and_then(|s| s.header.as_ref()) {
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
    let arrays: Option<Vec<Vec<serde_json::Value>>> =
        bodies.iter().map(|(_, b)| serde_json::from_slice::<Vec<serde_json::Value>>(b).ok()).collect();
    let (body, content_type) = match arrays {
        Some(arrays) => {
            let merged: Vec<serde_json::Value> = arrays.into_iter().flatten().collect();
            (Bytes::from(serde_json::to_vec(&merged).unwrap_or_default()), HeaderValue::from_static("application/json"))
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
