//! TLS termination state of one https listener: the rustls config in force,
//! swapped atomically when certificates are reloaded (on SIGHUP, `POST
//! /admin/reload`, or when the files change), so a new handshake takes the new
//! certificate while open connections keep theirs. A reload that fails keeps the
//! old config and says why. The session cache and ticket keys outlive reloads,
//! so resumption keeps working across them.
//!
//! Files are watched by polling their metadata (modification time, size, inode)
//! rather than with inotify: it needs no dependency, costs a few `stat` calls,
//! and sees Kubernetes' secret updates, which swap a symlink in a parent folder.

use super::{certified_key, facts, load_roots, provider, sni::SniResolver, CertFacts, TlsError};
use crate::identity::KeyInfo;
use arc_swap::ArcSwap;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ProducesTickets, StoresServerSessions, WebPkiClientVerifier};
use rustls::ServerConfig;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::SystemTime;

/// A certificate as loaded, for `/admin/tls` and the expiry metric.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LoadedCert {
    pub cert: String,
    pub key: String,
    pub names: Vec<String>,
    #[serde(flatten)]
    pub facts: Option<CertFacts>,
}

/// What is in force: the rustls config, the certificates it serves, and the
/// state of the files it was read from.
pub struct Loaded {
    pub config: Arc<ServerConfig>,
    pub certs: Vec<LoadedCert>,
    pub spec: Settings,
    stamps: Vec<Stamp>,
    pub at: SystemTime,
}

/// A spec's files, read once and checked: the certificates by SNI name and the
/// client verifier. A rustls config is made from it without touching a file.
#[derive(Clone)]
pub struct Material {
    resolver: Arc<SniResolver>,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    certs: Vec<LoadedCert>,
    stamps: Vec<Stamp>,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material").field("certs", &self.certs).finish_non_exhaustive()
    }
}

/// A file's identity and version, to notice a change.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &str) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// The TLS settings of an https listener: certificate and key files with their
/// SNI names (the first is the default), client authentication, resumption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub certificates: Vec<CertFiles>,
    pub client_auth: Option<ClientAuth>,
    pub session_tickets: bool,
    /// Sessions remembered for stateful resumption; 0 turns it off.
    pub session_cache: usize,
    /// How often the files are checked for changes; zero turns it off.
    pub watch_interval: std::time::Duration,
}

/// A certificate chain and its key (PEM files), and the names it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: String,
    pub key: String,
    pub names: Vec<String>,
}

/// Client certificates checked against a CA bundle (mTLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    pub ca: String,
    /// Refuse handshakes without a client certificate.
    pub required: bool,
    /// The identity tier of a verified client.
    pub tier: Option<String>,
}

/// The files a spec reads.
fn files(spec: &Settings) -> Vec<&str> {
    let mut f: Vec<&str> = spec.certificates.iter().flat_map(|c| [c.cert.as_str(), c.key.as_str()]).collect();
    if let Some(ca) = &spec.client_auth {
        f.push(&ca.ca);
    }
    f
}

/// The TLS side of one https listener.
pub struct TlsState {
    pub listener: String,
    loaded: ArcSwap<Loaded>,
    sessions: Arc<dyn StoresServerSessions>,
    ticketer: Option<Arc<dyn ProducesTickets>>,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
}

/// Reads and checks the files of `spec`. The files' versions are noted first,
/// so a change made while they are read is seen by the next check.
pub fn load(spec: &Settings) -> Result<Material, TlsError> {
    let stamps = stamps(spec);
    let mut keyed = Vec::new();
    let mut certs = Vec::new();
    for c in &spec.certificates {
        let ck = certified_key(&c.cert, &c.key)?;
        certs.push(LoadedCert { cert: c.cert.clone(), key: c.key.clone(), names: c.names.clone(), facts: ck.cert.first().and_then(facts) });
        keyed.push((ck, c.names.clone()));
    }
    let resolver = Arc::new(SniResolver::new(&keyed).ok_or(TlsError::NoListenerCertificate)?);
    let verifier = match &spec.client_auth {
        None => None,
        Some(ca) => {
            let roots = load_roots(&ca.ca)?;
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let v = if ca.required { v } else { v.allow_unauthenticated() };
            Some(v.build().map_err(|source| TlsError::ClientCa { path: ca.ca.clone(), source })?)
        }
    };
    Ok(Material { resolver, verifier, certs, stamps })
}

/// The rustls config of `m`, with the listener's session store and ticket keys.
fn server_config(
    m: &Material,
    sessions: Arc<dyn StoresServerSessions>,
    ticketer: Option<Arc<dyn ProducesTickets>>,
) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match &m.verifier {
        None => builder.with_no_client_auth(),
        Some(v) => builder.with_client_cert_verifier(v.clone()),
    };
    let mut cfg = builder.with_cert_resolver(m.resolver.clone());
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    cfg.session_storage = sessions;
    // One ticket per handshake, as OpenSSL sends on resumption: a client reconnecting
    // one connection at a time needs no more, and each costs both sides.
    cfg.send_tls13_tickets = 1;
    if let Some(t) = ticketer {
        cfg.ticketer = t;
    }
    Ok(cfg)
}

impl TlsState {
    /// The TLS state of listener `listener`, serving `m` (read from `spec`).
    pub fn new(listener: &str, spec: &Settings, m: &Material) -> Result<Arc<TlsState>, TlsError> {
        let sessions: Arc<dyn StoresServerSessions> = if spec.session_cache == 0 {
            Arc::new(rustls::server::NoServerSessionStorage {})
        } else {
            rustls::server::ServerSessionMemoryCache::new(spec.session_cache)
        };
        let ticketer =
            if spec.session_tickets { Some(rustls::crypto::aws_lc_rs::Ticketer::new().map_err(TlsError::Tickets)?) } else { None };
        let config = server_config(m, sessions.clone(), ticketer.clone())?;
        let loaded = Loaded {
            config: Arc::new(config),
            certs: m.certs.clone(),
            spec: spec.clone(),
            stamps: m.stamps.clone(),
            at: SystemTime::now(),
        };
        let state = Arc::new(TlsState {
            listener: listener.to_string(),
            loaded: ArcSwap::from_pointee(loaded),
            sessions,
            ticketer,
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        });
        watch(&state);
        Ok(state)
    }

    /// The acceptor for the next connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.loaded.load().config.clone())
    }

    /// What is in force now.
    pub fn loaded(&self) -> Arc<Loaded> {
        self.loaded.load_full()
    }

    /// Serves `m` (read from `spec`) from the next handshake on; on failure the
    /// old config stays and the error says why.
    pub fn reload(&self, spec: &Settings, m: Result<Material, TlsError>) -> Result<(), TlsError> {
        match m.and_then(|m| Ok((server_config(&m, self.sessions.clone(), self.ticketer.clone())?, m))) {
            Ok((config, m)) => {
                self.loaded.store(Arc::new(Loaded {
                    config: Arc::new(config),
                    certs: m.certs,
                    spec: spec.clone(),
                    stamps: m.stamps,
                    at: SystemTime::now(),
                }));
                self.reloads.fetch_add(1, Relaxed);
                tracing::info!(listener = %self.listener, "TLS certificates loaded");
                Ok(())
            }
            Err(e) => {
                self.reload_failures.fetch_add(1, Relaxed);
                tracing::error!(listener = %self.listener, error = %e, "TLS certificates not reloaded; the previous ones keep serving");
                Err(e)
            }
        }
    }

    /// The rate-limit identity of a client that presented `chain`, when the
    /// listener gives verified clients a tier.
    pub fn client_identity(&self, chain: Option<&[rustls_pki_types::CertificateDer<'static>]>) -> Option<Arc<KeyInfo>> {
        let loaded = self.loaded.load();
        let tier = loaded.spec.client_auth.as_ref()?.tier.clone()?;
        let owner = super::client_identity(chain?.first()?)?;
        Some(Arc::new(KeyInfo { tier, owner, overrides: None }))
    }

    /// Reloads when a file changed since the last load. A file caught half
    /// written fails to load; the next change to it is tried again.
    fn check_files(&self) {
        let loaded = self.loaded.load_full();
        let seen = stamps(&loaded.spec);
        if seen == loaded.stamps || self.reload(&loaded.spec, load(&loaded.spec)).is_ok() {
            return;
        }
        // Keep serving the old certificates; remember the files as seen so the
        // error is logged once per change. A concurrent reload wins.
        let same =
            Loaded { config: loaded.config.clone(), certs: loaded.certs.clone(), spec: loaded.spec.clone(), stamps: seen, at: loaded.at };
        self.loaded.compare_and_swap(&loaded, Arc::new(same));
    }
}

fn stamps(spec: &Settings) -> Vec<Stamp> {
    files(spec).into_iter().map(stamp).collect()
}

/// Polls the files of `state` while it lives.
fn watch(state: &Arc<TlsState>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
    let weak: Weak<TlsState> = Arc::downgrade(state);
    rt.spawn(async move {
        loop {
            let every = match weak.upgrade() {
                Some(s) => s.loaded.load().spec.watch_interval,
                None => return,
            };
            if every.is_zero() {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                continue;
            }
            tokio::time::sleep(every).await;
            let weak = weak.clone();
            let alive = tokio::task::spawn_blocking(move || match weak.upgrade() {
                Some(s) => {
                    s.check_files();
                    true
                }
                None => false,
            })
            .await
            .unwrap_or(false);
            if !alive {
                return;
            }
        }
    });
}
