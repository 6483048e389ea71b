//! The PROXY protocol (v1 text and v2 binary, parsed by the `ppp` crate) on
//! listeners behind an L4 balancer, so the client's address survives it: the
//! header is read before TLS and HTTP, from trusted peers only, and exactly
//! (peeked, then read to its last byte), so what follows it is left for the
//! connection. (`upstream/proxy_header.rs` writes the same header towards
//! upstreams.)

use crate::metrics::GLOBAL;
use ppp::v2;
use ppp::HeaderResult;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The longest header accepted: v1 is at most 107 bytes; a v2 header with
/// more TLVs than this (cloud balancers send a few dozen bytes) is refused.
const MAX_HEADER: usize = 1024;

/// Why a connection on a PROXY protocol listener was closed before HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the peer is not a trusted proxy (trusted_proxies)")]
    Untrusted,
    #[error("no valid PROXY protocol header")]
    Malformed,
    #[error("the PROXY protocol header did not arrive in time")]
    Timeout,
    #[error("the connection closed before its PROXY protocol header")]
    Closed,
}

impl Refusal {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        crate::metrics::PROXY_REFUSALS[self as usize]
    }

    fn count(self) {
        GLOBAL.proxy_protocol_refused[self as usize].fetch_add(1, Relaxed);
    }
}

/// A connection's client and, when the header names one, its destination.
pub type Addrs = (SocketAddr, Option<SocketAddr>);

/// Reads the header off `stream` within `limit` and returns the client's
/// address it names and the destination it names; the balancer's own
/// (`peer`, and no destination: the socket's) for a `LOCAL` (v2) or
/// `UNKNOWN` (v1) header, as the spec asks (health checks). Counts and logs
/// a refusal.
pub async fn accept(stream: &mut TcpStream, peer: SocketAddr, limit: Duration) -> Result<Addrs, Refusal> {
    let result = match tokio::time::timeout(limit, read(stream, peer)).await {
        Ok(r) => r,
        Err(_) => Err(Refusal::Timeout),
    };
    match result {
        Ok(_) => {
            GLOBAL.proxy_protocol_accepted.fetch_add(1, Relaxed);
        }
        Err(why) => {
            why.count();
            tracing::debug!(%peer, reason = why.reason(), "PROXY protocol connection refused");
        }
    }
    result
}

/// Counts a connection from a peer that may not send the header.
pub fn untrusted(peer: SocketAddr) {
    Refusal::Untrusted.count();
    tracing::debug!(%peer, reason = "untrusted", "PROXY protocol connection refused");
}

async fn read(stream: &mut TcpStream, peer: SocketAddr) -> Result<Addrs, Refusal> {
    // On the heap and only while reading: a connection's future keeps no room for it.
    let mut buf = vec![0u8; MAX_HEADER];
    let mut have = 0;
    loop {
        let n = stream.peek(&mut buf[have..]).await.map_err(|_| Refusal::Closed)?;
        if n == 0 {
            return Err(Refusal::Closed);
        }
        let seen = have + n;
        let parsed = HeaderResult::parse(&buf[..seen]);
        if let Some((len, addrs)) = complete(&parsed, peer)? {
            // Take exactly the header; what follows is the connection's.
            stream.read_exact(&mut buf[have..len]).await.map_err(|_| Refusal::Closed)?;
            return Ok(addrs);
        }
        // Incomplete: every byte seen belongs to the header; take them, and
        // the next peek waits for more.
        if seen == buf.len() {
            return Err(Refusal::Malformed);
        }
        stream.read_exact(&mut buf[have..seen]).await.map_err(|_| Refusal::Closed)?;
        have = seen;
    }
}

/// A complete header's length and the client and destination it names
/// (`peer` and none where it names neither); `None` while it is incomplete.
fn complete(parsed: &HeaderResult<'_>, peer: SocketAddr) -> Result<Option<(usize, Addrs)>, Refusal> {
    use ppp::PartialResult;
    if parsed.is_incomplete() {
        return Ok(None);
    }
    let pair = |s: SocketAddr, d: SocketAddr| (s, Some(d));
    let own = (peer, None);
    match parsed {
        HeaderResult::V1(Ok(h)) => {
            let addrs = match &h.addresses {
                ppp::v1::Addresses::Tcp4(a) => {
                    pair(SocketAddr::from((a.source_address, a.source_port)), SocketAddr::from((a.destination_address, a.destination_port)))
                }
                ppp::v1::Addresses::Tcp6(a) => {
                    pair(SocketAddr::from((a.source_address, a.source_port)), SocketAddr::from((a.destination_address, a.destination_port)))
                }
                ppp::v1::Addresses::Unknown => own,
            };
            Ok(Some((h.header.len(), addrs)))
        }
        HeaderResult::V2(Ok(h)) => {
            let addrs = match (h.command, &h.addresses) {
                (v2::Command::Local, _) => own,
                (_, v2::Addresses::IPv4(a)) => {
                    pair(SocketAddr::from((a.source_address, a.source_port)), SocketAddr::from((a.destination_address, a.destination_port)))
                }
                (_, v2::Addresses::IPv6(a)) => {
                    pair(SocketAddr::from((a.source_address, a.source_port)), SocketAddr::from((a.destination_address, a.destination_port)))
                }
                // Unix sockets and unspecified families carry no IP address.
                _ => own,
            };
            Ok(Some((h.len(), addrs)))
        }
        _ => Err(Refusal::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::proxy_header::{v1_header, v2_header};

    /// The header's length and the client it names.
    fn parse(bytes: &[u8]) -> Result<Option<(usize, SocketAddr)>, Refusal> {
        Ok(complete(&HeaderResult::parse(bytes), PEER)?.map(|(len, (client, _))| (len, client)))
    }

    const PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)), 9);

    #[test]
    fn the_destination_is_the_headers_or_none() {
        let v1 = b"PROXY TCP4 203.0.113.7 198.51.100.9 5555 443\r\n";
        assert_eq!(complete(&HeaderResult::parse(v1), PEER).unwrap().unwrap().1 .1, Some("198.51.100.9:443".parse().unwrap()));
        let v2 = v2_header("[2001:db8::1]:6000".parse().unwrap(), "[2001:db8::2]:8443".parse().unwrap());
        assert_eq!(complete(&HeaderResult::parse(&v2), PEER).unwrap().unwrap().1 .1, Some("[2001:db8::2]:8443".parse().unwrap()));
        assert_eq!(complete(&HeaderResult::parse(b"PROXY UNKNOWN\r\n"), PEER).unwrap().unwrap().1, (PEER, None));
    }

    #[test]
    fn both_versions_give_the_client_and_their_exact_length() {
        let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.2 5555 80\r\nGET / HTTP/1.1\r\n";
        assert_eq!(parse(v1), Ok(Some((41, "203.0.113.7:5555".parse().unwrap()))));
        let mut v2 = v2_header("198.51.100.4:6000".parse().unwrap(), "10.0.0.2:80".parse().unwrap());
        let len = v2.len();
        v2.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(parse(&v2), Ok(Some((len, "198.51.100.4:6000".parse().unwrap()))));
        let six = v1_header("[2001:db8::1]:443".parse().unwrap(), "[2001:db8::2]:80".parse().unwrap());
        assert_eq!(parse(&six), Ok(Some((six.len(), "[2001:db8::1]:443".parse().unwrap()))));
    }

    #[test]
    fn partial_headers_wait_and_other_bytes_are_refused() {
        assert_eq!(parse(b"PROXY TCP4 203.0."), Ok(None));
        let v2 = v2_header("198.51.100.4:6000".parse().unwrap(), "10.0.0.2:80".parse().unwrap());
        assert_eq!(parse(&v2[..20]), Ok(None));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Err(Refusal::Malformed));
        assert_eq!(parse(b"PROXY TCP4 300.0.0.1 10.0.0.2 1 2\r\n"), Err(Refusal::Malformed));
        // UNKNOWN (a balancer's own health check) keeps the peer's address.
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Ok(Some((15, "10.0.0.1:9".parse().unwrap()))));
    }
}
