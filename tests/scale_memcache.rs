//! Per-shard autoscaling of a memcache service with real memcached: load on
//! the shard adds a memcached replica from the local back-end; the cold
//! replica's misses are read again from the old one while it warms up
//! (`warm_up`), so no get misses a key the shard holds; writes reach the new
//! replica; and when the load falls it leaves again, with no failed command.

mod common;
use common::mc::{ambassador, memcached, Raw};
use common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[test]
fn a_hot_memcache_shard_gets_a_replica_that_warms_up_from_the_old_one() {
    let m1 = memcached();
    let listen = free_addr();
    let base = 24_000 + (std::process::id() % 1000) as u16 * 5;
    let cfg = ambassador(listen, &[("a", vec![m1.addr])], "", "warm_up = \"5m\"\nreads = \"round_robin\"")
        + &format!(
            "[services.cache.heat]\nwindow = \"1s\"\n\n\
             [services.cache.scaler]\ntarget = 20\nmin_replicas = 1\nmax_replicas = 2\n\
             scale_up_window = \"0s\"\nscale_down_window = \"3s\"\ncooldown = \"2s\"\n\
             local = {{ command = \"memcached -u root -l {{host}} -p {{port}} -U 0 -t 1 -m 16\", ports = \"{base}-{}\", drain = \"1s\" }}\n",
            base + 4
        );
    let p = Proxy::start(&cfg);
    wait_port(listen);
    let mut c = Raw::connect(listen);
    assert_eq!(c.line("set old 0 0 5\r\nvalue\r\n"), "STORED\r\n");
    // About 100 gets a second of a key only the first replica holds, then 5 once calm.
    let (stop, calm) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let (ok, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(Mutex::new(Vec::<String>::new())));
    let load = {
        let (stop, calm, ok, bad) = (stop.clone(), calm.clone(), ok.clone(), bad.clone());
        std::thread::spawn(move || {
            let mut c = Raw::connect(listen);
            while !stop.load(Relaxed) {
                let a = String::from_utf8(c.ask(b"get old\r\n", b"END\r\n", 1)).unwrap();
                if a == "VALUE old 0 5\r\nvalue\r\nEND\r\n" {
                    ok.fetch_add(1, Relaxed);
                } else {
                    bad.lock().unwrap().push(a);
                }
                std::thread::sleep(Duration::from_millis(if calm.load(Relaxed) { 200 } else { 10 }));
            }
        })
    };
    let replicas = |p: &Proxy| p.admin_json("/admin/heat")["services"][0]["shards"][0]["endpoints"].as_array().unwrap().len();
    eventually(30, "shard a scales up to 2 replicas", || replicas(&p) == 2);
    let heat = p.admin_json("/admin/heat");
    let scaled: std::net::SocketAddr = heat["services"][0]["shards"][0]["scaler"]["scaled"][0].as_str().unwrap().parse().unwrap();
    // Reads keep coming over both replicas for a while; the new one holds nothing of `old`.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(Raw::connect(scaled).line("get old\r\n"), "END\r\n", "the new replica is cold");
    let on_new = p.metric(&format!(
        "ringmaster_memcache_endpoint_requests_total{{service=\"cache\",shard=\"a\",endpoint=\"a-{}\",address=\"{scaled}\"}}",
        scaled.port()
    ));
    assert!(on_new > 10.0, "reads reach the new replica: {on_new}");
    // A write through the ambassador reaches the new replica too.
    // (writes = "first": the client is answered once the first replica stored it.)
    assert_eq!(c.line("set fresh 0 0 1\r\nx\r\n"), "STORED\r\n");
    eventually(5, "the write reached the new replica", || {
        String::from_utf8(Raw::connect(scaled).ask(b"get fresh\r\n", b"END\r\n", 1)).unwrap() == "VALUE fresh 0 1\r\nx\r\nEND\r\n"
    });
    calm.store(true, Relaxed);
    eventually(40, "shard a is back to one replica", || replicas(&p) == 1);
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Relaxed);
    load.join().unwrap();
    assert!(bad.lock().unwrap().is_empty(), "gets that missed or failed: {:?}", &bad.lock().unwrap()[..bad.lock().unwrap().len().min(5)]);
    assert!(ok.load(Relaxed) > 200, "the load ran throughout: {}", ok.load(Relaxed));
    eventually(10, "the scaled memcached is stopped", || std::net::TcpStream::connect(scaled).is_err());
}
