//! Per-shard autoscaling: how many replicas each shard (or a replicated
//! service's one pool) should have, decided from its measured heat with the
//! Kubernetes HPA arithmetic (desired = ceil(current x observed / target),
//! nothing inside a tolerance band), stabilised (a scale-up must be asked for
//! over the whole up-window, a scale-down over the whole down-window), held
//! for a cooldown after each change and kept within min and max. Pure: the
//! caller brings the clock and the measurements; `server/scale.rs` acts.

pub mod api;
pub mod command;
pub mod kube;
pub mod leader;
pub mod local;
pub mod shell;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// The scaler's state as others see it, owned by the running server (no
/// statics): each pool's last decision and what it did, by pool (written by
/// `server/scale.rs`, read by `/admin/heat` and `/metrics`), and this root's
/// standing in the election (renewed by `leader::run`).
#[derive(Default)]
pub struct Scaling {
    views: Mutex<BTreeMap<String, PoolView>>,
    pub leadership: std::sync::Arc<leader::Leadership>,
}

impl Scaling {
    /// Every pool's view, by pool.
    pub fn views(&self) -> BTreeMap<String, PoolView> {
        self.views.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Changes the view of `pool`.
    pub fn update(&self, pool: &str, f: impl FnOnce(&mut PoolView)) {
        f(self.views.lock().unwrap_or_else(|e| e.into_inner()).entry(pool.to_string()).or_default());
    }
}

/// Why a back-end (the control planes, a local replica) failed a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScaleError {
    /// A control-plane call (`what`: method and URL) that got no answer.
    #[error("{what}: {why}")]
    Call { what: String, why: CallFailure },
    #[error("{what}: no answer within {timeout:?}")]
    NoAnswer { what: String, timeout: std::time::Duration },
    /// The control plane answered, refusing `what` (its status and message).
    #[error("{what}: {refusal}")]
    Refused { what: String, refusal: String },
    #[error("{kind} {name} changed since it was read; tried again at the next tick")]
    Conflict { kind: String, name: String },
    #[error("HPA {0} now owns the workload; not scaled")]
    HpaOwns(String),
    #[error("no answer within {0:?} (two thirds of the ttl)")]
    RoundTimeout(std::time::Duration),
    #[error("etcd lease grant: no lease ID in the answer")]
    NoLeaseId,
    #[error("cannot run `{line}`: {why}")]
    Spawn { line: String, why: String },
    #[error("`{line}` exited ({status}) before it accepted connections on {addr}")]
    Exited { line: String, status: String, addr: std::net::SocketAddr },
    #[error("`{line}` did not accept connections on {addr} within {timeout:?}")]
    NotReady { line: String, addr: std::net::SocketAddr, timeout: std::time::Duration },
}

/// Why a control-plane exchange got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallFailure {
    #[error("the address has no host")]
    NoHost,
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("cannot read the token {path}: {why}")]
    Token { path: String, why: String },
    /// The request could not be made (its JSON body, its head).
    #[error("{0}")]
    Request(String),
    #[error("TLS: {0}")]
    Tls(String),
    /// The HTTP exchange failed.
    #[error("{0}")]
    Exchange(String),
    #[error("reading the answer: {0}")]
    Body(String),
}

/// Why a scale step was not taken or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("this root no longer leads; the step is not taken")]
    NotLeading,
    #[error("this root's lead lapsed before the step finished; it was abandoned")]
    Lapsed,
    #[error("{0}")]
    Command(#[from] command::CommandError),
    /// The back-end (Kubernetes API, replica start) said why.
    #[error("{0}")]
    Backend(#[from] ScaleError),
    /// The running pools could not take the change.
    #[error("the pool update failed: {0}")]
    Update(String),
}

/// One pool's scaler as the operator sees it.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PoolView {
    pub current: usize,
    pub desired: usize,
    /// The load per replica the decision saw.
    pub observed: f64,
    pub reason: std::borrow::Cow<'static, str>,
    /// The replicas the scaler started, by address.
    pub scaled: Vec<String>,
    pub ups: u64,
    pub downs: u64,
    pub failures: u64,
}

/// What a replica's load is measured in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Requests per second (the heat window's average).
    Rate,
    /// Requests in flight at the tick.
    InFlight,
}

/// A service's scaler settings (`[services.NAME.scaler]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub metric: Metric,
    /// The load one replica should carry.
    pub target: f64,
    pub min_replicas: usize,
    pub max_replicas: usize,
    /// No change while observed / target is within 1 +- this.
    pub tolerance: f64,
    pub up_window: Duration,
    pub down_window: Duration,
    /// No change this long after the last one.
    pub cooldown: Duration,
    pub backend: Backend,
}

/// Who adds and removes replicas.
#[derive(Clone, Debug, PartialEq)]
pub enum Backend {
    /// ringmaster starts and stops replica processes itself.
    Local(local::Settings),
    /// A command of the operator's scales the shard and prints its endpoints.
    Command(command::Settings),
    /// The `scale` subresource of each shard's StatefulSet or Deployment.
    Kubernetes(kube::Scale),
}

/// The HPA's recommendation for `current` replicas carrying `observed` each.
pub fn recommend(current: usize, observed: f64, p: &Policy) -> usize {
    let clamp = |n: usize| n.clamp(p.min_replicas, p.max_replicas.max(p.min_replicas));
    if current == 0 || !observed.is_finite() || p.target <= 0.0 {
        return clamp(current.max(1));
    }
    let ratio = observed / p.target;
    if (ratio - 1.0).abs() <= p.tolerance {
        return clamp(current);
    }
    clamp((current as f64 * ratio).ceil() as usize)
}

/// What the scaler concluded at one tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub current: usize,
    pub desired: usize,
    /// Why `desired` is what it is, for the log and `/admin/heat`.
    pub reason: &'static str,
}

/// The memory of one shard's scaler: its recent recommendations and its last change.
#[derive(Debug, Default)]
pub struct ShardScaler {
    /// (ms, recommendation), oldest first, as long as the longer window.
    history: VecDeque<(u64, usize)>,
    last_change_ms: Option<u64>,
    pub last: Option<Decision>,
}

impl ShardScaler {
    /// Decides at `now_ms` for `current` replicas each carrying `observed`.
    pub fn decide(&mut self, now_ms: u64, current: usize, observed: f64, p: &Policy) -> Decision {
        let raw = recommend(current, observed, p);
        self.history.push_back((now_ms, raw));
        let keep = p.up_window.max(p.down_window).as_millis() as u64;
        while self.history.front().is_some_and(|&(t, _)| now_ms.saturating_sub(t) > keep) {
            self.history.pop_front();
        }
        let within =
            |w: Duration| self.history.iter().filter(move |&&(t, _)| now_ms.saturating_sub(t) <= w.as_millis() as u64).map(|h| h.1);
        // Up: the least asked for over the up-window; down: the most over the down-window.
        let up = within(p.up_window).min().unwrap_or(raw);
        let down = within(p.down_window).max().unwrap_or(raw);
        let (desired, reason) = if current < p.min_replicas {
            (p.min_replicas, "below min_replicas")
        } else if current > p.max_replicas.max(p.min_replicas) {
            (p.max_replicas.max(p.min_replicas), "above max_replicas")
        } else if up > current {
            (up, "load above target over the up-window")
        } else if down < current {
            (down, "load below target over the down-window")
        } else if raw != current {
            (current, "waiting for the stabilisation window")
        } else {
            (current, "load within tolerance of target")
        };
        let cooling = self.last_change_ms.is_some_and(|t| now_ms.saturating_sub(t) < p.cooldown.as_millis() as u64);
        let d = if desired != current && cooling {
            Decision { current, desired: current, reason: "cooldown after the last change" }
        } else {
            Decision { current, desired, reason }
        };
        self.last = Some(d.clone());
        d
    }

    /// Notes that the replicas changed at `now_ms` (the cooldown starts). The
    /// recommendations stay: they are replica counts, valid across the change,
    /// so a scale-down still waits out its window.
    pub fn changed(&mut self, now_ms: u64) {
        self.last_change_ms = Some(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            metric: Metric::Rate,
            target: 100.0,
            min_replicas: 1,
            max_replicas: 5,
            tolerance: 0.1,
            up_window: Duration::ZERO,
            down_window: Duration::from_secs(30),
            cooldown: Duration::from_secs(10),
            backend: Backend::Local(local::Settings::for_tests()),
        }
    }

    #[test]
    fn the_hpa_arithmetic_with_its_tolerance_and_bounds() {
        let p = policy();
        assert_eq!(recommend(2, 150.0, &p), 3);
        assert_eq!(recommend(2, 105.0, &p), 2, "inside the tolerance");
        assert_eq!(recommend(2, 111.0, &p), 3);
        assert_eq!(recommend(3, 10.0, &p), 1);
        assert_eq!(recommend(2, 1000.0, &p), 5, "max_replicas");
        assert_eq!(recommend(1, 0.0, &p), 1, "min_replicas");
        assert_eq!(recommend(0, 50.0, &p), 1);
    }

    #[test]
    fn up_at_once_down_only_after_the_window_and_never_in_cooldown() {
        let p = policy();
        let mut s = ShardScaler::default();
        let d = s.decide(0, 1, 250.0, &p);
        assert_eq!((d.desired, d.reason), (3, "load above target over the up-window"));
        s.changed(0);
        // Still hot just after: the cooldown holds it.
        let d = s.decide(5_000, 3, 200.0, &p);
        assert_eq!((d.desired, d.reason), (3, "cooldown after the last change"));
        let d = s.decide(11_000, 3, 200.0, &p);
        assert_eq!(d.desired, 5, "a further step up after the cooldown");
        s.changed(11_000);
        // Cold from 22 s: down only once no recommendation of the last 30 s
        // asked for more (the last hot one was at 11 s).
        for t in (22_000..=41_000).step_by(1000) {
            let d = s.decide(t, 5, 10.0, &p);
            assert_eq!(d.desired, 5, "at {t}: {d:?}");
        }
        assert_eq!(s.decide(42_000, 5, 10.0, &p).desired, 1);
    }

    #[test]
    fn a_short_dip_does_not_scale_down() {
        let p = policy();
        let mut s = ShardScaler::default();
        for t in 0..20 {
            s.decide(t * 1000, 3, 100.0, &p);
        }
        s.decide(20_000, 3, 10.0, &p);
        let d = s.decide(21_000, 3, 10.0, &p);
        assert_eq!((d.desired, d.reason), (3, "waiting for the stabilisation window"));
    }

    #[test]
    fn an_up_window_asks_for_a_sustained_rise() {
        let p = Policy { up_window: Duration::from_secs(3), ..policy() };
        let mut s = ShardScaler::default();
        s.decide(0, 2, 100.0, &p);
        assert_eq!(s.decide(1000, 2, 300.0, &p).desired, 2, "one hot tick is not enough");
        s.decide(2000, 2, 300.0, &p);
        s.decide(3000, 2, 300.0, &p);
        assert_eq!(s.decide(4000, 2, 300.0, &p).desired, 5, "hot for the whole window (6 capped to 5)");
    }

    #[test]
    fn bounds_win_over_everything() {
        let p = Policy { min_replicas: 2, max_replicas: 3, ..policy() };
        let mut s = ShardScaler::default();
        assert_eq!(s.decide(0, 1, 100.0, &p).desired, 2);
        assert_eq!(s.decide(1000, 4, 100.0, &p).desired, 3);
    }
}
