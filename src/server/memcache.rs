//! Accept for the ambassador: memcache listeners on TCP or a Unix socket, each
//! client connection served by `memcache::client` under the listener's own
//! connection limits (never the HTTP listeners': an idle memcache client takes
//! no HTTP client's place) and the shutdown tracker, reading its service from
//! the current snapshot, so a reload changes shards and endpoints under open
//! connections. A client past a limit is answered as memcached answers it
//! (`ERROR Too many open connections`) and closed.

use super::Shared;
use crate::config::plan::{McAddr, McListenerPlan};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A bound memcache listener socket.
pub enum Socket {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener, std::path::PathBuf),
}

/// Binds `addr`; a Unix socket path left by an earlier run is replaced.
pub fn bind(addr: &McAddr) -> std::io::Result<Socket> {
    match addr {
        McAddr::Tcp(a) => Ok(Socket::Tcp(super::listener::bind(*a, false)?)),
        McAddr::Unix(path) => {
            if std::os::unix::net::UnixStream::connect(path).is_err() {
                let _ = std::fs::remove_file(path);
            }
            Ok(Socket::Unix(tokio::net::UnixListener::bind(path)?, path.clone()))
        }
    }
}

/// A running memcache listener.
pub struct Handle {
    pub plan: McListenerPlan,
    /// The bound address (a TCP port asked as 0 is filled in).
    pub bound: McAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Handle {
    /// Stops accepting; open connections keep being served.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        if let McAddr::Unix(p) = &self.bound {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Starts accepting clients on `socket` for listener `plan`.
pub fn spawn(plan: McListenerPlan, socket: Socket, shared: Arc<Shared>) -> Handle {
    let bound = match &socket {
        Socket::Tcp(l) => McAddr::Tcp(l.local_addr().expect("bound listener has an address")),
        Socket::Unix(_, p) => McAddr::Unix(p.clone()),
    };
    let (stop, mut stopped) = watch::channel(false);
    let service = plan.service.clone();
    let name = plan.name.clone();
    let limits = Arc::new(plan.clients.clone());
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let per_address = Arc::new(super::listener::PerClient::default());
    let budget = Arc::new(crate::memcache::client::Budget::default());
    let task = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                r = accept(&socket) => r,
                _ = stopped.changed() => return,
            };
            let (stream, peer) = match accepted {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(listener = %name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                refuse(stream, &name, "max_connections");
                continue;
            };
            let shared2 = shared.clone();
            let (service, limits, per_address, budget) = (service.clone(), limits.clone(), per_address.clone(), budget.clone());
            let timeout = shared.snapshot().memcache.get(&service).map(|s| s.command_timeout).unwrap_or(Duration::from_secs(10));
            let stop = shared.shutdown.clone();
            let name = name.clone();
            shared.tasks.spawn(async move {
                let slot = match peer.filter(|_| limits.max_per_address > 0) {
                    Some(ip) => match per_address.acquire(ip, limits.max_per_address) {
                        Some(slot) => Some(slot),
                        None => return refuse(stream, &name, "max_per_address"),
                    },
                    None => None,
                };
                let lookup = || shared2.live.load().snap.memcache.get(&service).cloned();
                // Counted open from its slot to its slot's release, so a count of
                // zero means every client slot was given back.
                let open = &crate::memcache::stats::GLOBAL.connections;
                open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match stream {
                    Stream::Tcp(s) => {
                        let (r, w) = s.into_split();
                        crate::memcache::client::serve(r, w, lookup, &limits, &budget, timeout, stop).await
                    }
                    Stream::Unix(s) => {
                        let (r, w) = s.into_split();
                        crate::memcache::client::serve(r, w, lookup, &limits, &budget, timeout, stop).await
                    }
                }
                drop((slot, permit));
                open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            });
        }
    });
    Handle { plan, bound, stop, task }
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// A connection and its peer's address (none on a Unix socket).
async fn accept(socket: &Socket) -> std::io::Result<(Stream, Option<std::net::IpAddr>)> {
    Ok(match socket {
        Socket::Tcp(l) => {
            let (s, peer) = l.accept().await?;
            let _ = s.set_nodelay(true);
            (Stream::Tcp(s), Some(peer.ip()))
        }
        Socket::Unix(l, _) => (Stream::Unix(l.accept().await?.0), None),
    })
}

/// memcached's answer to a client past its connection limit, written if the
/// socket takes it at once; then the connection closes.
fn refuse(stream: Stream, listener: &str, limit: &str) {
    const TOO_MANY: &[u8] = b"ERROR Too many open connections\r\n";
    crate::memcache::stats::GLOBAL.refused_connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::debug!(listener, limit, "memcache client refused");
    let _ = match &stream {
        Stream::Tcp(s) => s.try_write(TOO_MANY),
        Stream::Unix(s) => s.try_write(TOO_MANY),
    };
}

/// Brings the running memcache listeners in line with the snapshot's: a
/// listener whose name, address and service are unchanged keeps running;
/// others stop, and new ones are bound (an address that cannot be bound is
/// logged and skipped).
pub async fn reconcile(shared: &Arc<Shared>, running: &mut Vec<Handle>) {
    let wanted = shared.snapshot().memcache_listeners.clone();
    let mut kept = Vec::new();
    for h in running.drain(..) {
        let same = wanted
            .iter()
            .any(|w| w.name == h.plan.name && w.service == h.plan.service && w.addr == h.plan.addr && w.clients == h.plan.clients);
        if same {
            kept.push(h);
        } else {
            tracing::info!(listener = %h.plan.name, addr = %h.bound, "memcache listener removed");
            h.stop().await;
        }
    }
    *running = kept;
    for w in wanted {
        if running.iter().any(|h| h.plan.name == w.name) {
            continue;
        }
        match bind(&w.addr) {
            Ok(s) => {
                let h = spawn(w, s, shared.clone());
                tracing::info!(listener = %h.plan.name, addr = %h.bound, "memcache listening");
                running.push(h);
            }
            Err(e) => tracing::error!(listener = %w.name, addr = %w.addr, error = %e, "cannot listen"),
        }
    }
}
