//! The request context the phases read and fill in, and the facts of the
//! client connection a request arrived on.

use crate::config::{plan::ListenerOpts, Snapshot};
use crate::identity::{self, KeyInfo};
use crate::limit::Report;
use crate::route::Route;
use crate::upstream::Endpoint;
use http::header::HeaderValue;
use http::{Method, Version};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;
use tokio_util::task::TaskTracker;

/// What the pipeline knows of the client connection, fixed at accept.
pub struct Conn {
    pub peer: SocketAddr,
    /// The peer's IP as a header value, made once per connection.
    pub peer_value: HeaderValue,
    pub listener: Arc<str>,
    /// Over TLS (the scheme a request arrived with).
    pub https: bool,
    /// The connection's socket, asked for the address the client reached
    /// only when a PROXY protocol header towards an upstream names it.
    pub fd: std::os::fd::RawFd,
    /// The destination a balancer's own PROXY protocol header named.
    pub named: Option<Box<SocketAddr>>,
    /// The rate-limit identity of a verified client certificate (mTLS with a tier).
    pub client_cert: Option<Arc<KeyInfo>>,
    /// Where background work started by a request (cache refreshes) is
    /// tracked, so that shutdown waits for it.
    pub tasks: TaskTracker,
    /// Its tunnels (after a 101), which the connection waits for; made by
    /// the first upgrade, so a connection that never upgrades holds none.
    tunnels: std::sync::OnceLock<Arc<crate::upstream::tunnel::Tunnels>>,
}

impl Conn {
    /// A connection from `peer` on socket `fd`, to `named` when a balancer's header named where it went.
    pub fn new(
        peer: SocketAddr,
        (fd, named): (std::os::fd::RawFd, Option<SocketAddr>),
        listener: Arc<str>,
        https: bool,
        tasks: TaskTracker,
    ) -> Conn {
        let ip = identity::canonical(peer.ip());
        let peer_value = HeaderValue::from_str(&ip.to_string()).expect("an IP is a valid header value");
        let peer = SocketAddr::new(ip, peer.port());
        let named = named.map(Box::new);
        Conn { peer, peer_value, listener, https, fd, named, client_cert: None, tasks, tunnels: Default::default() }
    }

    /// Its tunnels, made by the first upgrade.
    pub fn tunnels(&self) -> &Arc<crate::upstream::tunnel::Tunnels> {
        self.tunnels.get_or_init(Default::default)
    }

    /// Whether a tunnel of the connection is open.
    pub fn tunnels_open(&self) -> bool {
        self.tunnels.get().is_some_and(|t| t.any())
    }

    /// Resolves once no tunnel of the connection is open.
    pub async fn tunnels_closed(&self) {
        if let Some(t) = self.tunnels.get() {
            t.all_closed().await;
        }
    }

    /// `http` or `https`.
    pub fn proto(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }

    /// The address the client reached: the destination a balancer's header
    /// named, else the socket's own (one getsockname; a connection's requests
    /// run in its task, which keeps the socket open while they do).
    pub fn reached(&self) -> Option<SocketAddr> {
        use std::os::fd::FromRawFd as _;
        if let Some(named) = &self.named {
            return Some(**named);
        }
        // SAFETY: `fd` is this connection's socket, open while any of its
        // requests runs; ManuallyDrop never closes it.
        let socket = std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(self.fd) });
        socket.local_addr().ok()
    }
}

/// One request as it goes through the phases.
pub struct Ctx<'a> {
    pub conn: &'a Conn,
    pub snap: &'a Snapshot,
    pub start: Instant,
    /// The listener's own policies (redirect, HSTS), when it has any.
    pub listener: Option<&'a ListenerOpts>,
    /// The client address every phase sees (behind trusted proxies: the nearest untrusted hop).
    pub client: IpAddr,
    /// Whether the peer is a trusted proxy (its forwarding headers are kept).
    pub trusted: bool,
    /// The Host (or the URI authority over HTTP/2), as the client sent it.
    pub host: Option<HeaderValue>,
    pub route: Option<&'a Route>,
    /// The rate-limit verdict of an allowed request, reported on its response.
    pub limit: Option<Report>,
    /// What the access log needs of the request, taken before it is forwarded.
    pub log: Option<LogHead>,
    /// The endpoint that answered.
    pub endpoint: Option<Arc<Endpoint>>,
    /// An HTTP/1.1 upgrade the client asked for (its Upgrade value), kept past
    /// hop-by-hop stripping; boxed, as few requests have one.
    pub upgrade: Option<Box<HeaderValue>>,
}

/// The request line and headers an access-log line names.
pub struct LogHead {
    pub method: Method,
    pub path: String,
    pub version: Version,
    pub user_agent: String,
    pub referer: String,
}

impl<'a> Ctx<'a> {
    pub fn new(conn: &'a Conn, snap: &'a Snapshot) -> Ctx<'a> {
        Ctx {
            conn,
            snap,
            start: Instant::now(),
            listener: None,
            client: conn.peer.ip(),
            trusted: false,
            host: None,
            route: None,
            upgrade: None,
            limit: None,
            log: None,
            endpoint: None,
        }
    }

    /// The route of a request past the route phase (the phases after it run
    /// only on a routed request).
    pub fn routed(&self) -> &'a Route {
        self.route.expect("phases after `route` run only on a routed request")
    }

    /// The host as text, when it is valid text.
    pub fn host_str(&self) -> Option<&str> {
        self.host.as_ref().and_then(|h| h.to_str().ok())
    }
}
