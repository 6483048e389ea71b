//! The shared rate-limit store: Redis, one atomic script per decision (every
//! policy of the request at once, so a denial spends nothing anywhere), keys
//! with TTLs, times from the Redis server's clock so every proxy agrees.
//! When Redis is unreachable or slow, the configured failure mode decides:
//! `open` (the local store takes over) or `closed` (503); each transition is
//! logged and counted. Once a decision failed, the store is known down and
//! requests no longer wait for it (a circuit breaker): each is decided by the
//! failure mode at once, while a background probe pings Redis every
//! [`PROBE_EVERY`] and switches back when it answers.
//!
//! Redis Cluster: every key carries a hash tag (the client's identity, or the
//! route ceiling), so one client's counters share a slot and any decision that
//! touches one slot stays one atomic script. A decision spanning slots (a
//! per-client policy with a route ceiling) runs one script per slot, client
//! first; if a later one denies, what the earlier ones spent is given back, so
//! a denied request still spends nothing (between the two scripts another
//! request may see the earlier spend: an overshoot bounded by concurrency).

use super::gcra::Decision;
use super::{Policy, Scope, Verdict};
use redis::aio::ConnectionManager;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// How often a store known to be down is tried again.
pub const PROBE_EVERY: Duration = Duration::from_millis(250);

const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
local cost = tonumber(ARGV[2 * n + 1])
local tats = {}
local worst, worst_retry = 0, -1
for i = 1, n do
  local interval = tonumber(ARGV[2 * i - 1])
  local tol = interval * tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  local base = math.max(tat, now)
  local nt = base + interval * cost
  tats[i] = nt
  if nt - now > tol and nt - now - tol > worst_retry then
    worst, worst_retry = i, nt - now - tol
  end
end
if worst > 0 then
  local interval = tonumber(ARGV[2 * worst - 1])
  local tol = interval * tonumber(ARGV[2 * worst])
  local reset = math.max(tonumber(redis.call('GET', KEYS[worst]) or '0'), now) - now
  return {0, worst - 1, math.floor((tol - math.min(reset, tol)) / interval), reset, worst_retry}
end
local best, best_rem, best_reset = 0, -1, 0
for i = 1, n do
  local interval = tonumber(ARGV[2 * i - 1])
  local tol = interval * tonumber(ARGV[2 * i])
  local reset = tats[i] - now
  local rem = math.floor((tol - reset) / interval)
  redis.call('SET', KEYS[i], tostring(tats[i]), 'PX', math.floor(reset / 1000) + 1000)
  if best_rem < 0 or rem < best_rem then
    best, best_rem, best_reset = i, rem, reset
  end
end
return {1, best - 1, best_rem, best_reset, 0}
"#;

/// Gives back what a request took from each key (the TAT moves back by its cost in intervals).
const REFUND: &str = r#"
for i = 1, #KEYS do
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat > 0 then
    redis.call('SET', KEYS[i], tostring(math.max(tat - tonumber(ARGV[i]), 0)), 'KEEPTTL')
  end
end
return {1}
"#;

/// A connection to one Redis, or to a Redis Cluster.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Conn {
    async fn invoke(&mut self, inv: &redis::ScriptInvocation<'_>) -> redis::RedisResult<Vec<i64>> {
        match self {
            Conn::Single(c) => inv.invoke_async(c).await,
            Conn::Cluster(c) => inv.invoke_async(c).await,
        }
    }

    async fn ping(&mut self) -> redis::RedisResult<()> {
        let ping = redis::cmd("PING");
        match self {
            Conn::Single(c) => ping.query_async(c).await,
            Conn::Cluster(c) => ping.query_async(c).await,
        }
    }
}

/// What happens to requests while Redis cannot answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFailure {
    /// Local limits decide.
    Open,
    /// 503.
    Closed,
}

/// The shared store as the config names it: the client (its URL parsed), the
/// URL (a cluster's seed node), and how decisions are made.
#[derive(Clone, Debug)]
pub struct Settings {
    pub client: redis::Client,
    pub url: String,
    pub cluster: bool,
    pub timeout: Duration,
    pub on_failure: OnFailure,
    pub prefix: String,
}

pub struct RedisStore {
    url: String,
    client: redis::Client,
    cluster: bool,
    conn: Mutex<Option<Conn>>,
    connecting: AtomicBool,
    script: redis::Script,
    refund: redis::Script,
    pub timeout: Duration,
    pub on_failure: OnFailure,
    prefix: String,
    healthy: AtomicBool,
    /// A background probe is running.
    probing: AtomicBool,
    /// Clock milliseconds when the store was last found down.
    down_since_ms: AtomicU64,
    /// Milliseconds spent down, over the periods that ended.
    degraded_ms: AtomicU64,
    pub failures: AtomicU64,
    /// Decisions made without asking the store, because it was known down.
    pub skipped: AtomicU64,
    pub transitions: AtomicU64,
}

/// The shared store could not decide.
#[derive(Debug, thiserror::Error)]
#[error("the shared rate-limit store did not answer: {0}")]
pub struct Unavailable(String);

impl RedisStore {
    /// A store on the Redis `s` names, or on the cluster it is a node of.
    pub fn new(s: Settings) -> RedisStore {
        RedisStore {
            url: s.url,
            client: s.client,
            cluster: s.cluster,
            conn: Mutex::new(None),
            connecting: AtomicBool::new(false),
            script: redis::Script::new(SCRIPT),
            refund: redis::Script::new(REFUND),
            timeout: s.timeout,
            on_failure: s.on_failure,
            prefix: s.prefix,
            healthy: AtomicBool::new(true),
            probing: AtomicBool::new(false),
            down_since_ms: AtomicU64::new(0),
            degraded_ms: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            transitions: AtomicU64::new(0),
        }
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    /// Seconds spent down, including a period still running.
    pub fn degraded_seconds(&self) -> f64 {
        let running = if self.healthy() { 0 } else { crate::clock::now_ms().saturating_sub(self.down_since_ms.load(Relaxed)) };
        (self.degraded_ms.load(Relaxed) + running) as f64 / 1000.0
    }

    fn mark(self: &Arc<Self>, ok: bool, why: &str) {
        if self.healthy.swap(ok, Relaxed) != ok {
            self.transitions.fetch_add(1, Relaxed);
            let now = crate::clock::now_ms();
            if ok {
                self.degraded_ms.fetch_add(now.saturating_sub(self.down_since_ms.load(Relaxed)), Relaxed);
            } else {
                self.down_since_ms.store(now, Relaxed);
                self.probe();
            }
            if ok {
                tracing::info!("shared rate-limit store (Redis) answers again; shared limits are back");
            } else {
                tracing::warn!(error = why, on_failure = ?self.on_failure, "shared rate-limit store (Redis) failed; limits fail {}", if self.on_failure == OnFailure::Open { "open to local counters" } else { "closed (503)" });
            }
        }
        if !ok {
            self.failures.fetch_add(1, Relaxed);
        }
    }

    /// Pings the store every [`PROBE_EVERY`] in the background until it answers
    /// (or the store is dropped by a reload), then marks it up.
    fn probe(self: &Arc<Self>) {
        if self.probing.swap(true, Relaxed) {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        rt.spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                let Some(me) = weak.upgrade() else { return };
                let answered = match me.connection() {
                    Some(mut c) => matches!(tokio::time::timeout(me.timeout, c.ping()).await, Ok(Ok(()))),
                    None => false,
                };
                if answered {
                    me.probing.store(false, Relaxed);
                    me.mark(true, "");
                    return;
                }
            }
        });
    }

    /// Starts connecting in the background (when a runtime runs), so the first
    /// decisions need not wait for it.
    pub fn connect(self: &Arc<Self>) {
        if tokio::runtime::Handle::try_current().is_ok() {
            let _ = self.connection();
        }
    }

    /// A connection, or None while one is being made in the background.
    fn connection(self: &std::sync::Arc<Self>) -> Option<Conn> {
        if let Some(c) = self.conn.lock().expect("redis conn lock").clone() {
            return Some(c);
        }
        if !self.connecting.swap(true, Relaxed) {
            let me = self.clone();
            tokio::spawn(async move {
                let connect_timeout = me.timeout.max(Duration::from_millis(200));
                let made = async {
                    if me.cluster {
                        let client = redis::cluster::ClusterClient::builder(vec![me.url.as_str()])
                            .connection_timeout(connect_timeout)
                            .response_timeout(me.timeout)
                            .retries(1)
                            .build()?;
                        client.get_async_connection().await.map(Conn::Cluster)
                    } else {
                        let config = redis::aio::ConnectionManagerConfig::new().set_connection_timeout(Some(connect_timeout));
                        me.client.get_connection_manager_with_config(config).await.map(Conn::Single)
                    }
                };
                match tokio::time::timeout(Duration::from_secs(2), made).await {
                    Ok(Ok(c)) => {
                        *me.conn.lock().expect("redis conn lock") = Some(c);
                        me.mark(true, "");
                    }
                    Ok(Err(e)) => me.mark(false, &e.to_string()),
                    Err(_) => me.mark(false, "connect timed out"),
                }
                me.connecting.store(false, Relaxed);
            });
        }
        None
    }

    /// The key of policy `p` for identity `who`, and its hash tag.
    fn key(&self, p: &Policy, who: u128) -> (String, String) {
        let tag = match p.scope {
            Scope::Client => format!("{who:x}"),
            Scope::Route => format!("route-{:x}", p.seed),
        };
        let key = match p.scope {
            Scope::Client => format!("{}{{{tag}}}:{:x}", self.prefix, p.seed),
            Scope::Route => format!("{}{{{tag}}}", self.prefix),
        };
        (key, tag)
    }

    /// Decides a request against `policies` for identity `who`: one script per
    /// hash-tag group (one group unless on a cluster with mixed scopes).
    pub async fn check(self: &std::sync::Arc<Self>, policies: &[&Policy], who: u128, cost: u64) -> Result<Verdict, Unavailable> {
        if !self.healthy() {
            self.skipped.fetch_add(1, Relaxed);
            return Err(Unavailable("known down; a background probe watches for its return".into()));
        }
        let Some(mut conn) = self.connection() else {
            self.mark(false, "not connected");
            return Err(Unavailable("not connected".into()));
        };
        let keys: Vec<(String, String)> = policies.iter().map(|p| self.key(p, who)).collect();
        // Groups of policy indexes by slot tag, the client's first; one group off a cluster.
        let mut groups: Vec<Vec<usize>> = Vec::new();
        if self.cluster {
            let mut order: Vec<usize> = (0..policies.len()).collect();
            order.sort_by_key(|&i| policies[i].scope != Scope::Client);
            for i in order {
                match groups.iter_mut().find(|g| keys[g[0]].1 == keys[i].1) {
                    Some(g) => g.push(i),
                    None => groups.push(vec![i]),
                }
            }
        } else {
            groups.push((0..policies.len()).collect());
        }
        let result = tokio::time::timeout(self.timeout, async {
            let mut best: Option<Verdict> = None;
            for (n, g) in groups.iter().enumerate() {
                let mut inv = self.script.prepare_invoke();
                for &i in g {
                    inv.key(&keys[i].0);
                    inv.arg((policies[i].quota.interval / 1000).max(1)).arg(policies[i].quota.burst);
                }
                inv.arg(cost.max(1));
                let v = conn.invoke(&inv).await?;
                if v.len() != 5 {
                    return Err(redis::RedisError::from((redis::ErrorKind::Client, "unexpected script answer")));
                }
                let verdict = Verdict {
                    allowed: v[0] == 1,
                    policy: g[v[1].clamp(0, g.len() as i64 - 1) as usize],
                    decision: Decision {
                        allowed: v[0] == 1,
                        remaining: v[2].max(0) as u64,
                        reset_ns: v[3].max(0) as u64 * 1000,
                        retry_after_ns: v[4].max(0) as u64 * 1000,
                    },
                };
                if !verdict.allowed {
                    // Give back what the groups before this one spent.
                    for g in &groups[..n] {
                        let mut inv = self.refund.prepare_invoke();
                        for &i in g {
                            inv.key(&keys[i].0);
                            inv.arg((policies[i].quota.interval / 1000).max(1) * cost.max(1));
                        }
                        conn.invoke(&inv).await?;
                    }
                    return Ok(verdict);
                }
                if best.as_ref().is_none_or(|b| verdict.decision.remaining < b.decision.remaining) {
                    best = Some(verdict);
                }
            }
            best.ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Client, "no policy")))
        })
        .await;
        match result {
            Ok(Ok(v)) => {
                self.mark(true, "");
                Ok(v)
            }
            Ok(Err(e)) => {
                self.mark(false, &e.to_string());
                Err(Unavailable(e.to_string()))
            }
            Err(_) => {
                self.mark(false, "timed out");
                Err(Unavailable(format!("no answer within {:?}", self.timeout)))
            }
        }
    }
}
