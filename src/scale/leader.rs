//! Leader election: of several roots, only one may scale. The leader holds
//! an etcd key bound to a lease it keeps alive, or a Kubernetes Lease it
//! renews; another root takes over once that lapses. A root leads only until
//! its last successful renewal's send time plus the TTL, so a partitioned
//! leader stops scaling on its own clock before anyone else can start. With
//! no election configured the only root simply leads.

use super::api::{refusal, Api};
use super::kube::Cluster;
use super::ScaleError;
use base64::Engine as _;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// How roots agree on a leader (`[leader]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// This root's name in the election (default: host name and pid).
    pub identity: String,
    /// How long a leader that stops renewing keeps leading.
    pub ttl: Duration,
    pub election: Election,
    /// The other roots' admin listeners: the leader adds the load each of
    /// them forwards (their `/admin/heat`) to its own before it decides.
    pub peers: Vec<Api>,
    /// Each peer's load is clamped to [0, this x max(own load, target)].
    pub peer_load_factor: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Election {
    /// A key in etcd (v3 JSON gateway), bound to a lease.
    Etcd { api: Api, key: String },
    /// A coordination.k8s.io/v1 Lease.
    Kubernetes { cluster: Cluster, lease: String },
}

/// Whether this root may scale now.
#[derive(Debug)]
pub struct Leadership {
    /// Leads while the clock (ms) is below this.
    until_ms: AtomicU64,
    /// Times this root became leader.
    pub terms: AtomicU64,
    /// Whether an election decides (else this root is the only one).
    pub elected: AtomicBool,
}

impl Default for Leadership {
    fn default() -> Self {
        Leadership::sole()
    }
}

impl Leadership {
    /// A root with no election: leads for ever.
    pub const fn sole() -> Leadership {
        Leadership { until_ms: AtomicU64::new(u64::MAX), terms: AtomicU64::new(1), elected: AtomicBool::new(false) }
    }

    /// Enters an election: follows until it wins.
    pub fn campaign(&self) {
        self.elected.store(true, Relaxed);
        self.terms.store(0, Relaxed);
        self.until_ms.store(0, Relaxed);
    }

    pub fn leads(&self) -> bool {
        crate::clock::now_ms() < self.until_ms.load(Relaxed)
    }

    /// How long this root still leads for certain; `None` when it does not.
    pub fn remaining(&self) -> Option<Duration> {
        let until = self.until_ms.load(Relaxed);
        let now = crate::clock::now_ms();
        (now < until).then(|| Duration::from_millis(until.saturating_sub(now).min(u64::MAX / 2)))
    }

    /// Resolves when this root stops leading on its own clock (renewals
    /// push that moment on). Every side effect of a scale step is checked
    /// against the lead just before it happens and abandoned at this (fencing).
    pub async fn lapsed(&self) {
        while let Some(left) = self.remaining() {
            tokio::time::sleep(left).await;
        }
    }

    /// Held until `sent_ms + ttl` (the renewal sent at `sent_ms` succeeded).
    fn hold(&self, sent_ms: u64, ttl: Duration) {
        if !self.leads() {
            self.terms.fetch_add(1, Relaxed);
        }
        self.until_ms.store(sent_ms + ttl.as_millis() as u64, Relaxed);
    }

    fn lose(&self) {
        self.until_ms.store(0, Relaxed);
    }
}

/// Campaigns and renews until shutdown, then steps down so another root takes over at once.
pub async fn run(s: Settings, l: std::sync::Arc<Leadership>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let every = (s.ttl / 3).max(Duration::from_millis(200));
    let mut state = State::default();
    let mut last_error = None;
    loop {
        let was = l.leads();
        let sent = crate::clock::now_ms();
        // A renewal is given less than the lease (client-go's renewDeadline < leaseDuration).
        let result = match tokio::time::timeout(s.ttl * 2 / 3, round(&s, &mut state)).await {
            Ok(r) => r,
            Err(_) => Err(ScaleError::RoundTimeout(s.ttl * 2 / 3)),
        };
        match &result {
            Ok(true) => l.hold(sent, s.ttl),
            Ok(false) => l.lose(),
            // Leadership lapses by itself at its deadline; say each new failure once.
            Err(e) if last_error.as_ref() != Some(e) => tracing::warn!("leader election: {e}"),
            Err(_) => {}
        }
        last_error = result.as_ref().err().cloned();
        if l.leads() != was {
            let now = match (l.leads(), &result) {
                (true, _) => "this root leads and scales",
                (false, Err(_)) => "this root no longer leads: its lease lapsed unrenewed",
                (false, Ok(_)) => "another root leads",
            };
            tracing::info!(identity = %s.identity, leads = l.leads(), "leader election: {now}");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => break,
        }
    }
    if l.leads() {
        l.lose();
        if let Err(e) = resign(&s, &state).await {
            tracing::warn!("leader election: stepping down: {e}");
        }
    }
}

/// What a root remembers between rounds.
#[derive(Default)]
struct State {
    /// etcd: the lease this root's key is bound to.
    lease: Option<i64>,
    /// Kubernetes: the Lease record last seen, and when it was first seen so.
    seen: Option<(String, u64)>,
}

/// One round: renew, or try to take the lead. Ok(true) while this root leads.
async fn round(s: &Settings, st: &mut State) -> Result<bool, ScaleError> {
    match &s.election {
        Election::Etcd { api, key } => etcd_round(api, key, s, st).await,
        Election::Kubernetes { cluster, lease } => lease_round(cluster, lease, s, st).await,
    }
}

async fn resign(s: &Settings, st: &State) -> Result<(), ScaleError> {
    match (&s.election, st.lease) {
        (Election::Etcd { api, .. }, Some(id)) => {
            api.call(Method::POST, "/v3/lease/revoke", Some(&json!({ "ID": id.to_string() }))).await.map(|_| ())
        }
        (Election::Kubernetes { cluster, lease }, _) => {
            let path = lease_path(cluster, lease);
            let a = cluster.api.call(Method::GET, &path, None).await?;
            if a.1["spec"]["holderIdentity"] != s.identity.as_str() {
                return Ok(());
            }
            let mut body = a.1.clone();
            body["spec"]["holderIdentity"] = Value::Null;
            body["spec"]["leaseDurationSeconds"] = json!(1);
            cluster.api.call(Method::PUT, &path, Some(&body)).await.map(|_| ())
        }
        _ => Ok(()),
    }
}

/// An int64 as etcd's gateway writes it (a string) or a number.
fn int(v: &Value) -> Option<i64> {
    v.as_str().and_then(|s| s.parse().ok()).or_else(|| v.as_i64())
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

async fn etcd_round(api: &Api, key: &str, s: &Settings, st: &mut State) -> Result<bool, ScaleError> {
    let ok = |a: &super::api::Answer, what: &str| {
        if a.0 == StatusCode::OK {
            Ok(())
        } else {
            Err(ScaleError::Refused { what: format!("etcd {what}"), refusal: refusal(a) })
        }
    };
    // Keep the lease alive; a lapsed one is replaced (and the key went with it).
    if let Some(id) = st.lease {
        let a = api.call(Method::POST, "/v3/lease/keepalive", Some(&json!({ "ID": id.to_string() }))).await?;
        ok(&a, "keepalive")?;
        if int(&a.1["result"]["TTL"]).unwrap_or(0) <= 0 {
            st.lease = None;
        }
    }
    let id = match st.lease {
        Some(id) => id,
        None => {
            let a = api.call(Method::POST, "/v3/lease/grant", Some(&json!({ "TTL": whole_seconds(s.ttl) }))).await?;
            ok(&a, "lease grant")?;
            let id = int(&a.1["ID"]).ok_or(ScaleError::NoLeaseId)?;
            st.lease = Some(id);
            id
        }
    };
    // Create the key if nobody holds it; read it either way.
    let txn = json!({
        "compare": [{ "key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0" }],
        "success": [{ "request_put": { "key": b64(key), "value": b64(&s.identity), "lease": id.to_string() } }],
        "failure": [{ "request_range": { "key": b64(key) } }],
    });
    let a = api.call(Method::POST, "/v3/kv/txn", Some(&txn)).await?;
    ok(&a, "txn")?;
    if a.1["succeeded"].as_bool() == Some(true) {
        return Ok(true);
    }
    let kv = &a.1["responses"][0]["response_range"]["kvs"][0];
    Ok(int(&kv["lease"]) == Some(id))
}

fn lease_path(c: &Cluster, lease: &str) -> String {
    format!("/apis/coordination.k8s.io/v1/namespaces/{}/leases/{lease}", c.namespace)
}

async fn lease_round(c: &Cluster, lease: &str, s: &Settings, st: &mut State) -> Result<bool, ScaleError> {
    let path = lease_path(c, lease);
    let now = micro_time(std::time::SystemTime::now());
    let secs = whole_seconds(s.ttl);
    let a = c.api.call(Method::GET, &path, None).await?;
    if a.0 == StatusCode::NOT_FOUND {
        let body = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": { "name": lease, "namespace": c.namespace },
            "spec": { "holderIdentity": s.identity, "leaseDurationSeconds": secs, "acquireTime": now, "renewTime": now, "leaseTransitions": 0 },
        });
        let w = c.api.call(Method::POST, &format!("/apis/coordination.k8s.io/v1/namespaces/{}/leases", c.namespace), Some(&body)).await?;
        return match w.0 {
            StatusCode::CREATED | StatusCode::OK => Ok(true),
            StatusCode::CONFLICT => Ok(false),
            _ => Err(ScaleError::Refused { what: format!("creating Lease {lease}"), refusal: refusal(&w) }),
        };
    }
    if a.0 != StatusCode::OK {
        return Err(ScaleError::Refused { what: format!("reading Lease {lease}"), refusal: refusal(&a) });
    }
    let spec = &a.1["spec"];
    let holder = spec["holderIdentity"].as_str().unwrap_or_default();
    // Expiry is judged on this root's clock, from when the record last
    // changed (as client-go does), never from the holder's timestamps.
    let record = format!("{holder}|{}|{}", spec["renewTime"], a.1["metadata"]["resourceVersion"]);
    let t = crate::clock::now_ms();
    let since = match &st.seen {
        Some((r, at)) if *r == record => *at,
        _ => {
            st.seen = Some((record, t));
            t
        }
    };
    let duration = spec["leaseDurationSeconds"].as_u64().unwrap_or(secs) * 1000;
    let ours = holder == s.identity;
    if !ours && !holder.is_empty() && t.saturating_sub(since) < duration {
        return Ok(false);
    }
    let mut body = a.1.clone();
    body["spec"]["holderIdentity"] = json!(s.identity);
    body["spec"]["leaseDurationSeconds"] = json!(secs);
    body["spec"]["renewTime"] = json!(now);
    if !ours {
        body["spec"]["acquireTime"] = json!(now);
        body["spec"]["leaseTransitions"] = json!(spec["leaseTransitions"].as_u64().unwrap_or(0) + 1);
    }
    let w = c.api.call(Method::PUT, &path, Some(&body)).await?;
    match w.0 {
        StatusCode::OK => Ok(true),
        StatusCode::CONFLICT => Ok(false),
        _ => Err(ScaleError::Refused { what: format!("renewing Lease {lease}"), refusal: refusal(&w) }),
    }
}

/// `ttl` in the whole seconds etcd and a Lease take, rounded up: the lease
/// others see never ends before this root stops leading on its own clock.
fn whole_seconds(ttl: Duration) -> u64 {
    ttl.as_millis().div_ceil(1000).max(1) as u64
}

/// A Kubernetes MicroTime: `2026-12-04T14:05:09.123456Z`.
pub fn micro_time(t: std::time::SystemTime) -> String {
    let (y, mo, d, h, mi, s) = crate::clock::civil(t);
    let us = t.duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_micros()).unwrap_or(0);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{us:06}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::from_millis(2500)), 3);
        assert_eq!(whole_seconds(Duration::from_secs(2)), 2);
        assert_eq!(whole_seconds(Duration::from_millis(1001)), 2);
    }

    #[test]
    fn micro_times_are_rfc3339_utc() {
        let t = std::time::UNIX_EPOCH + Duration::from_micros(1_796_393_109_123_456);
        assert_eq!(micro_time(t), "2026-12-04T14:05:09.123456Z");
        assert_eq!(micro_time(std::time::UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn a_sole_root_leads_and_a_candidate_follows_until_it_holds() {
        assert!(Leadership::sole().leads());
        let l = Leadership::sole();
        l.campaign();
        assert!(!l.leads());
        l.hold(crate::clock::now_ms(), Duration::from_secs(5));
        assert!(l.leads());
        l.hold(0, Duration::ZERO);
        assert!(!l.leads(), "a renewal older than the ttl no longer holds");
        assert_eq!(l.terms.load(Relaxed), 1);
    }
}
