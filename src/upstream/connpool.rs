//! The connection pool of one endpoint: keep-alive upstream connections, reused
//! most-recently-used first.
//!
//! Built on hyper's connection-level client rather than hyper-util's pooled
//! client: that one keys every checkout through a SipHash map behind a mutex and
//! clones request heads for retries. Here an endpoint owns its idle list, a
//! connection goes back to it only once its response body has been read to the
//! end, and a request that was never written comes back to the caller intact, so
//! a retry costs nothing.

use super::policy::UpstreamProtocol;
use super::stream::Stream;
use crate::body::Body;
use crate::clock;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;

/// Idle connections kept per endpoint, as nginx's `keepalive 1024`.
const MAX_IDLE: usize = 1024;

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("connect failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("handshake failed: {0}")]
    Handshake(#[from] hyper::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("every connection is in use (max_connections_per_endpoint); waited {0:?}")]
    Busy(Duration),
}

impl ConnectError {
    /// Nothing listens at the address, or it reset the connection: the endpoint is down.
    pub fn is_refused(&self) -> bool {
        use std::io::ErrorKind::{ConnectionRefused, ConnectionReset};
        matches!(self, ConnectError::Io(e) if matches!(e.kind(), ConnectionRefused | ConnectionReset))
    }
}

/// Connection counters of an endpoint.
#[derive(Default)]
pub struct ConnStats {
    pub open: AtomicUsize,
    pub idle: AtomicUsize,
    pub opened: AtomicU64,
    pub reused: AtomicU64,
}

pub struct ConnPool {
    address: String,
    socket: Option<std::net::SocketAddr>,
    protocol: UpstreamProtocol,
    /// TLS towards the endpoint, or why it could not be set up.
    tls: Option<crate::tls::client::Upstream>,
    connect_timeout: Duration,
    idle_timeout_ms: u64,
    idle: Mutex<Vec<(http1::SendRequest<Body>, u64)>>,
    h2: Mutex<Option<http2::SendRequest<Body>>>,
    pub stats: Arc<ConnStats>,
    /// HTTP/1 connections open at most (each holds a permit while it lives); none for no cap.
    permits: Option<Arc<tokio::sync::Semaphore>>,
    /// How long a request waits for a connection at the cap.
    queue_timeout: Duration,
    /// Woken when a connection goes back to the idle list.
    released: tokio::sync::Notify,
}

/// A connection lent to one request.
pub enum Lease {
    H1 { tx: http1::SendRequest<Body>, reused: bool },
    H2 { tx: http2::SendRequest<Body> },
}

/// What `send` gives back when it failed: the request if it was never written.
pub struct SendError {
    pub error: hyper::Error,
    pub unsent: Option<http::Request<Body>>,
    /// The connection had served requests before (a stale keep-alive connection).
    pub reused: bool,
}

impl Lease {
    /// Sends `req`; on failure the request comes back if no byte of it was written.
    pub async fn send(&mut self, req: http::Request<Body>) -> Result<http::Response<Incoming>, SendError> {
        match self {
            Lease::H1 { tx, reused } => {
                let reused = *reused;
                tx.try_send_request(req).await.map_err(|mut e| SendError { unsent: e.take_message(), error: e.into_error(), reused })
            }
            Lease::H2 { tx } => {
                tx.try_send_request(req).await.map_err(|mut e| SendError { unsent: e.take_message(), error: e.into_error(), reused: true })
            }
        }
    }
}

impl ConnPool {
    pub fn new(
        address: &str,
        protocol: UpstreamProtocol,
        tls: Option<crate::tls::client::Upstream>,
        connect_timeout: Duration,
        idle_timeout: Duration,
        cap: (usize, Duration),
    ) -> ConnPool {
        ConnPool {
            permits: (cap.0 > 0).then(|| Arc::new(tokio::sync::Semaphore::new(cap.0))),
            queue_timeout: cap.1,
            released: tokio::sync::Notify::new(),
            address: address.to_string(),
            socket: address.parse().ok(),
            protocol,
            tls,
            connect_timeout,
            idle_timeout_ms: idle_timeout.as_millis() as u64,
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
            stats: Arc::default(),
        }
    }

    pub fn protocol(&self) -> UpstreamProtocol {
        self.protocol
    }

    /// The scheme requests to the endpoint carry (HTTP/2's `:scheme`).
    pub fn scheme(&self) -> http::uri::Scheme {
        if self.tls.is_some() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        }
    }

    /// A ready connection: an idle one if there is one, else a new one.
    pub async fn lease(&self) -> Result<Lease, ConnectError> {
        match self.protocol {
            UpstreamProtocol::Http1 => self.lease_h1().await,
            UpstreamProtocol::Http2 => self.lease_h2().await,
        }
    }

    async fn lease_h1(&self) -> Result<Lease, ConnectError> {
        if let Some(l) = self.idle_h1().await {
            return Ok(l);
        }
        let Some(permits) = &self.permits else { return Box::pin(self.new_h1(None)).await };
        if let Ok(p) = permits.clone().try_acquire_owned() {
            return Box::pin(self.new_h1(Some(p))).await;
        }
        // At the cap: wait for a connection to come back idle, or to close.
        Box::pin(async {
            let deadline = tokio::time::Instant::now() + self.queue_timeout;
            loop {
                let released = self.released.notified();
                tokio::pin!(released);
                released.as_mut().enable();
                if let Some(l) = self.idle_h1().await {
                    return Ok(l);
                }
                tokio::select! {
                    p = permits.clone().acquire_owned() => return self.new_h1(p.ok()).await,
                    _ = released => continue,
                    _ = tokio::time::sleep_until(deadline) => return Err(ConnectError::Busy(self.queue_timeout)),
                }
            }
        })
        .await
    }

    /// An idle connection that is still open and ready, if there is one.
    async fn idle_h1(&self) -> Option<Lease> {
        let now = clock::now_ms();
        loop {
            let popped = {
                let mut idle = self.idle.lock().expect("idle list lock");
                let p = idle.pop();
                if let Some((_, since)) = &p {
                    if now.saturating_sub(*since) > self.idle_timeout_ms {
                        // The most recent is too old, so are all others.
                        idle.clear();
                    }
                }
                self.stats.idle.store(idle.len(), Relaxed);
                p
            };
            let (mut tx, since) = popped?;
            if now.saturating_sub(since) > self.idle_timeout_ms || tx.is_closed() {
                continue;
            }
            if tx.ready().await.is_ok() {
                self.stats.reused.fetch_add(1, Relaxed);
                return Some(Lease::H1 { tx, reused: true });
            }
        }
    }

    /// A new connection; `permit` (under a cap) is held while it lives.
    async fn new_h1(&self, permit: Option<tokio::sync::OwnedSemaphorePermit>) -> Result<Lease, ConnectError> {
        let io = self.connect().await?;
        let (tx, conn) = http1::Builder::new().handshake(io).await?;
        // With upgrades: a 101 hands the connection to a tunnel.
        self.spawn_conn(conn.with_upgrades(), permit);
        Ok(Lease::H1 { tx, reused: false })
    }

    async fn lease_h2(&self) -> Result<Lease, ConnectError> {
        let current = self.h2.lock().expect("h2 lock").clone();
        if let Some(tx) = current {
            if !tx.is_closed() {
                self.stats.reused.fetch_add(1, Relaxed);
                return Ok(Lease::H2 { tx });
            }
        }
        Box::pin(self.new_h2()).await
    }

    async fn new_h2(&self) -> Result<Lease, ConnectError> {
        let io = self.connect().await?;
        let (tx, conn) = http2::Builder::new(TokioExecutor::new()).timer(TokioTimer::new()).handshake(io).await?;
        self.spawn_conn(conn, None);
        *self.h2.lock().expect("h2 lock") = Some(tx.clone());
        Ok(Lease::H2 { tx })
    }

    async fn connect(&self) -> Result<TokioIo<Stream>, ConnectError> {
        let connect = async {
            match self.socket {
                Some(sa) => TcpStream::connect(sa).await,
                None => TcpStream::connect(self.address.as_str()).await,
            }
        };
        let stream =
            tokio::time::timeout(self.connect_timeout, connect).await.map_err(|_| ConnectError::Timeout(self.connect_timeout))??;
        let _ = stream.set_nodelay(true);
        let stream = match &self.tls {
            None => Stream::Plain(stream),
            Some(t) => {
                let hs = t.connector.connect(t.name.clone(), stream);
                let tls = tokio::time::timeout(self.connect_timeout, hs)
                    .await
                    .map_err(|_| ConnectError::Timeout(self.connect_timeout))?
                    .map_err(ConnectError::Tls)?;
                Stream::Tls(Box::new(tls))
            }
        };
        self.stats.opened.fetch_add(1, Relaxed);
        Ok(TokioIo::new(stream))
    }

    fn spawn_conn<F>(&self, conn: F, permit: Option<tokio::sync::OwnedSemaphorePermit>)
    where
        F: std::future::Future<Output = Result<(), hyper::Error>> + Send + 'static,
    {
        let stats = self.stats.clone();
        stats.open.fetch_add(1, Relaxed);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
            stats.open.fetch_sub(1, Relaxed);
        });
    }

    /// Returns a connection whose response was read to the end.
    pub fn release(&self, lease: Lease) {
        if let Lease::H1 { tx, .. } = lease {
            if tx.is_closed() {
                return;
            }
            let mut idle = self.idle.lock().expect("idle list lock");
            if idle.len() < MAX_IDLE {
                idle.push((tx, clock::now_ms()));
            }
            self.stats.idle.store(idle.len(), Relaxed);
            drop(idle);
            self.released.notify_one();
        }
    }
}
