//! A service's heat settings checked and converted (HTTP and memcache services alike).

use crate::config::error::Reporter;
use crate::config::schema::heat::{HeatSpec, HotKeysSpec};
use crate::heat::{CachePolicy, Mitigation, Policy};
use std::time::Duration;
use toml::Spanned;

/// The heat policy of a service from its `heat` and `hot_keys` tables;
/// `memcache` says which protocol's mitigations apply.
pub fn policy(h: &HeatSpec, hot: Option<&Spanned<HotKeysSpec>>, memcache: bool, r: &mut Reporter) -> Policy {
    let window = h.window.get_ref().0;
    if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&window) {
        r.error(h.window.span(), "heat window must be between 1s and 1h (rates are updated once a second)", "\"10s\"");
    }
    if *h.top_keys.get_ref() > 4096 {
        r.error(h.top_keys.span(), "top_keys must be at most 4096", "64 finds every key above 1/64 of the traffic");
    }
    if *h.sample.get_ref() == 0 {
        r.error(h.sample.span(), "sample is one request in N, so it must be at least 1", "8");
    }
    let share = *h.hot_share.get_ref();
    if !(share > 0.0 && share <= 1.0) {
        r.error(h.hot_share.span(), "hot_share must be above 0 and at most 1", "0.05: a key with 5% of the requests is hot");
    }
    let mitigation = hot.map(|m| mitigation(m, *h.top_keys.get_ref(), memcache, r)).unwrap_or_default();
    Policy { window, top_keys: *h.top_keys.get_ref(), sample: (*h.sample.get_ref()).max(1), hot_share: share, mitigation }
}

fn mitigation(spec: &Spanned<HotKeysSpec>, top_keys: usize, memcache: bool, r: &mut Reporter) -> Mitigation {
    let m = spec.get_ref();
    let ttl = m.ttl.get_ref().0;
    if !memcache && m.cache && (ttl.subsec_nanos() != 0 || ttl.is_zero()) {
        r.error(m.ttl.span(), "an HTTP service's hot_keys ttl is whole seconds (HTTP freshness counts in seconds, as Age does)", "\"1s\"");
    }
    if top_keys == 0 {
        r.error(spec.span(), "hot_keys needs heat.top_keys above 0: hot keys are found among the ranked ones", "heat = { top_keys = 64 }");
    }
    if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&ttl) {
        r.error(m.ttl.span(), "hot_keys ttl must be between 10ms and 60s (a cached answer may be that stale)", "\"1s\"");
    }
    if !(1024..=1 << 30).contains(m.max_bytes.get_ref()) {
        r.error(m.max_bytes.span(), "hot_keys max_bytes must be between 1024 and 1073741824", "8388608");
    }
    let cache = m.cache.then(|| CachePolicy { ttl, max_bytes: *m.max_bytes.get_ref() });
    let split = m.split.as_ref().map_or(0, |s| {
        let n = *s.get_ref();
        if !memcache {
            r.error(s.span(), "split is for memcache services (an HTTP answer has no copy to read)", "use cache or spread here");
        } else if !(2..=16).contains(&n) {
            r.error(s.span(), "split must be from 2 to 16 places", "split = 3");
        }
        n
    });
    let split_ttl = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    Mitigation { cache, spread: m.spread, split, split_ttl }
}

#[cfg(test)]
mod tests {
    const SHARDED: &str = "[[listeners]]\nname = \"main\"\nlisten = \"127.0.0.1:8080\"\n\n[[routes]]\nservice = \"users\"\n\n\
        [services.users]\nkind = \"sharded\"\nsharder = { key = \"path\" }\n\
        heat = { window = \"500ms\", top_keys = 5000, sample = 0, hot_share = 1.5 }\n\n\
        [services.users.shards.a]\nendpoints = [{ address = \"127.0.0.1:9001\" }]\n";

    #[test]
    fn every_bad_setting_is_named_at_its_position() {
        let e = crate::config::parse("t.toml", SHARDED).unwrap_err();
        let found: Vec<(usize, usize, &str)> = e.diagnostics().iter().map(|d| (d.line, d.col, d.message.as_str())).collect();
        let at = |needle: &str| found.iter().find(|d| d.2.contains(needle)).map(|d| (d.0, d.1)).unwrap_or_else(|| panic!("{needle}: {e}"));
        assert_eq!(at("heat window"), (11, 19), "{e}");
        assert_eq!(at("top_keys"), (11, 39), "{e}");
        assert_eq!(at("sample"), (11, 54), "{e}");
        assert_eq!(at("hot_share"), (11, 69), "{e}");
    }

    #[test]
    fn defaults_when_absent() {
        let good = SHARDED.replace("heat = { window = \"500ms\", top_keys = 5000, sample = 0, hot_share = 1.5 }\n", "");
        let plan = crate::config::parse("t.toml", &good).unwrap();
        assert_eq!(plan.services[0].heat, crate::heat::Policy::default());
    }
}
