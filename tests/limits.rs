//! Rate limits: GCRA per client and per route, reported in headers, 429 when
//! denied. Clients are told apart through X-Forwarded-For from a trusted peer.

mod common;
use common::*;

fn limited(policies: &str, route_limits: &str) -> (Proxy, Backend) {
    let a = backend("a");
    let cfg = format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n\n{policies}\n[[routes]]\nname = \"api\"\nservice = \"app\"\nrate_limit = [{route_limits}]\n\n{}",
        service("app", "round_robin", &[&a], "")
    );
    (Proxy::start(&cfg), a)
}

fn from(p: &Proxy, client: &str) -> Response {
    request(p.addr, &format!("GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {client}\r\nConnection: close\r\n\r\n"))
}

#[test]
fn burst_headers_and_429() {
    let (p, _a) = limited("[rate_limits.anonymous]\nrate = 3\nperiod = \"1m\"\n", "\"anonymous\"");
    let remaining: Vec<String> = (0..3)
        .map(|_| {
            let r = from(&p, "203.0.113.1");
            assert_eq!(r.status, 200);
            assert_eq!(r.header("x-ratelimit-limit"), Some("3"));
            assert_eq!(r.header("ratelimit-policy"), Some("\"anonymous\";q=3;w=60"));
            r.header("x-ratelimit-remaining").unwrap().to_string()
        })
        .collect();
    assert_eq!(remaining, ["2", "1", "0"]);
    let r = from(&p, "203.0.113.1");
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("20"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert!(r.header("ratelimit").unwrap().starts_with("\"anonymous\";r=0;t="), "{:?}", r.headers);
    let body = r.json();
    assert_eq!((body["policy"].as_str(), body["retry_after_seconds"].as_u64()), (Some("anonymous"), Some(20)));
    // Another client has its own budget.
    assert_eq!(from(&p, "203.0.113.2").status, 200);
    assert_eq!(p.metric("ringmaster_local_answers_total{reason=\"rate_limited\"}"), 1.0);
    // ...and by the policy that denied it (the dashboard's 429s by policy).
    assert_eq!(p.metric("ringmaster_rate_limited_total{policy=\"anonymous\"}"), 1.0);
}

#[test]
fn the_strictest_decides_and_a_denial_spends_nothing() {
    let policies =
        "[rate_limits.per_client]\nrate = 2\nperiod = \"1m\"\n\n[rate_limits.ceiling]\nrate = 3\nperiod = \"1m\"\nscope = \"route\"\n";
    let (p, _a) = limited(policies, "\"per_client\", \"ceiling\"");
    let r = from(&p, "198.51.100.1");
    // After one request: client 1 left, ceiling 2 left: the client policy is reported.
    assert_eq!((r.header("x-ratelimit-remaining"), r.header("ratelimit-policy")), (Some("1"), Some("\"per_client\";q=2;w=60")));
    assert_eq!(from(&p, "198.51.100.1").status, 200);
    // Denied by its own policy: the route ceiling is not spent.
    assert_eq!(from(&p, "198.51.100.1").status, 429);
    let r = from(&p, "198.51.100.2");
    assert_eq!(r.status, 200, "a denied request must not spend the ceiling");
    assert_eq!(r.header("ratelimit-policy"), Some("\"ceiling\";q=3;w=60"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    // The ceiling is now spent for everyone.
    let r = from(&p, "198.51.100.3");
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["policy"], "ceiling");
}

#[test]
fn ipv6_clients_are_grouped_by_prefix() {
    let (p, _a) = limited("[rate_limits.anonymous]\nrate = 2\nperiod = \"1m\"\n", "\"anonymous\"");
    assert_eq!(from(&p, "2001:db8:1:2::1").status, 200);
    assert_eq!(from(&p, "2001:db8:1:2::ffff").status, 200);
    assert_eq!(from(&p, "2001:db8:1:2:aaaa::9").status, 429, "same /64, same budget");
    assert_eq!(from(&p, "2001:db8:1:3::1").status, 200, "another /64");
}

#[test]
fn unknown_policy_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[[listeners]]\nname = \"m\"\nlisten = \"127.0.0.1:1\"\n[[routes]]\nservice = \"s\"\nrate_limit = [\"nope\"]\n[services.s]\nkind = \"replicated\"\n").unwrap();
    let out = std::process::Command::new(BIN).args(["check", "--config", path.to_str().unwrap()]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(":6:15: route applies rate limit `nope`, which is not defined"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tiered() -> (Proxy, Backend) {
    let a = backend("a");
    // "partner-key" is given as its SHA-256, as an operator would keep it.
    let cfg = format!(
        r#"[server]
trusted_proxies = ["127.0.0.1"]

[identity]
api_key = {{ header = "x-api-key", query = "api_key" }}
[[identity.keys]]
key = "free-key"
tier = "free"
owner = "acme"
[[identity.keys]]
sha256 = "{}"
tier = "free"
owner = "globex"
rate_limit = ["big"]

[rate_limits.anon]
rate = 1
period = "1m"
[rate_limits.free]
rate = 3
period = "1m"
[rate_limits.big]
rate = 5
period = "1m"

[[routes]]
name = "api"
service = "app"
rate_limit_tiers = {{ anonymous = ["anon"], free = ["free"] }}

{}"#,
        sha256_hex("partner-key"),
        service("app", "round_robin", &[&a], "")
    );
    (Proxy::start(&cfg), a)
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn with_key(p: &Proxy, client: &str, key: &str) -> Response {
    request(p.addr, &format!("GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {client}\r\nX-Api-Key: {key}\r\nConnection: close\r\n\r\n"))
}

#[test]
fn tiers_keys_owners_and_overrides() {
    let (p, _a) = tiered();
    // Anonymous: 1 per minute.
    assert_eq!(from(&p, "192.0.2.1").status, 200);
    assert_eq!(from(&p, "192.0.2.1").status, 429);
    // The free tier: 3 per minute per owner, from any address.
    let got: Vec<u16> = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"].iter().map(|c| with_key(&p, c, "free-key").status).collect();
    assert_eq!(got, [200, 200, 200, 429]);
    let r = with_key(&p, "192.0.2.9", "free-key");
    assert_eq!(r.json()["policy"], "free");
    // An owner's override (given by SHA-256): 5 per minute, in the query string too.
    let statuses: Vec<u16> =
        (0..6).map(|_| request(p.addr, "GET /?api_key=partner-key HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
}

#[test]
fn invalid_keys_get_401() {
    let (p, _a) = tiered();
    let r = with_key(&p, "192.0.2.1", "forged");
    assert_eq!(r.status, 401);
    assert!(r.json()["error"].as_str().unwrap().contains("not valid"));
    assert_eq!(p.metric("ringmaster_local_answers_total{reason=\"bad_credentials\"}"), 1.0);
}

#[test]
fn api_keys_from_a_file() {
    let a = backend("a");
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(&keys, "[[keys]]\nkey = \"filed-key\"\ntier = \"free\"\nowner = \"initech\"\n").unwrap();
    let cfg = format!(
        "[identity]\napi_key = {{ header = \"x-api-key\" }}\nkeys_file = \"{}\"\n\n[rate_limits.free]\nrate = 2\nperiod = \"1m\"\n\n[[routes]]\nservice = \"app\"\nrate_limit_tiers = {{ free = [\"free\"] }}\n\n{}",
        keys.display(),
        service("app", "round_robin", &[&a], "")
    );
    let p = Proxy::start(&cfg);
    let codes: Vec<u16> = (0..3).map(|_| with_key(&p, "192.0.2.1", "filed-key").status).collect();
    assert_eq!(codes, [200, 200, 429]);
    assert_eq!(with_key(&p, "192.0.2.1", "unknown").status, 401);
    // A broken keys file is reported at its own line.
    std::fs::write(&keys, "[[keys]]\nkey = \"x\"\ntier = \"free\"\n").unwrap();
    let out = std::process::Command::new(BIN).args(["check", "--config", p.config.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("keys.toml:1:1: missing field `owner`"), "{err}");
}

#[test]
fn service_policies_apply_to_every_route_and_a_service_ceiling_is_shared() {
    let a = backend("a");
    let cfg = format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n\n\
         [rate_limits.per_client]\nrate = 5\nperiod = \"1m\"\n\n[rate_limits.service_ceiling]\nrate = 4\nperiod = \"1m\"\nscope = \"route\"\n\n\
         [rate_limits.anon]\nrate = 3\nperiod = \"1m\"\n\n\
         [[routes]]\nname = \"one\"\npath_prefix = \"/one/\"\nservice = \"app\"\nrate_limit = [\"per_client\"]\n\n\
         [[routes]]\nname = \"two\"\npath_prefix = \"/two/\"\nservice = \"app\"\n\n\
         [services.app]\nkind = \"replicated\"\nrate_limit = [\"per_client\", \"service_ceiling\"]\nrate_limit_tiers = {{ anonymous = [\"anon\"] }}\n\
         endpoints = [{{ address = \"{}\" }}]\n",
        a.addr
    );
    let p = Proxy::start(&cfg);
    let on = |path: &str, client: &str| {
        request(p.addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {client}\r\nConnection: close\r\n\r\n"))
    };
    // The service's anonymous tier (3) is the strictest per client, on both routes, and
    // per_client, named by both the route and the service, counts once.
    let r = on("/one/x", "192.0.2.1");
    assert_eq!((r.status, r.header("x-ratelimit-limit"), r.header("x-ratelimit-remaining")), (200, Some("3"), Some("2")));
    assert_eq!(on("/two/x", "192.0.2.1").header("x-ratelimit-remaining"), Some("1"));
    assert_eq!(on("/one/x", "192.0.2.1").status, 200);
    assert_eq!(on("/two/x", "192.0.2.1").status, 429);
    // The service ceiling (4) is shared by the two routes: 3 spent above, one left.
    assert_eq!(on("/two/x", "192.0.2.2").status, 200);
    let r = on("/one/x", "192.0.2.3");
    assert_eq!((r.status, r.header("ratelimit-policy")), (429, Some("\"service_ceiling\";q=4;w=60")));
}
