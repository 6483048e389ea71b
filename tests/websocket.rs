//! Upgrades through the proxy with a real WebSocket server and client (Python's
//! `websockets`, installed by scripts/test): messages both ways, large ones
//! too, the tunnel counted, and closed when idle past timeouts.body_idle.

mod common;
use common::*;
use std::io::BufRead;
use std::process::{Command, Stdio};

const SERVER: &str = r#"
import asyncio, websockets
async def echo(ws, path=None):
    async for m in ws:
        await ws.send(m)
async def main():
    async with websockets.serve(echo, "127.0.0.1", 0) as s:
        print(s.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()
asyncio.run(main())
"#;

const CLIENT: &str = r#"
import asyncio, sys, websockets
async def main():
    async with websockets.connect(sys.argv[1]) as ws:
        for m in ["hello", "x" * 70000, b"\x00\x01binary"]:
            await ws.send(m)
            assert await ws.recv() == m, "echo differs"
        await asyncio.sleep(float(sys.argv[2]))
        await ws.send("after the wait")
        print(await ws.recv(), flush=True)
asyncio.run(main())
"#;

/// A WebSocket echo server; its process and address.
fn echo_server() -> (Proc, std::net::SocketAddr) {
    let mut child =
        Command::new("/usr/bin/python3").args(["-c", SERVER]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("python3 runs");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", line.trim()).parse().unwrap_or_else(|_| panic!("echo server said {line:?}"));
    (Proc(child), addr)
}

fn client(url: &str, wait_secs: &str) -> std::process::Output {
    Command::new("/usr/bin/python3").args(["-c", CLIENT, url, wait_secs]).output().expect("python3 runs")
}

fn proxy(echo: std::net::SocketAddr, extra: &str) -> Proxy {
    Proxy::start(&format!(
        "[[routes]]\nservice = \"ws\"\n\n[services.ws]\nkind = \"replicated\"\n{extra}\nendpoints = [{{ address = \"{echo}\" }}]\n"
    ))
}

#[test]
fn a_websocket_echo_works_through_the_proxy() {
    let (_server, echo) = echo_server();
    let p = proxy(echo, "");
    let out = client(&format!("ws://{}/chat", p.addr), "0");
    assert!(out.status.success(), "client failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "after the wait");
    assert_eq!(p.metric("ringmaster_upgrades_total"), 1.0);
    eventually(5, "tunnel closed", || p.metric("ringmaster_tunnels_open") == 0.0);
}

#[test]
fn an_idle_tunnel_is_closed() {
    let (_server, echo) = echo_server();
    let p = proxy(echo, "timeouts = { body_idle = \"500ms\" }");
    let out = client(&format!("ws://{}/chat", p.addr), "2");
    assert!(!out.status.success(), "the tunnel outlived its idle timeout: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(p.metric("ringmaster_tunnels_idle_closed_total"), 1.0);
}

/// A WebSocket over one HTTP/2 stream (RFC 8441) with the h2 crate: CONNECT with
/// `:protocol = websocket`, then one masked text frame; the frame that comes back.
async fn h2_websocket(addr: std::net::SocketAddr, text: &[u8]) -> (u16, Vec<u8>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    for _ in 0..100 {
        if client.is_extended_connect_protocol_enabled() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(client.is_extended_connect_protocol_enabled(), "the proxy did not offer SETTINGS_ENABLE_CONNECT_PROTOCOL");
    let mut req = http::Request::builder()
        .method("CONNECT")
        .uri(format!("http://{addr}/chat"))
        .header("sec-websocket-version", "13")
        .body(())
        .unwrap();
    req.extensions_mut().insert(h2::ext::Protocol::from("websocket"));
    let (resp, mut send) = client.send_request(req, false).unwrap();
    let resp = resp.await.unwrap();
    let status = resp.status().as_u16();
    if status != 200 {
        return (status, Vec::new());
    }
    let mask = [7u8, 1, 2, 3];
    let mut frame = vec![0x81, 0x80 | text.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(text.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    send.send_data(frame.into(), false).unwrap();
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while got.len() < 2 + text.len() {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), body.data()).await.expect("an echo").unwrap().unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
    }
    (status, got)
}

#[test]
fn a_websocket_over_http2_reaches_an_http1_upstream() {
    let (_server, echo) = echo_server();
    let p = proxy(echo, "");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (status, frame) = rt.block_on(h2_websocket(p.addr, b"over h2"));
    assert_eq!(status, 200);
    assert_eq!(frame, [&[0x81u8, 7][..], b"over h2"].concat(), "an unmasked text frame echoed");
    assert_eq!(p.metric("ringmaster_upgrades_total"), 1.0);
}

/// An HTTP/1.1 WebSocket through the proxy, spoken by hand: the handshake,
/// then masked text frames and their echoes.
struct RawWs(std::net::TcpStream);

impl RawWs {
    /// The handshake; None when the proxy did not answer 101 within 3 s.
    fn open(addr: std::net::SocketAddr) -> Option<RawWs> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(3))).unwrap();
        s.write_all(b"GET /chat HTTP/1.1\r\nHost: test.local\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").ok()?;
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut b).ok()? == 0 {
                return None;
            }
            head.push(b[0]);
        }
        head.starts_with(b"HTTP/1.1 101").then_some(RawWs(s))
    }

    /// Sends `text` (under 126 bytes) and reads its echo.
    fn echo(&mut self, text: &str) -> std::io::Result<String> {
        use std::io::{Read, Write};
        let mask = [9u8, 8, 7, 6];
        let mut frame = vec![0x81, 0x80 | text.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.0.write_all(&frame)?;
        let mut head = [0u8; 2];
        self.0.read_exact(&mut head)?;
        let mut body = vec![0; (head[1] & 0x7f) as usize];
        self.0.read_exact(&mut body)?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

/// A tunnel's own idle timeout governs it, not the request-head timeout: a
/// chat that keeps talking outlives `header_read_timeout` many times over.
#[test]
fn an_active_tunnel_outlives_the_header_read_timeout() {
    let (_server, echo) = echo_server();
    let p = Proxy::start(&format!(
        "[limits]\nheader_read_timeout = \"500ms\"\nkeepalive_timeout = \"500ms\"\n\n[[routes]]\nservice = \"ws\"\n\n[services.ws]\nkind = \"replicated\"\ntimeouts = {{ body_idle = \"5s\" }}\nendpoints = [{{ address = \"{echo}\" }}]\n"
    ));
    let mut ws = RawWs::open(p.addr).expect("the handshake");
    let started = std::time::Instant::now();
    let mut n = 0;
    while started.elapsed() < std::time::Duration::from_millis(2500) {
        let said = format!("message {n}");
        assert_eq!(ws.echo(&said).unwrap_or_else(|e| panic!("cut after {:?}: {e}", started.elapsed())), said);
        n += 1;
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(p.metric("ringmaster_tunnels_open"), 1.0);
}

/// A tunnel is a connection: it holds its permit and its client's slot, so
/// `max_connections` and `max_connections_per_client` bound tunnels too.
#[test]
fn tunnels_count_against_the_connection_limits() {
    let (_server, echo) = echo_server();
    for limit in ["max_connections = 6", "max_connections_per_client = 6"] {
        let p = Proxy::start(&format!(
            "[limits]\n{limit}\n\n[[routes]]\nservice = \"ws\"\n\n[services.ws]\nkind = \"replicated\"\nendpoints = [{{ address = \"{echo}\" }}]\n"
        ));
        let open: Vec<RawWs> = (0..10).filter_map(|_| RawWs::open(p.addr)).collect();
        assert_eq!(open.len(), 6, "{limit}: tunnels open");
        assert_eq!(p.metric("ringmaster_tunnels_open"), 6.0, "{limit}");
    }
}

/// Shutdown drains tunnels as it drains requests: an open tunnel keeps working
/// after SIGTERM (within the grace period), and the process ends once it closes.
#[test]
fn shutdown_waits_for_open_tunnels() {
    let (_server, echo) = echo_server();
    let p = Proxy::start(&format!(
        "[server]\ngrace_period = \"20s\"\n\n[[routes]]\nservice = \"ws\"\n\n[services.ws]\nkind = \"replicated\"\nendpoints = [{{ address = \"{echo}\" }}]\n"
    ));
    let mut ws = RawWs::open(p.addr).expect("the handshake");
    assert_eq!(ws.echo("before").unwrap(), "before");
    p.proc.signal("TERM");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(ws.echo("after SIGTERM").expect("the tunnel was cut by shutdown"), "after SIGTERM");
    let mut p = p;
    assert!(p.proc.0.try_wait().unwrap().is_none(), "the proxy exited with a tunnel open");
    drop(ws);
    let started = std::time::Instant::now();
    while p.proc.0.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "the proxy did not exit once the tunnel closed");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
