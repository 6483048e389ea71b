//! The two-tier replicated sharded cache on one machine: a ringmaster root
//! shards requests by key over three cache shards, each shard two ringmaster
//! cache replicas in front of the app. Each key lives on one shard; repeated
//! reads are answered by the cache tier, not the app; and a cache replica
//! killed under load leaves its shard serving from the other replica, with
//! no request failed.

mod common;
use common::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

fn cache_replica(app: &Backend) -> Proxy {
    Proxy::start(&format!("[[routes]]\nname = \"cache\"\nservice = \"app\"\ncache = {{}}\n\n{}", service("app", "round_robin", &[app], "")))
}

fn root(shards: &[(&str, &[&Proxy])]) -> Proxy {
    let mut c = String::from(
        "[[routes]]\nname = \"root\"\nservice = \"cache\"\n\n[services.cache]\nkind = \"sharded\"\nshard_header = \"x-shard\"\n\
         sharder = { key = { path_segment = 1 }, function = \"maglev\" }\n\n",
    );
    for (name, reps) in shards {
        let eps: Vec<String> =
            reps.iter().enumerate().map(|(i, p)| format!("{{ name = \"{name}{}\", address = \"{}\" }}", i + 1, p.addr)).collect();
        c.push_str(&format!("[services.cache.shards.{name}]\nendpoints = [{}]\n\n", eps.join(", ")));
    }
    Proxy::start(&c)
}

fn origin_count(b: &Backend) -> u64 {
    get(b.addr, "/admin/count").text().parse().unwrap()
}

#[test]
fn a_root_over_replicated_cache_shards_keeps_serving_when_a_cache_replica_dies() {
    let app = backend("app");
    let mut caches: Vec<Proxy> = (0..6).map(|_| cache_replica(&app)).collect();
    let r = root(&[("a", &[&caches[0], &caches[1]]), ("b", &[&caches[2], &caches[3]]), ("c", &[&caches[4], &caches[5]])]);
    let path = |i: usize| format!("/cc/item-{i}?cc=max-age=300");
    // Each key has one shard, every time.
    let mut home = HashMap::new();
    for i in 0..30 {
        let resp = r.get(&path(i));
        assert_eq!(resp.status, 200, "{}", resp.text());
        home.insert(i, resp.header("x-shard").unwrap().to_string());
    }
    assert_eq!(home.values().collect::<std::collections::HashSet<_>>().len(), 3, "{home:?}");
    // Repeated reads are answered by the cache tier: the app sees each key at
    // most once per replica of its shard.
    for _ in 0..3 {
        for i in 0..30 {
            let resp = r.get(&path(i));
            assert_eq!(resp.header("x-shard"), Some(home[&i].as_str()));
        }
    }
    for i in 0..30 {
        assert_eq!(r.get(&path(i)).header("x-cache"), Some("HIT"), "key {i} from the cache tier");
    }
    let asked = origin_count(&app);
    assert!(asked <= 60, "the app saw {asked} requests for 30 keys behind 2 replicas a shard");

    // Under load, a replica of shard a is killed.
    let (stop, sent, failed) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let addr = r.addr;
    let load: Vec<_> = (0..4)
        .map(|t| {
            let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut i = t;
                while !stop.load(Relaxed) {
                    let resp = get(addr, &format!("/cc/item-{}?cc=max-age=300", i % 30));
                    sent.fetch_add(1, Relaxed);
                    if resp.status != 200 {
                        failed.fetch_add(1, Relaxed);
                    }
                    i += 4;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let killed = caches.remove(0);
    drop(killed);
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Relaxed);
    for t in load {
        t.join().unwrap();
    }
    assert!(sent.load(Relaxed) > 100, "load ran: {}", sent.load(Relaxed));
    assert_eq!(failed.load(Relaxed), 0, "no request failed of {}", sent.load(Relaxed));
    // Shard a's keys are served by its other replica, from its cache.
    for i in (0..30).filter(|i| home[i] == "a") {
        let resp = r.get(&path(i));
        assert_eq!((resp.status, resp.header("x-shard")), (200, Some("a")));
        assert_eq!(resp.header("x-cache"), Some("HIT"));
    }
    // The surviving replica fetched at most the keys it had not held: still
    // at most once per key and replica.
    let now = origin_count(&app);
    assert!(now <= 60, "the app saw {asked} requests, then {now}, for 30 keys behind 2 replicas a shard");
}
