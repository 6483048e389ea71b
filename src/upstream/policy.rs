//! The upstream's runtime policy types, converted once from config: the
//! protocol spoken to endpoints, readiness probes, passive ejection, retries.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The PROXY protocol header a pool's connections start with, naming the
/// client they carry (`send_proxy_protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyHeader {
    V1,
    V2,
}

/// What the proxy speaks to a pool's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    Http1,
    Http2,
}

/// Whose HTTP/1 code serves clients and talks to upstreams: ours (one task
/// drives a request end to end), or hyper's, kept for one release so both
/// can be compared (`[server] http1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Http1Engine {
    #[default]
    Own,
    Hyper,
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
    /// At most this share of a pool (in percent) is ejected at once.
    pub max_ejection_percent: u32,
    /// Whether 5xx answers count towards ejection (connection failures and
    /// timeouts always do). Off by default: a client must not be able to get
    /// replicas ejected by asking for a URL that fails.
    pub on_5xx: bool,
}

impl Default for Passive {
    fn default() -> Self {
        Passive {
            consecutive_failures: 5,
            ejection_time: Duration::from_secs(5),
            max_ejection_time: Duration::from_secs(60),
            max_ejection_percent: 50,
            on_5xx: false,
        }
    }
}

/// A failure seen while forwarding to an endpoint, as passive ejection weighs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection was refused or reset: the endpoint is down, ejected at once.
    Down,
    /// Connect or answer timed out, or the answer was broken.
    Failed,
    /// The endpoint answered 5xx.
    ServerError,
}

/// Retries of idempotent requests on another endpoint, within a budget.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Retry {
    /// Extra attempts per request.
    pub attempts: u32,
    /// Retries may be at most this percentage of the requests of the last ten seconds...
    pub budget_percent: u32,
    /// ...plus this many per second.
    pub min_per_second: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Retry { attempts: 2, budget_percent: 20, min_per_second: 10 }
    }
}
