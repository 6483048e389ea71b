//! `ringmaster demo` starts and does its job: balancing, sharding, caching, limits.

mod common;
use common::*;
use std::process::{Command, Stdio};

#[test]
fn demo_serves_every_pattern() {
    let Demo { proc: _demo, listen, admin, tls, mc } = demo(Stdio::null(), Stdio::null());
    wait_port(listen);
    wait_port(admin);
    let replicas: std::collections::HashSet<String> = (0..6).map(|_| get(listen, "/").backend()).collect();
    assert_eq!(replicas.len(), 3, "{replicas:?}");
    let shard = get(listen, "/users/42").header("x-shard").unwrap().to_string();
    assert_eq!(get(listen, "/users/42").header("x-shard").unwrap(), shard);
    let items: Vec<String> = serde_json::from_slice(&get(listen, "/all/items").body).unwrap();
    assert_eq!(items.len(), 3);
    get(listen, "/cc/page?cc=max-age=30");
    assert_eq!(get(listen, "/cc/page?cc=max-age=30").header("x-cache"), Some("HIT"));
    let codes: Vec<u16> = (0..6).map(|_| get(listen, "/api/x").status).collect();
    assert_eq!(codes, [200, 200, 200, 200, 200, 429]);
    assert_eq!(admin_get(admin, "/readyz").status, 200);
    // The memcache ambassador over the demo's memcached (installed by scripts/test).
    wait_port(mc);
    let mut m = common::mc::Raw::connect(mc);
    let got = m.ask(b"set greeting 0 0 5\r\nhello\r\nset name 0 0 4\r\nring\r\nget greeting name nothing\r\n", b"END\r\n", 1);
    assert_eq!(String::from_utf8_lossy(&got), "STORED\r\nSTORED\r\nVALUE greeting 0 5\r\nhello\r\nVALUE name 0 4\r\nring\r\nEND\r\n");
    let shards = admin_get(admin, "/admin/shards").json();
    assert!(shards["services"].as_array().unwrap().iter().any(|s| s["protocol"] == "memcache"), "{shards}");
    // HTTPS with the certificate the demo made, trusted as its own root.
    wait_port(tls);
    let cert = std::fs::read_to_string(std::env::temp_dir().join(format!("ringmaster-demo-{}/cert.pem", _demo.0.id()))).unwrap();
    let cfg = common::pki::client_config(&cert, None, &["http/1.1"]);
    let r = common::pki::TlsConn::open(tls, "localhost", &cfg).unwrap().get("localhost", "/echo", "").unwrap();
    assert_eq!(r.json()["headers"]["x-forwarded-proto"], "https");
    // SIGTERM stops the demo and the memcached it started.
    let kids = children(_demo.pid());
    assert_eq!(kids.len(), 6, "the demo's memcached: {kids:?}");
    _demo.signal("TERM");
    let started = std::time::Instant::now();
    let mut demo = _demo;
    let status = loop {
        if let Some(s) = demo.0.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(15), "the demo did not stop within 15 s of SIGTERM");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    for k in kids {
        assert!(!alive(k), "memcached {k} outlived the demo");
    }
}

/// Whether process `pid` runs (a zombie waiting for init to reap it does not).
fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name in parentheses.
    stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z'))
}

/// The processes whose parent is `pid`.
fn children(pid: i32) -> Vec<i32> {
    let list = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    list.split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

/// A killed demo takes its memcached with it (they would otherwise hold their
/// ports and memory until reboot).
#[test]
fn a_killed_demo_leaves_no_memcached_behind() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("stdout");
    let file = std::fs::File::create(&out).unwrap();
    let Demo { proc: demo, admin, mc, .. } = demo(Stdio::from(file.try_clone().unwrap()), Stdio::from(file));
    wait_port(admin);
    eventually(20, "the demo's memcache listener", || {
        let said = std::fs::read_to_string(&out).unwrap_or_default();
        assert!(!said.contains("runs without the memcache ambassador"), "{said}");
        std::net::TcpStream::connect(mc).is_ok()
    });
    let kids = children(demo.pid());
    assert_eq!(kids.len(), 6, "the demo's memcached: {kids:?}");
    drop(demo);
    for k in kids {
        eventually(5, "the demo's memcached stopped", || !alive(k));
    }
}

/// The hot-shard scene: the demo's own load makes one shard of `hot` hot; the
/// local scaler gives that shard more replicas within 30 s, the cold shards
/// keep one, and the load generator reports no failed request.
#[test]
fn the_hot_shard_scene_scales_the_hot_shard_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("stdout");
    let Demo { proc: demo, admin, .. } = demo(Stdio::from(std::fs::File::create(&out).unwrap()), Stdio::null());
    wait_port(admin);
    let hot = |heat: &serde_json::Value| -> Vec<(String, usize)> {
        let svc = heat["services"].as_array().unwrap().iter().find(|s| s["service"] == "hot").unwrap();
        svc["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["shard"].as_str().unwrap().to_string(), s["endpoints"].as_array().unwrap().len()))
            .collect()
    };
    let mut shards = Vec::new();
    eventually(35, "a shard of `hot` has more than one replica", || {
        shards = hot(&admin_get(admin, "/admin/heat").json());
        shards.iter().any(|s| s.1 > 1)
    });
    assert_eq!(shards.iter().filter(|s| s.1 > 1).count(), 1, "only the hot shard scales: {shards:?}");
    let said = std::fs::read_to_string(&out).unwrap();
    let named = said.lines().find(|l| l.contains("turns hot")).unwrap().to_string();
    let scaled = &shards.iter().find(|s| s.1 > 1).unwrap().0;
    assert!(named.contains(&format!("shard {scaled} turns hot")), "the scene names the shard that scaled ({scaled}): {named}");
    let mut line = String::new();
    eventually(60, "the hot turn ends", || {
        line = std::fs::read_to_string(&out).unwrap().lines().find(|l| l.contains("the load moves away")).unwrap_or_default().to_string();
        !line.is_empty()
    });
    let counts: Vec<u64> = line.rsplit('(').next().unwrap().split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    assert!(counts[0] > 1000 && counts[1] == 0, "requests sent and failed in the hot turn: {line}");
    drop(demo);
}

/// Every command the demo prints works on a fresh machine: each runs under
/// bash with nothing on its PATH but what Debian's base and the README's
/// commands install (curl by scripts/test); ringmaster itself is named by
/// its path. (The memcache lines once used `nc`, which a fresh Debian lacks.)
#[test]
fn every_command_the_demo_prints_works_with_only_what_the_readme_installs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("stdout");
    let Demo { proc: _demo, listen, mc, .. } = demo(Stdio::from(std::fs::File::create(&out).unwrap()), Stdio::null());
    let mut said = String::new();
    eventually(20, "the demo prints its commands", || {
        said = std::fs::read_to_string(&out).unwrap_or_default();
        said.contains("Ctrl-C stops.")
    });
    wait_port(listen);
    wait_port(mc);
    // A PATH of the base system's tools and curl, and nothing else.
    let path = dir.path().join("bin");
    std::fs::create_dir(&path).unwrap();
    for tool in ["curl", "grep", "cat", "head", "sed"] {
        let found = ["/usr/bin", "/bin"].iter().map(|d| std::path::Path::new(d).join(tool)).find(|p| p.exists());
        std::os::unix::fs::symlink(found.unwrap_or_else(|| panic!("{tool} is installed")), path.join(tool)).unwrap();
    }
    // The hot-shard scene prints its hint once its first turn starts.
    eventually(20, "the hot-shard scene's hint", || {
        said = std::fs::read_to_string(&out).unwrap_or_default();
        said.contains("hot-shard scene, turn 1:")
    });
    let start = said.find("Try:").expect("the demo prints a Try: section");
    let commands: Vec<&str> =
        said[start..].lines().skip(1).filter(|l| l.starts_with("  ")).map(str::trim).filter(|l| !l.is_empty()).collect();
    assert!(commands.iter().any(|c| c.contains("/metrics")), "the scene's hint is tried: {said}");
    assert!(commands.len() >= 12, "{said}");
    assert!(commands.iter().any(|c| c.contains(" mc ")), "the memcache lines are printed: {said}");
    for c in &commands {
        let r = Command::new("/bin/bash").arg("-c").arg(c).env_clear().env("PATH", &path).output().unwrap();
        let stdout = String::from_utf8_lossy(&r.stdout);
        assert!(
            r.status.success() && !stdout.trim().is_empty(),
            "`{c}` failed: {}\n{stdout}{}",
            r.status,
            String::from_utf8_lossy(&r.stderr)
        );
    }
    let got = Command::new(BIN).args(["mc", &mc.to_string(), "get", "greeting", "name", "nothing"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&got.stdout), "VALUE greeting 0 5\nhello\nVALUE name 0 4\nring\nEND\n");
}
