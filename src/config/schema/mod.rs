//! The config file's shape: serde types that mirror the TOML a user writes.
//!
//! Values that later checks must point at are `Spanned`, so every error can name
//! its file, line and column. Defaults live here, next to the field they fill.

mod admin;
mod cache;
pub mod discovery;
pub mod heat;
mod identity;
mod memcache;
pub mod scale;
mod tls;

pub use admin::*;
pub use cache::*;
pub use identity::*;
pub use memcache::*;
pub use tls::*;

use super::duration::Dur;
pub use crate::accesslog::LogFormat;
pub use crate::balance::BalancerKind;
use crate::hash::KeyHash;
pub use crate::key::Fallback;
use crate::key::KeySpec;
use crate::ring::Function;
pub use crate::shard::FanOutPolicy;
pub use crate::upstream::UpstreamProtocol;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use toml::Spanned;

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerSpec,
    #[serde(default)]
    pub admin: AdminSpec,
    #[serde(default)]
    pub access_log: Option<AccessLogSpec>,
    #[serde(default)]
    pub limits: LimitsSpec,
    #[serde(default)]
    pub listeners: Vec<ListenerSpec>,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    #[serde(default)]
    pub services: BTreeMap<Spanned<String>, ServiceSpec>,
    /// Named rate-limit policies, applied by routes.
    #[serde(default)]
    pub rate_limits: BTreeMap<Spanned<String>, RateLimitSpec>,
    #[serde(default)]
    pub identity: IdentitySpec,
    /// Where rate-limit counters live: in process (default) or in Redis.
    #[serde(default)]
    pub rate_limit_store: Option<RateLimitStoreSpec>,
    /// How several roots agree on the one that scales (the only root leads when absent).
    #[serde(default)]
    pub leader: Option<Spanned<scale::LeaderSpec>>,
}

/// Process-wide settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    /// Worker threads; 0 means one per available core.
    #[serde(default)]
    pub workers: usize,
    /// How long in-flight requests may run after SIGTERM before the process exits.
    #[serde(default = "d_grace")]
    pub grace_period: Dur,
    /// Peers (CIDR or bare address) whose X-Forwarded-For and Forwarded headers are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    /// Whose HTTP/1 code talks to clients and upstreams: `ringmaster` (one task
    /// drives a request end to end) or `hyper` (kept for one release, to compare).
    #[serde(default)]
    pub http1: Http1Engine,
    /// HTTP listeners bind with SO_REUSEPORT, so that several ringmaster
    /// processes can share a port and the kernel spreads connections over
    /// them (nginx's `listen ... reuseport`); off by default, as a second
    /// process on the same port is then no longer refused. A reload applies
    /// it to listeners it binds, not to those already open.
    #[serde(default)]
    pub reuse_port: bool,
}

/// The `[server] http1` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Http1Engine {
    #[default]
    Ringmaster,
    Hyper,
}

impl Default for ServerSpec {
    fn default() -> Self {
        ServerSpec { workers: 0, grace_period: d_grace(), trusted_proxies: Vec::new(), http1: Http1Engine::Ringmaster, reuse_port: false }
    }
}

/// One line per request, off unless this table is present.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogSpec {
    #[serde(default = "d_log_format")]
    pub format: LogFormat,
    /// A file path, or "stdout" (the default).
    #[serde(default = "d_stdout")]
    pub path: String,
}

/// Limits that protect the proxy from clients.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Total bytes of the request line and headers; more gets 431.
    #[serde(default = "d_max_header_bytes")]
    pub max_header_bytes: Spanned<usize>,
    /// Number of request headers; more gets 431.
    #[serde(default = "d_max_headers")]
    pub max_headers: Spanned<usize>,
    /// Request body bytes; more gets 413.
    #[serde(default = "d_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Time a client has to send a request's headers, from their first byte (from
    /// accept, or the TLS handshake, for the first request).
    #[serde(default = "d_header_timeout")]
    pub header_read_timeout: Spanned<Dur>,
    /// How long a connection may stay open with no request in flight and nothing
    /// sent either way (waiting between keep-alive requests, an idle HTTP/2 connection).
    #[serde(default = "d_keepalive_timeout")]
    pub keepalive_timeout: Spanned<Dur>,
    /// Concurrent client connections over all listeners; further accepts wait.
    #[serde(default = "d_max_connections")]
    pub max_connections: usize,
    /// Concurrent connections from one client address; more are answered 429
    /// and closed. 0: no limit. Raise it for clients behind one NAT address.
    #[serde(default = "d_per_client")]
    pub max_connections_per_client: usize,
    /// Longest pause between chunks of a request body; slower clients get 408.
    #[serde(default = "d_body_timeout")]
    pub body_read_timeout: Dur,
    /// Minimum average request-body rate in bytes per second, enforced after
    /// 5 s (0: off); 500 as Apache's mod_reqtimeout `MinRate`.
    #[serde(default = "d_body_min_rate")]
    pub body_min_rate: u64,
    /// HTTP/2 streams a client may have open at once on one connection.
    #[serde(default = "d_h2_streams")]
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 streams a client may reset before they are accepted, and streams
    /// reset for errors, before the connection is closed (reset-flood defence).
    #[serde(default = "d_h2_resets")]
    pub h2_max_reset_streams: usize,
}

impl Default for LimitsSpec {
    fn default() -> Self {
        LimitsSpec {
            max_header_bytes: d_max_header_bytes(),
            max_headers: d_max_headers(),
            max_body_bytes: d_max_body_bytes(),
            header_read_timeout: d_header_timeout(),
            keepalive_timeout: d_keepalive_timeout(),
            max_connections: d_max_connections(),
            max_connections_per_client: d_per_client(),
            body_read_timeout: d_body_timeout(),
            body_min_rate: d_body_min_rate(),
            h2_max_concurrent_streams: d_h2_streams(),
            h2_max_reset_streams: d_h2_resets(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerProtocol {
    Http,
    /// TLS terminated here (see `tls`).
    Https,
    /// The ambassador: memcached's text and meta protocols, to a memcache service.
    Memcache,
}

/// An address the proxy accepts client connections on.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSpec {
    pub name: Spanned<String>,
    pub listen: Spanned<String>,
    #[serde(default = "d_http")]
    pub protocol: Spanned<ListenerProtocol>,
    #[serde(default)]
    pub tls: Option<Spanned<TlsSpec>>,
    /// Plain listeners: answer every request with a 308 to the same URL over
    /// https, on this port (443 is left out of the URL).
    #[serde(default)]
    pub redirect_to_https: Option<u16>,
    /// https listeners: the Strict-Transport-Security value added to answers,
    /// such as "max-age=31536000; includeSubDomains".
    #[serde(default)]
    pub hsts: Option<Spanned<String>>,
    /// Remove `.` and `..` segments and decode percent-encoded unreserved characters
    /// in the path before routing (Envoy's normalize_path); on by default.
    #[serde(default = "d_true")]
    pub normalize_path: bool,
    /// Merge repeated slashes in the path before routing; on by default.
    #[serde(default = "d_true")]
    pub merge_slashes: bool,
    /// Every connection starts with a PROXY protocol header (v1 or v2) from a
    /// peer in `[server] trusted_proxies`, naming the client; connections from
    /// other peers, or without a valid header, are closed.
    #[serde(default)]
    pub proxy_protocol: Option<Spanned<bool>>,
    /// memcache listeners: the (memcache) service every command goes to.
    #[serde(default)]
    pub service: Option<Spanned<String>>,
    /// memcache listeners: limits on their clients.
    #[serde(default)]
    pub clients: Option<Spanned<McClientsSpec>>,
}

/// A match on host, path prefix and method that leads to a service.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    /// Exact host (port ignored), or `*.example.com`; absent matches any host.
    #[serde(default)]
    pub host: Option<Spanned<String>>,
    #[serde(default = "d_slash")]
    pub path_prefix: Spanned<String>,
    /// Methods this route takes; empty takes all.
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
    /// Listener names this route is served on; empty means all.
    #[serde(default)]
    pub listeners: Vec<Spanned<String>>,
    pub service: Spanned<String>,
    /// Sharded services: send every request of this route to every shard.
    #[serde(default)]
    pub fan_out: bool,
    /// Rate-limit policies (names of `[rate_limits.NAME]`); all apply, the strictest decides.
    #[serde(default)]
    pub rate_limit: Vec<Spanned<String>>,
    /// Policies by identity tier: `anonymous`, or a tier of `[[identity.keys]]`.
    #[serde(default)]
    pub rate_limit_tiers: BTreeMap<String, Vec<Spanned<String>>>,
    /// The route's HTTP cache; absent means no caching.
    #[serde(default)]
    pub cache: Option<Spanned<CacheSpec>>,
    /// Upgrade protocols forwarded (a tunnel after the 101); others are
    /// ignored, the request forwarded as plain HTTP. `h2c` is never allowed.
    #[serde(default)]
    pub upgrades: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceKind {
    Replicated,
    Sharded,
}

/// Requests sent to every shard.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FanOutSpec {
    #[serde(default = "d_fan_policy")]
    pub policy: FanOutPolicy,
    /// Shards asked at once.
    #[serde(default = "d_fan_concurrency")]
    pub concurrency: Spanned<usize>,
    /// Each shard's answer must arrive, body and all, within this.
    #[serde(default = "d_fan_timeout")]
    pub timeout: Spanned<Dur>,
    /// Largest answer body kept per shard.
    #[serde(default = "d_fan_body")]
    pub max_body_bytes: usize,
    /// Largest sum of the answer bodies of one fan-out (502 beyond).
    #[serde(default = "d_fan_body")]
    pub max_total_bytes: usize,
    /// Fan-outs in flight at once over the service.
    #[serde(default = "d_fan_in_flight")]
    pub max_in_flight: Spanned<usize>,
    /// How long a fan-out beyond `max_in_flight` waits before 503.
    #[serde(default = "d_fan_queue")]
    pub queue_timeout: Dur,
}

impl Default for FanOutSpec {
    fn default() -> Self {
        FanOutSpec {
            policy: d_fan_policy(),
            concurrency: d_fan_concurrency(),
            timeout: d_fan_timeout(),
            max_body_bytes: d_fan_body(),
            max_total_bytes: d_fan_body(),
            max_in_flight: d_fan_in_flight(),
            queue_timeout: d_fan_queue(),
        }
    }
}

/// One shard of a sharded service: a pool of replicas. Health checks,
/// timeouts, passive ejection and retries come from the service.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShardSpec {
    #[serde(default = "d_weight")]
    pub weight: Spanned<u32>,
    /// The shard's balancer; the service's when absent.
    #[serde(default)]
    pub balancer: Option<Spanned<BalancerKind>>,
    #[serde(default)]
    pub hash: Option<Spanned<HashSpec>>,
    #[serde(default)]
    pub cookie: Option<Spanned<CookieSpec>>,
    #[serde(default)]
    pub endpoints: Vec<EndpointSpec>,
    /// The shard's readiness probes; the service's when absent.
    #[serde(default)]
    pub health: Option<HealthSpec>,
}

/// The `hash` balancer: a key, the function that maps it, and bounded load.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HashSpec {
    #[serde(default = "d_key")]
    pub key: KeySpec,
    /// Tried when `key` is missing, before `fallback`.
    #[serde(default)]
    pub fallback_key: Option<KeySpec>,
    #[serde(default = "d_random")]
    pub fallback: Spanned<Fallback>,
    #[serde(default = "d_function")]
    pub function: Spanned<Function>,
    /// The key hash: `xxh3` (every function's default), or for `ketama_twemproxy`
    /// nutcracker's `fnv1a_64` (its default there), `fnv1a_32` or `md5`.
    #[serde(default)]
    pub hash: Option<Spanned<KeyHash>>,
    /// No endpoint takes more than this factor of the mean in-flight load; overflow
    /// walks on in the function's order. 0 turns the bound off.
    #[serde(default = "d_balance_factor")]
    pub balance_factor: Spanned<f64>,
    /// Two characters such as "{}": only the text between them decides.
    #[serde(default)]
    pub hash_tag: Option<Spanned<String>>,
}

impl Default for HashSpec {
    fn default() -> Self {
        HashSpec {
            key: d_key(),
            fallback_key: None,
            fallback: d_random(),
            function: d_function(),
            hash: None,
            balance_factor: d_balance_factor(),
            hash_tag: None,
        }
    }
}

impl HashSpec {
    /// The key hash in force: the configured one, else nutcracker's `fnv1a_64` for
    /// `ketama_twemproxy` (placement compatible with a nutcracker fleet) and XXH3 for the rest.
    pub fn key_hash(&self) -> KeyHash {
        match (&self.hash, self.function.get_ref()) {
            (Some(h), _) => *h.get_ref(),
            (None, Function::KetamaTwemproxy) => KeyHash::Fnv1a64,
            (None, _) => KeyHash::Xxh3,
        }
    }
}

/// The `cookie` balancer: the proxy pins a client to a replica with a cookie.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CookieSpec {
    #[serde(default = "d_cookie_name")]
    pub name: Spanned<String>,
    /// Max-Age of the cookie; absent makes it a session cookie.
    #[serde(default)]
    pub ttl: Option<Dur>,
    #[serde(default = "d_cookie_path")]
    pub path: String,
}

impl Default for CookieSpec {
    fn default() -> Self {
        CookieSpec { name: d_cookie_name(), ttl: None, path: d_cookie_path() }
    }
}

/// What a route sends to. `replicated`: one pool of identical endpoints.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub kind: Spanned<ServiceKind>,
    #[serde(default = "d_balancer")]
    pub balancer: Spanned<BalancerKind>,
    /// Settings of the `hash` balancer.
    #[serde(default)]
    pub hash: Option<Spanned<HashSpec>>,
    /// Settings of the `cookie` balancer.
    #[serde(default)]
    pub cookie: Option<Spanned<CookieSpec>>,
    #[serde(default = "d_http1")]
    pub protocol: Spanned<ServiceProtocol>,
    /// memcache services: replication, failure handling and limits.
    #[serde(default)]
    pub memcache: MemcacheSpec,
    /// How the service's shard, endpoint and key heat is measured.
    #[serde(default)]
    pub heat: heat::HeatSpec,
    /// What the service does for its hot keys (nothing unless set).
    #[serde(default)]
    pub hot_keys: Option<Spanned<heat::HotKeysSpec>>,
    /// Per-shard autoscaling (none unless set).
    #[serde(default)]
    pub scaler: Option<Spanned<scale::ScalerSpec>>,
    /// A new endpoint's share of the traffic ramps up over this long, as
    /// HAProxy's `slowstart` (round_robin, random, least_request; memcache reads).
    #[serde(default)]
    pub slow_start: Option<Spanned<Dur>>,
    /// HTTP/1 connections open to one endpoint at most (0: no cap); a request
    /// beyond waits `timeouts.queue`, then tries another endpoint, then gets 503.
    #[serde(default = "d_max_conns")]
    pub max_connections_per_endpoint: usize,
    /// TLS to the endpoints (every shard's); plain HTTP when absent.
    #[serde(default)]
    pub tls: Option<Spanned<UpstreamTlsSpec>>,
    #[serde(default)]
    pub endpoints: Vec<EndpointSpec>,
    /// Start every connection to the endpoints with a PROXY protocol header
    /// ("v1" or "v2") naming the client; such a connection then carries that
    /// client's requests only (it is never reused for another).
    #[serde(default)]
    pub send_proxy_protocol: Option<Spanned<crate::upstream::policy::ProxyHeader>>,
    /// Endpoints given by name are re-resolved (A/AAAA) and the pool follows
    /// the name's addresses, within guardrails; without it a name is resolved
    /// at each connect.
    #[serde(default)]
    pub dns: Option<Spanned<discovery::DnsSpec>>,
    /// The pools follow the EndpointSlices of a Kubernetes Service.
    #[serde(default)]
    pub kubernetes: Option<Spanned<discovery::KubeDiscoverySpec>>,
    #[serde(default)]
    pub timeouts: TimeoutSpec,
    #[serde(default)]
    pub health: Option<HealthSpec>,
    #[serde(default)]
    pub passive: PassiveSpec,
    #[serde(default)]
    pub retry: RetrySpec,
    /// Sharded services: which shard a request goes to (key, function, fallback).
    #[serde(default)]
    pub sharder: Option<Spanned<HashSpec>>,
    /// Sharded services: the shards by name.
    #[serde(default)]
    pub shards: BTreeMap<Spanned<String>, ShardSpec>,
    /// A response header naming the shard (or shards) that answered.
    #[serde(default)]
    pub shard_header: Option<Spanned<String>>,
    #[serde(default)]
    pub fan_out: FanOutSpec,
    /// Rate-limit policies on every route to this service, besides the route's own;
    /// a `route`-scoped policy here is one ceiling over the whole service.
    #[serde(default)]
    pub rate_limit: Vec<Spanned<String>>,
    /// Policies by identity tier on every route to this service.
    #[serde(default)]
    pub rate_limit_tiers: BTreeMap<String, Vec<Spanned<String>>>,
}

/// One upstream address.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    pub address: Spanned<String>,
    #[serde(default = "d_weight")]
    pub weight: Spanned<u32>,
    #[serde(default)]
    pub name: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutSpec {
    /// TCP connect to an endpoint.
    #[serde(default = "d_connect")]
    pub connect: Spanned<Dur>,
    /// From sending the request to receiving the response headers.
    #[serde(default = "d_request")]
    pub request: Spanned<Dur>,
    /// An idle pooled upstream connection is closed after this.
    #[serde(default = "d_idle")]
    pub idle: Spanned<Dur>,
    /// How long a request waits for a connection to an endpoint at
    /// `max_connections_per_endpoint` before it tries another (then 503).
    #[serde(default = "d_queue")]
    pub queue: Spanned<Dur>,
    /// The longest gap between two reads of a response body (nginx's
    /// proxy_read_timeout): a stalled answer is cut off, and its connection closed.
    #[serde(default = "d_body_idle")]
    pub body_idle: Spanned<Dur>,
}

impl Default for TimeoutSpec {
    fn default() -> Self {
        TimeoutSpec { connect: d_connect(), request: d_request(), idle: d_idle(), queue: d_queue(), body_idle: d_body_idle() }
    }
}

fn d_max_conns() -> usize {
    1024
}
fn d_queue() -> Spanned<Dur> {
    Spanned::new(0..0, Dur::secs(1))
}
fn d_body_idle() -> Spanned<Dur> {
    Spanned::new(0..0, Dur::secs(60))
}

/// Active readiness probes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    #[serde(default = "d_health_path")]
    pub path: Spanned<String>,
    #[serde(default = "d_health_interval")]
    pub interval: Spanned<Dur>,
    #[serde(default = "d_health_timeout")]
    pub timeout: Spanned<Dur>,
    #[serde(default = "d_two")]
    pub healthy_threshold: Spanned<u32>,
    #[serde(default = "d_three")]
    pub unhealthy_threshold: Spanned<u32>,
    /// Random extra delay added to each interval, up to this much.
    #[serde(default = "d_jitter")]
    pub jitter: Spanned<Dur>,
}

/// Passive ejection on observed failures.
#[derive(Debug, Clone, Hash, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveSpec {
    /// Consecutive failures (connect errors, timeouts, broken answers; 5xx with
    /// `on_5xx`) that eject an endpoint; 0 turns it off. A refused or reset
    /// connection ejects at once.
    #[serde(default = "d_five")]
    pub consecutive_failures: u32,
    /// First ejection time; doubled on each ejection in a row.
    #[serde(default = "d_eject_base")]
    pub ejection_time: Spanned<Dur>,
    #[serde(default = "d_eject_max")]
    pub max_ejection_time: Spanned<Dur>,
    /// At most this percentage of the pool is ejected at once (Envoy's `max_ejection_percent`).
    #[serde(default = "d_eject_percent")]
    pub max_ejection_percent: Spanned<u32>,
    /// Whether 5xx answers count towards ejection; connection failures and timeouts always do.
    #[serde(default)]
    pub on_5xx: bool,
}

impl Default for PassiveSpec {
    fn default() -> Self {
        PassiveSpec {
            consecutive_failures: 5,
            ejection_time: d_eject_base(),
            max_ejection_time: d_eject_max(),
            max_ejection_percent: d_eject_percent(),
            on_5xx: false,
        }
    }
}

fn d_eject_percent() -> Spanned<u32> {
    Spanned::new(0..0, 50)
}

/// Retries of idempotent requests without a body whose connection failed, or
/// closed or reset before the answer began.
#[derive(Debug, Clone, Hash, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Extra attempts per request, each on another endpoint.
    #[serde(default = "d_two")]
    pub attempts: Spanned<u32>,
    /// Retries may be at most this percentage of the requests of the last ten seconds...
    #[serde(default = "d_budget")]
    pub budget_percent: Spanned<u32>,
    /// ...plus this many per second.
    #[serde(default = "d_min_retries_per_second")]
    pub min_per_second: u32,
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec { attempts: d_two(), budget_percent: d_budget(), min_per_second: d_min_retries_per_second() }
    }
}

fn d_grace() -> Dur {
    Dur::secs(10)
}
fn d_true() -> bool {
    true
}
fn d_log_format() -> LogFormat {
    LogFormat::Json
}
fn d_stdout() -> String {
    "stdout".into()
}
fn d_max_header_bytes() -> Spanned<usize> {
    Spanned::new(0..0, 16 * 1024)
}
fn d_max_headers() -> Spanned<usize> {
    Spanned::new(0..0, 100)
}
fn d_max_body_bytes() -> u64 {
    10 * 1024 * 1024
}
fn d_header_timeout() -> Spanned<Dur> {
    Spanned::new(0..0, Dur::secs(10))
}
fn d_keepalive_timeout() -> Spanned<Dur> {
    Spanned::new(0..0, Dur::secs(75))
}
fn d_body_timeout() -> Dur {
    Dur::secs(30)
}
fn d_h2_streams() -> u32 {
    256
}
fn d_h2_resets() -> usize {
    20
}
fn d_max_connections() -> usize {
    50_000
}
fn d_per_client() -> usize {
    256
}
fn d_body_min_rate() -> u64 {
    500
}
fn d_http() -> Spanned<ListenerProtocol> {
    Spanned::new(0..0, ListenerProtocol::Http)
}
fn d_slash() -> Spanned<String> {
    Spanned::new(0..0, "/".into())
}
fn d_balancer() -> Spanned<BalancerKind> {
    Spanned::new(0..0, BalancerKind::RoundRobin)
}
fn d_key() -> KeySpec {
    KeySpec::ClientIp
}
fn d_random() -> Spanned<Fallback> {
    Spanned::new(0..0, Fallback::Random)
}
fn d_function() -> Spanned<Function> {
    Spanned::new(0..0, Function::Maglev)
}
fn d_balance_factor() -> Spanned<f64> {
    Spanned::new(0..0, 1.25)
}
fn d_cookie_name() -> Spanned<String> {
    Spanned::new(0..0, "rm_affinity".into())
}
fn d_cookie_path() -> String {
    "/".into()
}
fn d_http1() -> Spanned<ServiceProtocol> {
    Spanned::new(0..0, ServiceProtocol::Http1)
}
fn d_weight() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}
fn d_connect() -> Spanned<Dur> {
    Spanned::new(0..0, Dur::secs(2))
}
fn d_request() -> Spanned<Dur> {
    Spanned::new(0..0, Dur::secs(30))
}
fn d_idle() -> Spanned<Dur> {
    Spanned::new(0..0, Dur::secs(90))
}
fn d_health_path() -> Spanned<String> {
    Spanned::new(0..0, "/healthz".into())
}
fn d_health_interval() -> Spanned<Dur> {
    Spanned::new(0..0, Dur::secs(2))
}
fn d_health_timeout() -> Spanned<Dur> {
    Spanned::new(0..0, Dur::secs(1))
}
fn d_jitter() -> Spanned<Dur> {
    Spanned::new(0..0, Dur::millis(200))
}
fn d_two() -> Spanned<u32> {
    Spanned::new(0..0, 2)
}
fn d_three() -> Spanned<u32> {
    Spanned::new(0..0, 3)
}
fn d_five() -> u32 {
    5
}
fn d_eject_base() -> Spanned<Dur> {
    Spanned::new(0..0, Dur::secs(5))
}
fn d_eject_max() -> Spanned<Dur> {
    Spanned::new(0..0, Dur::secs(60))
}
fn d_budget() -> Spanned<u32> {
    Spanned::new(0..0, 20)
}
fn d_min_retries_per_second() -> u32 {
    10
}
fn d_fan_policy() -> FanOutPolicy {
    FanOutPolicy::All
}
fn d_fan_concurrency() -> Spanned<usize> {
    Spanned::new(0..0, 8)
}
fn d_fan_timeout() -> Spanned<Dur> {
    Spanned::new(0..0, Dur::secs(5))
}
fn d_fan_body() -> usize {
    1024 * 1024
}
fn d_fan_in_flight() -> Spanned<usize> {
    Spanned::new(0..0, 64)
}
fn d_fan_queue() -> Dur {
    Dur::millis(100)
}
