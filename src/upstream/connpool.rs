//! The connection pool of one endpoint: keep-alive upstream connections, reused
//! most-recently-used first.
//!
//! Built on hyper's connection-level client rather than hyper-util's pooled
//! client: that one keys every checkout through a SipHash map behind a mutex and
//! clones request heads for retries. Here an endpoint owns its idle list, a
//! connection goes back to it only once its response body has been read to the
//! end, and a request that was never written comes back to the caller intact, so
//! a retry costs nothing.
//!
//! HTTP/1 connections are our own client's ([`crate::http1::client`]) unless
//! `[server] http1 = "hyper"`: then each is hyper's, driven by a task of its own.

use super::policy::{Http1Engine, UpstreamProtocol};
use crate::body::{Body, Conn, Held, OwnConn};
use crate::clock;
use crate::tls::stream::Stream;
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
    /// Connections start with this PROXY protocol header (and are not reused).
    pub proxy_header: Option<super::policy::ProxyHeader>,
    address: String,
    socket: Option<std::net::SocketAddr>,
    protocol: UpstreamProtocol,
    /// TLS towards the endpoint, or why it could not be set up.
    tls: Option<crate::tls::client::Upstream>,
    connect_timeout: Duration,
    idle_timeout_ms: u64,
    engine: Http1Engine,
    idle: Mutex<Vec<(Conn, u64)>>,
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
    Own { conn: Box<OwnConn>, reused: bool },
    H2 { tx: http2::SendRequest<Body> },
}

/// A response's body as it arrived: hyper's, or framed on our own connection
/// (with whether the connection may carry another request after it).
pub enum Arrived {
    Hyper(Incoming),
    Own(crate::http1::body::Body, bool),
}

/// Why an exchange with an upstream failed, as hyper's client or ours says it.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    #[error(transparent)]
    Own(#[from] crate::http1::client::Error),
}

impl ExchangeError {
    /// Whether the upstream reset the connection (or it broke) under the request.
    pub fn was_reset(&self) -> bool {
        use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
        match self {
            ExchangeError::Own(e) => e.is_reset(),
            ExchangeError::Hyper(e) => match source_of::<std::io::Error>(e) {
                Some(io) => matches!(io.kind(), ConnectionReset | ConnectionAborted | BrokenPipe),
                None => false,
            },
        }
    }

    /// Whether the connection ended before any response head.
    pub fn is_early(&self) -> bool {
        match self {
            ExchangeError::Own(e) => e.is_early(),
            ExchangeError::Hyper(e) => self.was_reset() || e.is_incomplete_message() || e.is_canceled(),
        }
    }

    /// The request body's own error of type `E`, if that is what failed.
    pub fn body_error<E: std::error::Error + 'static>(&self) -> Option<&E> {
        match self {
            ExchangeError::Own(e) => e.body().and_then(|b| b.downcast_ref::<E>()),
            ExchangeError::Hyper(e) => source_of::<E>(e),
        }
    }
}

/// The first of `e`'s sources that is an `E`.
fn source_of<E: std::error::Error + 'static>(e: &hyper::Error) -> Option<&E> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(t) = s.downcast_ref::<E>() {
            return Some(t);
        }
        src = s.source();
    }
    None
}

/// What `send` gives back when it failed: the request if it was never written.
pub struct SendError {
    pub error: ExchangeError,
    /// A bodiless request written to a reused connection that closed before
    /// any byte of an answer (our own client's): it may go again if idempotent.
    pub resend: Option<http::Request<Body>>,
    pub unsent: Option<http::Request<Body>>,
    /// The connection had served requests before (a stale keep-alive connection).
    pub reused: bool,
}

impl Lease {
    /// Sends `req`; on failure the request comes back if no byte of it was written.
    pub async fn send(&mut self, req: http::Request<Body>) -> Result<http::Response<Arrived>, SendError> {
        let hyper = |r: http::Response<Incoming>| r.map(Arrived::Hyper);
        match self {
            Lease::H1 { tx, reused } => {
                let reused = *reused;
                tx.try_send_request(req).await.map(hyper).map_err(|mut e| SendError {
                    unsent: e.take_message(),
                    error: e.into_error().into(),
                    resend: None,
                    reused,
                })
            }
            Lease::Own { conn, reused } => match conn.send(req).await {
                Ok(head) => {
                    let reusable = crate::http1::client::reusable(&head);
                    let reader = crate::http1::body::Body::new(head.framing, Default::default());
                    let mut resp = http::Response::new(Arrived::Own(reader, reusable));
                    *resp.status_mut() = head.status;
                    *resp.version_mut() = head.version;
                    *resp.headers_mut() = head.headers;
                    Ok(resp)
                }
                Err(f) => Err(SendError { error: f.error.into(), unsent: f.unsent, resend: f.resend.filter(|_| *reused), reused: *reused }),
            },
            Lease::H2 { tx } => tx.try_send_request(req).await.map(hyper).map_err(|mut e| SendError {
                unsent: e.take_message(),
                error: e.into_error().into(),
                resend: None,
                reused: true,
            }),
        }
    }

    /// The response body `arrived` on this connection, holding `held` (and
    /// the connection, over HTTP/1) until it has been read; one already at
    /// its end gives them back at once.
    pub fn body(self, arrived: Arrived, held: Held, idle: Duration) -> Body {
        match (self, arrived) {
            (Lease::Own { conn, .. }, Arrived::Own(reader, reusable)) => Body::own(conn, reader, reusable, held, idle),
            (lease, Arrived::Hyper(incoming)) => {
                let held = held.keep(lease.into_conn());
                if http_body::Body::is_end_stream(&incoming) {
                    held.finish();
                    Body::Empty
                } else {
                    Body::upstream(incoming, held, idle)
                }
            }
            (_, Arrived::Own(..)) => unreachable!("our own client's answers arrive on its own connections"),
        }
    }

    /// Reads a response body whole (a probe's); whether the connection may
    /// carry another request after it.
    pub async fn read_to_end(&mut self, arrived: Arrived) -> bool {
        match (self, arrived) {
            (Lease::Own { conn, .. }, Arrived::Own(mut reader, reusable)) => loop {
                match std::future::poll_fn(|cx| conn.poll_body(cx, &mut reader)).await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return reusable && conn.clean(),
                    Err(_) => return false,
                }
            },
            (_, Arrived::Hyper(incoming)) => http_body_util::BodyExt::collect(incoming).await.is_ok(),
            (_, Arrived::Own(..)) => false,
        }
    }

    /// An HTTP/1 connection to keep, or none (HTTP/2 is shared, not lent).
    fn into_conn(self) -> Option<Conn> {
        match self {
            Lease::H1 { tx, .. } => Some(Conn::Hyper(tx)),
            Lease::Own { conn, .. } => Some(Conn::Own(conn)),
            Lease::H2 { .. } => None,
        }
    }

    /// After a 101: our own connection, now the upstream side of a tunnel.
    pub fn upgraded(self) -> Option<Box<OwnConn>> {
        match self {
            Lease::Own { conn, .. } => Some(conn),
            _ => None,
        }
    }
}

/// Counts an open connection of our own client until it is dropped.
struct Open(Arc<ConnStats>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

impl ConnPool {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        address: &str,
        protocol: UpstreamProtocol,
        engine: Http1Engine,
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
            engine,
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
            proxy_header: None,
            stats: Arc::default(),
        }
    }

    pub fn protocol(&self) -> UpstreamProtocol {
        self.protocol
    }

    /// Whether its HTTP/1 connections are hyper's (`[server] http1 = "hyper"`).
    pub fn is_hyper_http1(&self) -> bool {
        self.protocol == UpstreamProtocol::Http1 && self.engine == Http1Engine::Hyper
    }

    /// The scheme requests to the endpoint carry (HTTP/2's `:scheme`).
    pub fn scheme(&self) -> http::uri::Scheme {
        if self.tls.is_some() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        }
    }

    /// A ready connection for `client`'s request (`None`: the proxy's own,
    /// such as a probe): an idle one if there is one, else a new one. Where
    /// connections start with a PROXY header, each is new and carries one
    /// client's request.
    pub async fn lease(&self, client: Option<super::proxy_header::Origin>) -> Result<Lease, ConnectError> {
        match self.protocol {
            UpstreamProtocol::Http1 => self.lease_h1(client).await,
            UpstreamProtocol::Http2 => self.lease_h2().await,
        }
    }

    async fn lease_h1(&self, client: Option<super::proxy_header::Origin>) -> Result<Lease, ConnectError> {
        if let Some(l) = self.idle_h1().await {
            return Ok(l);
        }
        let Some(permits) = &self.permits else { return Box::pin(self.new_h1(None, client)).await };
        if let Ok(p) = permits.clone().try_acquire_owned() {
            return Box::pin(self.new_h1(Some(p), client)).await;
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
                    p = permits.clone().acquire_owned() => return self.new_h1(p.ok(), client).await,
                    _ = released => continue,
                    _ = tokio::time::sleep_until(deadline) => return Err(ConnectError::Busy(self.queue_timeout)),
                }
            }
        })
        .await
    }

    /// An idle connection that is still open and ready, if there is one.
    async fn idle_h1(&self) -> Option<Lease> {
        if self.proxy_header.is_some() {
            return None;
        }
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
            let (conn, since) = popped?;
            if now.saturating_sub(since) > self.idle_timeout_ms {
                continue;
            }
            match conn {
                Conn::Own(mut conn) => {
                    if !conn.closed_while_idle() {
                        self.stats.reused.fetch_add(1, Relaxed);
                        return Some(Lease::Own { conn, reused: true });
                    }
                }
                Conn::Hyper(mut tx) => {
                    if !tx.is_closed() && tx.ready().await.is_ok() {
                        self.stats.reused.fetch_add(1, Relaxed);
                        return Some(Lease::H1 { tx, reused: true });
                    }
                }
            }
        }
    }

    /// A new connection; `permit` (under a cap) is held while it lives.
    async fn new_h1(
        &self,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
        client: Option<super::proxy_header::Origin>,
    ) -> Result<Lease, ConnectError> {
        let io = self.connect(client).await?;
        if self.engine == Http1Engine::Own {
            self.stats.open.fetch_add(1, Relaxed);
            let hold: Box<dyn Send + Sync> = Box::new((Open(self.stats.clone()), permit));
            return Ok(Lease::Own { conn: Box::new(OwnConn::new(io.into_inner(), Some(hold))), reused: false });
        }
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
        let io = self.connect(None).await?;
        let (tx, conn) = http2::Builder::new(TokioExecutor::new()).timer(TokioTimer::new()).handshake(io).await?;
        self.spawn_conn(conn, None);
        *self.h2.lock().expect("h2 lock") = Some(tx.clone());
        Ok(Lease::H2 { tx })
    }

    async fn connect(&self, client: Option<super::proxy_header::Origin>) -> Result<TokioIo<Stream>, ConnectError> {
        let connect = async {
            match self.socket {
                Some(sa) => TcpStream::connect(sa).await,
                None => TcpStream::connect(self.address.as_str()).await,
            }
        };
        let stream =
            tokio::time::timeout(self.connect_timeout, connect).await.map_err(|_| ConnectError::Timeout(self.connect_timeout))??;
        let _ = stream.set_nodelay(true);
        let mut stream = stream;
        if let Some(version) = self.proxy_header {
            let header = super::proxy_header::header(version, client);
            tokio::io::AsyncWriteExt::write_all(&mut stream, &header).await?;
        }
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
        if let Some(conn) = lease.into_conn() {
            self.keep(conn);
        }
    }

    /// Puts an HTTP/1 connection that finished its exchange on the idle list.
    pub fn keep(&self, mut conn: Conn) {
        // Its PROXY header named one client: it serves no other.
        if self.proxy_header.is_some() {
            drop(conn);
            self.released.notify_one();
            return;
        }
        match &mut conn {
            Conn::Hyper(tx) if tx.is_closed() => return,
            Conn::Hyper(_) => {}
            Conn::Own(c) => c.rest(),
        }
        let mut idle = self.idle.lock().expect("idle list lock");
        if idle.len() < MAX_IDLE {
            idle.push((conn, clock::now_ms()));
        }
        self.stats.idle.store(idle.len(), Relaxed);
        drop(idle);
        self.released.notify_one();
    }
}
