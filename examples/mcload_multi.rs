//! Multi-key get load for issue 12's benchmark (the shared harness's mcload
//! sends one key per get): CONNS connections on one thread, each with one
//! `get k1 .. kN` in flight, keys uniform over KEYS (all set beforehand, not
//! timed), so a proxy splits every get over its shards and reassembles it.
//! Every answer is framed and its values counted: a short answer is an error.
//!
//! usage: mcload_multi HOST:PORT DURATION_S   (env CONNS 64, MC_KEYS 10000,
//! MC_VALUE 100, MC_MULTI 10, MC_ZIPF 0: with an exponent s > 0, keys are drawn
//! from a Zipf distribution, key 0 the hottest, for bench/hotkeys.sh).
//! Prints one `RESULT {json}` line in the shared harness's format;
//! `requests` counts gets, `keys` the keys they asked for.

use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn key(k: usize) -> String {
    format!("key:{k:010}")
}

/// xorshift64*: cheap and good enough to spread keys.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A key: uniform below `n`, or by rank from a Zipf `cdf` (over `n` keys).
    fn key(&mut self, n: usize, cdf: &[f64]) -> usize {
        match cdf.last() {
            None => self.below(n),
            Some(sum) => {
                let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64 * sum;
                cdf.partition_point(|&c| c < u).min(n - 1)
            }
        }
    }
}

/// The cumulative weights of ranks 1..=n under Zipf exponent `s` (empty: uniform).
fn zipf_cdf(n: usize, s: f64) -> Vec<f64> {
    if s <= 0.0 {
        return Vec::new();
    }
    let mut sum = 0.0;
    (1..=n)
        .map(|r| {
            sum += 1.0 / (r as f64).powf(s);
            sum
        })
        .collect()
}

/// The length of a whole get answer at the start of `buf` and its value count,
/// or None while it is incomplete.
fn framed(buf: &[u8]) -> Result<Option<(usize, usize)>, String> {
    let (mut at, mut values) = (0, 0);
    loop {
        let Some(eol) = buf[at..].windows(2).position(|w| w == b"\r\n") else { return Ok(None) };
        let line = &buf[at..at + eol];
        if line == b"END" {
            return Ok(Some((at + eol + 2, values)));
        }
        let text = std::str::from_utf8(line).map_err(|_| "answer not UTF-8".to_string())?;
        let len: usize = match text.split(' ').collect::<Vec<_>>()[..] {
            ["VALUE", _, _, n] => n.parse().map_err(|_| format!("bad VALUE line {text:?}"))?,
            _ => return Err(format!("unexpected answer {text:?}")),
        };
        let next = at + eol + 2 + len + 2;
        if buf.len() < next {
            return Ok(None);
        }
        values += 1;
        at = next;
    }
}

/// Sends `req` and reads until one whole get answer; its value count.
async fn ask(s: &mut TcpStream, req: &[u8], buf: &mut Vec<u8>) -> Result<usize, String> {
    s.write_all(req).await.map_err(|e| e.to_string())?;
    loop {
        if let Some((n, values)) = framed(buf)? {
            buf.drain(..n);
            return Ok(values);
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn prefill(addr: &str, keys: usize, value: &[u8]) {
    let mut s = TcpStream::connect(addr).await.expect("connect for prefill");
    for chunk in (0..keys).collect::<Vec<_>>().chunks(100) {
        let mut req = Vec::new();
        for k in chunk {
            req.extend_from_slice(format!("set {} 0 0 {} noreply\r\n", key(*k), value.len()).as_bytes());
            req.extend_from_slice(value);
            req.extend_from_slice(b"\r\n");
        }
        s.write_all(&req).await.expect("prefill write");
    }
    // A get after the noreply sets: answered once every set before it was.
    let mut buf = Vec::new();
    ask(&mut s, format!("get {}\r\n", key(0)).as_bytes(), &mut buf).await.expect("prefill check");
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(secs)) = (args.get(1).cloned(), args.get(2).and_then(|d| d.parse::<f64>().ok())) else {
        eprintln!("usage: mcload_multi HOST:PORT DURATION_S");
        std::process::exit(2)
    };
    let (conns, keys, multi) = (env("CONNS", 64), env("MC_KEYS", 10_000).max(1), env("MC_MULTI", 10).max(1));
    let value = vec![b'x'; env("MC_VALUE", 100)];
    let s: f64 = std::env::var("MC_ZIPF").ok().and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let cdf = std::sync::Arc::new(zipf_cdf(keys, s));
    prefill(&addr, keys, &value).await;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..conns)
        .map(|i| {
            let (addr, cdf) = (addr.clone(), cdf.clone());
            tokio::spawn(async move {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
                let (mut lat, mut errors) = (Vec::new(), 0u64);
                let Ok(mut s) = TcpStream::connect(&addr).await else { return (lat, 1) };
                let _ = s.set_nodelay(true);
                let (mut req, mut buf) = (Vec::new(), Vec::new());
                while Instant::now() < end {
                    req.clear();
                    req.extend_from_slice(b"get");
                    for _ in 0..multi {
                        req.push(b' ');
                        req.extend_from_slice(key(rng.key(keys, &cdf)).as_bytes());
                    }
                    req.extend_from_slice(b"\r\n");
                    let t = Instant::now();
                    match tokio::time::timeout(Duration::from_secs(5), ask(&mut s, &req, &mut buf)).await {
                        Ok(Ok(n)) if n == multi => lat.push(t.elapsed().as_micros() as u64),
                        Ok(Ok(_)) => errors += 1,
                        _ => return (lat, errors + 1),
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let (mut lat, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.unwrap_or_default();
        lat.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |q: f64| lat.get(((q / 100.0) * lat.len() as f64) as usize).copied().unwrap_or(0);
    let n = lat.len();
    let mean = if n > 0 { lat.iter().sum::<u64>() as f64 / n as f64 } else { 0.0 };
    println!(
        "RESULT {{\"tool\":\"mcload_multi\",\"requests\":{n},\"keys\":{},\"duration_s\":{elapsed:.6},\"rps\":{:.1},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"mean_us\":{mean:.1},\"err_read\":{errors}}}",
        n * multi,
        n as f64 / elapsed,
        pct(50.0),
        pct(90.0),
        pct(99.0),
        pct(99.9),
        lat.last().copied().unwrap_or(0),
    );
}
