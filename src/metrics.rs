//! Metrics: the atomic counters and histograms the hot path updates without
//! locks. A leaf: every phase counts here; the admin listener renders them
//! (`admin::metrics`) in the Prometheus text format on scrape.
//!
//! Written here rather than with prometheus-client because its histogram takes
//! a lock on every observation; what is kept is plain atomics.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
pub const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| s <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Relaxed);
    }

    /// The latency below which a share `q` (0..=1) of the observations fell,
    /// as the upper bound of its bucket (since start); None before any.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let count = self.count.load(Relaxed);
        if count == 0 {
            return None;
        }
        let want = (q * count as f64).ceil().max(1.0) as u64;
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            if cumulative >= want {
                return Some(*b);
            }
        }
        Some(f64::INFINITY)
    }

    /// Writes the histogram's series in the Prometheus text format.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// Requests of one route, by status class, and their latency. Carried over a
/// reload by route name.
#[derive(Default)]
pub struct RouteStats {
    pub by_class: [AtomicU64; 5],
    pub latency: Histogram,
}

impl RouteStats {
    pub fn record(&self, status: u16, elapsed: Duration) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].fetch_add(1, Relaxed);
        self.latency.observe(elapsed);
    }
}

/// Answers the proxy gives itself, each counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    RateLimited,
    BodyTimeout,
    TooManyConnections,
    LimitsUnavailable,
    BadCredentials,
    BadRequest,
    MissingKey,
    HeaderTimeout,
    NoRoute,
    HeadersTooLarge,
    BodyTooLarge,
    BadGateway,
    NoEndpoint,
    GatewayTimeout,
    H2Flood,
    /// PURGE from an address not in `purge_from` (403).
    PurgeForbidden,
    /// A PURGE that was carried out (200).
    Purged,
    /// `only-if-cached` with nothing usable stored (504).
    NotCached,
    /// Plain HTTP sent to HTTPS (308).
    RedirectHttps,
    /// A Host that is not one plain authority, more than one, or one that disagrees with :authority (400).
    BadHost,
    /// A path with an encoded `/`, `\` or NUL, or a broken percent-encoding (400).
    BadPath,
    /// The service's fan-outs in flight were at their cap past the queue timeout (503).
    FanOutBusy,
    /// A fan-out's answers together outgrew its byte budget (502).
    FanOutTooLarge,
    /// The endpoint's connections were at their cap past the queue timeout (503).
    EndpointBusy,
    /// TRACE, or PURGE without a cache, on a route that does not name it (405).
    MethodNotAllowed,
    /// An HTTP/2 extended CONNECT for a protocol its route does not list (403).
    UpgradeRefused,
}

impl Answer {
    pub const ALL: [Answer; 26] = [
        Answer::RateLimited,
        Answer::BodyTimeout,
        Answer::TooManyConnections,
        Answer::LimitsUnavailable,
        Answer::BadCredentials,
        Answer::BadRequest,
        Answer::MissingKey,
        Answer::HeaderTimeout,
        Answer::NoRoute,
        Answer::HeadersTooLarge,
        Answer::BodyTooLarge,
        Answer::BadGateway,
        Answer::NoEndpoint,
        Answer::GatewayTimeout,
        Answer::H2Flood,
        Answer::PurgeForbidden,
        Answer::Purged,
        Answer::NotCached,
        Answer::RedirectHttps,
        Answer::BadHost,
        Answer::BadPath,
        Answer::FanOutBusy,
        Answer::FanOutTooLarge,
        Answer::EndpointBusy,
        Answer::MethodNotAllowed,
        Answer::UpgradeRefused,
    ];

    pub fn reason(self) -> &'static str {
        match self {
            Answer::RateLimited => "rate_limited",
            Answer::BodyTimeout => "body_timeout",
            Answer::TooManyConnections => "too_many_connections",
            Answer::LimitsUnavailable => "limits_unavailable",
            Answer::BadCredentials => "bad_credentials",
            Answer::BadRequest => "bad_request",
            Answer::MissingKey => "missing_key",
            Answer::HeaderTimeout => "header_timeout",
            Answer::NoRoute => "no_route",
            Answer::HeadersTooLarge => "headers_too_large",
            Answer::BodyTooLarge => "body_too_large",
            Answer::BadGateway => "upstream_error",
            Answer::NoEndpoint => "no_endpoint",
            Answer::GatewayTimeout => "upstream_timeout",
            Answer::H2Flood => "h2_flood",
            Answer::PurgeForbidden => "purge_forbidden",
            Answer::Purged => "purged",
            Answer::NotCached => "only_if_cached",
            Answer::RedirectHttps => "https_redirect",
            Answer::BadHost => "bad_host",
            Answer::BadPath => "bad_path",
            Answer::FanOutBusy => "fan_out_busy",
            Answer::FanOutTooLarge => "fan_out_too_large",
            Answer::EndpointBusy => "endpoint_busy",
            Answer::MethodNotAllowed => "method_not_allowed",
            Answer::UpgradeRefused => "upgrade_refused",
        }
    }
}

/// Process-wide counters.
pub struct Global {
    pub answers: [AtomicU64; Answer::ALL.len()],
    pub connections_accepted: AtomicU64,
    pub connections_active: AtomicU64,
    pub connection_errors: AtomicU64,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    pub access_log_dropped: AtomicU64,
    pub idle_closed: AtomicU64,
    /// Admin requests refused: no or a wrong token, cross-site, wrong method.
    pub admin_refused: AtomicU64,
    /// Upstream response bodies cut off after stalling past `body_idle`.
    pub upstream_stalled: AtomicU64,
    /// Upgrades (WebSocket and others) forwarded, tunnels open, tunnels closed idle.
    pub upgrades: AtomicU64,
    /// Upgrades not forwarded: the route does not list the protocol (h2c never).
    pub upgrades_refused: AtomicU64,
    pub tunnels_open: AtomicU64,
    pub tunnels_idle_closed: AtomicU64,
    /// PROXY protocol headers read, and connections refused by reason.
    pub proxy_protocol_accepted: AtomicU64,
    pub proxy_protocol_refused: [AtomicU64; PROXY_REFUSALS.len()],
}

/// Why connections on PROXY protocol listeners were closed, in the order of
/// `server::proxy_protocol::Refusal`.
pub const PROXY_REFUSALS: [&str; 4] = ["untrusted", "malformed", "timeout", "closed"];

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);

pub static GLOBAL: Global = Global {
    answers: [ZERO; Answer::ALL.len()],
    connections_accepted: ZERO,
    connections_active: ZERO,
    connection_errors: ZERO,
    reloads_ok: ZERO,
    reloads_failed: ZERO,
    access_log_dropped: ZERO,
    idle_closed: ZERO,
    admin_refused: ZERO,
    upstream_stalled: ZERO,
    upgrades: ZERO,
    upgrades_refused: ZERO,
    tunnels_open: ZERO,
    tunnels_idle_closed: ZERO,
    proxy_protocol_accepted: ZERO,
    proxy_protocol_refused: [ZERO; PROXY_REFUSALS.len()],
};

pub fn count_answer(a: Answer) {
    GLOBAL.answers[a as usize].fetch_add(1, Relaxed);
}

/// A config reload and its result, as the dashboard lists them.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ReloadRecord {
    pub at_unix: u64,
    /// The new generation, when it took effect.
    pub generation: Option<u64>,
    /// Why it was rejected (the previous config kept serving).
    pub error: Option<String>,
}

/// The last reloads, newest last (the server keeps one).
#[derive(Default)]
pub struct Reloads(std::sync::Mutex<std::collections::VecDeque<ReloadRecord>>);

impl Reloads {
    /// Notes a reload's result (the last 20 are kept).
    pub fn note(&self, generation: Option<u64>, error: Option<String>) {
        let at_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut r = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if r.len() >= 20 {
            r.pop_front();
        }
        r.push_back(ReloadRecord { at_unix, generation, error });
    }

    /// Every reload kept, oldest first.
    pub fn list(&self) -> Vec<ReloadRecord> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }
}
