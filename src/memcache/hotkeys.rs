//! Hot keys, the phase between target and the replicas: for a key the heat
//! ranking calls hot, a read may be answered from the root's cache (or
//! reserve the fill of it), may be spread over every replica, or may read one
//! of the key's split places; a write drops the key's cached answers before
//! it is sent and once it is answered, and deletes its split copies. (Gets of
//! several keys look their hot keys up in `multiget`.)

use super::hotcache::{Lookup, Reservation};
use super::service::Service;
use bytes::Bytes;
use std::time::Instant;

/// How a single-key read of a hot key goes to its shard.
#[derive(Default)]
pub struct Plan {
    /// The root-cache slot this read fills.
    pub fill: Option<Reservation>,
    /// Read any replica in turn, not the one the read policy or home pins.
    pub spread: bool,
    /// Read one of this many places (key-split); 0 or 1: the owner only.
    pub split: usize,
}

/// What the phase makes of a single-key read.
pub enum Read {
    /// Answered from the root's cache.
    Answered(Bytes),
    /// Goes to the shard, as planned.
    Shard(Plan),
}

/// A `get`/`gets` (`cas`) or `gat`/`gats` (`touch`) of the one key `key`.
pub fn get(svc: &Service, key: &[u8], cas: bool, touch: bool) -> Read {
    if !svc.heat.is_hot(key) {
        return Read::Shard(Plan::default());
    }
    let m = &svc.heat.policy().mitigation;
    // A touch changes the item's expiry: it always reaches the shard.
    let fill = match (&svc.hot_cache, touch) {
        (Some(c), false) => match c.lookup(key, cas, Instant::now()) {
            Lookup::Hit(a) => return Read::Answered(a),
            Lookup::Fill(slot) => Some(slot),
            Lookup::Pass => None,
        },
        _ => None,
    };
    // Split copies hold values, not cas values, and are not touched.
    let split = if cas || touch { 0 } else { m.split };
    Read::Shard(Plan { fill, spread: m.spread, split })
}

/// Whether a meta get of `key` is spread over the replicas.
pub fn spread(svc: &Service, key: &[u8]) -> bool {
    svc.heat.policy().mitigation.spread && svc.heat.is_hot(key)
}

/// Before a write of `key` is sent: no read that races it may keep an old answer.
pub fn before_write(svc: &Service, key: &[u8]) {
    if let Some(c) = &svc.hot_cache {
        c.invalidate(key);
    }
}

/// Once a write of `key` (on `shard`) is answered: the root's answers are
/// dropped again, and a split key's copies deleted before the client hears.
pub async fn after_write(svc: &Service, key: &[u8], shard: usize, lane: usize) {
    before_write(svc, key);
    let split = svc.heat.policy().mitigation.split;
    if split > 1 && svc.heat.is_hot(key) {
        super::split::drop_copies(svc, key, shard, split, lane).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heat::{CachePolicy, KeyHeat, Mitigation, Policy};
    use std::time::Duration;

    /// A service whose heat calls `hot` hot, with the given mitigation.
    fn service(mitigation: Mitigation, hot: &[u8]) -> Service {
        let heat = KeyHeat::new(Policy { window: Duration::from_secs(10), top_keys: 16, sample: 1, hot_share: 0.2, mitigation });
        for _ in 0..100 {
            heat.sample(hot);
        }
        heat.sample(b"cold");
        heat.refresh_hot();
        super::super::stub::service_with(&[], super::super::Writes::First, super::super::Reads::RoundRobin, heat)
    }

    const HIT: &[u8] = b"VALUE hot 0 1\r\nv\r\nEND\r\n";

    #[test]
    fn a_hot_keys_read_fills_the_root_once_then_is_answered_there_until_a_write() {
        let cache = Some(CachePolicy { ttl: Duration::from_secs(30), max_bytes: 1 << 20 });
        let svc = service(Mitigation { cache, spread: true, split: 0, split_ttl: 1 }, b"hot");
        assert!(matches!(get(&svc, b"cold", false, false), Read::Shard(Plan { fill: None, spread: false, split: 0 })));
        let Read::Shard(plan) = get(&svc, b"hot", false, false) else { panic!("the first read goes to the shard") };
        assert!(plan.spread);
        plan.fill.expect("and reserves the fill").fill(&Bytes::from_static(HIT), Instant::now());
        assert!(matches!(get(&svc, b"hot", false, false), Read::Answered(a) if a == HIT));
        assert!(matches!(get(&svc, b"hot", true, false), Read::Shard(Plan { fill: Some(_), .. })), "gets answers are kept apart");
        assert!(matches!(get(&svc, b"hot", false, true), Read::Shard(Plan { fill: None, .. })), "a touch reaches the shard");
        before_write(&svc, b"hot");
        assert!(matches!(get(&svc, b"hot", false, false), Read::Shard(Plan { fill: Some(_), .. })), "a write dropped it");
        assert!(spread(&svc, b"hot") && !spread(&svc, b"cold"));
    }

    #[test]
    fn only_plain_gets_of_a_hot_key_are_split() {
        let svc = service(Mitigation { cache: None, spread: false, split: 4, split_ttl: 1 }, b"hot");
        assert!(matches!(get(&svc, b"hot", false, false), Read::Shard(Plan { split: 4, fill: None, spread: false })));
        assert!(matches!(get(&svc, b"hot", true, false), Read::Shard(Plan { split: 0, .. })));
        assert!(matches!(get(&svc, b"hot", false, true), Read::Shard(Plan { split: 0, .. })));
        assert!(matches!(get(&svc, b"cold", false, false), Read::Shard(Plan { split: 0, .. })));
    }
}
