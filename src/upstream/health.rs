//! Active readiness probes: an HTTP GET of a path on every endpoint, on an
//! interval with jitter, flipping the endpoint's state after enough passes or
//! failures in a row.
//!
//! A probe task holds only a weak reference to its endpoint, so it ends by
//! itself when a reload drops the endpoint.

use super::endpoint::Endpoint;
use crate::body::Body;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Starts the probe task of `ep`, if its pool has a health check.
pub fn spawn(ep: &Arc<Endpoint>) {
    let Some(spec) = ep.key.health.clone() else { return };
    let weak: Weak<Endpoint> = Arc::downgrade(ep);
    tokio::spawn(async move {
        let interval = spec.interval;
        let jitter_ms = spec.jitter.as_millis() as u64;
        loop {
            let Some(ep) = weak.upgrade() else { return };
            let ok = probe(&ep, &spec.path, spec.timeout).await;
            record(&ep, ok, spec.healthy_threshold, spec.unhealthy_threshold);
            drop(ep);
            let jitter = if jitter_ms > 0 { fastrand::u64(..=jitter_ms) } else { 0 };
            tokio::time::sleep(interval + Duration::from_millis(jitter)).await;
        }
    });
}

async fn probe(ep: &Endpoint, path: &str, timeout: Duration) -> bool {
    let attempt = async {
        let mut lease = ep.conns.lease(None).await.ok()?;
        let mut uri = http::Uri::from_maybe_shared(bytes::Bytes::copy_from_slice(path.as_bytes())).ok()?;
        if ep.conns.protocol() == super::UpstreamProtocol::Http2 {
            uri = format!("{}://{}{}", ep.conns.scheme(), ep.address, path).parse().ok()?;
        }
        let req = http::Request::get(uri)
            .header(http::header::HOST, ep.address.as_str())
            .header(http::header::USER_AGENT, "ringmaster-health")
            .body(Body::empty())
            .ok()?;
        let resp = lease.send(req).await.ok()?;
        let s = resp.status();
        // Read the body whole so the connection can be reused.
        if lease.read_to_end(resp.into_body()).await {
            ep.conns.release(lease);
        }
        Some(s.is_success() || s.is_redirection())
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

/// Applies one probe result; logs a transition.
pub fn record(ep: &Endpoint, ok: bool, healthy_threshold: u32, unhealthy_threshold: u32) {
    let s = &ep.stats;
    let healthy = s.probe_healthy.load(Relaxed);
    if ok == healthy {
        s.probe_streak.store(0, Relaxed);
        return;
    }
    let streak = s.probe_streak.fetch_add(1, Relaxed) + 1;
    let needed = if ok { healthy_threshold } else { unhealthy_threshold };
    if streak >= needed {
        s.probe_healthy.store(ok, Relaxed);
        s.probe_streak.store(0, Relaxed);
        if ok {
            tracing::info!(endpoint = %ep.name, address = %ep.address, "endpoint passed its readiness probes: healthy");
        } else {
            tracing::warn!(endpoint = %ep.name, address = %ep.address, "endpoint failed its readiness probes: unhealthy");
        }
    }
}
