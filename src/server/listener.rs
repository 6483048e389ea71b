//! Accept: bind a listener, accept client connections under the connection
//! limit, and serve each with hyper (HTTP/1.1 and HTTP/2 prior knowledge on one
//! port), watched by the graceful-shutdown tracker.

use super::proxy_protocol;
use super::streams::{InPlace, Streams};
use super::timeouts::Timed;
use super::Shared;
use crate::body::Body;
use crate::metrics::{count_answer, Answer, GLOBAL};
use crate::pipeline::{self, Conn};
use crate::tls::{handshake, server::TlsState};
use futures_util::future::Either;
use futures_util::FutureExt as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

/// Binds `addr` with SO_REUSEADDR (and SO_REUSEPORT with `reuse_port`) and
/// a deep accept backlog.
pub fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    sock.set_reuseaddr(true)?;
    if reuse_port {
        sock.set_reuseport(true)?;
    }
    sock.bind(addr)?;
    sock.listen(4096)
}

/// A running listener; dropping the handle's sender stops accepting.
pub struct ListenerHandle {
    pub addr: SocketAddr,
    /// The certificates of an https listener.
    pub tls: Option<Arc<TlsState>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl ListenerHandle {
    /// Stops accepting; open connections keep being served.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// The hyper connection builder for the current limits.
pub fn builder(l: &crate::config::plan::ConnLimits) -> auto::Builder<InPlace> {
    let max_header_bytes = l.max_header_bytes;
    let mut b = auto::Builder::new(InPlace);
    b.http1()
        .timer(TokioTimer::new())
        // The header read and idle timeouts are kept by `timeouts::Timed`.
        .header_read_timeout(None)
        .keep_alive(true)
        .max_headers(l.max_headers)
        .max_buf_size((max_header_bytes + 1024).max(8192));
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(l.h2_max_concurrent_streams)
        .max_pending_accept_reset_streams(l.h2_max_reset_streams)
        .max_local_error_reset_streams(l.h2_max_reset_streams.max(1) * 50)
        .max_header_list_size(max_header_bytes as u32)
        // RFC 8441: WebSocket over HTTP/2 streams (extended CONNECT).
        .enable_connect_protocol();
    b
}

/// Open connections per client address, for `max_connections_per_client`.
#[derive(Default)]
pub struct PerClient {
    shards: [std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, u32>>; 16],
}

impl PerClient {
    fn shard(&self, ip: &std::net::IpAddr) -> &std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, u32>> {
        let h = match ip {
            std::net::IpAddr::V4(v4) => u32::from(*v4) as u64,
            std::net::IpAddr::V6(v6) => (u128::from(*v6) >> 64) as u64 ^ u128::from(*v6) as u64,
        };
        &self.shards[(crate::hash::mix64(h) % 16) as usize]
    }

    /// A slot for `ip`, unless it already holds `max`.
    pub fn acquire(&self, ip: std::net::IpAddr, max: usize) -> Option<ClientSlot<'_>> {
        self.take(ip, max).then_some(ClientSlot { table: self, ip })
    }

    /// Takes a slot for `ip`, unless it already holds `max`; `release` gives
    /// it back.
    fn take(&self, ip: std::net::IpAddr, max: usize) -> bool {
        let mut m = self.shard(&ip).lock().expect("per-client lock");
        let n = m.entry(ip).or_insert(0);
        if *n as usize >= max {
            return false;
        }
        *n += 1;
        true
    }

    /// Gives back a slot `take` took.
    fn release(&self, ip: std::net::IpAddr) {
        let mut m = self.shard(&ip).lock().expect("per-client lock");
        if let Some(n) = m.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&ip);
            }
        }
    }
}

/// Holds a client's connection slot; gives it back when dropped.
pub struct ClientSlot<'a> {
    table: &'a PerClient,
    ip: std::net::IpAddr,
}

impl Drop for ClientSlot<'_> {
    fn drop(&mut self) {
        self.table.release(self.ip);
    }
}

/// An admitted client connection: its place under `max_connections` and its
/// client's slot, given back when the connection ends (dropped with its task).
struct Admitted {
    shared: Arc<Shared>,
    slot: Option<std::net::IpAddr>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        GLOBAL.connections_active.fetch_sub(1, Relaxed);
        if let Some(ip) = self.slot {
            self.shared.per_client.release(ip);
        }
    }
}

/// Starts accepting on `listener` as listener `name`.
pub fn spawn(name: &str, listener: TcpListener, shared: Arc<Shared>, tls: Option<Arc<TlsState>>) -> ListenerHandle {
    let handle_tls = tls.clone();
    let addr = listener.local_addr().expect("bound listener has an address");
    let (stop, mut stopped) = watch::channel(false);
    let name: Arc<str> = Arc::from(name);
    let task = tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                p = shared.connection_limit.clone().acquire_owned() => p.expect("semaphore is never closed"),
                _ = stopped.changed() => return,
            };
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep the listener.
                        tracing::warn!(listener = %name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stopped.changed() => return,
            };
            let _ = stream.set_nodelay(true);
            GLOBAL.connections_accepted.fetch_add(1, Relaxed);
            let (proxy, limit) = {
                let snap = &shared.live.load().snap;
                let proxy = snap.listener_opts.get(&*name).is_some_and(|o| o.proxy_protocol);
                (proxy.then(|| snap.trusted.contains(peer.ip())), snap.conn.header_read_timeout)
            };
            match proxy {
                None => admit(stream, (peer, None), permit, &shared, &name, &tls),
                Some(false) => proxy_protocol::untrusted(peer),
                // The header is read in the connection's own task: a slow
                // balancer never holds up the accept loop.
                Some(true) => {
                    let (shared, name, tls) = (shared.clone(), name.clone(), tls.clone());
                    shared.clone().tasks.spawn(async move {
                        let mut stream = stream;
                        if let Ok(addrs) = proxy_protocol::accept(&mut stream, peer, limit).await {
                            admit(stream, addrs, permit, &shared, &name, &tls);
                        }
                    });
                }
            }
        }
    });
    ListenerHandle { addr, tls: handle_tls, stop, task }
}

/// Admits a connection from `peer` (the client: the socket's peer, or the
/// one a PROXY protocol header named, with the destination it named) under
/// the per-client limit, and serves it.
fn admit(
    stream: tokio::net::TcpStream,
    (peer, named): proxy_protocol::Addrs,
    permit: tokio::sync::OwnedSemaphorePermit,
    shared: &Arc<Shared>,
    name: &Arc<str>,
    tls: &Option<Arc<TlsState>>,
) {
    let per_client = shared.live.load().snap.conn.max_connections_per_client;
    let ip = crate::identity::canonical(peer.ip());
    if per_client > 0 && !shared.per_client.take(ip, per_client) {
        count_answer(Answer::TooManyConnections);
        shared.tasks.spawn(async move {
            let mut stream = stream;
            let _ = tokio::io::AsyncWriteExt::write_all(
                &mut stream,
                b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain\r\ncontent-length: 45\r\nconnection: close\r\n\r\ntoo many connections from this client address",
            )
            .await;
            drop(permit);
        });
        return;
    }
    GLOBAL.connections_active.fetch_add(1, Relaxed);
    let admitted = Admitted { shared: shared.clone(), slot: (per_client > 0).then_some(ip), _permit: permit };
    // Tracked: shutdown waits for the connection to finish its requests.
    // The task is the connection's future and its admission, no more: an
    // idle connection holds this.
    match tls {
        None => {
            let conn = Arc::new(ConnInfo::new(Conn::new(peer, (stream.as_raw_fd(), named), name.clone(), false, shared.tasks.clone())));
            shared.tasks.spawn(serve(stream, shared, conn).map(move |()| drop(admitted)));
        }
        // Boxed: a TLS session and handshake are large, and plain
        // connections would otherwise reserve their room while idle.
        Some(state) => {
            let serving = Box::pin(serve_tls(stream, (peer, named), name.clone(), state.clone(), shared.clone()));
            shared.tasks.spawn(serving.map(move |()| drop(admitted)));
        }
    }
}

/// Runs the TLS handshake, then serves the connection.
async fn serve_tls(
    stream: tokio::net::TcpStream,
    (peer, named): proxy_protocol::Addrs,
    name: Arc<str>,
    state: Arc<TlsState>,
    shared: Arc<Shared>,
) {
    let limit = shared.live.load().snap.conn.header_read_timeout;
    let fd = stream.as_raw_fd();
    match tokio::time::timeout(limit, state.acceptor().accept(stream)).await {
        Ok(Ok(tls_stream)) => {
            let session = &tls_stream.get_ref().1;
            handshake::count_done(session);
            let mut conn = Conn::new(peer, (fd, named), name, true, shared.tasks.clone());
            conn.client_cert = state.client_identity(session.peer_certificates());
            serve(tls_stream, &shared, Arc::new(ConnInfo::new(conn))).await
        }
        Ok(Err(e)) => {
            let why = handshake::Failure::of(&e);
            handshake::count_failure(why);
            tracing::debug!(%peer, reason = why.reason(), error = %e, "TLS handshake failed");
        }
        Err(_) => {
            handshake::count_failure(handshake::Failure::Timeout);
            tracing::debug!(%peer, "TLS handshake timed out");
        }
    }
}

/// Serves one client connection (plain or TLS) until it ends or shutdown
/// closes it: HTTP/1 by our own server loop (unless `[server] http1 =
/// "hyper"`), HTTP/2 (known by its preface) by hyper's.
///
/// Built of combinators, not one async block, so that what goes from one
/// step to the next is not held twice while the connection idles.
fn serve<I>(io: I, shared: &Arc<Shared>, conn: Arc<ConnInfo>) -> impl Future<Output = ()> + Send + 'static
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (idle, head, own_http1) = {
        let limits = &shared.live.load().snap.conn;
        (limits.keepalive_timeout, limits.header_read_timeout, limits.own_http1)
    };
    let io = Timed::new(io, conn.clone(), idle, head);
    let shared = shared.clone();
    // hyper's connection state is large: boxed, it is not part of every
    // connection our own loop serves.
    if !own_http1 {
        return Either::Left(Box::pin(serve_hyper(io, shared, conn)));
    }
    Either::Right(super::own::sniff(io).then(move |(io, first, verdict)| match verdict {
        Some(false) => Either::Left(super::own::serve(io, first, &shared, conn)),
        Some(true) => Either::Right(Either::Left(Box::pin(serve_hyper(super::own::Prefixed::new(io, first), shared, conn)))),
        None => Either::Right(Either::Right(std::future::ready(()))),
    }))
}

/// Serves a connection with hyper's server (HTTP/2, or HTTP/1 when so configured).
async fn serve_hyper<I>(io: I, shared: Arc<Shared>, conn: Arc<ConnInfo>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let live = shared.live.load_full();
    let io = TokioIo::new(io);
    let mut stop = shared.shutdown.clone();
    let svc_shared = shared.clone();
    let peer = conn.facts.peer;
    let facts = conn.clone();
    let svc = service_fn(move |req| {
        let conn = conn.clone();
        let shared = svc_shared.clone();
        async move {
            let _busy = Busy::new(&conn);
            let live = shared.live.load_full();
            Ok::<_, Infallible>(crate::cache::fields::spread(pipeline::handle(req.map(Body::stream), &conn.facts, &live.snap).await))
        }
    });
    let mut c = std::pin::pin!(live.builder.serve_connection_with_upgrades(io, svc));
    let mut streams = Streams::default();
    // On shutdown, finish the requests in flight and close (GOAWAY on HTTP/2).
    let mut stopping = std::pin::pin!(async move { stop.wait_for(|s| *s).await.is_ok() });
    let mut stopped = false;
    let result = std::future::poll_fn(|cx| {
        if !stopped && stopping.as_mut().poll(cx).is_ready() {
            stopped = true;
            c.as_mut().graceful_shutdown();
        }
        streams.poll(c.as_mut(), cx)
    })
    .await;
    if let Err(e) = result {
        classify_connection_error(&*e);
        tracing::debug!(%peer, error = %e, "client connection error");
    }
    // An upgraded connection lives on as its tunnel: its permit and slot with it.
    facts.facts.tunnels_closed().await;
}

/// A client connection: the facts the pipeline reads, and the counts its
/// timeouts read (`timeouts::Timed`).
pub struct ConnInfo {
    pub facts: Conn,
    /// Requests being handled now, and handled so far.
    pub in_flight: std::sync::atomic::AtomicU32,
    pub requests_started: std::sync::atomic::AtomicU64,
}

impl ConnInfo {
    pub fn new(facts: Conn) -> ConnInfo {
        ConnInfo { facts, in_flight: Default::default(), requests_started: Default::default() }
    }
}

/// A request being handled on its connection, for the connection timeouts.
pub struct Busy<'a>(&'a ConnInfo);

impl<'a> Busy<'a> {
    pub fn new(conn: &'a ConnInfo) -> Busy<'a> {
        conn.requests_started.fetch_add(1, Relaxed);
        conn.in_flight.fetch_add(1, Relaxed);
        Busy(conn)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// Counts a connection that hyper ended with an error: the answers hyper gave
/// itself (400, 431, timeouts) under the same reasons the pipeline uses.
pub fn classify_connection_error(e: &(dyn std::error::Error + 'static)) {
    GLOBAL.connection_errors.fetch_add(1, Relaxed);
    if let Some(h) = e.downcast_ref::<hyper::Error>() {
        if h.is_parse_too_large() {
            count_answer(Answer::HeadersTooLarge);
        } else if h.is_parse() {
            count_answer(Answer::BadRequest);
        } else if h.is_timeout() {
            count_answer(Answer::HeaderTimeout);
        } else if let Some(h2) = std::error::Error::source(h).and_then(|s| s.downcast_ref::<h2::Error>()) {
            // Too many streams reset (rapid reset) or failed: h2 sent GOAWAY ENHANCE_YOUR_CALM.
            if h2.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) && h2.is_go_away() {
                count_answer(Answer::H2Flood);
            }
        }
    }
}
