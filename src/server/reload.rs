//! Reload and pool update, the two ways a new snapshot comes to serve.
//! A reload re-reads and checks the config file (file → check → plan) and
//! keeps that plan as the accepted one; a pool update (a scale step) lays the
//! scaler's endpoint changes over the accepted plan, reading no file, so a
//! half-edited file on disk neither stops scaling nor rides in with it. Both
//! then build a snapshot that carries over long-lived state and swap it in
//! atomically. Listeners that were added are bound before the swap (a failure
//! rejects the change); removed ones stop accepting after it. An invalid
//! config changes nothing.

use super::{listener, Live, Shared};
use crate::config::build;
use crate::metrics::GLOBAL;
use crate::upstream::health;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Why a reload or a pool update changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not read or check (every problem with its position).
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot listen on {addr} for new listener `{name}`: {source}")]
    Listen { name: String, addr: SocketAddr, source: std::io::Error },
}

/// Reloads the config; returns the new generation, or why the reload was rejected.
pub async fn reload(shared: &Arc<Shared>) -> Result<u64, ReloadError> {
    let result = apply(shared).await;
    match &result {
        Ok(g) => {
            GLOBAL.reloads_ok.fetch_add(1, Relaxed);
            shared.reloads.note(Some(*g), None);
            tracing::info!(generation = g, "config reloaded");
        }
        Err(e) => {
            GLOBAL.reloads_failed.fetch_add(1, Relaxed);
            shared.reloads.note(None, Some(e.to_string()));
            tracing::error!("config reload rejected, the previous config keeps serving:\n{e}");
        }
    }
    result
}

async fn apply(shared: &Arc<Shared>) -> Result<u64, ReloadError> {
    // Serialises reloads and pool updates; never held by requests.
    let mut running = shared.listeners.lock().await;
    let plan = crate::config::load(&shared.config_path)?;
    if plan.leader != shared.leader {
        tracing::warn!("a changed [leader] takes effect after a restart");
    }
    for w in &plan.warnings {
        tracing::warn!("config: {w}");
    }
    let accepted = plan.clone();
    let generation = install(shared, plan, &mut running).await?;
    *shared.accepted.lock().unwrap_or_else(|e| e.into_inner()) = accepted;
    Ok(generation)
}

/// Rebuilds the snapshot from the accepted plan with the scaler's overlay as
/// it is now (no file is read); the new generation, or why it failed.
pub async fn update_pools(shared: &Arc<Shared>) -> Result<u64, ReloadError> {
    let mut running = shared.listeners.lock().await;
    let plan = shared.accepted.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let result = install(shared, plan, &mut running).await;
    match &result {
        Ok(g) => tracing::info!(generation = g, "pools updated"),
        Err(e) => tracing::error!("pool update rejected, the pools stay as they were: {e}"),
    }
    result
}

/// Lays the overlay over `plan`, builds and swaps the snapshot in, and
/// reconciles the listeners with it.
async fn install(
    shared: &Arc<Shared>,
    mut plan: crate::config::Plan,
    running: &mut Vec<(String, listener::ListenerHandle)>,
) -> Result<u64, ReloadError> {
    shared.discovered.lock().unwrap_or_else(|e| e.into_inner()).apply(&mut plan);
    shared.scaled.lock().unwrap_or_else(|e| e.into_inner()).apply(&mut plan);
    let old = shared.snapshot();
    let built = build(plan, Some(&old));
    let new = &built.snapshot;
    if new.admin.as_ref().map(|a| a.addr) != old.admin.as_ref().map(|a| a.addr) {
        tracing::warn!("a new admin address takes effect after a restart (a new token at once)");
    }
    // A listener is kept when its name, address and protocol are unchanged.
    let wanted: Vec<(String, SocketAddr, bool)> = new.listeners.iter().map(|l| (l.name.clone(), l.addr, l.tls.is_some())).collect();
    let same = |(n, a, tls): &(String, SocketAddr, bool), (rn, h): &(String, listener::ListenerHandle)| {
        n == rn && *a == h.addr && *tls == h.tls.is_some()
    };
    let removed: Vec<usize> = (0..running.len()).filter(|&i| !wanted.iter().any(|w| same(w, &running[i]))).collect();
    let removed_addrs: Vec<SocketAddr> = removed.iter().map(|&i| running[i].1.addr).collect();
    let mut bound_now = Vec::new();
    let mut bind_later = Vec::new();
    for w in &wanted {
        if running.iter().any(|r| same(w, r)) {
            continue;
        }
        let (n, a, _) = w;
        if removed_addrs.contains(a) {
            bind_later.push((n.clone(), *a));
        } else {
            let tcp =
                listener::bind(*a, new.conn.reuse_port).map_err(|source| ReloadError::Listen { name: n.clone(), addr: *a, source })?;
            bound_now.push((n.clone(), tcp));
        }
    }

    let generation = new.generation;
    let reuse_port = new.conn.reuse_port;
    if new.conn.max_connections != old.conn.max_connections {
        tracing::warn!("limits.max_connections takes effect after a restart");
    }
    // Kept https listeners read their certificate files again; new handshakes
    // get the new certificates, open connections keep theirs.
    for (i, (name, h)) in running.iter().enumerate() {
        if removed.contains(&i) {
            continue;
        }
        let settings = new.listeners.iter().find(|l| &l.name == name).and_then(|l| l.tls.as_ref());
        if let (Some(state), Some((settings, material))) = (&h.tls, settings) {
            let _ = state.reload(settings, Ok(material.clone()));
        }
    }
    // One store: connections and requests see the new snapshot and its settings together.
    shared.live.store(Arc::new(Live::new(built.snapshot)));
    for ep in &built.new_endpoints {
        health::spawn(ep);
    }

    for i in removed.into_iter().rev() {
        let (name, h) = running.remove(i);
        tracing::info!(listener = %name, addr = %h.addr, "listener removed");
        h.stop().await;
    }
    for (n, a) in bind_later {
        match listener::bind(a, reuse_port) {
            Ok(tcp) => bound_now.push((n, tcp)),
            Err(e) => tracing::error!(listener = %n, addr = %a, error = %e, "cannot listen"),
        }
    }
    super::memcache::reconcile(shared, &mut *shared.memcache_listeners.lock().await).await;
    for (n, tcp) in bound_now {
        let tls = match super::tls_state(&shared.snapshot(), &n) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(listener = %n, error = %e, "https listener has no usable certificate; not serving it in plain text");
                continue;
            }
        };
        let h = listener::spawn(&n, tcp, shared.clone(), tls);
        tracing::info!(listener = %n, addr = %h.addr, "listening");
        running.push((n, h));
    }
    Ok(generation)
}
