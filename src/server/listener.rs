//! Accept: bind a listener, accept client connections under the connection
//! limit, and serve each with hyper (HTTP/1.1 and HTTP/2 prior knowledge on one
//! port), watched by the graceful-shutdown tracker.

use super::Shared;
use crate::admin::metrics::{count_answer, Answer, GLOBAL};
use crate::pipeline::{self, ConnInfo};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

/// Binds `addr` with SO_REUSEADDR and a deep accept backlog.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(4096)
}

/// A running listener; dropping the handle's sender stops accepting.
pub struct ListenerHandle {
    pub addr: SocketAddr,
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
pub fn builder(max_header_bytes: usize, max_headers: usize, header_read_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true)
        .max_headers(max_headers)
        .max_buf_size((max_header_bytes + 1024).max(8192));
    b.http2().timer(TokioTimer::new()).max_concurrent_streams(256).max_header_list_size(max_header_bytes as u32);
    b
}

/// Starts accepting on `listener` as listener `name`.
pub fn spawn(name: &str, listener: TcpListener, shared: Arc<Shared>) -> ListenerHandle {
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
            let shared = shared.clone();
            let conn = Arc::new(ConnInfo::new(peer, name.clone(), "http"));
            tokio::spawn(async move {
                GLOBAL.connections_active.fetch_add(1, Relaxed);
                let builder = shared.builder.load_full();
                let mut stop = shared.shutdown.clone();
                let svc_shared = shared.clone();
                let svc = service_fn(move |req| {
                    let conn = conn.clone();
                    let shared = svc_shared.clone();
                    async move { Ok::<_, Infallible>(pipeline::handle(req, &conn, &shared).await) }
                });
                let mut c = std::pin::pin!(builder.serve_connection(TokioIo::new(stream), svc));
                // On shutdown, finish the request in flight and close (GOAWAY on HTTP/2).
                let result = tokio::select! {
                    r = c.as_mut() => r,
                    _ = async { stop.wait_for(|s| *s).await.is_ok() } => {
                        c.as_mut().graceful_shutdown();
                        c.await
                    }
                };
                if let Err(e) = result {
                    classify_connection_error(&*e);
                    tracing::debug!(%peer, error = %e, "client connection error");
                }
                GLOBAL.connections_active.fetch_sub(1, Relaxed);
                drop(permit);
            });
        }
    });
    ListenerHandle { addr, stop, task }
}

/// Counts a connection that hyper ended with an error: the answers hyper gave
/// itself (400, 431, timeouts) under the same reasons the pipeline uses.
fn classify_connection_error(e: &(dyn std::error::Error + 'static)) {
    GLOBAL.connection_errors.fetch_add(1, Relaxed);
    if let Some(h) = e.downcast_ref::<hyper::Error>() {
        if h.is_parse_too_large() {
            count_answer(Answer::HeadersTooLarge);
        } else if h.is_parse() {
            count_answer(Answer::BadRequest);
        } else if h.is_timeout() {
            count_answer(Answer::HeaderTimeout);
        }
    }
}
