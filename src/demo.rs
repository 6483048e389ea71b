//! `ringmaster demo`: the main job on embedded defaults. Starts three built-in
//! backend replicas and the proxy in front of them, prints what to try, and runs
//! until Ctrl-C. The generated config is written to a file so that it can be
//! read, edited and reloaded like any other.

use crate::server;
use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Options of the demo.
pub struct DemoOpts {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
}

/// The demo's config, in front of `backends`.
pub fn config_text(o: &DemoOpts, backends: &[SocketAddr]) -> String {
    let mut s = format!(
        r#"# Written by `ringmaster demo`. Edit it, then reload:
#   curl -X POST http://{admin}/admin/reload
[server]
grace_period = "2s"

[admin]
listen = "{admin}"

# Anonymous callers get 5 requests a minute on /api/; the demo key gets 100.
[identity]
api_key = {{ header = "x-api-key", query = "api_key" }}
[[identity.keys]]
key = "demo-key"
tier = "partner"
owner = "demo"

[rate_limits.anonymous]
rate = 5
period = "1m"
[rate_limits.partner]
rate = 100
period = "1m"

[[listeners]]
name = "main"
listen = "{listen}"

[[routes]]
name = "users"
path_prefix = "/users/"
service = "users"

[[routes]]
name = "everyone"
path_prefix = "/all/"
service = "users"
fan_out = true

[[routes]]
name = "api"
path_prefix = "/api/"
service = "app"
rate_limit_tiers = {{ anonymous = ["anonymous"], partner = ["partner"] }}

[[routes]]
name = "cached"
path_prefix = "/cc/"
service = "app"
cache = {{ memory_bytes = 67108864, purge_from = ["127.0.0.1"] }}

[[routes]]
name = "app"
path_prefix = "/"
service = "app"

[services.app]
kind = "replicated"
balancer = "round_robin"
health = {{ path = "/healthz", interval = "1s", timeout = "500ms" }}
"#,
        admin = o.admin,
        listen = o.listen
    );
    for (i, b) in backends.iter().take(3).enumerate() {
        s.push_str(&format!("\n[[services.app.endpoints]]\nname = \"replica-{}\"\naddress = \"{b}\"\n", i + 1));
    }
    // A sharded service: the second path segment (/users/ID) picks one of three
    // shards, each a pool of two replicas.
    s.push_str(
        "\n[services.users]\nkind = \"sharded\"\nshard_header = \"x-shard\"\nsharder = { key = { path_segment = 1 }, function = \"maglev\", fallback = \"all\" }\n",
    );
    for (shard, pair) in ["a", "b", "c"].iter().zip(backends[3..].chunks(2)) {
        s.push_str(&format!("\n[services.users.shards.{shard}]\nendpoints = ["));
        for (j, b) in pair.iter().enumerate() {
            s.push_str(&format!("{{ name = \"{shard}{}\", address = \"{b}\" }}, ", j + 1));
        }
        s.push_str("]\n");
    }
    s
}

/// Runs the demo until Ctrl-C.
pub fn run(o: DemoOpts) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        // Three replicas of a stateless app, then 3 shards x 2 replicas.
        let names = ["replica-1", "replica-2", "replica-3", "a1", "a2", "b1", "b2", "c1", "c2"];
        let mut backends = Vec::new();
        for name in names {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            backends.push(l.local_addr()?);
            tokio::spawn(crate::backend::serve(l, name.to_string(), std::time::Duration::ZERO));
        }
        let path: PathBuf = std::env::temp_dir().join(format!("ringmaster-demo-{}.toml", std::process::id()));
        let text = config_text(&o, &backends);
        std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
        let cfg = crate::config::parse(&path.display().to_string(), &text)?;
        let (listen, admin, shown) = (o.listen, o.admin, path.clone());
        let result = server::serve(cfg, path.clone(), move |_| {
            println!(
                "ringmaster demo: a round-robin load balancer in front of three replicas,\n\
                 and a sharded service (3 shards x 2 replicas) keyed by the user id in /users/ID\n\
                 \n  proxy    http://{listen}/\n  admin    http://{admin}/admin/pools\n  metrics  http://{admin}/metrics\n  config   {}\n\
                 \nTry:\n  for i in 1 2 3 4 5 6; do curl -s http://{listen}/; done\n  curl -s http://{listen}/echo      # what the replica received (X-Forwarded-For, Via, ...)\n  curl -s --http2-prior-knowledge http://{listen}/\n\
                 \x20 curl -si http://{listen}/users/42 | grep -i x-shard   # the same id always lands on the same shard\n\
                 \x20 curl -s http://{listen}/all/items                    # fan-out: every shard answers, arrays merged\n\
                 \x20 ringmaster ring locate --config {cfg} --service users 42\n\
                 \x20 curl -si 'http://{listen}/cc/page?cc=max-age=30' | grep -iE 'x-cache|age|origin'   # run twice: MISS, then HIT\n\
                 \x20 curl -s http://{admin}/admin/cache\n\
                 \x20 for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w '%{{http_code}} ' http://{listen}/api/x; done   # 5 a minute, then 429\n\
                 \x20 curl -si -H 'x-api-key: demo-key' http://{listen}/api/x | grep -i ratelimit        # the partner tier\n\
                 \nCtrl-C stops.",
                shown.display(),
                cfg = shown.display()
            );
        })
        .await;
        let _ = std::fs::remove_file(&path);
        result
    })
}
