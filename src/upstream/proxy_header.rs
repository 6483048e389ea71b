//! The PROXY protocol header a pool's connections start with when the
//! service sends one (`send_proxy_protocol`), written by the `ppp` crate:
//! the client's address and the address it reached (the listener's, or the
//! destination a balancer's own header named), as HAProxy's `send-proxy`
//! does; or LOCAL (UNKNOWN in v1) for the proxy's own connections, such as
//! health probes.

use super::policy::ProxyHeader;
use ppp::v2;
use std::net::SocketAddr;

/// Who a request is for: the client and the address it reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    pub client: SocketAddr,
    pub reached: SocketAddr,
}

/// The header of `version` for a connection carrying `origin`'s requests;
/// `None` for the proxy's own.
pub fn header(version: ProxyHeader, origin: Option<Origin>) -> Vec<u8> {
    match (version, origin) {
        (ProxyHeader::V1, Some(o)) => v1_header(o.client, o.reached),
        (ProxyHeader::V1, None) => ppp::v1::Addresses::Unknown.to_string().into_bytes(),
        (ProxyHeader::V2, Some(o)) => v2_header(o.client, o.reached),
        (ProxyHeader::V2, None) => {
            v2::Builder::with_addresses(v2::Version::Two | v2::Command::Local, v2::Protocol::Stream, v2::Addresses::Unspecified)
                .build()
                .expect("a header of no addresses is written to memory")
        }
    }
}

fn v6(a: SocketAddr) -> std::net::Ipv6Addr {
    match a {
        SocketAddr::V4(a) => a.ip().to_ipv6_mapped(),
        SocketAddr::V6(a) => *a.ip(),
    }
}

/// The v2 header naming `client` (and `local`, the address it reached).
pub fn v2_header(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let addresses = match (client, local) {
        (SocketAddr::V4(c), SocketAddr::V4(l)) => v2::Addresses::IPv4(v2::IPv4::new(*c.ip(), *l.ip(), c.port(), l.port())),
        (c, l) => v2::Addresses::IPv6(v2::IPv6::new(v6(c), v6(l), c.port(), l.port())),
    };
    v2::Builder::with_addresses(v2::Version::Two | v2::Command::Proxy, v2::Protocol::Stream, addresses)
        .build()
        .expect("a header of two addresses is written to memory")
}

/// The v1 header naming `client` (and `local`).
pub fn v1_header(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let addresses = match (client, local) {
        (SocketAddr::V4(c), SocketAddr::V4(l)) => ppp::v1::Addresses::new_tcp4(*c.ip(), *l.ip(), c.port(), l.port()),
        (c, l) => ppp::v1::Addresses::new_tcp6(v6(c), v6(l), c.port(), l.port()),
    };
    addresses.to_string().into_bytes()
}
