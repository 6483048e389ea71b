//! A pool: the identical replicas of one service (or, later, one shard), with
//! their balancer, health state and retry budget.

use super::endpoint::Endpoint;
use super::policy::{Passive, Retry};
use crate::balance::{Affinity, Balancer};
use crate::body::Held;
use crate::clock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Pool-wide counters, carried over a reload by service and shard name.
#[derive(Default)]
pub struct PoolStats {
    /// Answers by status class (1xx..5xx), including the proxy's own.
    pub by_class: [AtomicU64; 5],
    pub latency: crate::metrics::Histogram,
    pub in_flight: AtomicUsize,
    pub retries_in_flight: AtomicUsize,
    pub retries: AtomicU64,
    pub retries_denied: AtomicU64,
    pub fail_open: AtomicBool,
    pub fail_open_picks: AtomicU64,
}

pub struct Pool {
    /// `service`, or `service/shard` for a shard's pool.
    pub name: String,
    pub service: String,
    /// The shard this pool serves, in a sharded service.
    pub shard: Option<String>,
    pub endpoints: Vec<Arc<Endpoint>>,
    pub balancer: Balancer,
    pub request_timeout: Duration,
    pub passive: Passive,
    pub retry: Retry,
    pub stats: Arc<PoolStats>,
}

impl crate::balance::Members for [Arc<Endpoint>] {
    fn count(&self) -> usize {
        self.len()
    }
    fn weight(&self, i: usize) -> u32 {
        self[i].weight
    }
    fn load(&self, i: usize) -> u32 {
        self[i].stats.in_flight.load(Relaxed)
    }
}

/// A pick: the endpoint, its index in the pool, and the in-flight guard.
pub struct Pick {
    pub index: usize,
    pub endpoint: Arc<Endpoint>,
    pub guard: Held,
    /// The cookie balancer (re-)pinned the client: set the affinity cookie.
    pub pin: bool,
}

impl Pool {
    /// Counts an answer of this pool (or the proxy's own on its behalf).
    pub fn record(&self, status: u16, elapsed: Duration) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.stats.by_class[class].fetch_add(1, Relaxed);
        self.stats.latency.observe(elapsed);
    }

    /// Picks an endpoint not in `tried`; healthy ones first, and every one
    /// (failing open) when none is healthy.
    pub fn pick(&self, tried: &[usize], affinity: &Affinity) -> Option<Pick> {
        let now = clock::now_ms();
        let eps = &self.endpoints;
        if eps.is_empty() {
            return None;
        }
        let in_flight = self.stats.in_flight.load(Relaxed);
        let (index, pin) = match self.balancer.pick(eps.as_slice(), &|i| eps[i].available(now) && !tried.contains(&i), affinity, in_flight)
        {
            Some(picked) => {
                if self.stats.fail_open.load(Relaxed) && eps.iter().any(|e| e.available(now)) {
                    self.stats.fail_open.store(false, Relaxed);
                    tracing::info!(pool = %self.name, "pool has healthy endpoints again; fail-open ended");
                }
                picked
            }
            None if eps.iter().any(|e| e.available(now)) => return None,
            None => {
                if !self.stats.fail_open.swap(true, Relaxed) {
                    tracing::warn!(pool = %self.name, "every endpoint is unhealthy: failing open, spreading requests over all of them");
                }
                self.stats.fail_open_picks.fetch_add(1, Relaxed);
                // Spread at random: the balancer's own state already moved for this request.
                (crate::balance::random_ok(eps.len(), &|i| !tried.contains(&i))?, false)
            }
        };
        let endpoint = eps[index].clone();
        let guard = endpoint.in_flight();
        Some(Pick { index, endpoint, guard, pin })
    }

    /// Whether the retry budget allows one more retry now; if so, counts it as in flight
    /// until the returned guard drops.
    pub fn try_retry(&self) -> Option<RetryGuard> {
        let in_flight = self.stats.in_flight.load(Relaxed);
        let allowed = (in_flight * self.retry.budget_percent as usize / 100).max(self.retry.min_concurrency as usize);
        if self.stats.retries_in_flight.load(Relaxed) >= allowed {
            self.stats.retries_denied.fetch_add(1, Relaxed);
            return None;
        }
        self.stats.retries_in_flight.fetch_add(1, Relaxed);
        self.stats.retries.fetch_add(1, Relaxed);
        Some(RetryGuard(self.stats.clone()))
    }

    /// Endpoints available now.
    pub fn healthy_count(&self) -> usize {
        let now = clock::now_ms();
        self.endpoints.iter().filter(|e| e.available(now)).count()
    }
}

pub struct RetryGuard(Arc<PoolStats>);

impl Drop for RetryGuard {
    fn drop(&mut self) {
        self.0.retries_in_flight.fetch_sub(1, Relaxed);
    }
}

/// Counts a request in flight on a pool while alive.
pub struct PoolRequest(Arc<PoolStats>);

impl PoolRequest {
    pub fn new(pool: &Pool) -> PoolRequest {
        pool.stats.in_flight.fetch_add(1, Relaxed);
        PoolRequest(pool.stats.clone())
    }
}

impl Drop for PoolRequest {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::BalancerKind;

    fn pool() -> Pool {
        Pool {
            name: "p".into(),
            service: "p".into(),
            shard: None,
            endpoints: Vec::new(),
            balancer: Balancer::new(BalancerKind::RoundRobin, &[], None, None, "p"),
            request_timeout: Duration::from_secs(1),
            passive: Passive::default(),
            retry: Retry::default(),
            stats: Arc::default(),
        }
    }

    #[test]
    fn retry_budget_bounds_retries_in_flight() {
        let p = pool();
        // Few requests in flight: the minimum concurrency (3) applies.
        let g: Vec<_> = (0..3).map(|_| p.try_retry().expect("within minimum")).collect();
        assert!(p.try_retry().is_none());
        drop(g);
        // 100 in flight at 20%: 20 retries, not one more.
        p.stats.in_flight.store(100, Relaxed);
        let g: Vec<_> = (0..20).map(|_| p.try_retry().expect("within budget")).collect();
        assert!(p.try_retry().is_none());
        assert_eq!(p.stats.retries_denied.load(Relaxed), 2);
        drop(g);
        assert!(p.try_retry().is_some());
    }

    #[test]
    fn empty_pool_has_no_pick() {
        assert!(pool().pick(&[], &Affinity::default()).is_none());
    }
}
