//! Heat as an operator reads it: `GET /admin/heat` (every sharded service,
//! HTTP and memcache alike, its shards hottest first with their endpoints,
//! the skew, and the hottest keys) and the `ringmaster_heat_*` series.
//! Keys appear only in the JSON, never as metric labels: they come from
//! clients, and a label per key would let them grow the scrape without bound.

use crate::config::schema::ShowKeys;
use crate::config::Snapshot;
use crate::heat::rate::skew;
use crate::memcache::hotcache::HotCache;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

/// Keys listed per service.
const TOP: usize = 10;

struct EndpointHeat {
    name: String,
    address: String,
    rate: f64,
    in_flight: u64,
}

struct ShardHeat {
    name: String,
    rate: f64,
    error_rate: f64,
    in_flight: u64,
    p50: Option<f64>,
    p99: Option<f64>,
    bytes_rate: Option<f64>,
    endpoints: Vec<EndpointHeat>,
    /// Its scaler's last decision, when the service scales.
    scaler: Option<crate::scale::PoolView>,
}

struct ServiceHeat<'a> {
    name: &'a str,
    protocol: &'static str,
    heat: &'a crate::heat::KeyHeat,
    shards: Vec<ShardHeat>,
    hot_cache: Option<&'a HotCache>,
    /// An HTTP service's hot-key cache.
    http_cache: Option<&'a crate::cache::flow::RouteCache>,
}

impl ServiceHeat<'_> {
    fn skew(&self) -> f64 {
        skew(&self.shards.iter().map(|s| s.rate).collect::<Vec<_>>())
    }
}

/// Every sharded (or scaled) service's heat, HTTP then memcache, from the
/// snapshot's one list of pools.
fn services<'a>(snap: &'a Snapshot, scaling: &crate::scale::Scaling) -> Vec<ServiceHeat<'a>> {
    let views = scaling.views();
    let pools = snap.pools();
    let shards = |service: &str, protocol: &str| -> Vec<ShardHeat> {
        pools.iter().filter(|p| p.protocol == protocol && p.id.service == service).map(|p| shard(p, &views)).collect()
    };
    let http = snap.services.values().filter(|s| s.sharding.is_some() || s.scaler.is_some()).map(|s| ServiceHeat {
        name: &s.name,
        protocol: "http",
        heat: &s.heat,
        hot_cache: None,
        http_cache: s.hot_cache.as_deref(),
        shards: shards(&s.name, "http"),
    });
    let memcache = snap.memcache.values().map(|s| ServiceHeat {
        name: &s.name,
        protocol: "memcache",
        heat: &s.heat,
        hot_cache: s.hot_cache.as_deref(),
        http_cache: None,
        shards: shards(&s.name, "memcache"),
    });
    http.chain(memcache).collect()
}

/// One pool's heat, whatever its protocol.
fn shard(p: &crate::config::pools::PoolRef<'_>, views: &std::collections::BTreeMap<String, crate::scale::PoolView>) -> ShardHeat {
    ShardHeat {
        name: p.id.shard_or_service().to_string(),
        rate: p.load.rate.get(),
        error_rate: p.load.error_rate.get(),
        in_flight: p.load.in_flight() as u64,
        p50: p.load.latency.quantile(0.5),
        p99: p.load.latency.quantile(0.99),
        bytes_rate: p.bytes.map(|(_, r)| r.get()),
        scaler: p.scaler.map(|_| views.get(&p.id.to_string()).cloned().unwrap_or_default()),
        endpoints: p
            .endpoints
            .iter()
            .map(|e| EndpointHeat {
                name: e.name().to_string(),
                address: e.address(),
                rate: e.rate().get(),
                in_flight: e.in_flight() as u64,
            })
            .collect(),
    }
}

/// How `key` appears in the view: see [`ShowKeys`].
fn shown(key: &[u8], show: ShowKeys) -> String {
    use std::hash::BuildHasher as _;
    static SEED: std::sync::LazyLock<std::hash::RandomState> = std::sync::LazyLock::new(std::hash::RandomState::new);
    let hash = || format!("#{:016x}", SEED.hash_one(key));
    match show {
        ShowKeys::Raw => String::from_utf8_lossy(key).into_owned(),
        ShowKeys::Hashed => hash(),
        ShowKeys::Prefix => format!("{}…{}", String::from_utf8_lossy(&key[..key.len().min(4)]), hash()),
    }
}

/// `GET /admin/heat` as typed values: written by [`view`], and read back by
/// the leader from its peers (which need only the services, shards, rates
/// and in-flight counts; every other field defaults when absent).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct HeatView {
    pub generation: u64,
    pub leader: LeaderView,
    pub services: Vec<ServiceView>,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LeaderView {
    pub elected: bool,
    pub leads: bool,
    pub terms: u64,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ServiceView {
    pub service: String,
    pub protocol: String,
    pub window_s: f64,
    /// The hottest shard's rate over the mean (absent while nothing flows).
    pub skew: Option<f64>,
    pub rate: f64,
    /// Hottest first.
    pub shards: Vec<ShardView>,
    pub hot_share: f64,
    pub sample: u32,
    pub top_keys: Vec<KeyView>,
    pub mitigation: Value,
}

/// One pool of the service (its one pool, for a replicated service).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ShardView {
    pub shard: String,
    pub rate: f64,
    pub error_rate: f64,
    pub in_flight: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub bytes_rate: Option<f64>,
    pub scaler: Option<crate::scale::PoolView>,
    pub endpoints: Vec<EndpointView>,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct EndpointView {
    pub endpoint: String,
    pub address: String,
    pub rate: f64,
    pub in_flight: u64,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct KeyView {
    /// As `admin.show_keys` says: hashed, a prefix, or raw.
    pub key: String,
    pub share: f64,
    pub error: f64,
    pub hot: bool,
}

/// A number as JSON can carry it: finite, else absent.
fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// `GET /admin/heat`.
pub fn json(snap: &Snapshot, scaling: &crate::scale::Scaling) -> Value {
    serde_json::to_value(view(snap, scaling)).unwrap_or_default()
}

/// The heat of `snap`, and this root's standing in the election.
pub fn view(snap: &Snapshot, scaling: &crate::scale::Scaling) -> HeatView {
    let show = snap.admin.as_ref().map_or(ShowKeys::default(), |a| a.show_keys);
    let services = services(snap, scaling)
        .into_iter()
        .map(|s| {
            let skew = finite(s.skew());
            let mut shards = s.shards;
            shards.sort_by(|a, b| b.rate.total_cmp(&a.rate).then_with(|| a.name.cmp(&b.name)));
            let top_keys = s
                .heat
                .top(TOP)
                .into_iter()
                .map(|k| KeyView { key: shown(&k.key, show), share: k.share, error: k.error, hot: k.hot })
                .collect();
            let p = s.heat.policy();
            ServiceView {
                service: s.name.to_string(),
                protocol: s.protocol.to_string(),
                window_s: p.window.as_secs_f64(),
                skew,
                rate: shards.iter().map(|sh| sh.rate).sum::<f64>(),
                shards: shards
                    .into_iter()
                    .map(|sh| ShardView {
                        shard: sh.name,
                        rate: sh.rate,
                        error_rate: sh.error_rate,
                        in_flight: sh.in_flight,
                        p50_ms: sh.p50.and_then(finite).map(|v| v * 1000.0),
                        p99_ms: sh.p99.and_then(finite).map(|v| v * 1000.0),
                        bytes_rate: sh.bytes_rate,
                        scaler: sh.scaler,
                        endpoints: sh
                            .endpoints
                            .into_iter()
                            .map(|e| EndpointView { endpoint: e.name, address: e.address, rate: e.rate, in_flight: e.in_flight })
                            .collect(),
                    })
                    .collect(),
                hot_share: p.hot_share,
                sample: p.sample,
                top_keys,
                mitigation: json!({
                    "spread": p.mitigation.spread,
                    "split": p.mitigation.split,
                    "cache": s.hot_cache.map(cache_json).or_else(|| s.http_cache.map(|c| json!({
                        "ttl_s": c.rules.settings.max_ttl,
                        "max_bytes": c.store.capacity,
                        "entries": c.store.entries(),
                        "bytes": c.store.bytes(),
                        "evictions": c.store.evictions(),
                    }))),
                }),
            }
        })
        .collect();
    let l = &scaling.leadership;
    let leader = LeaderView { elected: l.elected.load(Relaxed), leads: l.leads(), terms: l.terms.load(Relaxed) };
    HeatView { generation: snap.generation, leader, services }
}

fn cache_json(c: &HotCache) -> Value {
    let (entries, bytes) = c.size();
    let st = &c.stats;
    json!({
        "ttl_s": c.policy.ttl.as_secs_f64(),
        "max_bytes": c.policy.max_bytes,
        "entries": entries,
        "bytes": bytes,
        "hits": st.hits.load(Relaxed),
        "fills": st.fills.load(Relaxed),
        "invalidations": st.invalidations.load(Relaxed),
        "refused": st.refused.load(Relaxed),
    })
}

/// The `ringmaster_heat_*` series.
pub fn render(o: &mut String, snap: &Snapshot, scaling: &crate::scale::Scaling) {
    let esc = super::metrics::esc;
    let all = services(snap, scaling);
    let head = |o: &mut String, name: &str, help: &str| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge");
    };
    head(o, "ringmaster_heat_skew", "The hottest shard's request rate over the mean of the service's shards.");
    for s in &all {
        let _ = writeln!(o, "ringmaster_heat_skew{{service=\"{}\"}} {}", esc(s.name), s.skew());
    }
    head(o, "ringmaster_heat_hot_keys", "Keys whose share of the service's requests reaches hot_share.");
    for s in &all {
        let hot = s.heat.top(s.heat.policy().top_keys).iter().filter(|k| k.hot).count();
        let _ = writeln!(o, "ringmaster_heat_hot_keys{{service=\"{}\"}} {hot}", esc(s.name));
    }
    type Counter = (&'static str, &'static str, fn(&HotCache) -> u64);
    let counters: [Counter; 4] = [
        ("hits", "Hot keys' reads answered by the root's hot-key cache.", |c| c.stats.hits.load(Relaxed)),
        ("fills", "Reads sent to a shard to fill the hot-key cache.", |c| c.stats.fills.load(Relaxed)),
        ("invalidations", "Hot-key cache entries dropped by a write, delete or flush through this root.", |c| {
            c.stats.invalidations.load(Relaxed)
        }),
        ("refused", "Hot keys' answers not cached because the cache was full.", |c| c.stats.refused.load(Relaxed)),
    ];
    for (name, help, value) in counters {
        let metric = format!("ringmaster_heat_hot_cache_{name}_total");
        let _ = writeln!(o, "# HELP {metric} {help}\n# TYPE {metric} counter");
        for s in &all {
            if let Some(c) = s.hot_cache {
                let _ = writeln!(o, "{metric}{{service=\"{}\"}} {}", esc(s.name), value(c));
            }
        }
    }
    head(o, "ringmaster_scaler_replicas", "Replicas of the pool now, and what its scaler wants (desired).");
    for s in &all {
        for sh in &s.shards {
            if let Some(v) = &sh.scaler {
                let labels = format!("service=\"{}\",shard=\"{}\"", esc(s.name), esc(&sh.name));
                let _ = writeln!(o, "ringmaster_scaler_replicas{{{labels},of=\"current\"}} {}", v.current);
                let _ = writeln!(o, "ringmaster_scaler_replicas{{{labels},of=\"desired\"}} {}", v.desired);
            }
        }
    }
    let _ = writeln!(
        o,
        "# HELP ringmaster_scaler_steps_total Scale steps taken (up, down) and failed.\n# TYPE ringmaster_scaler_steps_total counter"
    );
    for s in &all {
        for sh in &s.shards {
            if let Some(v) = &sh.scaler {
                for (kind, n) in [("up", v.ups), ("down", v.downs), ("failed", v.failures)] {
                    let _ = writeln!(
                        o,
                        "ringmaster_scaler_steps_total{{service=\"{}\",shard=\"{}\",step=\"{kind}\"}} {n}",
                        esc(s.name),
                        esc(&sh.name)
                    );
                }
            }
        }
    }
    head(o, "ringmaster_heat_shard_rate", "Requests per second to the shard, averaged over the heat window.");
    for s in &all {
        for sh in &s.shards {
            let _ = writeln!(o, "ringmaster_heat_shard_rate{{service=\"{}\",shard=\"{}\"}} {}", esc(s.name), esc(&sh.name), sh.rate);
        }
    }
    head(o, "ringmaster_heat_endpoint_rate", "Requests per second to the endpoint, averaged over the heat window.");
    for s in &all {
        for sh in &s.shards {
            for e in &sh.endpoints {
                let labels = format!(
                    "service=\"{}\",shard=\"{}\",endpoint=\"{}\",address=\"{}\"",
                    esc(s.name),
                    esc(&sh.name),
                    esc(&e.name),
                    esc(&e.address)
                );
                let _ = writeln!(o, "ringmaster_heat_endpoint_rate{{{labels}}} {}", e.rate);
            }
        }
    }
    let l = &scaling.leadership;
    head(o, "ringmaster_scaler_leader", "1 while this root leads and may scale (always, with no [leader] election).");
    let _ = writeln!(o, "ringmaster_scaler_leader {}", u8::from(l.leads()));
}
