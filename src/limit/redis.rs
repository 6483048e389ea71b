//! The shared rate-limit store: Redis, one atomic script per decision (every
//! policy of the request at once, so a denial spends nothing anywhere), keys
//! with TTLs, times from the Redis server's clock so every proxy agrees.
//! When Redis is unreachable or slow, the configured failure mode decides:
//! `open` (the local store takes over) or `closed` (503); each transition is
//! logged and counted, and the store reconnects by itself.

use super::gcra::Decision;
use super::{Policy, Scope, Verdict};
use redis::aio::ConnectionManager;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
local tats = {}
local worst, worst_retry = 0, -1
for i = 1, n do
  local interval = tonumber(ARGV[2 * i - 1])
  local tol = interval * tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  local base = math.max(tat, now)
  local nt = base + interval
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

/// What happens to requests while Redis cannot answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFailure {
    /// Local limits decide.
    Open,
    /// 503.
    Closed,
}

pub struct RedisStore {
    client: redis::Client,
    conn: Mutex<Option<ConnectionManager>>,
    connecting: AtomicBool,
    script: redis::Script,
    pub timeout: Duration,
    pub on_failure: OnFailure,
    prefix: String,
    healthy: AtomicBool,
    pub failures: AtomicU64,
    pub transitions: AtomicU64,
}

/// The shared store could not decide.
#[derive(Debug, thiserror::Error)]
#[error("the shared rate-limit store did not answer: {0}")]
pub struct Unavailable(String);

impl RedisStore {
    pub fn new(url: &str, timeout: Duration, on_failure: OnFailure, prefix: &str) -> Result<RedisStore, redis::RedisError> {
        Ok(RedisStore {
            client: redis::Client::open(url)?,
            conn: Mutex::new(None),
            connecting: AtomicBool::new(false),
            script: redis::Script::new(SCRIPT),
            timeout,
            on_failure,
            prefix: prefix.to_string(),
            healthy: AtomicBool::new(true),
            failures: AtomicU64::new(0),
            transitions: AtomicU64::new(0),
        })
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    fn mark(&self, ok: bool, why: &str) {
        if self.healthy.swap(ok, Relaxed) != ok {
            self.transitions.fetch_add(1, Relaxed);
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

    /// A connection, or None while one is being made in the background.
    fn connection(self: &std::sync::Arc<Self>) -> Option<ConnectionManager> {
        if let Some(c) = self.conn.lock().expect("redis conn lock").clone() {
            return Some(c);
        }
        if !self.connecting.swap(true, Relaxed) {
            let me = self.clone();
            tokio::spawn(async move {
                let config =
                    redis::aio::ConnectionManagerConfig::new().set_connection_timeout(Some(me.timeout.max(Duration::from_millis(200))));
                match tokio::time::timeout(Duration::from_secs(2), me.client.get_connection_manager_with_config(config)).await {
                    Ok(Ok(c)) => *me.conn.lock().expect("redis conn lock") = Some(c),
                    Ok(Err(e)) => me.mark(false, &e.to_string()),
                    Err(_) => me.mark(false, "connect timed out"),
                }
                me.connecting.store(false, Relaxed);
            });
        }
        None
    }

    /// Decides a request against `policies` for identity `who`, in one script.
    pub async fn check(self: &std::sync::Arc<Self>, policies: &[&Policy], who: u128) -> Result<Verdict, Unavailable> {
        let Some(mut conn) = self.connection() else {
            self.mark(false, "not connected");
            return Err(Unavailable("not connected".into()));
        };
        let mut inv = self.script.prepare_invoke();
        for p in policies {
            let key = match p.scope {
                Scope::Client => format!("{}{{{:x}}}:{:x}", self.prefix, who, p.seed),
                Scope::Route => format!("{}{{route-{:x}}}", self.prefix, p.seed),
            };
            inv.key(key);
            inv.arg((p.quota.interval / 1000).max(1)).arg(p.quota.burst);
        }
        match tokio::time::timeout(self.timeout, inv.invoke_async::<Vec<i64>>(&mut conn)).await {
            Ok(Ok(v)) if v.len() == 5 => {
                self.mark(true, "");
                Ok(Verdict {
                    allowed: v[0] == 1,
                    policy: v[1].max(0) as usize,
                    decision: Decision {
                        allowed: v[0] == 1,
                        remaining: v[2].max(0) as u64,
                        reset_ns: v[3].max(0) as u64 * 1000,
                        retry_after_ns: v[4].max(0) as u64 * 1000,
                    },
                })
            }
            Ok(Ok(v)) => {
                self.mark(false, "unexpected script answer");
                Err(Unavailable(format!("unexpected answer {v:?}")))
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
