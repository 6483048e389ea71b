//! `ringmaster bench`: a load tester inside the proxy, because the first
//! advice about a caching layer is to load test the system with and without
//! it. Open loop at a constant rate (latency from each request's intended
//! send time) or closed loop over C connections; HDR histograms; a live
//! progress line; the generator's own schedule lag, and the run marked void
//! when it fell behind; and, pointed at a ringmaster, the proxy's own CPU
//! and context switches per request read from its admin listener.

pub mod drive;
pub mod keys;
pub mod report;
pub mod target;

use report::Report;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use target::Admin;

/// What the command line asked for (`ringmaster bench`'s arguments).
#[derive(Debug, clap::Args)]
pub struct Options {
    /// http://HOST:PORT/PATH, or memcache://HOST:PORT.
    pub url: String,
    /// Requests per second (open loop); without it, a closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Connections (closed loop default 16; open loop: one per 200/s, at least 8).
    #[arg(long, short = 'c')]
    pub connections: Option<usize>,
    #[arg(long, short = 'd', default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// One HTTP/2 connection (prior knowledge), a stream per --connections.
    #[arg(long)]
    pub http2: bool,
    /// A request header, NAME: VALUE (repeatable).
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Keys drawn from a Zipf distribution: zipf:EXPONENT:KEYS (such as zipf:1.0:100000).
    #[arg(long)]
    pub keys: Option<String>,
    /// The path each key goes into, such as '/users/{key}' (default: the URL's path + /{key}).
    #[arg(long)]
    pub key_template: Option<String>,
    /// The proxy's admin listener: its CPU and switches per request, and upstream requests.
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// The admin token, when the admin listener asks for one.
    #[arg(long)]
    pub admin_token: Option<String>,
    /// Run twice, with the route's cache on and off (through the admin listener).
    #[arg(long)]
    pub compare_cache: Option<String>,
    /// Run twice, with the service's hot-key mitigation on and off (through the admin listener).
    #[arg(long)]
    pub compare_hot_keys: Option<String>,
    /// memcache:// URLs: the share of gets (the rest are sets).
    #[arg(long, default_value_t = 0.9)]
    pub get_ratio: f64,
    /// memcache:// URLs: the size of each value set.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Print JSON (with the HDR histograms encoded) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Draw the live progress line (set when stderr is a terminal).
    #[arg(skip)]
    pub progress: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::config::duration::parse(s).map_err(|e| format!("`{s}`: {e}"))
}

/// A bad option: said with what to write instead.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Admin(#[from] target::AdminError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The URL's address, Host and path (`http://`, or `memcache://HOST:PORT`).
fn parse_url(url: &str) -> Result<(SocketAddr, String, String), BenchError> {
    let bad = || BenchError::Usage(format!("`{url}`: give an http:// URL, such as http://127.0.0.1:8080/, or memcache://127.0.0.1:11211"));
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("memcache://")).ok_or_else(bad)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(bad());
    }
    let has_port = match authority.strip_prefix('[') {
        Some(v6) => v6.contains("]:"),
        None => authority.contains(':'),
    };
    let with_port = if has_port { authority.to_string() } else { format!("{authority}:80") };
    let addr = with_port.to_socket_addrs().map_err(|e| BenchError::Usage(format!("`{authority}`: {e}")))?.next().ok_or_else(bad)?;
    Ok((addr, authority.to_string(), path.to_string()))
}

fn headers(list: &[String]) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, BenchError> {
    list.iter()
        .map(|h| {
            let bad = || BenchError::Usage(format!("--header `{h}`: write NAME: VALUE"));
            let (n, v) = h.split_once(':').ok_or_else(bad)?;
            Ok((n.trim().parse().map_err(|_| bad())?, v.trim().parse().map_err(|_| bad())?))
        })
        .collect()
}

impl Options {
    fn load(&self) -> Result<drive::Load, BenchError> {
        let (target, host, path) = parse_url(&self.url)?;
        let memcache =
            self.url.starts_with("memcache://").then_some(drive::Memcache { get_ratio: self.get_ratio, value_bytes: self.value_bytes });
        if memcache.is_some() && !(0.0..=1.0).contains(&self.get_ratio) {
            return Err(BenchError::Usage("--get-ratio: the share of gets, from 0 to 1".into()));
        }
        let paths = match memcache {
            // Memcache keys: key:RANK, Zipf over 10,000 unless told.
            Some(_) => match keys::Paths::parse("/", Some(self.keys.as_deref().unwrap_or("zipf:1.0:10000")), Some("/{key}"))
                .map_err(BenchError::Usage)?
            {
                keys::Paths::Keys { zipf, .. } => keys::Paths::Keys { template: "key:{key}".into(), zipf },
                fixed => fixed,
            },
            None => keys::Paths::parse(&path, self.keys.as_deref(), self.key_template.as_deref()).map_err(BenchError::Usage)?,
        };
        if self.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return Err(BenchError::Usage("--rate: requests per second, above 0".into()));
        }
        // An open loop needs enough connections that one slow answer does not
        // hold up the schedule: one per 200 requests per second, at least 8.
        let connections = self.connections.unwrap_or_else(|| match self.rate {
            Some(r) => ((r / 200.0).ceil() as usize).clamp(8, 512),
            None => 16,
        });
        if connections == 0 || connections > 10_000 {
            return Err(BenchError::Usage("--connections: from 1 to 10000".into()));
        }
        Ok(drive::Load {
            target,
            host,
            paths,
            headers: headers(&self.headers)?,
            connections,
            rate: self.rate,
            duration: self.duration,
            http2: self.http2,
            memcache,
        })
    }
}

/// Runs the command: one run, or two with `--compare-cache`.
pub fn main(o: Options) -> Result<(), BenchError> {
    let load = o.load()?;
    let admin = o.admin.map(|addr| Admin { addr, token: o.admin_token.clone() });
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        if let Some(service) = &o.compare_hot_keys {
            let admin =
                admin.ok_or_else(|| BenchError::Usage("--compare-hot-keys needs --admin ADDR (the proxy's admin listener)".into()))?;
            let (with, without) = compare_hot_keys(&load, &admin, service, o.progress).await?;
            if o.json {
                println!(
                    "{}",
                    serde_json::json!({ "service": service, "with_mitigation": with.json(), "without_mitigation": without.json() })
                );
            } else {
                print!("{}", comparison(&format!("service `{service}`"), ("mitigating", "not mitigating"), &with, &without));
            }
            return Ok(());
        }
        match &o.compare_cache {
            None => {
                let r = run(&load, admin.as_ref(), o.progress).await?;
                if o.json {
                    println!("{}", r.json());
                } else {
                    print!("{}", r.table());
                }
            }
            Some(route) => {
                let admin =
                    admin.ok_or_else(|| BenchError::Usage("--compare-cache needs --admin ADDR (the proxy's admin listener)".into()))?;
                let (with, without) = compare_cache(&load, &admin, route, o.progress).await?;
                if o.json {
                    println!("{}", serde_json::json!({ "route": route, "with_cache": with.json(), "without_cache": without.json() }));
                } else {
                    print!("{}", comparison(&format!("route `{route}`"), ("with cache", "without cache"), &with, &without));
                }
            }
        }
        Ok(())
    })
}

/// One run, with the proxy's spending read around it when its admin listener is known.
pub async fn run(load: &drive::Load, admin: Option<&Admin>, progress: bool) -> Result<Report, BenchError> {
    let before = match admin {
        Some(a) => Some((a.usage().await?, a.upstream_requests().await?)),
        None => None,
    };
    let live = Arc::new(drive::Live::default());
    let bar = progress.then(|| progress_line(load, live.clone()));
    let started = Instant::now();
    let tally = drive::run(load.clone(), live).await;
    let elapsed = started.elapsed().saturating_sub(Duration::from_millis(20)).max(Duration::from_millis(1));
    if let Some((bar, task)) = bar {
        task.abort();
        bar.finish_and_clear();
    }
    let (mut proxy, mut upstream_requests) = (None, None);
    if let (Some(a), Some((usage, upstream))) = (admin, before) {
        proxy = Some(a.usage().await?.since(&usage));
        upstream_requests = Some(a.upstream_requests().await?.saturating_sub(upstream));
    }
    Ok(Report { tally, elapsed, target_rate: load.rate, proxy, upstream_requests, shards: None, memcache: load.memcache.is_some() })
}

/// The live line: rate, errors and p99 of the last moment.
fn progress_line(load: &drive::Load, live: Arc<drive::Live>) -> (indicatif::ProgressBar, tokio::task::JoinHandle<()>) {
    let bar = indicatif::ProgressBar::new(load.duration.as_secs().max(1));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let b = bar.clone();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let (mut last, mut n) = (0, 0);
        loop {
            tick.tick().await;
            let requests = live.requests.load(Relaxed);
            let p99 = live.recent.lock().unwrap_or_else(|e| e.into_inner()).take().map(|h| h.value_at_quantile(0.99)).unwrap_or(0);
            b.set_position(n);
            b.set_message(format!("{}/s  errors {}  p99 {:.2}ms", requests - last, live.errors.load(Relaxed), p99 as f64 / 1000.0));
            last = requests;
            n += 1;
        }
    });
    (bar, task)
}

/// The same load with the route's cache on, then off (then on again, as it was).
pub async fn compare_cache(load: &drive::Load, admin: &Admin, route: &str, progress: bool) -> Result<(Report, Report), BenchError> {
    admin.switch_cache(route, true).await?;
    let with = run(load, Some(admin), progress).await?;
    admin.switch_cache(route, false).await?;
    let without = run(load, Some(admin), progress).await;
    admin.switch_cache(route, true).await?;
    Ok((with, without?))
}

/// The same load with the service's hot-key mitigation on, then off (then
/// on again), with each shard's requests over each run.
pub async fn compare_hot_keys(load: &drive::Load, admin: &Admin, service: &str, progress: bool) -> Result<(Report, Report), BenchError> {
    let mut runs = Vec::new();
    for on in [true, false] {
        admin.switch_hot_keys(service, on).await?;
        // A heat tick (one second) to find the hot keys again, or to forget them.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let before = admin.shard_requests(service).await?;
        let mut r = run(load, Some(admin), progress).await;
        if let Ok(r) = &mut r {
            let after = admin.shard_requests(service).await?;
            r.shards =
                Some(after.iter().map(|(n, c)| (n.clone(), c - before.iter().find(|b| &b.0 == n).map_or(0, |b| b.1).min(*c))).collect());
        }
        runs.push(r);
    }
    admin.switch_hot_keys(service, true).await?;
    let without = runs.pop().expect("two runs")?;
    let with = runs.pop().expect("two runs")?;
    Ok((with, without))
}

/// The two runs side by side, with the ratios.
pub fn comparison(title: &str, (a_name, b_name): (&str, &str), with: &Report, without: &Report) -> String {
    let ratio = |a: f64, b: f64| if b > 0.0 { format!("{:.2}x", a / b) } else { "-".into() };
    let ms = |v: u64| format!("{:.2}ms", v as f64 / 1000.0);
    let p = |r: &Report, q: f64| r.tally.latency.value_at_quantile(q);
    let cpu = |r: &Report| r.proxy.map(|u| (u.cpu_user_us + u.cpu_system_us) as f64 / r.tally.answered().max(1) as f64);
    let mut o = format!("{title:<18} {a_name:>12}   {b_name:>13}   ratio\n");
    o += &format!("requests/s         {:>12.1}   {:>13.1}   {}\n", with.rps(), without.rps(), ratio(with.rps(), without.rps()));
    for (name, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
        o += &format!(
            "latency {name:<10} {:>12}   {:>13}   {}\n",
            ms(p(with, q)),
            ms(p(without, q)),
            ratio(p(with, q) as f64, p(without, q) as f64)
        );
    }
    if let (Some(a), Some(b)) = (cpu(with), cpu(without)) {
        o += &format!("proxy CPU us/req   {a:>12.1}   {b:>13.1}   {}\n", ratio(a, b));
    }
    if let (Some(a), Some(b)) = (with.upstream_requests, without.upstream_requests) {
        o += &format!(
            "upstream requests  {a:>12}   {b:>13}   {} saved ({:.1}%)\n",
            b.saturating_sub(a),
            100.0 * b.saturating_sub(a) as f64 / b.max(1) as f64
        );
    }
    if let (Some(a), Some(b)) = (&with.shards, &without.shards) {
        let hottest = |v: &[(String, u64)]| {
            let total: u64 = v.iter().map(|x| x.1).sum();
            v.iter().max_by_key(|x| x.1).map(|x| (x.0.clone(), 100.0 * x.1 as f64 / total.max(1) as f64, total))
        };
        if let (Some(ha), Some(hb)) = (hottest(a), hottest(b)) {
            o += &format!("shard requests     {:>12}   {:>13}   {}\n", ha.2, hb.2, ratio(ha.2 as f64, hb.2 as f64));
            o += &format!("hottest shard      {:>12}   {:>13}\n", format!("{} {:.0}%", ha.0, ha.1), format!("{} {:.0}%", hb.0, hb.1));
        }
    }
    o += &format!("errors             {:>12}   {:>13}\n", with.tally.errors, without.tally.errors);
    for (name, r) in [(a_name, with), (b_name, without)] {
        if r.void() {
            o += &format!("the run {name} is VOID: the generator fell behind its schedule\n");
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_address_host_and_path() {
        let (a, h, p) = parse_url("http://127.0.0.1:8080/users/1?x=y").unwrap();
        assert_eq!((a.port(), h.as_str(), p.as_str()), (8080, "127.0.0.1:8080", "/users/1?x=y"));
        let (a, _, p) = parse_url("http://127.0.0.1").unwrap();
        assert_eq!((a.port(), p.as_str()), (80, "/"));
        let (a, _, _) = parse_url("http://[::1]:9/").unwrap();
        assert_eq!(a.port(), 9);
        assert!(parse_url("https://x/").is_err() && parse_url("http:///").is_err());
        assert!(headers(&["x-api-key: k".into()]).is_ok() && headers(&["nocolon".into()]).is_err());
    }
}
