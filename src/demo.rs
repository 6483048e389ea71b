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

[[listeners]]
name = "main"
listen = "{listen}"

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
    for (i, b) in backends.iter().enumerate() {
        s.push_str(&format!("\n[[services.app.endpoints]]\nname = \"replica-{}\"\naddress = \"{b}\"\n", i + 1));
    }
    s
}

/// Runs the demo until Ctrl-C.
pub fn run(o: DemoOpts) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let mut backends = Vec::new();
        for i in 1..=3 {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            backends.push(l.local_addr()?);
            tokio::spawn(crate::backend::serve(l, format!("replica-{i}"), std::time::Duration::ZERO));
        }
        let path: PathBuf = std::env::temp_dir().join(format!("ringmaster-demo-{}.toml", std::process::id()));
        let text = config_text(&o, &backends);
        std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
        let cfg = crate::config::parse(&path.display().to_string(), &text)?;
        let (listen, admin, shown) = (o.listen, o.admin, path.clone());
        let result = server::serve(cfg, path.clone(), move |_| {
            println!(
                "ringmaster demo: a round-robin load balancer in front of three replicas\n\
                 \n  proxy    http://{listen}/\n  admin    http://{admin}/admin/pools\n  metrics  http://{admin}/metrics\n  config   {}\n\
                 \nTry:\n  for i in 1 2 3 4 5 6; do curl -s http://{listen}/; done\n  curl -s http://{listen}/echo      # what the replica received (X-Forwarded-For, Via, ...)\n  curl -s --http2-prior-knowledge http://{listen}/\n\
                 \nCtrl-C stops.",
                shown.display()
            );
        })
        .await;
        let _ = std::fs::remove_file(&path);
        result
    })
}
