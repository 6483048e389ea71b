//! Per-shard autoscaling with the `local` back-end and real processes: load
//! on one shard of a sharded service adds replicas to that shard only (up to
//! max_replicas), they take traffic, and when the load falls they leave again
//! (down to min_replicas), with requests flowing all along and none failed.

mod common;
use common::*;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Ids whose requests go to `shard`.
fn ids_on(p: &Proxy, shard: &str, n: usize) -> Vec<String> {
    (0..1000).map(|i| format!("u{i}")).filter(|id| p.get(&format!("/users/{id}")).header("x-shard") == Some(shard)).take(n).collect()
}

fn shard<'a>(heat: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    heat["services"][0]["shards"].as_array().unwrap().iter().find(|s| s["shard"] == name).unwrap()
}

#[test]
fn a_hot_shard_gets_replicas_and_gives_them_back_without_a_failed_request() {
    let (a, b) = (backend("a1"), backend("b1"));
    let base = 20_000 + (std::process::id() % 2000) as u16 * 10;
    let cfg = format!(
        "[[routes]]\nname = \"users\"\nservice = \"users\"\n\n\
         [services.users]\nkind = \"sharded\"\nshard_header = \"x-shard\"\n\
         sharder = {{ key = {{ path_segment = 1 }}, function = \"maglev\" }}\n\
         heat = {{ window = \"1s\" }}\n\n\
         [services.users.scaler]\ntarget = 20\nmin_replicas = 1\nmax_replicas = 3\n\
         scale_up_window = \"0s\"\nscale_down_window = \"3s\"\ncooldown = \"2s\"\n\
         local = {{ command = \"{BIN} backend --listen {{address}} --name {{name}}\", ports = \"{base}-{}\", ready_timeout = \"10s\", drain = \"5s\" }}\n\n\
         [services.users.shards.a]\nendpoints = [{{ name = \"a1\", address = \"{}\" }}]\n\
         [services.users.shards.b]\nendpoints = [{{ name = \"b1\", address = \"{}\" }}]\n",
        base + 9,
        a.addr,
        b.addr
    );
    let p = Proxy::start(&cfg);
    let hot = ids_on(&p, "a", 5);
    assert_eq!(hot.len(), 5);
    // A half-edited file on disk: a scale step is a pool update, which reads no file.
    let good = std::fs::read_to_string(&p.config).unwrap();
    std::fs::write(&p.config, good.replace("[services.users.shards.b]", "[services.users.shards.b\nhalf-written")).unwrap();
    // A load on shard a: about 100 requests a second, then 5 once `calm` is set.
    let (stop, calm) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(Mutex::new(Vec::<String>::new())));
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let load = {
        let (stop, calm, ok, failed, seen, addr) = (stop.clone(), calm.clone(), ok.clone(), failed.clone(), seen.clone(), p.addr);
        std::thread::spawn(move || {
            let mut c = KeepAlive::connect(addr).unwrap();
            let mut i = 0;
            while !stop.load(Relaxed) {
                let path = format!("/users/{}", hot[i % hot.len()]);
                i += 1;
                // POSTs with a body: never retried, so none may meet a replica on its way out.
                match c.request(&format!("POST {path} HTTP/1.1\r\nHost: test.local\r\nContent-Length: 5\r\n\r\nhello")) {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Relaxed);
                        seen.lock().unwrap().insert(r.backend());
                    }
                    Ok(r) => failed.lock().unwrap().push(format!("{path}: {}", r.status)),
                    Err(e) => {
                        failed.lock().unwrap().push(format!("{path}: {e}"));
                        c = KeepAlive::connect(addr).unwrap();
                    }
                }
                std::thread::sleep(Duration::from_millis(if calm.load(Relaxed) { 200 } else { 10 }));
            }
        })
    };
    let mut heat = serde_json::Value::Null;
    eventually(30, "shard a scales up to max_replicas", || {
        heat = p.admin_json("/admin/heat");
        shard(&heat, "a")["endpoints"].as_array().unwrap().len() == 3
    });
    let a_heat = shard(&heat, "a");
    assert_eq!(a_heat["scaler"]["current"], 3, "{heat:#}");
    assert_eq!(a_heat["scaler"]["scaled"].as_array().unwrap().len(), 2, "{heat:#}");
    assert_eq!(shard(&heat, "b")["endpoints"].as_array().unwrap().len(), 1, "the cold shard keeps one replica: {heat:#}");
    eventually(10, "the new replicas answer", || seen.lock().unwrap().iter().filter(|n| n.starts_with("a-")).count() == 2);
    let scaled: Vec<String> = a_heat["scaler"]["scaled"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
    // A replica's own count of requests; None once it is stopped.
    let served = |addr: &str| {
        request_bytes(addr.parse().unwrap(), b"GET /admin/requests HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .ok()
            .map(|r| r.text().trim().parse::<u64>().unwrap())
    };
    // Per scaled replica: how often it was seen out of the pool, and its count when first seen so.
    let mut gone: std::collections::HashMap<String, (u32, Option<u64>)> = Default::default();
    // Hot for a few more seconds: max_replicas holds although the load asks for more.
    std::thread::sleep(Duration::from_secs(3));
    let heat = p.admin_json("/admin/heat");
    assert_eq!(shard(&heat, "a")["endpoints"].as_array().unwrap().len(), 3, "{heat:#}");
    assert!(shard(&heat, "a")["scaler"]["desired"].as_u64().unwrap() <= 3);
    assert!(p.metric("ringmaster_scaler_steps_total{service=\"users\",shard=\"a\",step=\"up\"}") >= 1.0);
    assert_eq!(
        (p.metric("ringmaster_reloads_total"), p.metric("ringmaster_reload_failures_total")),
        (0.0, 0.0),
        "a scale step is no reload"
    );
    assert!(!p.stderr().contains("config reload"), "{}", p.stderr());
    std::fs::write(&p.config, &good).unwrap();
    // The load falls: the scaled replicas leave, while requests keep coming.
    calm.store(true, Relaxed);
    eventually(40, "shard a is back to min_replicas", || {
        let heat = p.admin_json("/admin/heat");
        let a = shard(&heat, "a");
        // A replica out of the pool gets nothing new while it drains, by its own count
        // (counted from its second sighting: a request picked before the swap may still land).
        let in_pool: Vec<&str> = a["endpoints"].as_array().unwrap().iter().filter_map(|e| e["address"].as_str()).collect();
        for addr in scaled.iter().filter(|s| !in_pool.contains(&s.as_str())) {
            let now = served(addr);
            let (seen, at) = gone.entry(addr.clone()).or_insert((0, None));
            *seen += 1;
            match (*seen, *at, now) {
                (2, _, n) => *at = n,
                (3.., Some(before), Some(n)) => assert_eq!(n, before, "{addr} got requests after it left the pool"),
                _ => {}
            }
        }
        a["endpoints"].as_array().unwrap().len() == 1 && a["scaler"]["scaled"].as_array().unwrap().is_empty()
    });
    // Keep the low load a moment past the drain, then stop.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Relaxed);
    load.join().unwrap();
    assert!(failed.lock().unwrap().is_empty(), "failed requests: {:?}", failed.lock().unwrap());
    assert!(ok.load(Relaxed) > 300, "{}", ok.load(Relaxed));
    assert!(p.metric("ringmaster_scaler_steps_total{service=\"users\",shard=\"a\",step=\"down\"}") >= 1.0);
    // The replicas the scaler started are gone: nothing listens on the range.
    for port in base..=base + 9 {
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "a scaled replica still listens on {port}");
    }
    assert!(p.stderr().contains("scaling up") && p.stderr().contains("scaling down"), "decisions are logged");
}

#[test]
fn a_scaler_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let cfg = "[[listeners]]\nname = \"main\"\nlisten = \"127.0.0.1:8080\"\n\n[[routes]]\nservice = \"app\"\n\n\
               [services.app]\nkind = \"replicated\"\nendpoints = [{ address = \"127.0.0.1:9001\" }]\n\
               scaler = { target = 0, min_replicas = 3, max_replicas = 2, local = { command = \"x\", ports = \"9-1\" } }\n";
    std::fs::write(&path, cfg).unwrap();
    let out = std::process::Command::new(BIN).args(["check", "--config", path.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in
        ["scaler target must be above 0", "min_replicas 3 and max_replicas 2", "must say where the replica listens", "is not a port range"]
    {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    assert!(err.contains(&format!("{}:11:", path.display())), "{err}");
}

#[test]
fn slow_start_and_warm_up_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let cfg = "[[listeners]]\nname = \"main\"\nlisten = \"127.0.0.1:8080\"\n\n[[routes]]\nservice = \"app\"\n\n\
               [services.app]\nkind = \"replicated\"\nbalancer = \"hash\"\nslow_start = \"2h\"\nendpoints = [{ address = \"127.0.0.1:9001\" }]\n\n\
               [[listeners]]\nname = \"mc\"\nlisten = \"127.0.0.1:11311\"\nprotocol = \"memcache\"\nservice = \"c\"\n\n\
               [services.c]\nkind = \"sharded\"\nprotocol = \"memcache\"\nmemcache = { warm_up = \"48h\" }\n\
               [services.c.shards.a]\nendpoints = [{ address = \"127.0.0.1:11411\" }]\n";
    std::fs::write(&path, cfg).unwrap();
    let out = std::process::Command::new(BIN).args(["check", "--config", path.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for (needle, line) in [("slow_start must be at most 1h", 11), ("slow_start would move keys", 11), ("warm_up must be at most 24h", 23)] {
        assert!(err.lines().any(|l| l.contains(&format!("{}:{line}:", path.display())) && l.contains(needle)), "{needle} at {line}: {err}");
    }
}

#[test]
fn names_with_control_bytes_are_refused_with_their_position() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[[listeners]]\nname = \"m\"\nlisten = \"127.0.0.1:1\"\n\n[[routes]]\nservice = \"users\"\n\n\
         [services.users]\nkind = \"sharded\"\nsharder = { key = { path_segment = 1 } }\n\n\
         [services.users.shards.\"a\\u0007b\"]\nendpoints = [{ address = \"127.0.0.1:9001\" }]\n\
         [services.users.shards.\"10.0.0.1:11211\"]\nendpoints = [{ address = \"127.0.0.1:9002\" }]\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN).args(["check", "--config", cfg.to_str().unwrap()]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains(":12:") && said.contains("control byte at byte 2"), "{said}");
    assert!(!said.contains("name `10.0.0.1:11211`"), "a host:port name is fine: {said}");
}

/// Each pool's step runs on its own: a pool whose command takes 6 s does not
/// hold up another pool's steps, which go on every tick meanwhile.
#[test]
fn a_slow_pool_never_delays_another() {
    let (a, b) = (backend("a1"), backend("b1"));
    let dir = tempfile::tempdir().unwrap();
    let (slow, fast) = (dir.path().join("slow.log"), dir.path().join("fast.log"));
    // min_replicas = 2 over a command that lists one endpoint: every tick asks for a step.
    let svc = |name: &str, addr: std::net::SocketAddr, run: String| {
        format!(
            "[[routes]]\nname = \"{name}\"\npath_prefix = \"/{name}/\"\nservice = \"{name}\"\n\n\
             [services.{name}]\nkind = \"replicated\"\nendpoints = [{{ address = \"{addr}\" }}]\n\
             [services.{name}.scaler]\ntarget = 1000\nmin_replicas = 2\nmax_replicas = 2\ncooldown = \"0s\"\n\
             command = {{ run = \"{run}\", timeout = \"30s\" }}\n\n"
        )
    };
    let cfg = svc("a-slow", a.addr, format!("echo x >> {}; sleep 6; echo {}", slow.display(), a.addr))
        + &svc("b-fast", b.addr, format!("echo x >> {}; echo {}", fast.display(), b.addr));
    let p = Proxy::start(&cfg);
    eventually(10, "the slow pool's command started", || slow.exists());
    let lines = |f: &std::path::Path| std::fs::read_to_string(f).unwrap_or_default().lines().count();
    let before = lines(&fast);
    std::thread::sleep(Duration::from_millis(4500));
    assert_eq!(lines(&slow), 1, "the slow command is still running");
    assert!(lines(&fast) >= before + 3, "the fast pool stepped {} times in 4.5 s", lines(&fast) - before);
    drop(p);
}
