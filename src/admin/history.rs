//! History without Prometheus: once a second the admin listener reads every
//! counter and gauge of its own `/metrics` (histogram buckets left out) and
//! keeps 15 minutes of them in a ring, counters as per-second rates. The
//! dashboard draws its sparklines from it, and a snapshot page embeds it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Seconds kept.
pub const SECONDS: usize = 15 * 60;
/// Series kept at most (new ones beyond are not recorded until old ones go).
const MAX_SERIES: usize = 4000;

/// The per-second ring of every series.
#[derive(Default)]
pub struct History {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Unix seconds of each sample, oldest first.
    times: VecDeque<u64>,
    /// Each series' values, aligned with `times` (NaN where it had none).
    series: HashMap<Box<str>, VecDeque<f32>>,
    /// Counters' last raw values, to take rates from.
    last: HashMap<Box<str>, f64>,
}

impl History {
    /// Records one sample of the Prometheus text `metrics` taken at `now` (unix seconds).
    pub fn record(&self, now: u64, metrics: &str) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *g;
        if inner.times.back().is_some_and(|&t| t >= now) {
            return;
        }
        let gap = inner.times.back().map_or(1, |&t| (now - t).max(1)) as f64;
        inner.times.push_back(now);
        let full = inner.times.len() > SECONDS;
        if full {
            inner.times.pop_front();
        }
        let len = inner.times.len();
        for v in inner.series.values_mut() {
            v.push_back(f32::NAN);
            if full {
                v.pop_front();
            }
        }
        let mut seen = std::collections::HashSet::new();
        for line in metrics.lines() {
            let Some((name, value)) = sample(line) else { continue };
            seen.insert(name);
            let rate = if name.split('{').next().is_some_and(|n| n.ends_with("_total")) {
                // The key is allocated once per series, not at every sample.
                let prev = match inner.last.get_mut(name) {
                    Some(p) => Some(std::mem::replace(p, value)),
                    None => inner.last.insert(name.into(), value),
                };
                // A counter reset (a reload's fresh counters) is no negative rate.
                match prev {
                    Some(p) if value >= p => (value - p) / gap,
                    _ => f64::NAN,
                }
            } else {
                value
            };
            let series_count = inner.series.len();
            let series = match inner.series.get_mut(name) {
                Some(s) => s,
                None if series_count < MAX_SERIES => {
                    inner.series.entry(name.into()).or_insert_with(|| std::iter::repeat_n(f32::NAN, len).collect())
                }
                None => continue,
            };
            if let Some(slot) = series.back_mut() {
                *slot = rate as f32;
            }
        }
        // Series absent now and with no value in the whole window (an
        // endpoint scaled away 15 minutes ago) go.
        inner.series.retain(|k, v| seen.contains(&**k) || v.iter().any(|x| !x.is_nan()));
        let Inner { series, last, .. } = inner;
        last.retain(|k, _| series.contains_key(k));
    }

    /// The last `n` seconds of the series whose names start with one of
    /// `prefixes` (all when empty): `{"t": [...], "series": {name: [...]}}`,
    /// `null` where a series had no value.
    pub fn json(&self, n: usize, prefixes: &[&str]) -> serde_json::Value {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let skip = g.times.len().saturating_sub(n);
        let t: Vec<u64> = g.times.iter().skip(skip).copied().collect();
        let series: serde_json::Map<String, serde_json::Value> = g
            .series
            .iter()
            .filter(|(k, _)| prefixes.is_empty() || prefixes.iter().any(|p| k.starts_with(p)))
            .map(|(k, v)| {
                let vals: Vec<serde_json::Value> =
                    v.iter().skip(skip).map(|x| if x.is_nan() { serde_json::Value::Null } else { serde_json::json!(round(*x)) }).collect();
                (k.to_string(), serde_json::Value::Array(vals))
            })
            .collect();
        serde_json::json!({ "interval_seconds": 1, "t": t, "series": series })
    }
}

fn round(x: f32) -> f64 {
    (x as f64 * 1000.0).round() / 1000.0
}

/// A sample line's series (name and labels) and value; comments, histogram
/// buckets, sums and counts are not kept.
fn sample(line: &str) -> Option<(&str, f64)> {
    if line.starts_with('#') || line.is_empty() {
        return None;
    }
    let (name, value) = line.rsplit_once(' ')?;
    let base = name.split('{').next()?;
    if base.ends_with("_bucket") || base.ends_with("_sum") || base.ends_with("_count") {
        return None;
    }
    Some((name, value.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_become_rates_and_gauges_stay_values() {
        let h = History::default();
        h.record(100, "# HELP x\nreq_total{route=\"a\"} 10\nopen 3\nlat_bucket{le=\"1\"} 5\n");
        h.record(101, "req_total{route=\"a\"} 25\nopen 4\n");
        h.record(103, "req_total{route=\"a\"} 35\nopen 2\n");
        let j = h.json(10, &[]);
        assert_eq!(j["t"], serde_json::json!([100, 101, 103]));
        assert_eq!(j["series"]["req_total{route=\"a\"}"], serde_json::json!([null, 15.0, 5.0]));
        assert_eq!(j["series"]["open"], serde_json::json!([3.0, 4.0, 2.0]));
        assert!(j["series"].get("lat_bucket{le=\"1\"}").is_none());
        assert_eq!(h.json(1, &["open"])["series"], serde_json::json!({ "open": [2.0] }));
    }

    #[test]
    fn the_ring_keeps_fifteen_minutes_and_drops_vanished_series() {
        let h = History::default();
        h.record(1, "gone 1\nstays 1\n");
        for t in 2..=(SECONDS as u64 + 5) {
            h.record(t, "stays 1\n");
        }
        let j = h.json(usize::MAX, &[]);
        assert_eq!(j["t"].as_array().unwrap().len(), SECONDS);
        assert!(j["series"].get("gone").is_none() && j["series"]["stays"].as_array().unwrap().len() == SECONDS);
    }
}
