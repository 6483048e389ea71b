//! The answer phase driven in-process: a client connection on loopback served
//! by `serve` over a stub endpoint; answers come whole and in order, however
//! deep the pipeline against `max_in_flight`, and a client past its write
//! timeout is closed.

use super::super::stub::{service, stub, Stub};
use super::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A client socket whose other end is served by `serve` with `limits`.
async fn client(svc: Arc<Service>, limits: Limits) -> tokio::net::TcpStream {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let c = tokio::net::TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (s, _) = l.accept().await.unwrap();
    let (_keep, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _keep = _keep;
        let (r, w) = s.into_split();
        let budget = Budget::default();
        serve(r, w, move || Some(svc.clone()), &limits, &budget, Duration::from_secs(5), stop).await;
    });
    c
}

async fn read_until(c: &mut tokio::net::TcpStream, end: &[u8], count: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.windows(end.len()).filter(|w| *w == end).count() < count {
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await.expect("answered in time").unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    got
}

#[tokio::test]
async fn answers_come_in_command_order_however_deep_the_pipeline() {
    let ep = stub(Stub::Answer("VALUE k 0 1\r\nv\r\nEND\r\n")).await;
    let svc = service(&[ep], super::super::Writes::First, super::super::Reads::RoundRobin);
    let mut c = client(svc, Limits { max_in_flight: 2, ..Limits::default() }).await;
    // 200 commands, one write: server answers and the ambassador's own interleaved.
    let batch = "get k\r\nmn\r\nbogus\r\n".repeat(200);
    c.write_all(batch.as_bytes()).await.unwrap();
    let got = read_until(&mut c, b"ERROR\r\n", 200).await;
    assert_eq!(String::from_utf8_lossy(&got), "VALUE k 0 1\r\nv\r\nEND\r\nMN\r\nERROR\r\n".repeat(200));
}

#[tokio::test]
async fn a_client_that_takes_no_answers_is_closed_after_the_write_timeout() {
    // 64 KiB answers: the socket buffers fill, then answers wait in the outbox.
    let big: &'static str = Box::leak(format!("VALUE k 0 65536\r\n{}\r\nEND\r\n", "v".repeat(65536)).into_boxed_str());
    let ep = stub(Stub::Answer(big)).await;
    let svc = service(&[ep], super::super::Writes::First, super::super::Reads::RoundRobin);
    let limits = Limits { write_timeout: Duration::from_millis(300), max_pending_bytes: 4096, ..Limits::default() };
    let (mut r, mut w) = client(svc, limits).await.into_split();
    // Ask for far more than the socket buffers hold, and read nothing.
    let before = GLOBAL.write_timeouts.load(Relaxed);
    let batch = "get k\r\n".repeat(200_000);
    let writer = tokio::spawn(async move {
        let _ = w.write_all(batch.as_bytes()).await;
        w
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(GLOBAL.write_timeouts.load(Relaxed) > before, "the client was not closed for taking no answers");
    // Its socket was closed: reading what was sent ends.
    let mut sink = vec![0u8; 1 << 16];
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match r.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the connection stays open");
    writer.abort();
}
