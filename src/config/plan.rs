//! An accepted config: every value checked, parsed and converted into the
//! runtime types each module owns, and every file it names read once. Nothing
//! here has state or talks to the world; `build` turns a plan into a snapshot,
//! carrying live state over from the previous one.

use super::schema::Config;
use crate::balance::Balancer;
use crate::shard::Sharding;
use crate::upstream::{EndpointKey, Passive, Retry};
use std::time::Duration;

/// What a listener adds to or does with every request.
#[derive(Clone)]
pub struct ListenerOpts {
    pub redirect_to_https: Option<u16>,
    pub hsts: Option<http::HeaderValue>,
    pub path: crate::normalise::PathRules,
    /// Connections start with a PROXY protocol header (from trusted peers only).
    pub proxy_protocol: bool,
}

/// A listener as the server runs it.
#[derive(Clone)]
pub struct ListenerPlan {
    pub name: String,
    pub addr: std::net::SocketAddr,
    /// An https listener's certificates (as configured, and as read); `None` for plain HTTP.
    pub tls: Option<(crate::tls::server::Settings, crate::tls::server::Material)>,
}

/// What a client connection is held to, read at accept time.
#[derive(Clone, Debug)]
pub struct ConnLimits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// From a request head's first byte (from accept for the first request).
    pub header_read_timeout: Duration,
    /// Idle time between requests before the connection is closed.
    pub keepalive_timeout: Duration,
    /// Connections over all listeners (read at start only).
    pub max_connections: usize,
    /// Connections from one client address; 0 for no limit.
    pub max_connections_per_client: usize,
    pub h2_max_concurrent_streams: u32,
    pub h2_max_reset_streams: usize,
    /// HTTP/1 clients are served by our own server loop (`[server] http1 = "ringmaster"`), not hyper's.
    pub own_http1: bool,
    /// HTTP listeners bind with SO_REUSEPORT (`[server] reuse_port`).
    pub reuse_port: bool,
}

/// Request limits applied by the parse stage.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: u64,
    /// The longest gap between two reads of a request body.
    pub body_read_timeout: Duration,
    /// Bytes per second a request body must average after a grace period; 0 for none.
    pub body_min_rate: u64,
}

/// One endpoint of a pool, before it exists: what identifies it across reloads,
/// and how it is reached.
#[derive(Clone)]
pub struct EndpointPlan {
    pub key: EndpointKey,
    pub authority: http::uri::Authority,
    pub name: Option<String>,
    pub weight: u32,
    pub tls: Option<crate::tls::client::Upstream>,
}

/// A pool's balancer settings.
#[derive(Clone)]
pub struct Balancing {
    pub kind: crate::balance::BalancerKind,
    pub hash: Option<crate::balance::HashSettings>,
    pub cookie: Option<crate::balance::CookieSettings>,
}

impl Balancing {
    /// The balancer over `endpoints` (by name, else address, with their weights).
    pub fn build(&self, endpoints: &[EndpointPlan], salt: &str) -> std::sync::Arc<Balancer> {
        let members: Vec<crate::ring::Member> =
            endpoints.iter().map(|e| crate::ring::Member::new(e.name.clone().unwrap_or_else(|| e.key.address.clone()), e.weight)).collect();
        std::sync::Arc::new(Balancer::new(self.kind, &members, self.hash.as_ref(), self.cookie.as_ref(), salt))
    }
}

/// A pool (a replicated service, or one shard) before its endpoints exist.
#[derive(Clone)]
pub struct PoolPlan {
    /// `service`, or `service/shard`.
    pub name: String,
    pub service: String,
    pub shard: Option<String>,
    pub endpoints: Vec<EndpointPlan>,
    /// Shared: a plan kept for pool updates and the pool built from it hold one.
    pub balancer: std::sync::Arc<Balancer>,
    /// What the balancer was built from, to build it again over other endpoints.
    pub balancing: Balancing,
    pub request_timeout: Duration,
    /// How long a new endpoint's share ramps up (zero: at once).
    pub slow_start: Duration,
    /// The longest gap between two reads of a response body.
    pub body_idle: Duration,
    pub passive: Passive,
    pub retry: Retry,
    /// Endpoints given by name are re-resolved under these settings.
    pub dns: Option<crate::discovery::DnsPolicy>,
    /// How an endpoint discovery adds is reached when the config lists none
    /// (an SRV pool): the service's settings.
    pub template: Option<EndpointPlan>,
}

#[derive(Clone)]
pub struct ServicePlan {
    pub name: String,
    pub pools: Vec<PoolPlan>,
    pub sharding: Option<Sharding>,
    pub heat: crate::heat::Policy,
    pub scaler: Option<crate::scale::Policy>,
    /// The pools follow a Kubernetes Service's EndpointSlices.
    pub kubernetes: Option<crate::discovery::KubePolicy>,
}

/// Where a memcache listener accepts clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum McAddr {
    Tcp(std::net::SocketAddr),
    Unix(std::path::PathBuf),
}

impl std::fmt::Display for McAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            McAddr::Tcp(a) => write!(f, "{a}"),
            McAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A memcache listener: its address and the service its commands go to.
#[derive(Clone, Debug)]
pub struct McListenerPlan {
    pub name: String,
    pub addr: McAddr,
    pub service: String,
    /// Limits on the listener's clients.
    pub clients: crate::memcache::client::Limits,
}

/// One shard of a memcache service: its endpoints by name and address.
#[derive(Clone)]
pub struct McShardPlan {
    pub name: String,
    pub endpoints: Vec<(String, std::net::SocketAddr)>,
}

/// A memcache service before its endpoints exist.
#[derive(Clone)]
pub struct McServicePlan {
    pub name: String,
    pub ring: crate::ring::Ring,
    pub tag: Option<[u8; 2]>,
    pub shards: Vec<McShardPlan>,
    pub policy: crate::memcache::Policy,
    pub settings: crate::memcache::upstream::Settings,
    /// How long a client has to finish a command it began.
    pub command_timeout: Duration,
    pub heat: crate::heat::Policy,
    pub scaler: Option<crate::scale::Policy>,
}

/// A route; its cache store and counters come from the build step.
#[derive(Clone)]
pub struct RoutePlan {
    pub name: String,
    /// The index of its service in [`Plan::services`].
    pub service: usize,
    pub host: Option<crate::route::HostMatch>,
    pub path_prefix: String,
    pub methods: Vec<http::Method>,
    pub listeners: Vec<String>,
    pub fan_out: bool,
    pub limits: crate::limit::RoutePolicies,
    /// The cache's rules and its memory budget in bytes.
    pub cache: Option<(crate::cache::flow::Rules, u64)>,
    /// Upgrade protocols forwarded, lowercase.
    pub upgrades: Vec<String>,
}

/// The admin listener: its address (read at start only) and the token it asks for.
#[derive(Clone)]
pub struct AdminPlan {
    pub addr: std::net::SocketAddr,
    pub token: Option<crate::identity::Secret>,
    /// The read-only token (`/admin/heat` and `/metrics`).
    pub heat_token: Option<crate::identity::Secret>,
    /// Names accepted in Host beyond IP addresses and `localhost`, lowercase.
    pub hosts: Vec<String>,
    pub show_keys: crate::config::schema::ShowKeys,
    /// HTTPS (read at start only, as the address is).
    pub tls: Option<(crate::tls::server::Settings, crate::tls::server::Material)>,
}

/// The whole accepted config.
#[derive(Clone)]
pub struct Plan {
    /// The file as written, for `/admin/config` and the process settings.
    pub config: Config,
    pub listeners: Vec<ListenerPlan>,
    pub listener_opts: std::collections::HashMap<String, ListenerOpts>,
    pub admin: Option<AdminPlan>,
    pub grace_period: Duration,
    pub conn: ConnLimits,
    pub limits: Limits,
    pub trusted: crate::identity::TrustedProxies,
    pub credentials: Option<crate::identity::Credentials>,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    pub redis: Option<crate::limit::redis::Settings>,
    pub services: Vec<ServicePlan>,
    pub routes: Vec<RoutePlan>,
    pub memcache: Vec<McServicePlan>,
    pub memcache_listeners: Vec<McListenerPlan>,
    pub access_log: Option<crate::accesslog::Settings>,
    /// How roots agree on the one that scales; `None`: this root leads.
    pub leader: Option<crate::scale::leader::Settings>,
    /// What is allowed but risky, for `check` to print and the server to log.
    pub warnings: Vec<super::Diagnostic>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let services: Vec<&str> = self.services.iter().map(|s| s.name.as_str()).collect();
        let routes: Vec<&str> = self.routes.iter().map(|r| r.name.as_str()).collect();
        f.debug_struct("Plan").field("services", &services).field("routes", &routes).finish_non_exhaustive()
    }
}
