//! The config of a service's heat: `[services.NAME.heat]`, how its shard
//! rates are averaged and how many of its keys are ranked, and
//! `[services.NAME.hot_keys]`, what is done for the keys it finds hot.

use crate::config::duration::Dur;
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// Heat measurement of one service (on by default; `top_keys = 0` stops key ranking).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeatSpec {
    /// Time constant of the request rates and of the key counts' decay.
    #[serde(default = "d_window")]
    pub window: Spanned<Dur>,
    /// Keys ranked per service (memory: about 300 bytes each); 0 ranks none.
    #[serde(default = "d_top_keys")]
    pub top_keys: Spanned<usize>,
    /// One request in this many is counted in the key ranking.
    #[serde(default = "d_sample")]
    pub sample: Spanned<u32>,
    /// Share of the service's requests (0 to 1) from which a key is hot.
    #[serde(default = "d_hot_share")]
    pub hot_share: Spanned<f64>,
}

impl Default for HeatSpec {
    fn default() -> Self {
        HeatSpec { window: d_window(), top_keys: d_top_keys(), sample: d_sample(), hot_share: d_hot_share() }
    }
}

fn d_window() -> Spanned<Dur> {
    Spanned::new(0..0, Dur(crate::heat::Policy::default().window))
}
fn d_top_keys() -> Spanned<usize> {
    Spanned::new(0..0, crate::heat::Policy::default().top_keys)
}
fn d_sample() -> Spanned<u32> {
    Spanned::new(0..0, crate::heat::Policy::default().sample)
}
fn d_hot_share() -> Spanned<f64> {
    Spanned::new(0..0, crate::heat::Policy::default().hot_share)
}

/// Hot-key mitigation of one service: off unless asked for. A key is hot by
/// the service's `heat` settings (`hot_share`, among its `top_keys`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HotKeysSpec {
    /// Answer a hot key's reads from a root-local cache for `ttl` (memcache: get and gets).
    #[serde(default)]
    pub cache: bool,
    /// How long a cached answer is served.
    #[serde(default = "d_ttl")]
    pub ttl: Spanned<Dur>,
    /// Bytes of cached answers at most.
    #[serde(default = "d_max_bytes")]
    pub max_bytes: Spanned<usize>,
    /// Spread a hot key's reads over every replica of its shard in turn.
    #[serde(default)]
    pub spread: bool,
    /// memcache: keep a hot key on this many shards, each get reading one
    /// (mcrouter's key-split); copies live `ttl` (rounded up to seconds).
    #[serde(default)]
    pub split: Option<Spanned<usize>>,
}

fn d_ttl() -> Spanned<Dur> {
    Spanned::new(0..0, Dur(std::time::Duration::from_secs(1)))
}
fn d_max_bytes() -> Spanned<usize> {
    Spanned::new(0..0, 8 * 1024 * 1024)
}
