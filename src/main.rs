//! The command line: run, check, demo, ring, import, bench, mc, backend. Everything else is the library.

use clap::{Parser, Subcommand};

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "ringmaster", version, about = "An edge proxy for replicated and sharded services")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the config file until SIGTERM or SIGINT; SIGHUP reloads it.
    Run {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a config file; print every problem as file:line:col.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Start three built-in replicas and a load balancer in front of them.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// HTTPS, with a self-signed certificate made at start.
        #[arg(long, default_value = "127.0.0.1:8443")]
        tls_listen: SocketAddr,
        /// The memcache ambassador, over memcached processes the demo starts (when installed).
        #[arg(long, default_value = "127.0.0.1:11311")]
        memcache_listen: SocketAddr,
    },
    /// Convert another proxy's config into ringmaster's (printed as TOML).
    Import {
        #[command(subcommand)]
        from: ImportCmd,
    },
    /// Sharding functions: where keys go, and how well a function spreads them.
    Ring {
        #[command(subcommand)]
        cmd: RingCmd,
    },
    /// Load test a URL: closed loop over --connections, or open loop at --rate
    /// (latency from each request's intended send time); with --admin, the
    /// proxy's own CPU per request; --compare-cache ROUTE runs with and without
    /// the route's cache. memcache://HOST:PORT sends gets and sets of Zipf keys;
    /// --compare-hot-keys SERVICE runs with and without hot-key mitigation.
    Bench(ringmaster::loadtest::Options),
    /// Send one memcache command and print the answer: `mc ADDR set KEY VALUE [TTL]`,
    /// `mc ADDR get KEY...`, `mc ADDR stats [shards]`, any other command as words.
    Mc {
        addr: SocketAddr,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
    /// Run one built-in backend replica (for tests and experiments).
    Backend {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value = "backend")]
        name: String,
        /// Answer every connection with bytes that are not HTTP.
        #[arg(long)]
        garbage: bool,
        /// Delay every answer by this many milliseconds.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
    },
}

#[derive(Subcommand)]
enum ImportCmd {
    /// A twemproxy (nutcracker) YAML config: each pool becomes a memcache listener and service.
    Nutcracker { file: PathBuf },
}

#[derive(Subcommand)]
enum RingCmd {
    /// Balance, movement on add/remove and lookup cost of sharding functions.
    Analyze {
        /// maglev, ketama, ketama_twemproxy, jump, rendezvous, or all.
        #[arg(long, default_value = "all")]
        function: String,
        /// Shards named shard-0..shard-N-1, all of weight 1.
        #[arg(long, default_value_t = 10)]
        shards: usize,
        /// Analyse a service of this config instead (its shards, or its hash balancer's endpoints).
        #[arg(long, requires = "service")]
        config: Option<PathBuf>,
        #[arg(long)]
        service: Option<String>,
        /// Keys to place (generated as key:0, key:1, ...).
        #[arg(long, default_value_t = 100_000)]
        keys: usize,
        /// Draw the keys from a Zipf distribution with this exponent over 10x as many distinct keys.
        #[arg(long)]
        zipf: Option<f64>,
        /// Read keys from a file, one per line, instead.
        #[arg(long)]
        keys_file: Option<PathBuf>,
        /// Key hash for ketama_twemproxy: fnv1a_64, fnv1a_32, md5 (others use xxh3).
        #[arg(long, default_value = "fnv1a_64")]
        hash: String,
        /// One JSON object per function instead of a table.
        #[arg(long)]
        json: bool,
        /// Also simulate a root cache of the N most requested keys (a list: 10,100,1000):
        /// the hottest shard over the mean without and with it.
        #[arg(long, value_delimiter = ',')]
        hot_keys: Vec<usize>,
        /// Also simulate the keys a service's own heat ranking would call hot, with
        /// these heat settings (`heat.hot_share`; with --top-keys and --sample).
        #[arg(long)]
        hot_share: Option<f64>,
        #[arg(long, default_value_t = 64, requires = "hot_share")]
        top_keys: usize,
        #[arg(long, default_value_t = 8, requires = "hot_share")]
        sample: u32,
        /// Also simulate key-split: the hot keys on this many places each (memcache `split`).
        #[arg(long, default_value_t = 0)]
        split: usize,
    },
    /// Print the shard (and replica) each key goes to.
    Locate {
        /// A config file: keys are placed as its service places them.
        #[arg(long, requires = "service")]
        config: Option<PathBuf>,
        #[arg(long)]
        service: Option<String>,
        #[arg(long, default_value = "maglev")]
        function: String,
        /// Without --config: shard names (weight 1), comma-separated; or NAME=WEIGHT.
        #[arg(long, value_delimiter = ',')]
        shards: Vec<String>,
        #[arg(long, default_value = "fnv1a_64")]
        hash: String,
        keys: Vec<String>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("RINGMASTER_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run { config } => ringmaster::server::run(config),
        Cmd::Check { config } => match ringmaster::config::load(&config) {
            Ok(plan) => {
                for w in &plan.warnings {
                    eprintln!("warning: {w}");
                }
                println!("{}: ok", config.display());
                Ok(())
            }
            Err(e) => Err(e.into()),
        },
        Cmd::Demo { listen, admin, tls_listen, memcache_listen } => {
            ringmaster::demo::run(ringmaster::demo::DemoOpts { listen, admin, tls_listen, memcache_listen })
        }
        Cmd::Ring { cmd } => ring(cmd),
        Cmd::Import { from: ImportCmd::Nutcracker { file } } => import_nutcracker(&file),
        Cmd::Backend { listen, name, garbage, delay_ms } => backend(listen, name, garbage, delay_ms),
        Cmd::Mc { addr, words } => mc(addr, &words),
        Cmd::Bench(mut o) => {
            o.progress = !o.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
            ringmaster::loadtest::main(o).map_err(Into::into)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn mc(addr: SocketAddr, words: &[String]) -> anyhow::Result<()> {
    use ringmaster::memcache::ask;
    let answer = ask::ask(addr, words, std::time::Duration::from_secs(5))?;
    print!("{}", answer.replace("\r\n", "\n"));
    anyhow::ensure!(!ask::failed(&answer), "{addr} answered with an error");
    Ok(())
}

fn backend(listen: SocketAddr, name: String, garbage: bool, delay_ms: u64) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let l = tokio::net::TcpListener::bind(listen).await?;
        // The bound address, for callers that asked for port 0.
        println!("listening on {}", l.local_addr()?);
        if garbage {
            ringmaster::backend::serve_garbage(l).await;
        } else {
            ringmaster::backend::serve(l, name, std::time::Duration::from_millis(delay_ms)).await;
        }
        Ok(())
    })
}

fn parse_enum<T: serde::de::DeserializeOwned>(what: &str, v: &str) -> anyhow::Result<T> {
    serde_json::from_value(serde_json::Value::String(v.to_string())).map_err(|_| anyhow::anyhow!("unknown {what} `{v}`"))
}

fn import_nutcracker(file: &std::path::Path) -> anyhow::Result<()> {
    let yaml = std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    print!("{}", ringmaster::config::import::nutcracker(&file.display().to_string(), &yaml)?);
    Ok(())
}

fn ring(cmd: RingCmd) -> anyhow::Result<()> {
    use ringmaster::{hash::KeyHash, ring, ring::analyze};
    match cmd {
        RingCmd::Analyze {
            function,
            shards,
            config,
            service,
            keys,
            zipf,
            keys_file,
            hash,
            json,
            hot_keys,
            hot_share,
            top_keys,
            sample,
            split,
        } => {
            let (members, configured) = match (&config, &service) {
                (Some(c), Some(s)) => {
                    let (members, f) = service_ring(c, s)?;
                    (members, Some(f))
                }
                _ => ((0..shards).map(|i| ring::Member::new(format!("shard-{i}"), 1)).collect(), None),
            };
            anyhow::ensure!(members.len() >= 2, "at least 2 shards are needed (a shard is added and one removed)");
            let functions: Vec<ring::Function> = match (configured, function.as_str()) {
                (Some(f), "all") => vec![f],
                (_, "all") => ring::Function::ALL.to_vec(),
                (_, f) => vec![parse_enum("function", f)?],
            };
            let key_hash: KeyHash = parse_enum("hash", &hash)?;
            let source = match (keys_file, zipf) {
                (Some(f), _) => {
                    let text = std::fs::read(&f).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?;
                    analyze::Keys::List(text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(|l| l.to_vec()).collect())
                }
                (None, Some(s)) => analyze::Keys::Zipf { count: keys, universe: keys * 10, s },
                (None, None) => analyze::Keys::Uniform(keys),
            };
            let keys = source.generate();
            let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
            if !json {
                println!("{}", analyze::HEADER);
            }
            for &f in &functions {
                let r = analyze::analyze(f, &members, key_hash, &keys, progress);
                if json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!("{r}");
                }
            }
            if hot_keys.is_empty() && hot_share.is_none() {
                return Ok(());
            }
            use ringmaster::heat::simulate;
            let ranked = simulate::ranked(&keys);
            if !json {
                println!(
                    "\nroot cache of the hottest keys ({} requests, {} distinct keys):\n{}",
                    keys.len(),
                    ranked.len(),
                    simulate::HEADER
                );
            }
            for &f in &functions {
                let ring = ring::Ring::build(f, &members, key_hash);
                let mut rows: Vec<simulate::Mitigated> =
                    hot_keys.iter().map(|&n| simulate::mitigate(f.name(), &ring, members.len(), &ranked, n, split)).collect();
                if let Some(share) = hot_share {
                    anyhow::ensure!(share > 0.0 && share <= 1.0 && sample >= 1, "--hot-share is in (0, 1], --sample at least 1");
                    let policy = ringmaster::heat::Policy { hot_share: share, top_keys, sample, ..Default::default() };
                    rows.push(simulate::ranking(f.name(), &ring, members.len(), &keys, &policy, split));
                }
                for m in rows {
                    if json {
                        println!("{}", serde_json::to_string(&m)?);
                    } else {
                        println!("{m}");
                    }
                }
            }
            Ok(())
        }
        RingCmd::Locate { config: Some(c), service: Some(s), keys, .. } => locate_in_config(&c, &s, &keys),
        RingCmd::Locate { function, shards, hash, keys, .. } => {
            let f: ring::Function = parse_enum("function", &function)?;
            let members: Vec<ring::Member> = shards
                .iter()
                .map(|s| match s.split_once('=') {
                    Some((n, w)) => w.parse().map(|w| ring::Member::new(n, w)).map_err(|_| anyhow::anyhow!("bad weight in `{s}`")),
                    None => Ok(ring::Member::new(s.as_str(), 1)),
                })
                .collect::<anyhow::Result<_>>()?;
            anyhow::ensure!(!members.is_empty(), "name the shards with --shards a,b,c");
            let r = ring::Ring::build(f, &members, parse_enum("hash", &hash)?);
            for k in keys {
                let i = r.locate(k.as_bytes()).expect("non-empty ring");
                println!("{k}\t{}", members[i].name);
            }
            Ok(())
        }
    }
}

/// The ring members and function of service `name` in config `path`: its shards
/// for a sharded service, its endpoints for a `hash` balancer.
fn service_ring(path: &std::path::Path, name: &str) -> anyhow::Result<(Vec<ringmaster::ring::Member>, ringmaster::ring::Function)> {
    use ringmaster::ring::Member;
    let plan = ringmaster::config::load(path)?;
    let svc = plan.services.iter().find(|s| s.name == name).ok_or_else(|| anyhow::anyhow!("no service `{name}` in {}", path.display()))?;
    match (&svc.sharding, &*svc.pools[0].balancer) {
        (Some(sharding), _) => {
            let weights = plan.config.services.iter().find(|(k, _)| k.get_ref() == name).map(|(_, spec)| &spec.shards);
            let members = weights.into_iter().flatten().map(|(k, s)| Member::new(k.get_ref().clone(), *s.weight.get_ref())).collect();
            Ok((members, sharding.ring.function()))
        }
        (None, ringmaster::balance::Balancer::Hash(h)) => {
            let members = svc.pools[0]
                .endpoints
                .iter()
                .map(|e| Member::new(e.name.clone().unwrap_or_else(|| e.key.address.clone()), e.weight))
                .collect();
            Ok((members, h.ring.function()))
        }
        (None, _) => anyhow::bail!("service `{name}` neither is sharded nor uses the hash balancer: no key decides where requests go"),
    }
}

/// `ring locate --config`: the shard of each key, and the replica when the shard's
/// balancer is a hash of the same key (otherwise every replica can serve it).
fn locate_in_config(path: &std::path::Path, name: &str, keys: &[String]) -> anyhow::Result<()> {
    let snap = ringmaster::config::build(ringmaster::config::load(path)?, None).snapshot;
    if let Some(mc) = snap.memcache.get(name) {
        for k in keys {
            let shard = &mc.shards[mc.shard_of(k.as_bytes())];
            let replicas: Vec<&str> = shard.replicas.iter().map(|e| e.name.as_str()).collect();
            println!("{k}\tshard={}\treplicas={}", shard.name, replicas.join(","));
        }
        return Ok(());
    }
    let svc = snap.services.get(name).ok_or_else(|| anyhow::anyhow!("no service `{name}` in {}", path.display()))?;
    for k in keys {
        let (shard, pool) = match &svc.sharding {
            Some(s) => {
                let tag = s.tag;
                let i = s.ring.locate(ringmaster::hash::hash_tag(k.as_bytes(), tag)).unwrap_or(0);
                (svc.pools[i].shard.clone().unwrap_or_default(), &svc.pools[i])
            }
            None => ("-".to_string(), svc.pool()),
        };
        let replica = match &*pool.balancer {
            ringmaster::balance::Balancer::Hash(h) => {
                h.ring.locate_hash(h.hash(k.as_bytes())).map(|i| pool.endpoints[i].name.clone()).unwrap_or_else(|| "-".into())
            }
            _ => format!("any of {}", pool.endpoints.iter().map(|e| e.name.as_str()).collect::<Vec<_>>().join(",")),
        };
        println!("{k}\tshard={shard}\treplica={replica}");
    }
    Ok(())
}
