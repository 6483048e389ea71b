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
