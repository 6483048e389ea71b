//! The load itself: connections that send requests in a closed loop (each
//! sends its next request when the last is answered) or an open loop (each
//! request has an intended send time on a fixed schedule, and its latency is
//! measured from that time, as wrk2 and oha do, so a stall of the target is
//! not hidden by the requests it kept from being sent). The same loops send
//! memcache `get`/`set` commands to an ambassador.

use super::keys::Paths;
use super::report::Tally;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// What one run sends.
#[derive(Clone)]
pub struct Load {
    pub target: SocketAddr,
    /// The Host header (the URL's authority).
    pub host: String,
    pub paths: Paths,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub connections: usize,
    /// Requests per second over all connections (open loop); `None` for a closed loop.
    pub rate: Option<f64>,
    pub duration: Duration,
    pub http2: bool,
    /// Memcache commands to an ambassador (or memcached) instead of HTTP.
    pub memcache: Option<Memcache>,
}

/// The command mix of a memcache load: `get` with this share, else `set`.
#[derive(Clone, Copy, Debug)]
pub struct Memcache {
    pub get_ratio: f64,
    pub value_bytes: usize,
}

/// Counters a progress line reads while the run goes on.
#[derive(Default)]
pub struct Live {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    /// Latencies recorded since the progress line last took them.
    pub recent: Mutex<Option<hdrhistogram::Histogram<u64>>>,
}

/// A sender of requests: one HTTP/1 connection, or a stream of a shared
/// HTTP/2 one, or a memcache connection.
enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
    Mc(tokio::net::TcpStream, Vec<u8>),
}

async fn connect(load: &Load) -> std::io::Result<Sender> {
    let tcp = tokio::net::TcpStream::connect(load.target).await?;
    let _ = tcp.set_nodelay(true);
    if load.memcache.is_some() {
        return Ok(Sender::Mc(tcp, Vec::with_capacity(4096)));
    }
    let io = TokioIo::new(tcp);
    let err = |e: hyper::Error| std::io::Error::other(e.to_string());
    if load.http2 {
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.map_err(err)?;
        tokio::spawn(conn);
        Ok(Sender::H2(send))
    } else {
        let (send, conn) = hyper::client::conn::http1::handshake(io).await.map_err(err)?;
        tokio::spawn(conn);
        Ok(Sender::H1(send))
    }
}

/// Sends one memcache command for `key` and reads its answer: 200 for a
/// hit or a store, 404 for a miss, 500 for an error answer.
async fn command(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    mc: Memcache,
    key: &str,
    rng: &mut fastrand::Rng,
) -> Result<u16, ()> {
    use crate::memcache::reply::{frame, is_error, Expect};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let get = rng.f64() < mc.get_ratio;
    let (wire, expect) = if get {
        (format!("get {key}\r\n").into_bytes(), Expect::Values)
    } else {
        let mut w = format!("set {key} 0 0 {}\r\n", mc.value_bytes).into_bytes();
        w.resize(w.len() + mc.value_bytes, b'v');
        w.extend_from_slice(b"\r\n");
        (w, Expect::Line)
    };
    stream.write_all(&wire).await.map_err(|_| ())?;
    buf.clear();
    let end = loop {
        if let Some(end) = frame(buf, expect, 64 << 20).map_err(|_| ())? {
            break end;
        }
        if stream.read_buf(buf).await.map_err(|_| ())? == 0 {
            return Err(());
        }
    };
    let answer = &buf[..end];
    Ok(match answer {
        a if is_error(a.split(|&c| c == b'\r').next().unwrap_or(a)) => 500,
        b"END\r\n" => 404,
        _ => 200,
    })
}

/// Sends one request and reads its answer to the end: the status, or an error.
async fn exchange(sender: &mut Sender, req: http::Request<Empty<Bytes>>) -> Result<u16, ()> {
    let resp = match sender {
        Sender::Mc(..) => return Err(()),
        Sender::H1(s) => {
            s.ready().await.map_err(|_| ())?;
            s.send_request(req).await
        }
        Sender::H2(s) => {
            s.ready().await.map_err(|_| ())?;
            s.send_request(req).await
        }
    }
    .map_err(|_| ())?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        frame.map_err(|_| ())?;
    }
    Ok(status)
}

fn request(load: &Load, path: &str) -> http::Request<Empty<Bytes>> {
    let mut b = http::Request::get(path);
    if load.http2 {
        b = http::Request::get(format!("http://{}{path}", load.host));
    } else {
        b = b.header(http::header::HOST, &load.host);
    }
    for (k, v) in &load.headers {
        b = b.header(k, v);
    }
    b.body(Empty::new()).expect("a request of checked parts")
}

/// Runs `load` to its end and returns what every connection saw.
pub async fn run(load: Load, live: Arc<Live>) -> Tally {
    let start = Instant::now() + Duration::from_millis(20);
    let shared_h2 = if load.http2 {
        match connect(&load).await {
            Ok(Sender::H2(s)) => Some(s),
            _ => None,
        }
    } else {
        None
    };
    let n = load.connections.max(1);
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (load, live, h2) = (load.clone(), live.clone(), shared_h2.clone());
            tokio::spawn(async move { connection(i, n, load, live, start, h2.map(Sender::H2)).await })
        })
        .collect();
    let mut total = Tally::new();
    for t in tasks {
        if let Ok(tally) = t.await {
            total.merge(&tally);
        }
    }
    total
}

/// One connection's requests until the run's end.
async fn connection(i: usize, n: usize, load: Load, live: Arc<Live>, start: Instant, mut sender: Option<Sender>) -> Tally {
    let mut tally = Tally::new();
    let mut rng = fastrand::Rng::with_seed(0x10ad + i as u64);
    let end = start + load.duration;
    // Open loop: this connection's share of the schedule, offset so that
    // connections do not all send at the same instant.
    let interval = load.rate.map(|r| Duration::from_secs_f64(n as f64 / r));
    let mut intended = start + interval.map_or(Duration::ZERO, |iv| iv.mul_f64(i as f64 / n as f64));
    let mut recent = Tally::new();
    let mut flushed = Instant::now();
    tokio::time::sleep_until(intended).await;
    loop {
        let free_at = Instant::now();
        if interval.is_some() {
            if intended >= end {
                break;
            }
            tokio::time::sleep_until(intended).await;
        } else if free_at >= end {
            break;
        }
        let sent = Instant::now();
        // The generator's own lateness: past the intended time, and past the
        // moment this connection was free to send (a slow target is not ours).
        if interval.is_some() {
            tally.lag(sent.saturating_duration_since(intended.max(free_at)));
        }
        if sender.is_none() {
            match connect(&load).await {
                Ok(s) => sender = Some(s),
                Err(_) => {
                    tally.error();
                    live.errors.fetch_add(1, Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    intended += interval.unwrap_or(Duration::ZERO);
                    continue;
                }
            }
        }
        let path = load.paths.next(&mut rng);
        let result = match (sender.as_mut().expect("connected above"), load.memcache) {
            (Sender::Mc(stream, buf), Some(mc)) => command(stream, buf, mc, &path, &mut rng).await,
            (s, _) => exchange(s, request(&load, &path)).await,
        };
        let done = Instant::now();
        let from = if interval.is_some() { intended } else { sent };
        match result {
            Ok(status) => {
                let took = done.saturating_duration_since(from);
                tally.answer(status, took);
                recent.answer(status, took);
                live.requests.fetch_add(1, Relaxed);
            }
            Err(()) => {
                tally.error();
                live.errors.fetch_add(1, Relaxed);
                // A failed connection is dropped; the next request connects
                // anew (over HTTP/2, a connection of this task's own), so a
                // dead shared connection does not fail every request after it.
                sender = None;
            }
        }
        if done.duration_since(flushed) >= Duration::from_millis(200) {
            flush(&live, &mut recent);
            flushed = done;
        }
        if let Some(iv) = interval {
            intended += iv;
        }
    }
    flush(&live, &mut recent);
    tally
}

/// Hands the latencies recorded lately to the progress line.
fn flush(live: &Live, recent: &mut Tally) {
    let mut slot = live.recent.lock().unwrap_or_else(|e| e.into_inner());
    match slot.as_mut() {
        Some(h) => {
            let _ = h.add(&recent.latency);
        }
        None => *slot = Some(recent.latency.clone()),
    }
    drop(slot);
    *recent = Tally::new();
}
