//! A tunnel: after an upgrade (a WebSocket's 101 Switching Protocols), bytes are
//! copied both ways between the client and the upstream until either side
//! closes (each half-close passed on) or nothing moves for the idle timeout
//! (HAProxy's `timeout tunnel`). A tunnel is still its client's connection:
//! the connection's task waits for it, keeping its permit and its client's
//! slot, and shutdown drains it as it drains requests.

use crate::body::OwnConn;
use crate::metrics::GLOBAL;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The tunnels a client connection has open. While there are any, the
/// connection's own timers stand down (the tunnel's idle timeout governs),
/// and its task waits for them before it lets go of its permits.
#[derive(Default)]
pub struct Tunnels {
    open: AtomicU32,
    closed: tokio::sync::Notify,
}

impl Tunnels {
    pub fn any(&self) -> bool {
        self.open.load(Relaxed) > 0
    }

    /// Resolves once no tunnel of the connection is open.
    pub async fn all_closed(&self) {
        loop {
            let closed = self.closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if !self.any() {
                return;
            }
            closed.await;
        }
    }
}

/// One open tunnel, counted in its connection's [`Tunnels`] until dropped.
struct Open(Arc<Tunnels>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
        self.0.closed.notify_waiters();
    }
}

/// Our own client's upstream connection after its 101, carried to the
/// tunnel in the response's extensions (which must be `Clone`; it is taken once).
#[derive(Clone)]
pub struct Upgraded(Arc<std::sync::Mutex<Option<Box<OwnConn>>>>);

impl Upgraded {
    pub fn new(conn: Box<OwnConn>) -> Upgraded {
        Upgraded(Arc::new(std::sync::Mutex::new(Some(conn))))
    }

    fn take(&self) -> Option<Box<OwnConn>> {
        self.0.lock().expect("upgraded connection lock").take()
    }
}

/// The upstream side of a tunnel: hyper's upgrade, or our own connection.
pub enum Upstream {
    Hyper(OnUpgrade),
    Own(Upgraded),
}

impl Upstream {
    /// The upstream side of the 101 `resp`.
    pub fn of<B>(resp: &mut http::Response<B>) -> Upstream {
        match resp.extensions_mut().remove::<Upgraded>() {
            Some(u) => Upstream::Own(u),
            None => Upstream::Hyper(hyper::upgrade::on(resp)),
        }
    }

    /// The byte stream, and what the upstream sent past its 101 (to pass on first).
    async fn open(self) -> Result<(Box<dyn Io>, bytes::BytesMut), crate::body::BoxError> {
        match self {
            Upstream::Hyper(on) => Ok((Box::new(TokioIo::new(on.await?)), bytes::BytesMut::new())),
            Upstream::Own(u) => match u.take() {
                Some(conn) => {
                    let (io, rest) = conn.into_parts();
                    Ok((Box::new(io), rest))
                }
                None => Err("the upstream connection was taken already".into()),
            },
        }
    }
}

use crate::http1::server::Io;

/// The client side of a tunnel: hyper's upgrade, or our own server's.
pub enum Client {
    Hyper(OnUpgrade),
    Own(crate::http1::server::OnUpgrade),
}

impl Client {
    /// The client's side of a request that asked for an upgrade, taken out of its extensions.
    pub fn take(ext: &mut http::Extensions) -> Option<Client> {
        match ext.remove::<OnUpgrade>() {
            Some(on) => Some(Client::Hyper(on)),
            None => ext.remove::<crate::http1::server::OnUpgrade>().map(Client::Own),
        }
    }

    /// The byte stream, and what the client sent past its request (to pass on first).
    async fn open(self) -> Result<(Box<dyn Io>, bytes::BytesMut), crate::body::BoxError> {
        match self {
            Client::Hyper(on) => Ok((Box::new(TokioIo::new(on.await?)), bytes::BytesMut::new())),
            Client::Own(on) => {
                let u = on.upgraded().await?;
                Ok((u.io, u.read))
            }
        }
    }
}

/// Joins `client` and `upstream` once both upgrades complete, on a task of its
/// own tracked by `tasks` (shutdown waits for it); counted in `tunnels` from now.
pub fn spawn(client: Client, upstream: Upstream, idle: Duration, tunnels: &Arc<Tunnels>, tasks: &tokio_util::task::TaskTracker) {
    GLOBAL.upgrades.fetch_add(1, Relaxed);
    tunnels.open.fetch_add(1, Relaxed);
    let open = Open(tunnels.clone());
    tasks.spawn(async move {
        let _open = open;
        let ((c, early), (u, rest)) = match tokio::try_join!(client.open(), upstream.open()) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        GLOBAL.tunnels_open.fetch_add(1, Relaxed);
        let (mut cr, mut cw) = tokio::io::split(c);
        if !rest.is_empty() && cw.write_all(&rest).await.is_err() {
            return;
        }
        let (mut ur, mut uw) = tokio::io::split(u);
        if !early.is_empty() && uw.write_all(&early).await.is_err() {
            return;
        }
        let last = AtomicU64::new(crate::clock::now_ms());
        let both = async { tokio::join!(pump(&mut cr, &mut uw, &last), pump(&mut ur, &mut cw, &last)) };
        tokio::select! {
            _ = both => {}
            _ = quiet_for(idle, &last) => {
                GLOBAL.tunnels_idle_closed.fetch_add(1, Relaxed);
                tracing::debug!(idle_ms = idle.as_millis() as u64, "tunnel idle; closed");
            }
        }
        GLOBAL.tunnels_open.fetch_sub(1, Relaxed);
    });
}

/// Adds the Sec-WebSocket-Key an HTTP/1.1 upgrade needs (RFC 6455 section 4.1)
/// to a WebSocket that arrived over HTTP/2, which has none (RFC 8441).
pub fn websocket_key(h: &mut http::HeaderMap) {
    use base64::Engine as _;
    if !h.contains_key("sec-websocket-key") {
        let nonce: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
        let key = base64::engine::general_purpose::STANDARD.encode(nonce);
        if let Ok(v) = http::HeaderValue::from_str(&key) {
            h.insert("sec-websocket-key", v);
        }
    }
    if !h.contains_key("sec-websocket-version") {
        h.insert("sec-websocket-version", http::HeaderValue::from_static("13"));
    }
}

/// The upstream's 101 as the 200 that accepts an extended CONNECT over HTTP/2
/// (RFC 8441 section 5): without the fields of the HTTP/1.1 handshake.
pub fn as_h2_answer<B>(resp: &mut http::Response<B>) {
    *resp.status_mut() = http::StatusCode::OK;
    let h = resp.headers_mut();
    for name in [http::header::UPGRADE, http::header::CONNECTION, http::header::SEC_WEBSOCKET_ACCEPT] {
        h.remove(name);
    }
}

/// Copies `from` to `to` until `from` ends (then half-closes `to`) or fails;
/// each chunk marks `last`.
async fn pump<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(from: &mut R, to: &mut W, last: &AtomicU64) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                last.store(crate::clock::now_ms(), Relaxed);
            }
        }
    }
    let _ = to.shutdown().await;
}

/// Ends when nothing moved for `idle`.
async fn quiet_for(idle: Duration, last: &AtomicU64) {
    let idle_ms = idle.as_millis() as u64;
    loop {
        let since = crate::clock::now_ms().saturating_sub(last.load(Relaxed));
        if since >= idle_ms {
            return;
        }
        tokio::time::sleep(Duration::from_millis(idle_ms - since)).await;
    }
}
