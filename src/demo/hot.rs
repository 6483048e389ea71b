//! The demo's hot-shard scene: a sharded service `hot` (3 shards of one
//! built-in replica each, keyed by /hot/ID) with a local scaler, and a
//! built-in load generator that sends it user ids in turns: a hot turn where
//! most requests name one celebrity (its shard turns hot, `/admin/heat` shows
//! it, the scaler adds replicas to that shard alone), then a calm turn of few,
//! even requests (the extra replicas leave again). Every request's outcome is
//! counted, and each turn ends with a line saying how many failed.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// How long each turn lasts, and its request rate.
const HOT: (Duration, u32) = (Duration::from_secs(45), 160);
const CALM: (Duration, u32) = (Duration::from_secs(60), 12);
/// Load generator connections.
const CONNS: u32 = 4;

/// The `hot` service over `backends` (three); its route is among the demo's
/// routes, before the catch-all.
pub fn config_text(backends: &[SocketAddr]) -> String {
    let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "ringmaster".into());
    let mut s = format!(
        "\n# The hot-shard scene: a built-in load generator makes one shard hot; the\n\
         # local scaler gives it replicas (ringmaster backend processes) and takes them back.\n\
         [services.hot]\nkind = \"sharded\"\nshard_header = \"x-shard\"\n\
         sharder = {{ key = {{ path_segment = 1 }}, function = \"maglev\" }}\n\
         heat = {{ window = \"3s\" }}\n\n\
         [services.hot.scaler]\ntarget = 40\nmin_replicas = 1\nmax_replicas = 4\n\
         scale_up_window = \"0s\"\nscale_down_window = \"15s\"\ncooldown = \"5s\"\n\
         local = {{ command = \"{exe} backend --listen {{address}} --name {{name}}\", ports = \"29100-29199\", drain = \"5s\" }}\n"
    );
    for (shard, b) in ["h1", "h2", "h3"].iter().zip(backends) {
        s.push_str(&format!("\n[services.hot.shards.{shard}]\nendpoints = [{{ name = \"{shard}-base\", address = \"{b}\" }}]\n"));
    }
    s
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    failed: AtomicU64,
}

/// Why one of the scene's requests failed.
#[derive(Debug, thiserror::Error)]
enum Miss {
    #[error("{0}")]
    Request(#[from] http::Error),
    #[error("{0}")]
    Exchange(#[from] hyper::Error),
    #[error("{path}: {status}")]
    Status { path: String, status: http::StatusCode },
}

/// One request; whether it got a 200, and the shard that answered.
async fn get(sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>, path: &str) -> Result<Option<String>, Miss> {
    let req = http::Request::get(path).header(http::header::HOST, "demo").body(Empty::new())?;
    let resp = sender.send_request(req).await?;
    let (status, shard) = (resp.status(), resp.headers().get("x-shard").and_then(|v| v.to_str().ok()).map(str::to_string));
    resp.into_body().collect().await?;
    if status != http::StatusCode::OK {
        return Err(Miss::Status { path: path.to_string(), status });
    }
    Ok(shard)
}

async fn connect(proxy: SocketAddr) -> Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> {
    let tcp = tokio::net::TcpStream::connect(proxy).await.ok()?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.ok()?;
    tokio::spawn(conn);
    Some(sender)
}

/// One connection's share of a turn: `rate` requests a second for `len`.
async fn load(proxy: SocketAddr, len: Duration, rate: u32, celebrity: Option<&'static str>, n: Arc<Counts>) {
    let every = Duration::from_secs_f64(CONNS as f64 / rate as f64);
    let until = tokio::time::Instant::now() + len;
    let mut sender = connect(proxy).await;
    let mut tick = tokio::time::interval(every);
    while tokio::time::Instant::now() < until {
        tick.tick().await;
        let id = match celebrity {
            Some(c) if fastrand::u32(..10) < 8 => c.to_string(),
            _ => format!("user{}", fastrand::u32(..1000)),
        };
        n.sent.fetch_add(1, Relaxed);
        let ok = match sender.as_mut() {
            Some(s) => get(s, &format!("/hot/{id}")).await.is_ok(),
            None => false,
        };
        if !ok {
            n.failed.fetch_add(1, Relaxed);
            sender = connect(proxy).await;
        }
    }
}

/// Runs the scene's turns until the process ends; `admin` is for the hints it prints.
pub async fn scene(proxy: SocketAddr, admin: SocketAddr) {
    let celebrity = "celebrity";
    let shard = match connect(proxy).await {
        Some(mut s) => get(&mut s, &format!("/hot/{celebrity}")).await.ok().flatten().unwrap_or_else(|| "?".into()),
        None => "?".into(),
    };
    let n = Arc::new(Counts::default());
    for turn in 1.. {
        println!(
            "hot-shard scene, turn {turn}: most requests name `{celebrity}`, so shard {shard} turns hot; within 30 s it has more replicas:\n\
             \x20 curl -s http://{admin}/metrics | grep -E '^ringmaster_(heat_shard_rate|scaler_replicas)\\{{service=\"hot\"'"
        );
        run_turn(proxy, HOT, Some(celebrity), &n).await;
        println!("hot-shard scene, turn {turn}: the load moves away; the extra replicas leave after the 15 s window ({} requests so far, {} failed)", n.sent.load(Relaxed), n.failed.load(Relaxed));
        run_turn(proxy, CALM, None, &n).await;
        println!("hot-shard scene, turn {turn} done: {} requests so far, {} failed", n.sent.load(Relaxed), n.failed.load(Relaxed));
    }
}

async fn run_turn(proxy: SocketAddr, (len, rate): (Duration, u32), celebrity: Option<&'static str>, n: &Arc<Counts>) {
    let tasks: Vec<_> = (0..CONNS).map(|_| tokio::spawn(load(proxy, len, rate, celebrity, n.clone()))).collect();
    for t in tasks {
        let _ = t.await;
    }
}
