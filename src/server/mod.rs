//! The server: listeners, the admin listener, signals, reload and graceful
//! shutdown around one shared, atomically swapped snapshot.

pub mod discovery;
pub mod heat;
#[cfg(feature = "kubernetes")]
mod kubernetes;
pub mod listener;
pub mod memcache;
mod own;
pub mod proxy_protocol;
pub mod reload;
pub mod scale;
pub mod streams;
pub mod timeouts;

use crate::config::{build, Plan, Snapshot};
use crate::tls::server::TlsState;
use crate::upstream::health;
use anyhow::Context as _;
use arc_swap::ArcSwap;
use hyper_util::server::conn::auto;
use listener::ListenerHandle;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// What a connection and its requests read, swapped whole on reload: the
/// snapshot and the connection settings built from it. One atomic store, so no
/// connection sees new settings with an old snapshot.
pub struct Live {
    pub snap: Arc<Snapshot>,
    pub builder: auto::Builder<streams::InPlace>,
}

impl Live {
    fn new(snap: Snapshot) -> Live {
        Live { builder: listener::builder(&snap.conn), snap: Arc::new(snap) }
    }
}

/// State every connection and request can reach.
pub struct Shared {
    pub live: ArcSwap<Live>,
    pub per_client: listener::PerClient,
    pub connection_limit: Arc<Semaphore>,
    /// Becomes true when shutdown begins; connections then close after their current request.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Set once shutdown begins; `/readyz` then fails.
    pub draining: AtomicBool,
    pub config_path: PathBuf,
    /// Every client connection and the background work requests start (cache
    /// refreshes); shutdown closes it and waits for it to empty.
    pub tasks: tokio_util::task::TaskTracker,
    /// Running listeners, keyed by name and address. Locked only by reloads.
    pub listeners: tokio::sync::Mutex<Vec<(String, ListenerHandle)>>,
    /// Running memcache listeners. Locked only by reloads.
    pub memcache_listeners: tokio::sync::Mutex<Vec<memcache::Handle>>,
    /// The pools discovery found (each exactly its names' addresses), laid
    /// over the config on every build before the scaler's overlay.
    pub discovered: std::sync::Mutex<crate::config::overlay::Overlay>,
    /// What discovery holds for each pool, and why (the admin views show it).
    pub discovery: crate::discovery::Statuses,
    /// The last reloads and their results (the dashboard lists them).
    pub reloads: crate::metrics::Reloads,
    /// The endpoints the scaler added, laid over the config on every build.
    pub scaled: std::sync::Mutex<crate::config::overlay::Overlay>,
    /// The plan of the config last accepted (at start or by a reload), which
    /// pool updates build on without reading the file again.
    pub accepted: std::sync::Mutex<Plan>,
    /// The election this root entered at start (`[leader]`; a change needs a restart).
    pub leader: Option<crate::scale::leader::Settings>,
    /// The scaler's decisions and this root's standing, for the admin views.
    pub scaling: Arc<crate::scale::Scaling>,
}

impl Shared {
    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.live.load().snap.clone()
    }
}

/// Addresses the server actually bound, for callers that asked for port 0.
#[derive(Clone, Debug)]
pub struct Bound {
    pub listeners: Vec<(String, SocketAddr)>,
    pub admin: Option<SocketAddr>,
}

/// Runs the proxy for the config file at `path` until SIGTERM or SIGINT.
pub fn run(path: PathBuf) -> anyhow::Result<()> {
    let plan = crate::config::load(&path)?;
    let configured = plan.config.server.workers;
    let workers = if configured == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { configured };
    // One worker: a current-thread runtime, which skips the work-stealing scheduler's
    // cross-thread bookkeeping on every wake-up.
    let mut b = if workers == 1 { tokio::runtime::Builder::new_current_thread() } else { tokio::runtime::Builder::new_multi_thread() };
    if workers > 1 {
        b.worker_threads(workers);
    }
    let rt = b.enable_all().build().context("starting the runtime")?;
    rt.block_on(serve(plan, path, |_| {}))
}

/// The TLS state of listener `name`: `None` for a plain listener, an error
/// when an https listener's certificates do not load.
pub fn tls_state(snap: &Snapshot, name: &str) -> Result<Option<Arc<TlsState>>, crate::tls::TlsError> {
    match snap.listeners.iter().find(|l| l.name == name).and_then(|l| l.tls.as_ref()) {
        Some((settings, material)) => TlsState::new(name, settings, material).map(Some),
        None => Ok(None),
    }
}

/// Serves `plan` (read from `path`, which reloads re-read) until a shutdown
/// signal; `on_ready` is told the bound addresses once every listener is up.
pub async fn serve(plan: Plan, path: PathBuf, on_ready: impl FnOnce(&Bound)) -> anyhow::Result<()> {
    crate::memcache::stats::init();
    for w in &plan.warnings {
        tracing::warn!("config: {w}");
    }
    let leader = plan.leader.clone();
    let accepted = plan.clone();
    let built = build(plan, None);
    let snap = built.snapshot;
    let mut sockets = Vec::new();
    for l in &snap.listeners {
        let tcp = listener::bind(l.addr, snap.conn.reuse_port)
            .with_context(|| format!("cannot listen on {} (listener `{}`): is another process using it?", l.addr, l.name))?;
        sockets.push((l.name.clone(), tcp));
    }
    let mut mc_sockets = Vec::new();
    for l in &snap.memcache_listeners {
        let socket = memcache::bind(&l.addr)
            .with_context(|| format!("cannot listen on {} (memcache listener `{}`): is another process using it?", l.addr, l.name))?;
        mc_sockets.push((l.clone(), socket));
    }
    let admin = match snap.admin.as_ref().map(|a| a.addr) {
        Some(addr) => Some(
            listener::bind(addr, false).with_context(|| format!("cannot listen on admin address {addr}: is another process using it?"))?,
        ),
        None => None,
    };
    let grace = snap.grace_period;
    let (begin_shutdown, shutdown) = tokio::sync::watch::channel(false);
    let shared = Arc::new(Shared {
        per_client: Default::default(),
        connection_limit: Arc::new(Semaphore::new(snap.conn.max_connections)),
        live: ArcSwap::from_pointee(Live::new(snap)),
        shutdown,
        draining: AtomicBool::new(false),
        config_path: path,
        listeners: tokio::sync::Mutex::new(Vec::new()),
        memcache_listeners: tokio::sync::Mutex::new(Vec::new()),
        tasks: tokio_util::task::TaskTracker::new(),
        scaled: Default::default(),
        discovered: Default::default(),
        discovery: Default::default(),
        reloads: Default::default(),
        accepted: std::sync::Mutex::new(accepted),
        leader: leader.clone(),
        scaling: Default::default(),
    });
    for ep in &built.new_endpoints {
        health::spawn(ep);
    }
    let mut bound = Bound { listeners: Vec::new(), admin: None };
    {
        let mut ls = shared.listeners.lock().await;
        for (name, tcp) in sockets {
            let tls = tls_state(&shared.snapshot(), &name).map_err(|e| {
                anyhow::anyhow!("https listener `{name}` has no usable certificate ({e}); refusing to serve it in plain text")
            })?;
            let h = listener::spawn(&name, tcp, shared.clone(), tls);
            tracing::info!(listener = %name, addr = %h.addr, "listening");
            bound.listeners.push((name.clone(), h.addr));
            ls.push((name, h));
        }
        let mut mls = shared.memcache_listeners.lock().await;
        for (plan, socket) in mc_sockets {
            let h = memcache::spawn(plan, socket, shared.clone());
            tracing::info!(listener = %h.plan.name, addr = %h.bound, "memcache listening");
            if let crate::config::plan::McAddr::Tcp(a) = h.bound {
                bound.listeners.push((h.plan.name.clone(), a));
            }
            mls.push(h);
        }
    }
    let admin_tls = match shared.snapshot().admin.as_ref().and_then(|a| a.tls.as_ref()) {
        Some((settings, material)) => Some(
            TlsState::new("admin", settings, material)
                .map_err(|e| anyhow::anyhow!("the admin listener's certificates do not load: {e}"))?,
        ),
        None => None,
    };
    let admin_task = admin.map(|tcp| {
        bound.admin = tcp.local_addr().ok();
        tracing::info!(addr = ?bound.admin, tls = admin_tls.is_some(), "admin listening");
        tokio::spawn(crate::admin::serve(tcp, Arc::new(Admin(shared.clone())), admin_tls, shared.shutdown.clone()))
    });
    let heat_shared = shared.clone();
    tokio::spawn(heat::run(move || heat_shared.snapshot(), shared.shutdown.clone()));
    let election = leader.map(|s| {
        shared.scaling.leadership.campaign();
        tracing::info!(identity = %s.identity, ttl = ?s.ttl, "leader election: campaigning; only the leader scales");
        tokio::spawn(crate::scale::leader::run(s, shared.scaling.leadership.clone(), shared.shutdown.clone()))
    });
    let scaler = tokio::spawn(scale::run(shared.clone()));
    tokio::spawn(discovery::run(shared.clone()));
    #[cfg(feature = "kubernetes")]
    tokio::spawn(kubernetes::run(shared.clone()));
    on_ready(&bound);

    wait_for_shutdown(&shared).await;

    shared.draining.store(true, Relaxed);
    tracing::info!(grace_ms = grace.as_millis() as u64, "shutting down: no new connections, draining in-flight requests");
    for (_, h) in shared.listeners.lock().await.drain(..) {
        h.stop().await;
    }
    for h in shared.memcache_listeners.lock().await.drain(..) {
        h.stop().await;
    }
    let _ = begin_shutdown.send(true);
    shared.tasks.close();
    match tokio::time::timeout(grace, shared.tasks.wait()).await {
        Ok(()) => tracing::info!("drained; exiting"),
        Err(_) => tracing::warn!("grace period ended with connections still open; exiting"),
    }
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    // The replicas the scaler started end with the server; a leader steps down.
    let _ = scaler.await;
    if let Some(e) = election {
        let _ = e.await;
    }
    Ok(())
}

/// What the admin listener may ask of the running server.
struct Admin(Arc<Shared>);

impl crate::admin::Control for Admin {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.0.snapshot()
    }

    fn draining(&self) -> bool {
        self.0.draining.load(Relaxed)
    }

    fn reload(&self) -> crate::admin::BoxFuture<'_, Result<u64, crate::admin::ReloadRefused>> {
        Box::pin(async move { reload::reload(&self.0).await.map_err(Into::into) })
    }

    fn scaling(&self) -> Arc<crate::scale::Scaling> {
        self.0.scaling.clone()
    }

    fn tls_states(&self) -> crate::admin::BoxFuture<'_, Vec<Arc<TlsState>>> {
        Box::pin(async move { self.0.listeners.lock().await.iter().filter_map(|(_, h)| h.tls.clone()).collect() })
    }

    fn reloads(&self) -> Vec<crate::metrics::ReloadRecord> {
        self.0.reloads.list()
    }

    fn discovery(&self) -> std::collections::BTreeMap<String, crate::discovery::PoolStatus> {
        self.0.discovery.all()
    }
}

/// Reloads on SIGHUP and reopens the access log; returns on SIGTERM or SIGINT.
async fn wait_for_shutdown(shared: &Arc<Shared>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).expect("install SIGHUP handler");
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let _ = reload::reload(shared).await;
                // logrotate renamed the file away: lines go to a new one (even when the reload failed).
                if let Some(log) = &shared.live.load().snap.access_log {
                    log.reopen();
                }
            }
            _ = term.recv() => return,
            _ = int.recv() => return,
        }
    }
}
