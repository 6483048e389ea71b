//! The ambassador's own counters, and its answer to `stats` in memcached's
//! format: `stats` for the proxy and its service, `stats shards` and
//! `stats endpoints` for each shard and endpoint. Any client may ask, so the
//! pid and the endpoints' names and addresses are told only when the service
//! says `stats_detail = true` (endpoints are numbered in their shard otherwise).

use super::request::Command;
use super::service::{Service, COMMANDS};
use bytes::Bytes;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Process-wide counters of the memcache listeners.
#[derive(Default)]
pub struct Global {
    pub connections: AtomicU64,
    pub connections_total: AtomicU64,
    /// Lines answered with an error by the ambassador itself (bad input).
    pub bad_commands: AtomicU64,
    /// Connections closed for a line too long, or a command that never finished.
    pub closed_bad_input: AtomicU64,
    pub command_timeouts: AtomicU64,
    /// Server connections closed because an answer did not match its command.
    pub desyncs: AtomicU64,
    /// Clients closed for taking no answer bytes for the write timeout.
    pub write_timeouts: AtomicU64,
    /// Clients closed for sending nothing for the idle timeout.
    pub idle_closed: AtomicU64,
    /// Connections refused by a listener's max_connections or max_per_address.
    pub refused_connections: AtomicU64,
    /// Clients closed with answers unread while the listener's budget was spent.
    pub closed_memory: AtomicU64,
    /// Writes to memcached servers, and the commands they carried (commands
    /// from many clients go out in one write when they queue together).
    pub server_writes: AtomicU64,
    pub server_commands: AtomicU64,
}

pub static GLOBAL: Global = Global {
    connections: AtomicU64::new(0),
    connections_total: AtomicU64::new(0),
    bad_commands: AtomicU64::new(0),
    closed_bad_input: AtomicU64::new(0),
    command_timeouts: AtomicU64::new(0),
    desyncs: AtomicU64::new(0),
    write_timeouts: AtomicU64::new(0),
    idle_closed: AtomicU64::new(0),
    refused_connections: AtomicU64::new(0),
    closed_memory: AtomicU64::new(0),
    server_writes: AtomicU64::new(0),
    server_commands: AtomicU64::new(0),
};

fn started() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Marks the process start for `uptime`.
pub fn init() {
    let _ = started();
}

/// The answer to a `stats` line.
pub fn answer(svc: &Service, cmd: &Command) -> Bytes {
    let mut o = String::new();
    let arg = (cmd.tokens.len() > 1).then(|| cmd.token(1));
    match arg {
        None => general(svc, &mut o),
        Some(b"shards") => shards(svc, &mut o),
        Some(b"endpoints") => endpoints(svc, &mut o),
        Some(_) => return Bytes::from_static(b"ERROR\r\n"),
    }
    o.push_str("END\r\n");
    Bytes::from(o)
}

fn stat(o: &mut String, name: &str, value: impl std::fmt::Display) {
    let _ = write!(o, "STAT {name} {value}\r\n");
}

fn general(svc: &Service, o: &mut String) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    if svc.policy.stats_detail {
        stat(o, "pid", std::process::id());
    }
    stat(o, "uptime", started().elapsed().as_secs());
    stat(o, "time", now);
    stat(o, "version", format!("ringmaster-{}", env!("CARGO_PKG_VERSION")));
    stat(o, "service", &svc.name);
    stat(o, "curr_connections", GLOBAL.connections.load(Relaxed));
    stat(o, "total_connections", GLOBAL.connections_total.load(Relaxed));
    for (i, c) in COMMANDS.iter().enumerate() {
        stat(o, &format!("cmd_{c}"), svc.stats.commands[i].load(Relaxed));
    }
    let errors: u64 = svc.shards.iter().map(|s| s.stats.load.errors.load(Relaxed)).sum();
    let root_hits = svc.hot_cache.as_ref().map_or(0, |c| c.stats.hits.load(Relaxed));
    stat(o, "get_hits", svc.stats.get_hits.load(Relaxed));
    stat(o, "get_misses", svc.stats.get_misses.load(Relaxed));
    stat(o, "server_errors", errors);
    stat(o, "flush_refused", svc.stats.flush_refused.load(Relaxed));
    stat(o, "bad_commands", GLOBAL.bad_commands.load(Relaxed));
    stat(o, "shards", svc.shards.len());
    stat(o, "endpoints", svc.endpoints().count());
    stat(o, "endpoints_ejected", svc.endpoints().filter(|e| !e.available()).count());
    if let Some(c) = &svc.hot_cache {
        let (entries, bytes) = c.size();
        stat(o, "hot_cache_hits", root_hits);
        stat(o, "hot_cache_fills", c.stats.fills.load(Relaxed));
        stat(o, "hot_cache_invalidations", c.stats.invalidations.load(Relaxed));
        stat(o, "hot_cache_items", entries);
        stat(o, "hot_cache_bytes", bytes);
    }
}

fn shards(svc: &Service, o: &mut String) {
    for s in &svc.shards {
        let st = &s.stats;
        let n = &s.name;
        stat(o, &format!("{n}:replicas"), s.replicas.len());
        stat(o, &format!("{n}:requests"), st.load.requests.load(Relaxed));
        stat(o, &format!("{n}:hits"), st.hits.load(Relaxed));
        stat(o, &format!("{n}:misses"), st.misses.load(Relaxed));
        stat(o, &format!("{n}:errors"), st.load.errors.load(Relaxed));
        stat(o, &format!("{n}:failovers"), st.failovers.load(Relaxed));
    }
}

fn endpoints(svc: &Service, o: &mut String) {
    for s in &svc.shards {
        for (i, e) in s.replicas.iter().enumerate() {
            let st = &e.stats;
            let n = if svc.policy.stats_detail { format!("{}:{}", s.name, e.name) } else { format!("{}:{i}", s.name) };
            stat(o, &format!("{n}:requests"), st.requests.load(Relaxed));
            stat(o, &format!("{n}:errors"), st.errors.load(Relaxed));
            stat(o, &format!("{n}:timeouts"), st.timeouts.load(Relaxed));
            stat(o, &format!("{n}:ejections"), st.ejections.load(Relaxed));
            stat(o, &format!("{n}:ejected"), u8::from(!e.available()));
            stat(o, &format!("{n}:connections"), st.connections.load(Relaxed));
            stat(o, &format!("{n}:in_flight"), st.in_flight.load(Relaxed));
            stat(o, &format!("{n}:repair_owed"), st.repair.pending());
            stat(o, &format!("{n}:repair_logged"), st.repair.logged.load(Relaxed));
            stat(o, &format!("{n}:repair_replayed"), st.repair.replayed.load(Relaxed));
            stat(o, &format!("{n}:repair_flushes"), st.repair.flushes.load(Relaxed));
        }
    }
}
