//! The config of memcache services: what `[services.NAME.memcache]` holds,
//! with nutcracker's names where nutcracker has the setting.

use crate::config::duration::Dur;
pub use crate::memcache::{Reads, Writes};
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// What a service's endpoints speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceProtocol {
    Http1,
    Http2,
    /// memcached's protocol: a service for memcache listeners.
    Memcache,
}

/// Replication, failure handling and limits of a memcache service.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MemcacheSpec {
    /// Connections from the ambassador to each endpoint, shared by all clients (nutcracker's `server_connections`).
    #[serde(default = "d_one")]
    pub server_connections: Spanned<usize>,
    /// Failures in a row that eject an endpoint (nutcracker's `server_failure_limit`); 0 never ejects.
    #[serde(default = "d_failure_limit")]
    pub server_failure_limit: u32,
    /// How long an ejected endpoint is left alone before it is tried again (nutcracker's `server_retry_timeout`).
    #[serde(default = "d_retry_timeout")]
    pub server_retry_timeout: Spanned<Dur>,
    /// A shard whose endpoints are all ejected leaves the ring until one is back,
    /// its keys placed on the next shard (nutcracker's `auto_eject_hosts`).
    #[serde(default)]
    pub auto_eject_hosts: bool,
    /// Which replica answers a write: `first`, `all` or `majority`.
    #[serde(default = "d_writes")]
    pub writes: Writes,
    /// Where reads go first: `round_robin` or `local_first` (the first listed endpoint).
    #[serde(default = "d_reads")]
    pub reads: Reads,
    /// Ask the next replica when one misses.
    #[serde(default)]
    pub miss_failover: bool,
    /// A replica that joined less than this long ago has its misses asked
    /// again of an older replica (a cold cache warming up); off when absent.
    #[serde(default)]
    pub warm_up: Option<Spanned<Dur>>,
    /// Largest value stored or read (memcached's `-I`).
    #[serde(default = "d_max_value")]
    pub max_value_bytes: Spanned<usize>,
    /// Keys in one get at most.
    #[serde(default = "d_max_keys")]
    pub max_keys_per_get: Spanned<usize>,
    /// How long a client has to finish a command it began.
    #[serde(default = "d_command_timeout")]
    pub command_timeout: Spanned<Dur>,
    /// Whether a client's `flush_all` is sent to every endpoint (memcached's
    /// `-F` turned the other way); off, it is refused and counted.
    #[serde(default)]
    pub allow_flush_all: bool,
    /// Whether `stats` tells clients the proxy's pid and the endpoints' names
    /// and addresses (`stats endpoints`).
    #[serde(default)]
    pub stats_detail: bool,
}

impl Default for MemcacheSpec {
    fn default() -> Self {
        MemcacheSpec {
            server_connections: d_one(),
            server_failure_limit: d_failure_limit(),
            server_retry_timeout: d_retry_timeout(),
            auto_eject_hosts: false,
            writes: d_writes(),
            reads: d_reads(),
            miss_failover: false,
            warm_up: None,
            max_value_bytes: d_max_value(),
            max_keys_per_get: d_max_keys(),
            command_timeout: d_command_timeout(),
            allow_flush_all: false,
            stats_detail: false,
        }
    }
}

fn d_one() -> Spanned<usize> {
    Spanned::new(0..0, 1)
}
fn d_failure_limit() -> u32 {
    2
}
fn d_retry_timeout() -> Spanned<Dur> {
    Spanned::new(0..0, Dur::secs(30))
}
fn d_writes() -> Writes {
    Writes::First
}
fn d_reads() -> Reads {
    Reads::RoundRobin
}
fn d_max_value() -> Spanned<usize> {
    Spanned::new(0..0, 1024 * 1024)
}
fn d_max_keys() -> Spanned<usize> {
    Spanned::new(0..0, 1024)
}
fn d_command_timeout() -> Spanned<Dur> {
    Spanned::new(0..0, Dur::secs(10))
}

/// A memcache listener's limits on its clients (`clients = { ... }` on the
/// listener), each listener its own: memcached's `-c` and `idle_timeout`, and
/// the bounds that keep a client that pipelines and never reads from pinning
/// the proxy's memory.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct McClientsSpec {
    /// Client connections open at once on this listener (memcached's `-c`);
    /// one more is answered `ERROR Too many open connections` and closed.
    #[serde(default = "d_max_clients")]
    pub max_connections: Spanned<usize>,
    /// Connections from one client address at once; 0: no limit.
    #[serde(default)]
    pub max_per_address: usize,
    /// A client that sends nothing for this long, with nothing in flight, is
    /// closed (memcached's `idle_timeout`); 0: never.
    #[serde(default = "d_zero")]
    pub idle_timeout: Spanned<Dur>,
    /// A client that takes no answer bytes for this long while answers wait is closed.
    #[serde(default = "d_write_timeout")]
    pub write_timeout: Spanned<Dur>,
    /// Answer bytes waiting for a client; past this, its commands are not read
    /// until it takes some (back-pressure).
    #[serde(default = "d_pending_bytes")]
    pub max_pending_bytes: Spanned<usize>,
    /// Commands of one client in flight at once; past this, reading pauses.
    #[serde(default = "d_in_flight")]
    pub max_in_flight: Spanned<usize>,
    /// Answer bytes waiting for all of the listener's clients together; past
    /// this, clients past their own max_pending_bytes are closed.
    #[serde(default = "d_total_pending")]
    pub max_total_pending_bytes: Spanned<usize>,
}

impl Default for McClientsSpec {
    fn default() -> Self {
        McClientsSpec {
            max_connections: d_max_clients(),
            max_per_address: 0,
            idle_timeout: d_zero(),
            write_timeout: d_write_timeout(),
            max_pending_bytes: d_pending_bytes(),
            max_in_flight: d_in_flight(),
            max_total_pending_bytes: d_total_pending(),
        }
    }
}

fn d_max_clients() -> Spanned<usize> {
    Spanned::new(0..0, 1024)
}
fn d_zero() -> Spanned<Dur> {
    Spanned::new(0..0, Dur::secs(0))
}
fn d_write_timeout() -> Spanned<Dur> {
    Spanned::new(0..0, Dur::secs(30))
}
fn d_pending_bytes() -> Spanned<usize> {
    Spanned::new(0..0, 1024 * 1024)
}
fn d_total_pending() -> Spanned<usize> {
    Spanned::new(0..0, 256 * 1024 * 1024)
}
fn d_in_flight() -> Spanned<usize> {
    Spanned::new(0..0, 256)
}
