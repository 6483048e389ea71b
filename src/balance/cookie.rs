//! The `cookie` balancer: the proxy sets a cookie naming the chosen replica, and
//! later requests carrying it go to that replica while it is healthy. The value
//! is a keyed hash of the replica's configured name, so it reveals no address
//! and survives reloads; unknown or forged values are ignored, and a client
//! whose replica is unhealthy is re-pinned.

use super::round_robin::RoundRobin;
use crate::hash::xxh3_seeded;

const SEED: u64 = 0x636f_6f6b_6965_6166; // "cookieaf"

/// The affinity cookie: its name, path and lifetime (a session cookie without one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieSettings {
    pub name: String,
    pub path: String,
    pub ttl: Option<std::time::Duration>,
}

impl Default for CookieSettings {
    fn default() -> Self {
        CookieSettings { name: "rm_affinity".into(), path: "/".into(), ttl: None }
    }
}

pub struct CookieBalancer {
    /// The cookie value of each endpoint.
    pub values: Vec<u64>,
    rr: RoundRobin,
}

impl CookieBalancer {
    /// `names` are the endpoints' stable names; `salt` keys the hash (the service name).
    pub fn new(names: &[&str], weights: &[u32], salt: &str) -> CookieBalancer {
        let key = xxh3_seeded(salt.as_bytes(), SEED);
        CookieBalancer { values: names.iter().map(|n| xxh3_seeded(n.as_bytes(), key)).collect(), rr: RoundRobin::new(weights) }
    }

    /// Parses a cookie value (16 hex digits).
    pub fn parse(value: &[u8]) -> Option<u64> {
        if value.len() != 16 {
            return None;
        }
        u64::from_str_radix(std::str::from_utf8(value).ok()?, 16).ok()
    }

    pub fn format(value: u64) -> String {
        format!("{value:016x}")
    }

    /// The pinned endpoint if `cookie` names one that is `ok`; else a round-robin pick.
    /// The bool says whether the client must be (re-)pinned.
    pub fn pick(&self, ok: &dyn Fn(usize) -> bool, cookie: Option<u64>) -> Option<(usize, bool)> {
        if let Some(v) = cookie {
            if let Some(i) = self.values.iter().position(|&x| x == v) {
                if ok(i) {
                    return Some((i, false));
                }
            }
        }
        self.rr.pick(ok).map(|i| (i, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_and_repins() {
        let b = CookieBalancer::new(&["a", "b", "c"], &[1, 1, 1], "svc");
        let v = b.values[1];
        assert_eq!(CookieBalancer::parse(CookieBalancer::format(v).as_bytes()), Some(v));
        assert_eq!(b.pick(&|_| true, Some(v)), Some((1, false)));
        let (i, repin) = b.pick(&|i| i != 1, Some(v)).unwrap();
        assert!(i != 1 && repin);
        let (_, repin) = b.pick(&|_| true, Some(12345)).unwrap();
        assert!(repin, "forged values are ignored");
        assert_eq!(CookieBalancer::parse(b"not-hex-at-all!!"), None);
        // Another service gives other values: nothing is guessable from names alone.
        assert_ne!(CookieBalancer::new(&["a"], &[1], "other").values[0], b.values[0]);
    }
}
