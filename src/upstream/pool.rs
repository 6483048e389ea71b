//! A pool: the identical replicas of one service (or, later, one shard), with
//! their balancer, health state and retry budget.

use super::endpoint::Endpoint;
use super::policy::{Failure, Passive, Retry};
use crate::balance::{Affinity, Balancer};
use crate::body::Held;
use crate::clock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Pool-wide counters, carried over a reload by service and shard name.
#[derive(Default)]
pub struct PoolStats {
    /// Answers by status class (1xx..5xx), including the proxy's own.
    pub by_class: [AtomicU64; 5],
    /// Requests (every answer), errors (5xx), in flight, latency and rates,
    /// as every pool of either protocol keeps them.
    pub load: crate::heat::load::Load,
    pub retry_budget: super::budget::RetryBudget,
    pub retries: AtomicU64,
    pub retries_denied: AtomicU64,
    pub fail_open: AtomicBool,
    pub fail_open_picks: AtomicU64,
    /// Ejections not made because `max_ejection_percent` of the pool was out.
    pub ejections_capped: AtomicU64,
}

impl PoolStats {
    /// Answers given, of every class.
    pub fn answers(&self) -> u64 {
        self.by_class.iter().map(|c| c.load(Relaxed)).sum()
    }
}

pub struct Pool {
    /// `service`, or `service/shard` for a shard's pool.
    pub name: String,
    pub service: String,
    /// The shard this pool serves, in a sharded service.
    pub shard: Option<String>,
    pub endpoints: Vec<Arc<Endpoint>>,
    pub balancer: std::sync::Arc<Balancer>,
    pub request_timeout: Duration,
    /// How long a new endpoint's share ramps up (zero: at once).
    pub slow_start: Duration,
    /// The longest gap between two reads of a response body.
    pub body_idle: Duration,
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
    /// Whether its connections start with a PROXY protocol header.
    pub fn sends_proxy_header(&self) -> bool {
        self.endpoints.first().is_some_and(|e| e.conns.proxy_header.is_some())
    }

    /// Counts an answer of this pool (or the proxy's own on its behalf).
    pub fn record(&self, status: u16, elapsed: Duration) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.stats.by_class[class].fetch_add(1, Relaxed);
        self.stats.load.record(class == 4, elapsed);
    }

    /// Picks an endpoint not in `tried`; healthy ones first, and every one
    /// (failing open) when none is healthy. A first pick (nothing tried) counts
    /// a request towards the retry budget.
    pub fn pick(&self, tried: &[usize], affinity: &Affinity) -> Option<Pick> {
        let now = clock::now_ms();
        if tried.is_empty() {
            self.stats.retry_budget.request(now);
        }
        let eps = &self.endpoints;
        if eps.is_empty() {
            return None;
        }
        let in_flight = self.stats.load.in_flight();
        let ok = |i: usize| eps[i].available(now) && !tried.contains(&i);
        let picked = if self.slow_start.is_zero() {
            self.balancer.pick(eps.as_slice(), &ok, affinity, in_flight)
        } else {
            // A new endpoint passes with its ramp's chance; when every candidate
            // is new and none passed, the pick is made without the ramp.
            let slow = self.slow_start.as_millis() as u64;
            let warm = |i: usize| crate::balance::ramp_passes(eps[i].stats.joined_ms.load(Relaxed), now, slow);
            self.balancer
                .pick(eps.as_slice(), &|i| ok(i) && warm(i), affinity, in_flight)
                .or_else(|| self.balancer.pick(eps.as_slice(), &ok, affinity, in_flight))
        };
        let (index, pin) = match picked {
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

    /// Whether the retry budget allows one more retry now (counted if so).
    pub fn try_retry(&self) -> bool {
        if self.stats.retry_budget.try_retry(clock::now_ms(), &self.retry) {
            self.stats.retries.fetch_add(1, Relaxed);
            true
        } else {
            self.stats.retries_denied.fetch_add(1, Relaxed);
            false
        }
    }

    /// Weighs a failure of `ep` for passive ejection: an endpoint that is down is
    /// ejected at once, others after a streak of failures; 5xx answers count only
    /// when the policy says so. No ejection takes more than `max_ejection_percent`
    /// of the pool out at once (refused ones are counted).
    pub fn failed(&self, ep: &Endpoint, failure: Failure) {
        ep.stats.errors.fetch_add(1, Relaxed);
        let p = &self.passive;
        if p.consecutive_failures == 0 || (failure == Failure::ServerError && !p.on_5xx) {
            return;
        }
        if failure != Failure::Down && !ep.streak_reached(p) {
            return;
        }
        let now = clock::now_ms();
        let others = self.endpoints.iter().filter(|e| !std::ptr::eq(e.as_ref(), ep) && e.ejected(now)).count();
        if ep.ejected(now) {
            return;
        }
        if (others + 1) * 100 > self.endpoints.len() * p.max_ejection_percent as usize {
            self.stats.ejections_capped.fetch_add(1, Relaxed);
            tracing::debug!(pool = %self.name, endpoint = %ep.name, "not ejected: max_ejection_percent reached");
            return;
        }
        ep.eject(p, if failure == Failure::Down { "connection refused or reset" } else { "consecutive failures" });
    }

    /// Endpoints available now.
    pub fn healthy_count(&self) -> usize {
        let now = clock::now_ms();
        self.endpoints.iter().filter(|e| e.available(now)).count()
    }
}

/// Counts a request in flight on a pool while alive.
pub struct PoolRequest(Arc<PoolStats>);

impl PoolRequest {
    pub fn new(pool: &Pool) -> PoolRequest {
        pool.stats.load.in_flight.fetch_add(1, Relaxed);
        PoolRequest(pool.stats.clone())
    }
}

impl Drop for PoolRequest {
    fn drop(&mut self) {
        self.0.load.in_flight.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::BalancerKind;
    use crate::ring::Member;

    fn pool() -> Pool {
        Pool {
            name: "p".into(),
            service: "p".into(),
            shard: None,
            endpoints: Vec::new(),
            balancer: std::sync::Arc::new(Balancer::new(BalancerKind::RoundRobin, &[], None, None, "p")),
            request_timeout: Duration::from_secs(1),
            slow_start: Duration::ZERO,
            body_idle: Duration::from_secs(60),
            passive: Passive::default(),
            retry: Retry::default(),
            stats: Arc::default(),
        }
    }

    #[test]
    fn retries_are_counted_and_denied_by_the_budget() {
        let p = Pool { retry: Retry { attempts: 2, budget_percent: 0, min_per_second: 1 }, ..pool() };
        assert_eq!((0..15).filter(|_| p.try_retry()).count(), 10);
        assert_eq!((p.stats.retries.load(Relaxed), p.stats.retries_denied.load(Relaxed)), (10, 5));
    }

    fn pool_of(n: usize, passive: Passive) -> Pool {
        let endpoints = (0..n)
            .map(|i| {
                let key = super::super::EndpointKey {
                    service: "p".into(),
                    address: format!("127.0.0.1:{}", i + 1),
                    protocol: super::super::UpstreamProtocol::Http1,
                    engine: Default::default(),
                    connect_timeout: Duration::from_secs(1),
                    idle_timeout: Duration::from_secs(1),
                    max_connections: 0,
                    queue_timeout: Duration::from_secs(1),
                    health: None,
                    tls: None,
                    proxy_header: None,
                };
                let authority = key.address.parse().unwrap();
                Arc::new(Endpoint::new(key, authority, None, 1, None))
            })
            .collect();
        Pool { endpoints, passive, ..pool() }
    }

    #[test]
    fn a_new_endpoint_ramps_up_and_still_serves_when_it_is_the_only_one() {
        let mut p = pool_of(2, Passive::default());
        p.balancer =
            std::sync::Arc::new(Balancer::new(BalancerKind::RoundRobin, &[Member::new("a", 1), Member::new("b", 1)], None, None, "p"));
        let share = |p: &Pool| (0..4000).filter(|_| p.pick(&[], &Affinity::default()).unwrap().index == 1).count() as f64 / 4000.0;
        p.endpoints[1].stats.joined_ms.store(clock::now_ms().max(1), Relaxed);
        assert!((0.4..0.6).contains(&share(&p)), "no slow start: half");
        p.slow_start = Duration::from_secs(60);
        let s = share(&p);
        assert!((0.03..0.2).contains(&s), "just joined: about 10% ({s})");
        p.endpoints[0].stats.probe_healthy.store(false, Relaxed);
        assert_eq!(share(&p), 1.0, "the only healthy endpoint takes every request");
        p.endpoints[0].stats.probe_healthy.store(true, Relaxed);
        p.slow_start = Duration::from_millis(2);
        std::thread::sleep(Duration::from_millis(5));
        assert!((0.4..0.6).contains(&share(&p)), "ramped up: half again");
    }

    fn until(ep: &Endpoint) -> u64 {
        ep.stats.ejected_until_ms.load(Relaxed).saturating_sub(clock::now_ms())
    }

    #[tokio::test]
    async fn ejects_after_a_streak_with_backoff() {
        let passive = Passive {
            consecutive_failures: 3,
            ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(25),
            ..Passive::default()
        };
        let p = pool_of(2, passive);
        let ep = &p.endpoints[0];
        p.failed(ep, Failure::Failed);
        p.failed(ep, Failure::Failed);
        assert!(ep.available(clock::now_ms()));
        p.failed(ep, Failure::Failed);
        assert!(!ep.available(clock::now_ms()));
        assert!((9_000..=10_000).contains(&until(ep)), "{}", until(ep));
        // Ejected again when the first ejection is over: doubled, then capped.
        for expect in [19_000..=20_000, 24_000..=25_000] {
            ep.stats.ejected_until_ms.store(0, Relaxed);
            for _ in 0..3 {
                p.failed(ep, Failure::Failed);
            }
            assert!(expect.contains(&until(ep)), "{} not in {expect:?}", until(ep));
        }
    }

    #[test]
    fn failures_at_the_same_instant_eject_once() {
        let p = Arc::new(pool_of(3, Passive::default()));
        let start = Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (p, start) = (p.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    (0..100).for_each(|_| p.failed(&p.endpoints[1], Failure::Down))
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(p.endpoints[1].stats.ejections_total.load(Relaxed), 1);
        assert_eq!(p.endpoints[1].stats.ejections_in_row.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn a_down_endpoint_is_ejected_at_once_and_5xx_counts_only_when_asked() {
        let p = pool_of(2, Passive::default());
        for _ in 0..10 {
            p.failed(&p.endpoints[1], Failure::ServerError);
        }
        assert!(p.endpoints[1].available(clock::now_ms()), "5xx ejected without on_5xx");
        p.failed(&p.endpoints[0], Failure::Down);
        assert!(!p.endpoints[0].available(clock::now_ms()), "refused, not ejected");
        let p = pool_of(2, Passive { on_5xx: true, ..Passive::default() });
        for _ in 0..5 {
            p.failed(&p.endpoints[1], Failure::ServerError);
        }
        assert!(!p.endpoints[1].available(clock::now_ms()), "5xx with on_5xx");
    }

    #[tokio::test]
    async fn at_most_max_ejection_percent_of_a_pool_is_ejected() {
        let p = pool_of(4, Passive::default());
        for ep in &p.endpoints {
            p.failed(ep, Failure::Down);
        }
        let now = clock::now_ms();
        assert_eq!(p.endpoints.iter().filter(|e| e.ejected(now)).count(), 2, "50% of 4");
        assert_eq!(p.stats.ejections_capped.load(Relaxed), 2);
        let one = pool_of(1, Passive::default());
        one.failed(&one.endpoints[0], Failure::Down);
        assert!(one.endpoints[0].available(clock::now_ms()), "the only endpoint is never ejected at 50%");
    }

    #[test]
    fn empty_pool_has_no_pick() {
        assert!(pool().pick(&[], &Affinity::default()).is_none());
    }
}
