//! The dashboard in a real browser: headless Chromium (Debian's `chromium`,
//! installed by scripts/test) against the demo shows the demo's services,
//! its shards and a moving request rate, and saves a screenshot as a test
//! artefact (target/dashboard.png); the one-file snapshot draws the same
//! page from its embedded data with no admin listener to ask.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

fn chromium(args: &[&str], url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1400,1300", "--virtual-time-budget=4000"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stderr(Stdio::null())
        .output()
        .expect("chromium is installed (scripts/test installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the element with `id` in a dumped page.
fn text_of<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let rest = &dom[at..];
    Some(&rest[rest.find('>')? + 1..rest.find('<')?])
}

#[test]
fn the_dashboard_shows_the_demos_services_shards_and_a_moving_rate() {
    let Demo { proc: _demo, listen, admin, .. } = demo(Stdio::null(), Stdio::null());
    wait_port(listen);
    wait_port(admin);
    // Traffic of our own beside the demo's scene, for a few seconds of history.
    for round in 0..30 {
        for i in 0..5 {
            get(listen, &format!("/users/{}", round * 5 + i));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let dom = chromium(&["--dump-dom"], &format!("http://{admin}/"));
    assert!(dom.contains("data-ready=\"yes\""), "the page drew itself: {}", &dom[..dom.len().min(2000)]);
    for service in ["users", "app", "hot"] {
        assert!(dom.contains(&format!("data-service=\"{service}\"")), "service {service} shown");
    }
    for shard in ["a", "b", "c"] {
        assert!(dom.contains(&format!("data-shard=\"{shard}\"")), "shard {shard} shown");
    }
    // The memcache ambassador's service, its shards and their replicas, beside the HTTP ones.
    let mc = &dom[dom.find("data-service=\"cache\"").expect("the memcache service is shown")..];
    let mc = &mc[..mc.find("</section>").unwrap_or(mc.len())];
    assert!(mc.contains("memcache"), "{mc}");
    for shard in ["mc-a", "mc-b", "mc-c"] {
        assert!(mc.contains(&format!("data-shard=\"{shard}\"")), "memcache shard {shard} shown: {mc}");
    }
    assert!(mc.contains("2/2"), "each shard's two replicas are up: {mc}");
    let rate: f64 = text_of(&dom, "total-rate").and_then(|t| t.parse().ok()).unwrap_or(0.0);
    assert!(rate > 0.0, "a request rate: {:?}", text_of(&dom, "total-rate"));
    // The sparkline beside it moves: its points are not all at one height.
    let spark = &dom[dom.find("id=\"total-spark\"").unwrap()..];
    let points = &spark[spark.find("points=\"").unwrap() + 8..];
    let ys: Vec<&str> = points[..points.find('"').unwrap()].split(' ').filter_map(|p| p.split(',').nth(1)).collect();
    assert!(ys.iter().any(|y| *y != ys[0]), "the total rate moved over the history: {ys:?}");
    // A screenshot, kept as the test's artefact.
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard.png");
    chromium(&[&format!("--screenshot={}", shot.display())], &format!("http://{admin}/"));
    assert!(std::fs::metadata(&shot).map(|m| m.len() > 10_000).unwrap_or(false), "a screenshot at {}", shot.display());

    // The one-file snapshot draws itself from its own data.
    let snap = admin_get(admin, "/dashboard/snapshot");
    assert_eq!(snap.status, 200);
    assert!(snap.header("content-disposition").is_some_and(|v| v.contains("ringmaster-snapshot.html")));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snapshot.html");
    std::fs::write(&file, &snap.body).unwrap();
    drop(_demo);
    let dom = chromium(&["--dump-dom"], &format!("file://{}", file.display()));
    assert!(dom.contains("data-ready=\"yes\"") && dom.contains("A snapshot taken"), "{}", &dom[..dom.len().min(2000)]);
    assert!(dom.contains("data-service=\"users\"") && dom.contains("data-shard=\"b\""));
}

/// What changes state stays POST with the admin token; the page itself holds
/// no data, and the views behind it ask for the token.
#[test]
fn with_a_token_the_page_opens_and_its_data_and_buttons_need_the_token() {
    let a = backend("a");
    let p = Proxy::start_with_admin("token = \"s3cret\"", &(route_all("app") + &service("app", "round_robin", &[&a], "")));
    let page = request(p.admin, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap().starts_with("text/html") && page.text().contains("ringmaster"));
    let history = request(p.admin, "GET /admin/history HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    assert_eq!(history.status, 401);
    let history = request(
        p.admin,
        "GET /admin/history?last=5 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer s3cret\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(history.status, 200);
    assert!(history.json()["t"].is_array());
    let switch = request(
        p.admin,
        "GET /admin/cache/switch?route=x&on=false HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer s3cret\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(switch.status, 405, "state changes take POST only");
}
