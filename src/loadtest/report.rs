//! What a load test saw, and how it is told: latencies and the generator's
//! own schedule lag in HDR histograms (microseconds), answers by status
//! class, errors; a table for people and JSON (with the histograms encoded,
//! so runs can be merged) for scripts.

use base64::Engine as _;
use hdrhistogram::serialization::{Serializer as _, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde_json::json;
use std::time::Duration;

/// Latency beyond this (60 s) is recorded as this.
const MAX_US: u64 = 60_000_000;

/// A run is void when the generator itself sent this late at its p99.
pub const VOID_LAG: Duration = Duration::from_millis(5);

/// Counts and histograms of one connection or of a whole run.
#[derive(Clone)]
pub struct Tally {
    pub latency: Histogram<u64>,
    pub lag: Histogram<u64>,
    /// Answers by status class: 1xx .. 5xx.
    pub classes: [u64; 5],
    pub errors: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("fixed bounds")
}

fn us(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, MAX_US)
}

impl Tally {
    pub fn new() -> Tally {
        Tally { latency: histogram(), lag: histogram(), classes: [0; 5], errors: 0 }
    }

    pub fn answer(&mut self, status: u16, took: Duration) {
        self.latency.saturating_record(us(took));
        if let Some(c) = self.classes.get_mut((status / 100).saturating_sub(1) as usize) {
            *c += 1;
        }
    }

    pub fn error(&mut self) {
        self.errors += 1;
    }

    pub fn lag(&mut self, late: Duration) {
        self.lag.saturating_record(us(late));
    }

    pub fn merge(&mut self, other: &Tally) {
        let _ = self.latency.add(&other.latency);
        let _ = self.lag.add(&other.lag);
        for (a, b) in self.classes.iter_mut().zip(other.classes) {
            *a += b;
        }
        self.errors += other.errors;
    }

    pub fn answered(&self) -> u64 {
        self.classes.iter().sum()
    }
}

impl Default for Tally {
    fn default() -> Self {
        Tally::new()
    }
}

/// The proxy's own spending over the run, read from its admin listener.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ProxyUsage {
    pub cpu_user_us: u64,
    pub cpu_system_us: u64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
}

impl ProxyUsage {
    pub fn since(&self, before: &ProxyUsage) -> ProxyUsage {
        ProxyUsage {
            cpu_user_us: self.cpu_user_us.saturating_sub(before.cpu_user_us),
            cpu_system_us: self.cpu_system_us.saturating_sub(before.cpu_system_us),
            voluntary_switches: self.voluntary_switches.saturating_sub(before.voluntary_switches),
            involuntary_switches: self.involuntary_switches.saturating_sub(before.involuntary_switches),
        }
    }
}

/// One run, told.
pub struct Report {
    pub tally: Tally,
    pub elapsed: Duration,
    pub target_rate: Option<f64>,
    pub proxy: Option<ProxyUsage>,
    /// Upstream requests the proxy made over the run (every pool), when known.
    pub upstream_requests: Option<u64>,
    /// Requests each shard of the compared service got over the run.
    pub shards: Option<Vec<(String, u64)>>,
    /// Memcache commands: answers counted as hit or stored, miss, error.
    pub memcache: bool,
}

impl Report {
    pub fn rps(&self) -> f64 {
        self.tally.answered() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The generator fell behind its own schedule: its figures are not to be trusted.
    pub fn void(&self) -> bool {
        self.target_rate.is_some() && !self.tally.lag.is_empty() && self.tally.lag.value_at_quantile(0.99) > us(VOID_LAG)
    }

    fn pct(&self, q: f64) -> u64 {
        self.tally.latency.value_at_quantile(q)
    }

    pub fn json(&self) -> serde_json::Value {
        let h = &self.tally.latency;
        let n = self.tally.answered().max(1) as f64;
        json!({
            "requests": self.tally.answered(),
            "errors": self.tally.errors,
            "duration_s": self.elapsed.as_secs_f64(),
            "rps": self.rps(),
            "target_rps": self.target_rate,
            "latency_us": { "p50": self.pct(0.5), "p90": self.pct(0.9), "p99": self.pct(0.99), "p99_9": self.pct(0.999), "max": h.max(), "mean": h.mean() },
            "status": { "1xx": self.tally.classes[0], "2xx": self.tally.classes[1], "3xx": self.tally.classes[2], "4xx": self.tally.classes[3], "5xx": self.tally.classes[4] },
            "schedule_lag_us": (self.target_rate.is_some()).then(|| json!({ "p50": self.tally.lag.value_at_quantile(0.5), "p99": self.tally.lag.value_at_quantile(0.99), "max": self.tally.lag.max() })),
            "void": self.void(),
            "proxy": self.proxy.map(|p| json!({
                "cpu_us_per_request": (p.cpu_user_us + p.cpu_system_us) as f64 / n,
                "user_us_per_request": p.cpu_user_us as f64 / n,
                "system_us_per_request": p.cpu_system_us as f64 / n,
                "switches_per_request": (p.voluntary_switches + p.involuntary_switches) as f64 / n,
                "usage": p,
            })),
            "upstream_requests": self.upstream_requests,
            "shard_requests": self.shards.as_ref().map(|v| v.iter().map(|(n, c)| (n.clone(), json!(c))).collect::<serde_json::Map<_, _>>()),
            "memcache": self.memcache.then(|| json!({ "hit_or_stored": self.tally.classes[1], "miss": self.tally.classes[3], "error_answers": self.tally.classes[4] })),
            "histogram": encode(h),
            "lag_histogram": encode(&self.tally.lag),
        })
    }

    pub fn table(&self) -> String {
        let ms = |v: u64| format!("{:.2}ms", v as f64 / 1000.0);
        let mut o = String::new();
        let target = self.target_rate.map(|r| format!(" (target {r:.0}/s)")).unwrap_or_default();
        o += &format!("requests   {} in {:.1}s = {:.1}/s{target}\n", self.tally.answered(), self.elapsed.as_secs_f64(), self.rps());
        o += &format!(
            "latency    p50 {}  p90 {}  p99 {}  p99.9 {}  max {}\n",
            ms(self.pct(0.5)),
            ms(self.pct(0.9)),
            ms(self.pct(0.99)),
            ms(self.pct(0.999)),
            ms(self.tally.latency.max())
        );
        let c = self.tally.classes;
        if self.memcache {
            o += &format!("answers    hit or stored {}  miss {}  error {}  failed {}\n", c[1], c[3], c[4], self.tally.errors);
        } else {
            o +=
                &format!("status     1xx {}  2xx {}  3xx {}  4xx {}  5xx {}  errors {}\n", c[0], c[1], c[2], c[3], c[4], self.tally.errors);
        }
        if self.target_rate.is_some() {
            let lag = &self.tally.lag;
            let verdict = if self.void() {
                format!(
                    "VOID: the generator fell behind its schedule (p99 over {}ms); use fewer connections or a lower rate",
                    VOID_LAG.as_millis()
                )
            } else {
                "kept".into()
            };
            o += &format!(
                "own lag    p50 {}  p99 {}  max {}  schedule {verdict}\n",
                ms(lag.value_at_quantile(0.5)),
                ms(lag.value_at_quantile(0.99)),
                ms(lag.max())
            );
        }
        if let Some(p) = self.proxy {
            let n = self.tally.answered().max(1) as f64;
            o += &format!(
                "proxy      {:.1} us CPU/request (user {:.1}, system {:.1}), {:.3} switches/request\n",
                (p.cpu_user_us + p.cpu_system_us) as f64 / n,
                p.cpu_user_us as f64 / n,
                p.cpu_system_us as f64 / n,
                (p.voluntary_switches + p.involuntary_switches) as f64 / n
            );
        }
        if let Some(u) = self.upstream_requests {
            o += &format!("upstream   {u} requests\n");
        }
        o
    }
}

/// A histogram as base64 of HdrHistogram's V2 deflate encoding (what the
/// Java, Go and Rust HdrHistogram libraries read back).
pub fn encode(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    match V2DeflateSerializer::new().serialize(h, &mut buf) {
        Ok(_) => base64::engine::general_purpose::STANDARD.encode(buf),
        Err(_) => String::new(),
    }
}

/// The inverse of [`encode`].
pub fn decode(s: &str) -> Option<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    hdrhistogram::serialization::Deserializer::new().deserialize(&mut std::io::Cursor::new(bytes)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_merge_and_histograms_survive_their_encoding() {
        let mut a = Tally::new();
        a.answer(200, Duration::from_micros(100));
        a.answer(503, Duration::from_millis(3));
        let mut b = Tally::new();
        b.answer(204, Duration::from_micros(250));
        b.error();
        a.merge(&b);
        assert_eq!((a.answered(), a.classes[1], a.classes[4], a.errors), (3, 2, 1, 1));
        let back = decode(&encode(&a.latency)).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back.value_at_quantile(1.0), a.latency.max());
    }

    #[test]
    fn a_run_that_fell_behind_is_void() {
        let mut t = Tally::new();
        (0..100).for_each(|_| t.lag(Duration::from_millis(20)));
        let r = Report {
            tally: t,
            elapsed: Duration::from_secs(1),
            target_rate: Some(100.0),
            proxy: None,
            upstream_requests: None,
            shards: None,
            memcache: false,
        };
        assert!(r.void() && r.table().contains("VOID"));
        let r = Report { target_rate: None, ..r };
        assert!(!r.void());
    }
}
