//! The config of a service's scaler: `[services.NAME.scaler]`, the load one
//! replica should carry, the bounds and windows of the HPA arithmetic, and
//! the back-end that adds and removes replicas.

use crate::config::duration::Dur;
pub use crate::scale::Metric;
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// Per-shard autoscaling of one service (per pool: each shard on its own).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScalerSpec {
    /// `rate` (requests per second per replica) or `in_flight`.
    #[serde(default = "d_metric")]
    pub metric: Metric,
    /// The load one replica should carry, in `metric`'s unit.
    pub target: Spanned<f64>,
    #[serde(default = "d_min")]
    pub min_replicas: Spanned<usize>,
    #[serde(default = "d_max")]
    pub max_replicas: Spanned<usize>,
    /// No change while the load is within this fraction of the target (the HPA's 0.1).
    #[serde(default = "d_tolerance")]
    pub tolerance: Spanned<f64>,
    /// A rise must last this long before replicas are added.
    #[serde(default = "d_up")]
    pub scale_up_window: Spanned<Dur>,
    /// A fall must last this long before replicas are removed (the HPA's 300 s).
    #[serde(default = "d_down")]
    pub scale_down_window: Spanned<Dur>,
    /// No change this long after the last one.
    #[serde(default = "d_cooldown")]
    pub cooldown: Spanned<Dur>,
    /// ringmaster starts and stops replica processes itself.
    #[serde(default)]
    pub local: Option<Spanned<LocalSpec>>,
    /// An operator's command scales the shard and lists its endpoints.
    #[serde(default)]
    pub command: Option<Spanned<CommandSpec>>,
    /// The scale subresource of each shard's StatefulSet or Deployment.
    #[serde(default)]
    pub kubernetes: Option<Spanned<KubernetesSpec>>,
}

/// The `command` back-end.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    /// A command line (`sh -c`) with {service}, {shard}, {pool}, {current} and {desired}.
    pub run: Spanned<String>,
    /// Where the command leaves the shard's endpoint list; its output when absent.
    #[serde(default)]
    pub endpoints_file: Option<Spanned<String>>,
    #[serde(default = "d_command_timeout")]
    pub timeout: Spanned<Dur>,
}

/// A `kubernetes` table: how to reach the API server (in-cluster defaults),
/// and what it is about: a scaler's workload (`object`) or an election's
/// Lease (`lease`). One shape for both, so the connection fields are one.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSpec {
    /// A scaler's `statefulset/NAME` or `deployment/NAME` with {service} and
    /// {shard} (default `statefulset/{service}-{shard}`).
    #[serde(default)]
    pub object: Option<Spanned<String>>,
    /// An election's Lease name (default `ringmaster`).
    #[serde(default)]
    pub lease: Option<Spanned<String>>,
    /// `https://HOST:PORT` (default: from KUBERNETES_SERVICE_HOST and _PORT).
    #[serde(default)]
    pub api_server: Option<Spanned<String>>,
    /// Default: the service account's namespace, else `default`.
    #[serde(default)]
    pub namespace: Option<Spanned<String>>,
    /// A bearer token file (default: the service account's token, when present).
    #[serde(default)]
    pub token_file: Option<Spanned<String>>,
    /// The API server's CA bundle (default: the service account's ca.crt).
    #[serde(default)]
    pub ca: Option<Spanned<String>>,
}

/// `[leader]`: how several roots agree on the one that scales.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderSpec {
    /// This root's name in the election (default: host name and pid).
    #[serde(default)]
    pub identity: Option<Spanned<String>>,
    /// How long a silent leader keeps the lead.
    #[serde(default = "d_ttl")]
    pub ttl: Spanned<Dur>,
    #[serde(default)]
    pub etcd: Option<Spanned<EtcdSpec>>,
    #[serde(default)]
    pub kubernetes: Option<Spanned<KubernetesSpec>>,
    /// The other roots' admin addresses (`http://HOST:PORT`): the leader
    /// scales on the load of every root, not its own share alone.
    #[serde(default)]
    pub peers: Vec<Spanned<String>>,
    /// The bearer token of the peers' admin listeners, when they ask for one.
    #[serde(default)]
    pub peers_token_file: Option<Spanned<String>>,
    /// A peer's load counts at most this many times this root's own (or the
    /// scaler's target, when this root sees less), and never below zero.
    #[serde(default = "d_peer_load_factor")]
    pub peer_load_factor: Spanned<f64>,
    /// TLS towards https peers and an https etcd: the CA their certificates
    /// chain to (the system's roots when absent), and a client certificate
    /// for mutual TLS.
    #[serde(default)]
    pub tls: Option<Spanned<LeaderTlsSpec>>,
}

/// `[leader] tls = { ca, cert, key }` (PEM file paths).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderTlsSpec {
    #[serde(default)]
    pub ca: Option<String>,
    #[serde(default)]
    pub cert: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
}

fn d_peer_load_factor() -> Spanned<f64> {
    Spanned::new(0..0, 10.0)
}

/// An etcd election: its v3 JSON gateway and the key the leader holds.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdSpec {
    /// `http://HOST:PORT` of one etcd member.
    pub endpoint: Spanned<String>,
    #[serde(default = "d_key")]
    pub key: Spanned<String>,
}

fn d_command_timeout() -> Spanned<Dur> {
    Spanned::new(0..0, Dur::secs(60))
}
fn d_ttl() -> Spanned<Dur> {
    Spanned::new(0..0, Dur::secs(10))
}
fn d_key() -> Spanned<String> {
    Spanned::new(0..0, "/ringmaster/leader".into())
}

/// The `local` back-end.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSpec {
    /// A command line (`sh -c`) with {address}, {host}, {port}, {name}, {service} and {shard}.
    pub command: Spanned<String>,
    #[serde(default = "d_host")]
    pub host: Spanned<String>,
    /// `"FIRST-LAST"`: the ports replicas listen on.
    pub ports: Spanned<String>,
    #[serde(default = "d_ready")]
    pub ready_timeout: Spanned<Dur>,
    #[serde(default = "d_drain")]
    pub drain: Spanned<Dur>,
}

fn d_metric() -> Metric {
    Metric::Rate
}
fn d_min() -> Spanned<usize> {
    Spanned::new(0..0, 1)
}
fn d_max() -> Spanned<usize> {
    Spanned::new(0..0, 10)
}
fn d_tolerance() -> Spanned<f64> {
    Spanned::new(0..0, 0.1)
}
fn d_up() -> Spanned<Dur> {
    Spanned::new(0..0, Dur::secs(0))
}
fn d_down() -> Spanned<Dur> {
    Spanned::new(0..0, Dur::secs(300))
}
fn d_cooldown() -> Spanned<Dur> {
    Spanned::new(0..0, Dur::secs(30))
}
fn d_host() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1".into())
}
fn d_ready() -> Spanned<Dur> {
    Spanned::new(0..0, Dur::secs(10))
}
fn d_drain() -> Spanned<Dur> {
    Spanned::new(0..0, Dur::secs(10))
}
