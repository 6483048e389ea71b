//! One pool model for both protocols: every pool, an HTTP service's (or
//! shard's) or a memcache shard, is named by a [`PoolId`] and keeps one
//! [`Load`] record. The heat tick, the scaler, `/admin/heat`, the metrics and
//! the scaler's overlay read pools through these, whatever the protocol; how
//! a pool connects to its endpoints stays the protocol's own.

use super::rate::Rate;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

/// A pool's name: its service, and its shard (`None` for a replicated
/// service's one pool). Shown and matched as `service` or `service/shard`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolId {
    pub service: String,
    pub shard: Option<String>,
}

impl PoolId {
    pub fn new(service: &str, shard: Option<&str>) -> PoolId {
        PoolId { service: service.to_string(), shard: shard.map(str::to_string) }
    }

    /// The shard's name, or the service's for a replicated service.
    pub fn shard_or_service(&self) -> &str {
        self.shard.as_deref().unwrap_or(&self.service)
    }
}

impl std::fmt::Display for PoolId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.shard {
            Some(s) => write!(f, "{}/{s}", self.service),
            None => f.write_str(&self.service),
        }
    }
}

/// What a pool carries, counted on the request path (atomics only) and
/// turned into rates by the heat tick.
#[derive(Default)]
pub struct Load {
    /// Requests answered (HTTP: every answer, the proxy's own included;
    /// memcache: every command sent to the shard).
    pub requests: AtomicU64,
    /// Of those, failures (HTTP: 5xx; memcache: commands that failed).
    pub errors: AtomicU64,
    pub in_flight: AtomicUsize,
    pub latency: crate::metrics::Histogram,
    /// Requests and errors per second, measured by the heat tick.
    pub rate: Rate,
    pub error_rate: Rate,
}

impl Load {
    /// One request answered after `elapsed`.
    pub fn record(&self, failed: bool, elapsed: Duration) {
        self.requests.fetch_add(1, Relaxed);
        if failed {
            self.errors.fetch_add(1, Relaxed);
        }
        self.latency.observe(elapsed);
    }

    /// The heat tick: rates measured over `dt`, smoothed over `window`.
    pub fn tick(&self, dt: Duration, window: Duration) {
        self.rate.tick(self.requests.load(Relaxed), dt, window);
        self.error_rate.tick(self.errors.load(Relaxed), dt, window);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_ids_read_as_service_or_service_slash_shard() {
        assert_eq!(PoolId::new("users", Some("a")).to_string(), "users/a");
        assert_eq!(PoolId::new("web", None).to_string(), "web");
        assert_eq!(PoolId::new("web", None).shard_or_service(), "web");
    }

    #[test]
    fn a_record_counts_requests_errors_and_latency() {
        let l = Load::default();
        l.record(false, Duration::from_millis(2));
        l.record(true, Duration::from_millis(3));
        assert_eq!((l.requests.load(Relaxed), l.errors.load(Relaxed)), (2, 1));
        assert!(l.latency.quantile(0.5).is_some());
    }
}
