//! A property test of the ambassador against real memcached: random command
//! streams (valid commands over a few keys with binary values, keys holding
//! NUL, CR, control bytes or DEL, lines that are garbage) from several
//! clients at once over one shared server connection, each written at random
//! split points. Every client gets exactly the bytes memcached gives for its
//! own commands alone (a refused line: memcached's answer to a bad command
//! line); so one answer per command, in order, and never another client's.

mod common;
use common::mc::*;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

const REFUSED: &[u8] = b"CLIENT_ERROR bad command line format\r\n";

#[derive(Debug, Clone)]
enum Cmd {
    Set(u8, Vec<u8>, u16),
    Get(Vec<u8>),
    Delete(u8),
    Incr(u8, u32),
    Append(u8, Vec<u8>),
    Mg(u8, &'static str),
    Ms(u8, Vec<u8>),
    Md(u8),
    /// A verb (0..4) with a key holding a byte no key may hold.
    BadKey(u8, Vec<u8>, Vec<u8>),
    /// A line that starts with NUL.
    Garbage(Vec<u8>),
}

/// How the answer to a valid command is framed.
#[derive(Clone, Copy)]
enum Shape {
    Values,
    Meta,
    Line,
}

fn key(ns: &str, k: u8) -> String {
    format!("{ns}k{}", k % 5)
}

impl Cmd {
    /// The bytes sent, and the shape of memcached's answer (None: refused here).
    fn render(&self, ns: &str) -> (Vec<u8>, Option<Shape>) {
        let block = |line: String, data: &[u8]| [line.into_bytes(), data.to_vec(), b"\r\n".to_vec()].concat();
        match self {
            Cmd::Set(k, v, f) => (block(format!("set {} {f} 0 {}\r\n", key(ns, *k), v.len()), v), Some(Shape::Line)),
            Cmd::Get(ks) => {
                let keys: Vec<String> = ks.iter().map(|k| key(ns, *k)).collect();
                (format!("get {}\r\n", keys.join(" ")).into_bytes(), Some(Shape::Values))
            }
            Cmd::Delete(k) => (format!("delete {}\r\n", key(ns, *k)).into_bytes(), Some(Shape::Line)),
            Cmd::Incr(k, by) => (format!("incr {} {by}\r\n", key(ns, *k)).into_bytes(), Some(Shape::Line)),
            Cmd::Append(k, v) => (block(format!("append {} 0 0 {}\r\n", key(ns, *k), v.len()), v), Some(Shape::Line)),
            Cmd::Mg(k, flags) => (format!("mg {} {flags}\r\n", key(ns, *k)).into_bytes(), Some(Shape::Meta)),
            Cmd::Ms(k, v) => (block(format!("ms {} {} F3\r\n", key(ns, *k), v.len()), v), Some(Shape::Meta)),
            Cmd::Md(k) => (format!("md {}\r\n", key(ns, *k)).into_bytes(), Some(Shape::Meta)),
            Cmd::BadKey(verb, bad, data) => {
                let mut k = ns.as_bytes().to_vec();
                k.extend_from_slice(bad);
                let line = |w: &str| [w.as_bytes(), b" ", &k[..]].concat();
                let bytes = match verb % 4 {
                    0 => [line("get"), b"\r\n".to_vec()].concat(),
                    1 => [line("set"), format!(" 0 0 {}\r\n", data.len()).into_bytes(), data.clone(), b"\r\n".to_vec()].concat(),
                    2 => [line("mg"), b" v\r\n".to_vec()].concat(),
                    _ => [line("delete"), b"\r\n".to_vec()].concat(),
                };
                (bytes, None)
            }
            Cmd::Garbage(g) => ([&[0u8][..], g, b"\r\n"].concat(), None),
        }
    }
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

/// 1..12 bytes, none a space or LF, at least one a control byte, CR, NUL or DEL.
fn bad_key() -> impl Strategy<Value = Vec<u8>> {
    let bad = prop_oneof![0u8..=9, 11u8..=31, Just(0x7f)];
    let any_but = any::<u8>().prop_filter("no space or LF", |b| *b != b' ' && *b != b'\n');
    (proptest::collection::vec(any_but, 0..10), bad, any::<prop::sample::Index>()).prop_map(|(mut k, b, at)| {
        let i = at.index(k.len() + 1);
        k.insert(i, b);
        k
    })
}

fn cmd() -> impl Strategy<Value = Cmd> {
    prop_oneof![
        (any::<u8>(), bytes(64), any::<u16>()).prop_map(|(k, v, f)| Cmd::Set(k, v, f)),
        proptest::collection::vec(any::<u8>(), 1..5).prop_map(Cmd::Get),
        any::<u8>().prop_map(Cmd::Delete),
        (any::<u8>(), any::<u32>()).prop_map(|(k, b)| Cmd::Incr(k, b)),
        (any::<u8>(), bytes(16)).prop_map(|(k, v)| Cmd::Append(k, v)),
        (any::<u8>(), prop::sample::select(vec!["v", "v k", "s f", "v f k s", "k"])).prop_map(|(k, f)| Cmd::Mg(k, f)),
        (any::<u8>(), bytes(32)).prop_map(|(k, v)| Cmd::Ms(k, v)),
        any::<u8>().prop_map(Cmd::Md),
        (any::<u8>(), bad_key(), bytes(24)).prop_map(|(v, k, d)| Cmd::BadKey(v, k, d)),
        proptest::collection::vec(any::<u8>().prop_filter("no LF", |b| *b != b'\n'), 0..40).prop_map(Cmd::Garbage),
    ]
}

/// One line, with its `\r\n`.
fn read_line(s: &mut TcpStream) -> Vec<u8> {
    let (mut l, mut byte) = (Vec::new(), [0u8; 1]);
    while !l.ends_with(b"\r\n") {
        s.read_exact(&mut byte).expect("memcached answers");
        l.push(byte[0]);
    }
    l
}

/// Reads one answer of `shape` from `s`.
fn read_answer(s: &mut TcpStream, shape: Shape) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let l = read_line(s);
        out.extend_from_slice(&l);
        let text = String::from_utf8_lossy(&l).into_owned();
        let size = match shape {
            Shape::Values if text.starts_with("VALUE ") => text.split(' ').nth(3).map(|n| n.trim().parse::<usize>().unwrap()),
            Shape::Meta if text.starts_with("VA ") => text.split(' ').nth(1).map(|n| n.trim().parse::<usize>().unwrap()),
            _ => None,
        };
        match size {
            Some(n) => {
                let mut data = vec![0u8; n + 2];
                s.read_exact(&mut data).unwrap();
                out.extend_from_slice(&data);
                if matches!(shape, Shape::Meta) {
                    return out;
                }
            }
            None => return out,
        }
    }
}

/// What memcached alone answers to `cmds` (valid ones asked of `direct`).
fn oracle(direct: SocketAddr, ns: &str, cmds: &[Cmd]) -> Vec<u8> {
    let mut s = TcpStream::connect(direct).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut want = Vec::new();
    for c in cmds {
        match c.render(ns) {
            (bytes, Some(shape)) => {
                s.write_all(&bytes).unwrap();
                want.extend(read_answer(&mut s, shape));
            }
            (_, None) => want.extend_from_slice(REFUSED),
        }
    }
    want
}

#[test]
fn random_streams_from_many_clients_keep_every_client_in_step() {
    let (direct, behind) = (memcached(), memcached());
    let listen = free_addr();
    let p = Proxy::start(&ambassador(listen, &[("s", vec![behind.addr])], "", "server_connections = 1"));
    wait_port(listen);
    let case = AtomicUsize::new(0);
    let clients = proptest::collection::vec((proptest::collection::vec(cmd(), 1..24), proptest::collection::vec(1usize..64, 8)), 2..6);
    let mut runner = TestRunner::new(Config { cases: 48, max_shrink_iters: 32, failure_persistence: None, ..Config::default() });
    runner
        .run(&clients, |clients| {
            let n = case.fetch_add(1, Relaxed);
            let threads: Vec<_> = clients
                .into_iter()
                .enumerate()
                .map(|(i, (cmds, cuts))| {
                    let ns = format!("c{n}x{i}:");
                    let want = oracle(direct.addr, &ns, &cmds);
                    std::thread::spawn(move || {
                        let stream: Vec<u8> = cmds.iter().flat_map(|c| c.render(&ns).0).collect();
                        let mut s = TcpStream::connect(listen).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                        let mut w = s.try_clone().unwrap();
                        // Written at random split points, with pauses between the pieces.
                        let writer = std::thread::spawn(move || {
                            let mut at = 0;
                            for cut in cuts.iter().cycle() {
                                if at >= stream.len() {
                                    break;
                                }
                                let end = (at + cut).min(stream.len());
                                w.write_all(&stream[at..end]).unwrap();
                                at = end;
                                std::thread::sleep(Duration::from_micros(200));
                            }
                        });
                        let mut got = vec![0u8; want.len()];
                        let read = s.read_exact(&mut got);
                        writer.join().unwrap();
                        (ns, want, read.map(|()| got))
                    })
                })
                .collect();
            for t in threads {
                let (ns, want, got) = t.join().unwrap();
                let got = got.map_err(|e| TestCaseError::fail(format!("{ns}: {e}; wanted {:?}", String::from_utf8_lossy(&want))))?;
                prop_assert!(got == want, "{}: got {:?}\nwant {:?}", ns, String::from_utf8_lossy(&got), String::from_utf8_lossy(&want));
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(p.metric("ringmaster_memcache_desyncs_total"), 0.0);
    assert!(p.metric("ringmaster_memcache_bad_commands_total") > 0.0, "hostile lines were sent");
}
