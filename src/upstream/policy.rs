//! The upstream's runtime policy types, converted once from config: the
//! protocol spoken to endpoints, readiness probes, passive ejection, retries.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What the proxy speaks to a pool's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    Http1,
    Http2,
}

/// Active readiness probes of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// Random extra delay added to each interval, up to this much.
    pub jitter: Duration,
}

/// Passive ejection on observed failures.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Passive {
    /// Consecutive failures that eject an endpoint; 0 turns ejection off.
    pub consecutive_failures: u32,
    /// First ejection time; doubled on each ejection in a row, up to the maximum.
    pub ejection_time: Duration,
    pub max_ejection_time: Duration,
}

impl Default for Passive {
    fn default() -> Self {
        Passive { consecutive_failures: 5, ejection_time: Duration::from_secs(5), max_ejection_time: Duration::from_secs(60) }
    }
}

/// Retries of idempotent requests on another endpoint, within a budget.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Retry {
    /// Extra attempts per request.
    pub attempts: u32,
    /// Retries in flight may be at most this percentage of requests in flight...
    pub budget_percent: u32,
    /// ...but this many are always allowed.
    pub min_concurrency: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Retry { attempts: 2, budget_percent: 20, min_concurrency: 3 }
    }
}
