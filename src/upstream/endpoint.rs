//! One upstream address (one replica): its connection pool and its live state.
//!
//! Everything that changes per request is an atomic, so the hot path never takes
//! a lock. An endpoint outlives a reload when its address and options are unchanged,
//! and with it its health, its counters and its pooled connections.

use super::connpool::ConnPool;
use super::policy::{HealthCheck, Passive, UpstreamProtocol};
use crate::body::Held;
use crate::clock;
use http::uri::Authority;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// What must be equal for an endpoint to be carried over a reload.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub service: String,
    pub address: String,
    pub protocol: UpstreamProtocol,
    /// Whose HTTP/1 client talks to it.
    pub engine: super::policy::Http1Engine,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    /// HTTP/1 connections open at most (0: no cap), and how long a request waits at the cap.
    pub max_connections: usize,
    pub queue_timeout: Duration,
    pub health: Option<HealthCheck>,
    /// TLS towards the endpoint; plain HTTP when absent.
    pub tls: Option<crate::tls::client::Settings>,
    /// Each connection starts with a PROXY protocol header naming its client
    /// (and then carries that client's requests only).
    pub proxy_header: Option<super::policy::ProxyHeader>,
}

/// Live counters and health of an endpoint.
#[derive(Default)]
pub struct EndpointStats {
    /// When it joined its pool (ms), for slow start; 0 when there from the start.
    pub joined_ms: AtomicU64,
    pub in_flight: AtomicU32,
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    /// Last verdict of active probes (true when no probes are configured).
    pub probe_healthy: AtomicBool,
    /// Consecutive failed or passed probes, towards the thresholds.
    pub probe_streak: AtomicU32,
    /// Consecutive passive failures (connect errors, timeouts, 5xx).
    pub consecutive_failures: AtomicU32,
    /// Ejections in a row, for exponential back-off.
    pub ejections_in_row: AtomicU32,
    pub ejections_total: AtomicU64,
    /// Clock milliseconds until which the endpoint is ejected.
    pub ejected_until_ms: AtomicU64,
    /// Its request rate, measured by the heat tick from `requests`.
    pub rate: crate::heat::rate::Rate,
}

pub struct Endpoint {
    /// Stable name from config, or the address.
    pub name: String,
    pub address: String,
    pub authority: Authority,
    pub weight: u32,
    pub key: EndpointKey,
    pub conns: ConnPool,
    pub stats: EndpointStats,
}

impl Endpoint {
    /// An endpoint at `authority` (its key's address, parsed); `tls` when the pool speaks TLS.
    pub fn new(
        key: EndpointKey,
        authority: Authority,
        name: Option<String>,
        weight: u32,
        tls: Option<crate::tls::client::Upstream>,
    ) -> Endpoint {
        let cap = (key.max_connections, key.queue_timeout);
        let mut conns = ConnPool::new(&key.address, key.protocol, key.engine, tls, key.connect_timeout, key.idle_timeout, cap);
        conns.proxy_header = key.proxy_header;
        let stats = EndpointStats::default();
        stats.probe_healthy.store(true, Relaxed);
        Endpoint { name: name.unwrap_or_else(|| key.address.clone()), address: key.address.clone(), authority, weight, conns, stats, key }
    }

    /// Whether the balancer should send new requests here.
    pub fn available(&self, now_ms: u64) -> bool {
        self.stats.probe_healthy.load(Relaxed) && self.stats.ejected_until_ms.load(Relaxed) <= now_ms
    }

    /// Records a passive success: resets the failure streak.
    pub fn passive_success(&self) {
        if self.stats.consecutive_failures.load(Relaxed) != 0 {
            self.stats.consecutive_failures.store(0, Relaxed);
        }
        if self.stats.ejections_in_row.load(Relaxed) != 0 && self.stats.ejected_until_ms.load(Relaxed) <= clock::now_ms() {
            self.stats.ejections_in_row.store(0, Relaxed);
        }
    }

    /// Whether passive ejection keeps the endpoint out at `now_ms`.
    pub fn ejected(&self, now_ms: u64) -> bool {
        self.stats.ejected_until_ms.load(Relaxed) > now_ms
    }

    /// Counts a failure towards the streak; true when it reached the threshold
    /// (the streak starts again).
    pub fn streak_reached(&self, p: &Passive) -> bool {
        let n = self.stats.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if n < p.consecutive_failures {
            return false;
        }
        self.stats.consecutive_failures.store(0, Relaxed);
        true
    }

    /// Ejects the endpoint for the policy's time, doubled for each ejection in a row.
    /// Of several requests that fail at the same instant only one ejects (the
    /// deadline is swapped in only while the endpoint is still in).
    pub fn eject(&self, p: &Passive, why: &'static str) {
        let now = clock::now_ms();
        let until = self.stats.ejected_until_ms.load(Relaxed);
        if until > now {
            return;
        }
        let row = self.stats.ejections_in_row.load(Relaxed).min(16);
        let wait = p.ejection_time.saturating_mul(1u32 << row).min(p.max_ejection_time);
        let deadline = now + wait.as_millis() as u64;
        if self.stats.ejected_until_ms.compare_exchange(until, deadline, Relaxed, Relaxed).is_err() {
            return;
        }
        self.stats.consecutive_failures.store(0, Relaxed);
        self.stats.ejections_in_row.fetch_add(1, Relaxed);
        self.stats.ejections_total.fetch_add(1, Relaxed);
        tracing::warn!(endpoint = %self.name, address = %self.address, ejected_for_ms = wait.as_millis() as u64, why, "endpoint ejected");
    }
}

impl Endpoint {
    /// Counts a request in flight here until the returned guard drops. The guard
    /// goes on into the response body ([`Held::keep`]) and is released when the
    /// body has been sent.
    pub fn in_flight(self: &Arc<Self>) -> Held {
        self.stats.in_flight.fetch_add(1, Relaxed);
        self.stats.requests.fetch_add(1, Relaxed);
        Held::new(self.clone(), None)
    }
}

impl crate::body::Release for Endpoint {
    fn reuse(&self, conn: crate::body::Conn) {
        self.conns.keep(conn);
    }

    fn done(&self) {
        self.stats.in_flight.fetch_sub(1, Relaxed);
    }
}
