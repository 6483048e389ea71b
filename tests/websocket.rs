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
