//! The Prometheus text exposition of the counters in `metrics`, the pools,
//! caches and TLS listeners of the current snapshot. Rendered on scrape only.

use crate::config::Snapshot;
use crate::metrics::{Answer, GLOBAL};
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

pub(super) fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The Prometheus text exposition of everything.
pub fn render(
    snap: &Snapshot,
    scaling: &crate::scale::Scaling,
    discovery: &std::collections::BTreeMap<String, crate::discovery::PoolStatus>,
) -> String {
    let mut o = String::with_capacity(16 * 1024);
    let g = &GLOBAL;
    o.push_str("# HELP ringmaster_requests_total Requests by route, service and status class.\n# TYPE ringmaster_requests_total counter\n");
    for r in &snap.router.routes {
        for (i, c) in r.stats.by_class.iter().enumerate() {
            let _ = writeln!(
                o,
                "ringmaster_requests_total{{route=\"{}\",service=\"{}\",class=\"{}xx\"}} {}",
                esc(&r.name),
                esc(&r.service.name),
                i + 1,
                c.load(Relaxed)
            );
        }
    }
    o.push_str("# HELP ringmaster_request_duration_seconds Time from request to response headers.\n# TYPE ringmaster_request_duration_seconds histogram\n");
    for r in &snap.router.routes {
        r.stats.latency.render(
            &mut o,
            "ringmaster_request_duration_seconds",
            &format!("route=\"{}\",service=\"{}\"", esc(&r.name), esc(&r.service.name)),
        );
    }
    o.push_str(
        "# HELP ringmaster_local_answers_total Answers the proxy gave itself, by reason.\n# TYPE ringmaster_local_answers_total counter\n",
    );
    for a in Answer::ALL {
        let _ = writeln!(o, "ringmaster_local_answers_total{{reason=\"{}\"}} {}", a.reason(), g.answers[a as usize].load(Relaxed));
    }
    crate::tls::handshake::render(&mut o);
    o.push_str(
        "# HELP ringmaster_proxy_protocol_refused_total Connections on PROXY protocol listeners closed before HTTP, by reason.\n# TYPE ringmaster_proxy_protocol_refused_total counter\n",
    );
    for (reason, n) in crate::metrics::PROXY_REFUSALS.iter().zip(&g.proxy_protocol_refused) {
        let _ = writeln!(o, "ringmaster_proxy_protocol_refused_total{{reason=\"{reason}\"}} {}", n.load(Relaxed));
    }
    o.push_str("# HELP ringmaster_rate_limited_total Requests a rate-limit policy denied (429), since the config was loaded.\n# TYPE ringmaster_rate_limited_total counter\n");
    let mut seen = std::collections::HashSet::new();
    for p in snap.router.routes.iter().flat_map(|r| r.limits.every()) {
        if seen.insert(std::sync::Arc::as_ptr(&p.denied)) {
            let _ = writeln!(o, "ringmaster_rate_limited_total{{policy=\"{}\"}} {}", esc(&p.name), p.denied.load(Relaxed));
        }
    }
    render_discovery(&mut o, discovery);
    let simple: [(&str, &str, &str, u64); 14] = [
        (
            "ringmaster_proxy_protocol_accepted_total",
            "counter",
            "PROXY protocol headers read; the client address they name is the connection's.",
            g.proxy_protocol_accepted.load(Relaxed),
        ),
        (
            "ringmaster_connections_idle_closed_total",
            "counter",
            "Client connections closed after keepalive_timeout with no request.",
            g.idle_closed.load(Relaxed),
        ),
        ("ringmaster_connections_accepted_total", "counter", "Client connections accepted.", g.connections_accepted.load(Relaxed)),
        ("ringmaster_connections_active", "gauge", "Client connections open.", g.connections_active.load(Relaxed)),
        (
            "ringmaster_connection_errors_total",
            "counter",
            "Client connections that ended in a protocol or I/O error.",
            g.connection_errors.load(Relaxed),
        ),
        ("ringmaster_reloads_total", "counter", "Config reloads that took effect.", g.reloads_ok.load(Relaxed)),
        (
            "ringmaster_reload_failures_total",
            "counter",
            "Config reloads rejected; the old config kept serving.",
            g.reloads_failed.load(Relaxed),
        ),
        (
            "ringmaster_access_log_dropped_total",
            "counter",
            "Access log lines dropped because the writer fell behind.",
            g.access_log_dropped.load(Relaxed),
        ),
        (
            "ringmaster_admin_refused_total",
            "counter",
            "Admin requests refused: no or a wrong token, a wrong method, cross-site.",
            g.admin_refused.load(Relaxed),
        ),
        (
            "ringmaster_upstream_stalled_total",
            "counter",
            "Upstream response bodies cut off after a gap longer than timeouts.body_idle.",
            g.upstream_stalled.load(Relaxed),
        ),
        ("ringmaster_upgrades_total", "counter", "Upgrades (WebSocket and others) switched to a tunnel.", g.upgrades.load(Relaxed)),
        (
            "ringmaster_upgrades_refused_total",
            "counter",
            "Upgrades not forwarded: their route does not list the protocol (h2c is never forwarded).",
            g.upgrades_refused.load(Relaxed),
        ),
        ("ringmaster_tunnels_open", "gauge", "Upgraded connections open now.", g.tunnels_open.load(Relaxed)),
        (
            "ringmaster_tunnels_idle_closed_total",
            "counter",
            "Tunnels closed after timeouts.body_idle with no byte either way.",
            g.tunnels_idle_closed.load(Relaxed),
        ),
    ];
    unlabelled(&mut o, &simple);
    if let Some(r) = &snap.limiter.redis {
        render_redis(&mut o, r);
    }
    render_pools(&mut o, snap);
    super::memcache::render(&mut o, snap.memcache.values());
    super::heat::render(&mut o, snap, scaling);
    render_caches(&mut o, snap);
    o
}

/// The shared (Redis) rate-limit store: health, failures, transitions, skips, time down.
fn render_redis(o: &mut String, r: &crate::limit::redis::RedisStore) {
    let rows: [(&str, &str, &str, u64); 4] = [
        ("ringmaster_rate_limit_store_healthy", "gauge", "1 while the shared (Redis) rate-limit store answers.", r.healthy() as u64),
        (
            "ringmaster_rate_limit_store_failures_total",
            "counter",
            "Decisions the shared store failed (error or timeout).",
            r.failures.load(Relaxed),
        ),
        ("ringmaster_rate_limit_store_transitions_total", "counter", "Changes between answering and failing.", r.transitions.load(Relaxed)),
        (
            "ringmaster_rate_limit_store_skipped_total",
            "counter",
            "Decisions made by the failure mode at once, without asking the store known to be down.",
            r.skipped.load(Relaxed),
        ),
    ];
    unlabelled(o, &rows);
    let name = "ringmaster_rate_limit_store_degraded_seconds_total";
    let _ = writeln!(o, "# HELP {name} Time the shared store was known down.\n# TYPE {name} counter\n{name} {:.3}", r.degraded_seconds());
}

/// Metrics without labels: (name, kind, help, value).
fn unlabelled(o: &mut String, rows: &[(&str, &str, &str, u64)]) {
    for (name, kind, help, v) in rows {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
    }
}

/// Certificate expiry and reloads of the https listeners.
pub fn render_tls(o: &mut String, states: &[std::sync::Arc<crate::tls::server::TlsState>]) {
    o.push_str("# HELP ringmaster_tls_certificate_not_after_seconds When each served certificate expires (Unix time).\n# TYPE ringmaster_tls_certificate_not_after_seconds gauge\n");
    for s in states {
        for c in &s.loaded().certs {
            if let Some(f) = &c.facts {
                let _ = writeln!(
                    o,
                    "ringmaster_tls_certificate_not_after_seconds{{listener=\"{}\",cert=\"{}\",subject=\"{}\"}} {}",
                    esc(&s.listener),
                    esc(&c.cert),
                    esc(&f.subject),
                    f.not_after
                );
            }
        }
    }
    o.push_str("# HELP ringmaster_tls_certificate_reloads_total Certificate reloads of each https listener, by result.\n# TYPE ringmaster_tls_certificate_reloads_total counter\n");
    for s in states {
        let l = esc(&s.listener);
        let _ = writeln!(o, "ringmaster_tls_certificate_reloads_total{{listener=\"{l}\",result=\"ok\"}} {}", s.reloads.load(Relaxed));
        let _ = writeln!(
            o,
            "ringmaster_tls_certificate_reloads_total{{listener=\"{l}\",result=\"failed\"}} {}",
            s.reload_failures.load(Relaxed)
        );
    }
}

fn render_caches(o: &mut String, snap: &Snapshot) {
    let caches: Vec<(&str, &crate::cache::store::Store)> =
        snap.router.routes.iter().filter_map(|r| r.cache.as_ref().map(|c| (r.name.as_str(), &*c.store))).collect();
    type Get = fn(&crate::cache::store::Store) -> u64;
    let rows: [(&str, &str, &str, Get); 15] = [
        ("ringmaster_cache_hits_total", "counter", "Requests answered from the cache (fresh).", |s| s.stats.hits.load(Relaxed)),
        ("ringmaster_cache_misses_total", "counter", "Requests with no usable stored answer.", |s| s.stats.misses.load(Relaxed)),
        ("ringmaster_cache_stale_served_total", "counter", "Stale answers served (stale-while-revalidate, stale-if-error).", |s| {
            s.stats.stale_served.load(Relaxed)
        }),
        ("ringmaster_cache_revalidations_total", "counter", "Conditional requests sent to refresh stale entries.", |s| {
            s.stats.revalidations.load(Relaxed)
        }),
        ("ringmaster_cache_revalidated_total", "counter", "Stale entries refreshed by a 304.", |s| s.stats.revalidated_304.load(Relaxed)),
        ("ringmaster_cache_coalesced_waits_total", "counter", "Requests that waited for another's upstream answer.", |s| {
            s.stats.coalesced_waits.load(Relaxed)
        }),
        ("ringmaster_cache_stored_total", "counter", "Responses stored.", |s| s.stats.stored.load(Relaxed)),
        ("ringmaster_cache_not_stored_total", "counter", "Responses not storable (private, no-store, Set-Cookie, ...).", |s| {
            s.stats.not_stored.load(Relaxed)
        }),
        ("ringmaster_cache_too_large_total", "counter", "Responses over the object size limit.", |s| s.stats.too_large.load(Relaxed)),
        ("ringmaster_cache_purged_total", "counter", "Entries removed by purges.", |s| s.stats.purged.load(Relaxed)),
        ("ringmaster_cache_invalidated_total", "counter", "Keys invalidated by unsafe methods.", |s| s.stats.invalidated.load(Relaxed)),
        ("ringmaster_cache_evictions_total", "counter", "Entries evicted for space.", |s| s.evictions()),
        ("ringmaster_cache_variant_evictions_total", "counter", "Variants evicted to keep a key within max_variants.", |s| {
            s.stats.variant_evictions.load(Relaxed)
        }),
        ("ringmaster_cache_bytes", "gauge", "Bytes held by the store.", |s| s.bytes()),
        ("ringmaster_cache_entries", "gauge", "Keys held by the store.", |s| s.entries() as u64),
    ];
    for (name, kind, help, get) in rows {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (route, store) in &caches {
            let _ = writeln!(o, "{name}{{route=\"{}\"}} {}", esc(route), get(store));
        }
    }
}

/// The labels of a pool: its service, and its shard in a sharded service.
fn pool_labels(p: &crate::upstream::Pool) -> String {
    match &p.shard {
        Some(s) => format!("service=\"{}\",shard=\"{}\"", esc(&p.service), esc(s)),
        None => format!("service=\"{}\"", esc(&p.service)),
    }
}

fn render_pools(o: &mut String, snap: &Snapshot) {
    let now = crate::clock::now_ms();
    let pools: Vec<&crate::upstream::Pool> = snap.services.values().flat_map(|s| s.pools.iter()).collect();
    type Row = (&'static str, &'static str, &'static str);
    o.push_str("# HELP ringmaster_pool_requests_total Answers of each pool (each shard) by status class, the proxy's own included.\n# TYPE ringmaster_pool_requests_total counter\n");
    for p in &pools {
        let l = pool_labels(p);
        for (i, c) in p.stats.by_class.iter().enumerate() {
            let _ = writeln!(o, "ringmaster_pool_requests_total{{{l},class=\"{}xx\"}} {}", i + 1, c.load(Relaxed));
        }
    }
    o.push_str("# HELP ringmaster_pool_request_duration_seconds Time to response headers, per pool (per shard).\n# TYPE ringmaster_pool_request_duration_seconds histogram\n");
    for p in &pools {
        p.stats.load.latency.render(o, "ringmaster_pool_request_duration_seconds", &pool_labels(p));
    }
    let pool_metrics: [Row; 7] = [
        ("ringmaster_pool_endpoints", "gauge", "Endpoints in the pool."),
        ("ringmaster_pool_healthy_endpoints", "gauge", "Endpoints taking traffic."),
        ("ringmaster_pool_in_flight", "gauge", "Requests in flight to the pool."),
        ("ringmaster_pool_retries_total", "counter", "Retries on another endpoint."),
        ("ringmaster_pool_retries_denied_total", "counter", "Retries refused by the retry budget."),
        ("ringmaster_pool_fail_open_total", "counter", "Picks made while every endpoint was unhealthy."),
        ("ringmaster_pool_ejections_capped_total", "counter", "Ejections not made because max_ejection_percent of the pool was out."),
    ];
    for (i, (name, kind, help)) in pool_metrics.iter().enumerate() {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for p in &pools {
            let v = match i {
                0 => p.endpoints.len() as u64,
                1 => p.healthy_count() as u64,
                2 => p.stats.load.in_flight() as u64,
                3 => p.stats.retries.load(Relaxed),
                4 => p.stats.retries_denied.load(Relaxed),
                5 => p.stats.fail_open_picks.load(Relaxed),
                _ => p.stats.ejections_capped.load(Relaxed),
            };
            let _ = writeln!(o, "{name}{{{}}} {v}", pool_labels(p));
        }
    }
    let ep_metrics: [Row; 9] = [
        ("ringmaster_endpoint_requests_total", "counter", "Requests sent to the endpoint."),
        ("ringmaster_endpoint_errors_total", "counter", "Connect failures, timeouts and 5xx answers of the endpoint."),
        ("ringmaster_endpoint_in_flight", "gauge", "Requests in flight to the endpoint."),
        ("ringmaster_endpoint_healthy", "gauge", "1 when the endpoint takes traffic."),
        ("ringmaster_endpoint_ejections_total", "counter", "Passive ejections of the endpoint."),
        ("ringmaster_endpoint_connections_open", "gauge", "Upstream connections open to the endpoint."),
        ("ringmaster_endpoint_connections_idle", "gauge", "Upstream connections idle in the endpoint's pool."),
        ("ringmaster_endpoint_connections_opened_total", "counter", "Upstream connections opened to the endpoint."),
        ("ringmaster_endpoint_connections_reused_total", "counter", "Requests sent on a pooled upstream connection."),
    ];
    for (i, (name, kind, help)) in ep_metrics.iter().enumerate() {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for p in &pools {
            let l = pool_labels(p);
            for ep in &p.endpoints {
                let s = &ep.stats;
                let c = &ep.conns.stats;
                let v = match i {
                    0 => s.requests.load(Relaxed),
                    1 => s.errors.load(Relaxed),
                    2 => s.in_flight.load(Relaxed) as u64,
                    3 => ep.available(now) as u64,
                    4 => s.ejections_total.load(Relaxed),
                    5 => c.open.load(Relaxed) as u64,
                    6 => c.idle.load(Relaxed) as u64,
                    7 => c.opened.load(Relaxed),
                    _ => c.reused.load(Relaxed),
                };
                let _ = writeln!(o, "{name}{{{l},endpoint=\"{}\",address=\"{}\"}} {v}", esc(&ep.name), esc(&ep.address));
            }
        }
    }
}

/// Each discovered pool: its endpoints, updates, holds by reason, and the age of the hold on now.
fn render_discovery(o: &mut String, status: &std::collections::BTreeMap<String, crate::discovery::PoolStatus>) {
    if status.is_empty() {
        return;
    }
    o.push_str("# HELP ringmaster_discovery_endpoints Endpoints a discovered pool has now.\n# TYPE ringmaster_discovery_endpoints gauge\n");
    for (pool, s) in status {
        let _ = writeln!(o, "ringmaster_discovery_endpoints{{pool=\"{}\"}} {}", esc(pool), s.endpoints.len());
    }
    o.push_str(
        "# HELP ringmaster_discovery_updates_total Pool updates discovery made.\n# TYPE ringmaster_discovery_updates_total counter\n",
    );
    for (pool, s) in status {
        let _ = writeln!(o, "ringmaster_discovery_updates_total{{pool=\"{}\"}} {}", esc(pool), s.updates);
    }
    o.push_str("# HELP ringmaster_discovery_holds_total Answers held by the guardrails (the last known set kept serving), by reason.\n# TYPE ringmaster_discovery_holds_total counter\n");
    for (pool, s) in status {
        for why in crate::discovery::Hold::ALL {
            let n = s.holds.get(why.reason()).copied().unwrap_or(0);
            let _ = writeln!(o, "ringmaster_discovery_holds_total{{pool=\"{}\",reason=\"{}\"}} {n}", esc(pool), why.reason());
        }
    }
    o.push_str("# HELP ringmaster_discovery_held_seconds How long the pool's current hold has lasted (0: none).\n# TYPE ringmaster_discovery_held_seconds gauge\n");
    for (pool, s) in status {
        let _ = writeln!(o, "ringmaster_discovery_held_seconds{{pool=\"{}\"}} {:.1}", esc(pool), s.held_seconds);
    }
}
