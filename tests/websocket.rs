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
