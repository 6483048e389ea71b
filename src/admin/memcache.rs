//! The ambassador's state for operators: Prometheus series per service, shard
//! and endpoint (commands, hits, misses, errors, failovers, latency, in flight,
//! ejections, connections), and its services in `/admin/shards`.

use super::metrics::esc;
use crate::memcache::service::COMMANDS;
use crate::memcache::stats::GLOBAL;
use crate::memcache::Service;
use serde_json::json;
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

/// Appends the memcache series to a Prometheus text page.
pub fn render<'a>(o: &mut String, services: impl Iterator<Item = &'a std::sync::Arc<Service>> + Clone) {
    let g = &GLOBAL;
    let rows = [
        ("ringmaster_memcache_connections", "gauge", "Client connections open to memcache listeners.", g.connections.load(Relaxed)),
        (
            "ringmaster_memcache_connections_total",
            "counter",
            "Client connections accepted by memcache listeners.",
            g.connections_total.load(Relaxed),
        ),
        (
            "ringmaster_memcache_bad_commands_total",
            "counter",
            "Client lines answered with an error by the ambassador itself.",
            g.bad_commands.load(Relaxed),
        ),
        (
            "ringmaster_memcache_closed_bad_input_total",
            "counter",
            "Client connections closed for input that cannot be framed.",
            g.closed_bad_input.load(Relaxed),
        ),
        (
            "ringmaster_memcache_command_timeouts_total",
            "counter",
            "Client connections closed for a command left half-sent.",
            g.command_timeouts.load(Relaxed),
        ),
        (
            "ringmaster_memcache_desyncs_total",
            "counter",
            "Server connections closed because an answer did not match the command it answered.",
            g.desyncs.load(Relaxed),
        ),
        (
            "ringmaster_memcache_write_timeouts_total",
            "counter",
            "Client connections closed for taking no answer bytes for the write timeout.",
            g.write_timeouts.load(Relaxed),
        ),
        (
            "ringmaster_memcache_idle_closed_total",
            "counter",
            "Client connections closed after the idle timeout.",
            g.idle_closed.load(Relaxed),
        ),
        (
            "ringmaster_memcache_refused_connections_total",
            "counter",
            "Client connections refused by a listener's max_connections or max_per_address.",
            g.refused_connections.load(Relaxed),
        ),
        (
            "ringmaster_memcache_closed_memory_total",
            "counter",
            "Client connections closed with answers unread while their listener's max_total_pending_bytes was spent.",
            g.closed_memory.load(Relaxed),
        ),
        ("ringmaster_memcache_server_writes_total", "counter", "Writes to memcached servers.", g.server_writes.load(Relaxed)),
        (
            "ringmaster_memcache_server_commands_total",
            "counter",
            "Commands written to memcached servers (per write: this over server_writes_total).",
            g.server_commands.load(Relaxed),
        ),
    ];
    for (name, kind, help, v) in rows {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
    }
    o.push_str("# HELP ringmaster_memcache_commands_total Client commands by kind.\n# TYPE ringmaster_memcache_commands_total counter\n");
    for s in services.clone() {
        for (i, c) in COMMANDS.iter().enumerate() {
            let _ = writeln!(
                o,
                "ringmaster_memcache_commands_total{{service=\"{}\",command=\"{c}\"}} {}",
                esc(&s.name),
                s.stats.commands[i].load(Relaxed)
            );
        }
    }
    type Get = fn(&crate::memcache::service::ShardStats) -> u64;
    let shard_rows: [(&str, &str, &str, Get); 6] = [
        ("ringmaster_memcache_shard_requests_total", "counter", "Commands sent to the shard.", |s| s.load.requests.load(Relaxed)),
        ("ringmaster_memcache_shard_hits_total", "counter", "Reads of the shard that found the key.", |s| s.hits.load(Relaxed)),
        ("ringmaster_memcache_shard_misses_total", "counter", "Reads of the shard that missed.", |s| s.misses.load(Relaxed)),
        ("ringmaster_memcache_shard_errors_total", "counter", "Commands of the shard that failed on every replica asked.", |s| {
            s.load.errors.load(Relaxed)
        }),
        ("ringmaster_memcache_shard_failovers_total", "counter", "Reads asked of another replica after one failed or missed.", |s| {
            s.failovers.load(Relaxed)
        }),
        ("ringmaster_memcache_shard_in_flight", "gauge", "Commands in flight to the shard.", |s| s.load.in_flight() as u64),
    ];
    for (name, kind, help, get) in shard_rows {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in services.clone() {
            for sh in &s.shards {
                let _ = writeln!(o, "{name}{{service=\"{}\",shard=\"{}\"}} {}", esc(&s.name), esc(&sh.name), get(&sh.stats));
            }
        }
    }
    o.push_str("# HELP ringmaster_memcache_shard_duration_seconds Time to a shard's answer, failovers included.\n# TYPE ringmaster_memcache_shard_duration_seconds histogram\n");
    for s in services.clone() {
        for sh in &s.shards {
            sh.stats.load.latency.render(
                o,
                "ringmaster_memcache_shard_duration_seconds",
                &format!("service=\"{}\",shard=\"{}\"", esc(&s.name), esc(&sh.name)),
            );
        }
    }
    render_endpoints(o, services);
}

/// The per-endpoint series.
fn render_endpoints<'a>(o: &mut String, services: impl Iterator<Item = &'a std::sync::Arc<Service>> + Clone) {
    type EpGet = fn(&crate::memcache::upstream::Endpoint) -> u64;
    let ep_rows: [(&str, &str, &str, EpGet); 10] = [
        ("ringmaster_memcache_endpoint_requests_total", "counter", "Commands sent to the endpoint.", |e| e.stats.requests.load(Relaxed)),
        (
            "ringmaster_memcache_endpoint_errors_total",
            "counter",
            "Commands the endpoint failed (connect, timeout, close, malformed answer).",
            |e| e.stats.errors.load(Relaxed),
        ),
        ("ringmaster_memcache_endpoint_timeouts_total", "counter", "Commands the endpoint did not answer in time.", |e| {
            e.stats.timeouts.load(Relaxed)
        }),
        ("ringmaster_memcache_endpoint_ejections_total", "counter", "Ejections after server_failure_limit failures in a row.", |e| {
            e.stats.ejections.load(Relaxed)
        }),
        ("ringmaster_memcache_endpoint_healthy", "gauge", "1 when the endpoint is not ejected.", |e| e.available() as u64),
        ("ringmaster_memcache_endpoint_connections", "gauge", "Connections open to the endpoint.", |e| {
            e.stats.connections.load(Relaxed) as u64
        }),
        ("ringmaster_memcache_endpoint_in_flight", "gauge", "Commands queued or sent to the endpoint and not yet answered.", |e| {
            e.stats.in_flight.load(Relaxed) as u64
        }),
        (
            "ringmaster_memcache_endpoint_repair_owed",
            "gauge",
            "Keys the endpoint missed writes of, to delete before it serves reads.",
            |e| e.stats.repair.pending() as u64,
        ),
        ("ringmaster_memcache_endpoint_repair_replayed_total", "counter", "Keys deleted on the endpoint by repair replays.", |e| {
            e.stats.repair.replayed.load(Relaxed)
        }),
        ("ringmaster_memcache_endpoint_repair_flushes_total", "counter", "Flushes of the endpoint after its repair log overflowed.", |e| {
            e.stats.repair.flushes.load(Relaxed)
        }),
    ];
    for (name, kind, help, get) in ep_rows {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in services.clone() {
            for sh in &s.shards {
                for e in &sh.replicas {
                    let _ = writeln!(
                        o,
                        "{name}{{service=\"{}\",shard=\"{}\",endpoint=\"{}\",address=\"{}\"}} {}",
                        esc(&s.name),
                        esc(&sh.name),
                        esc(&e.name),
                        e.addr,
                        get(e)
                    );
                }
            }
        }
    }
    o.push_str("# HELP ringmaster_memcache_endpoint_duration_seconds Time to an endpoint's answer.\n# TYPE ringmaster_memcache_endpoint_duration_seconds histogram\n");
    for s in services {
        for sh in &s.shards {
            for e in &sh.replicas {
                let l = format!("service=\"{}\",shard=\"{}\",endpoint=\"{}\"", esc(&s.name), esc(&sh.name), esc(&e.name));
                e.stats.latency.render(o, "ringmaster_memcache_endpoint_duration_seconds", &l);
            }
        }
    }
}

/// A memcache service as `/admin/shards` shows it.
pub fn json(s: &Service) -> serde_json::Value {
    let shards: Vec<_> = s
        .shards
        .iter()
        .map(|sh| {
            let st = &sh.stats;
            json!({
                "shard": sh.name,
                "requests": st.load.requests.load(Relaxed),
                "hits": st.hits.load(Relaxed),
                "misses": st.misses.load(Relaxed),
                "errors": st.load.errors.load(Relaxed),
                "failovers": st.failovers.load(Relaxed),
                "in_flight": st.load.in_flight(),
                "endpoints": sh.replicas.iter().map(|e| json!({
                    "name": e.name,
                    "address": e.addr.to_string(),
                    "healthy": e.available(),
                    "ejected_for_ms": e.ejected_for_ms(),
                    "requests": e.stats.requests.load(Relaxed),
                    "errors": e.stats.errors.load(Relaxed),
                    "timeouts": e.stats.timeouts.load(Relaxed),
                    "ejections": e.stats.ejections.load(Relaxed),
                    "connections": e.stats.connections.load(Relaxed),
                    "in_flight": e.stats.in_flight.load(Relaxed),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "service": s.name, "protocol": "memcache", "function": s.ring.function().name(), "key": "the memcache key", "shards": shards })
}
