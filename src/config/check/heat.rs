//! A service's heat settings checked and converted (HTTP and memcache services alike).

use crate::config::error::Reporter;
use crate::config::schema::heat::HeatSpec;
use crate::heat::Policy;
use std::time::Duration;

pub fn policy(h: &HeatSpec, r: &mut Reporter) -> Policy {
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
    Policy { window, top_keys: *h.top_keys.get_ref(), sample: (*h.sample.get_ref()).max(1), hot_share: share }
}
