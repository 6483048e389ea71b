//! Identify: who the client is. For now its address: the peer's, or, when the
//! peer is a trusted proxy, the nearest untrusted address it reports in
//! X-Forwarded-For (or RFC 7239 Forwarded). Every later stage sees this address.

use http::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// The CIDR ranges whose forwarding headers are believed.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies(nets)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// IPv4-mapped IPv6 addresses become plain IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The real client address of a request that arrived from `peer`.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = canonical(peer);
    if trusted.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        let Ok(s) = v.to_str() else { return peer };
        for part in s.split(',') {
            match parse_hop(part) {
                Some(ip) => hops.push(ip),
                None => return peer,
            }
        }
    }
    if hops.is_empty() {
        for v in headers.get_all(http::header::FORWARDED) {
            let Ok(s) = v.to_str() else { return peer };
            for element in s.split(',') {
                let f = element.split(';').find_map(|p| {
                    let (k, v) = p.trim().split_once('=')?;
                    k.eq_ignore_ascii_case("for").then_some(v)
                });
                if let Some(f) = f {
                    match parse_hop(f.trim_matches('"')) {
                        Some(ip) => hops.push(ip),
                        None => return peer,
                    }
                }
            }
        }
    }
    let mut client = peer;
    for ip in hops.into_iter().rev() {
        client = ip;
        if !trusted.contains(ip) {
            break;
        }
    }
    client
}

/// `192.0.2.1`, `192.0.2.1:5000`, `[2001:db8::1]:5000` or `2001:db8::1`.
fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    let inner = s.strip_prefix('[')?.split(']').next()?;
    inner.parse::<IpAddr>().ok().map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        m
    }

    fn trusted() -> TrustedProxies {
        TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap(), "127.0.0.1/32".parse().unwrap()])
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let ip = client_addr("192.0.2.9".parse().unwrap(), &h(&[("x-forwarded-for", "1.2.3.4")]), &trusted());
        assert_eq!(ip, "192.0.2.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn trusted_chain_gives_nearest_untrusted() {
        let hm = h(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4"), ("x-forwarded-for", "10.1.1.1")]);
        let ip = client_addr("127.0.0.1".parse().unwrap(), &hm, &trusted());
        assert_eq!(ip, "1.2.3.4".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn forwarded_header_is_used_without_xff() {
        let hm = h(&[("forwarded", "for=\"[2001:db8::7]:443\";proto=https")]);
        let ip = client_addr("10.0.0.2".parse().unwrap(), &hm, &trusted());
        assert_eq!(ip, "2001:db8::7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn garbage_hop_stops_at_peer() {
        let hm = h(&[("x-forwarded-for", "1.2.3.4, nonsense")]);
        let ip = client_addr("127.0.0.1".parse().unwrap(), &hm, &trusted());
        assert_eq!(ip, "127.0.0.1".parse::<IpAddr>().unwrap());
    }
}

/// An API key's owner and tier, and the policies that replace the tier's.
pub struct KeyInfo {
    pub tier: String,
    pub owner: String,
    pub overrides: Option<Vec<crate::limit::Policy>>,
}

/// Who a request comes from, as far as limits are concerned.
pub enum Who {
    Anonymous,
    Key(std::sync::Arc<KeyInfo>),
}

/// A presented credential that matches nothing, and why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadCredentials(pub String);

/// API keys, stored as SHA-256 digests.
#[derive(Clone)]
pub struct Credentials {
    pub header: Option<http::HeaderName>,
    pub query: Option<String>,
    pub keys: std::collections::HashMap<[u8; 32], std::sync::Arc<KeyInfo>>,
    pub jwt: Option<crate::jwt::JwtVerifier>,
    pub reject_invalid: bool,
}

/// A secret (the admin token) kept only as its SHA-256, compared in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    pub fn new(secret: &str) -> Secret {
        Secret(key_digest(secret.as_bytes()))
    }

    /// Whether `presented` is the secret (in time independent of where they differ).
    pub fn admits(&self, presented: &str) -> bool {
        let d = key_digest(presented.as_bytes());
        d.iter().zip(self.0.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// SHA-256 of an API key.
pub fn key_digest(key: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(key).into()
}

impl Credentials {
    /// Identifies a request by its API key (header first, then query parameter).
    pub fn identify(&self, headers: &HeaderMap, query: Option<&str>) -> Result<Who, BadCredentials> {
        if let Some(jwt) = &self.jwt {
            let bearer = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
            if let Some(token) = bearer {
                return match jwt.verify(token) {
                    Ok(b) => Ok(Who::Key(std::sync::Arc::new(KeyInfo { tier: b.tier, owner: b.owner, overrides: None }))),
                    Err(_) if !self.reject_invalid => Ok(Who::Anonymous),
                    Err(e) => Err(BadCredentials(e.to_string())),
                };
            }
        }
        let from_header = self.header.as_ref().and_then(|h| headers.get(h)).map(|v| v.as_bytes().to_vec());
        // The query parameter is decoded as every other query value is.
        let presented = from_header.or_else(|| crate::key::query_param(query?, self.query.as_deref()?).map(|v| v.into_owned()));
        let Some(key) = presented else { return Ok(Who::Anonymous) };
        match self.keys.get(&key_digest(&key)) {
            Some(info) => Ok(Who::Key(info.clone())),
            None if self.reject_invalid => Err(BadCredentials("the API key presented is not valid".into())),
            None => Ok(Who::Anonymous),
        }
    }
}

#[cfg(test)]
mod credential_tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn an_api_key_in_the_query_is_decoded_like_every_query_value() {
        let info = Arc::new(KeyInfo { tier: "gold".into(), owner: "o".into(), overrides: None });
        let creds = Credentials {
            header: None,
            query: Some("api_key".into()),
            keys: [(key_digest(b"a+b/c d"), info)].into_iter().collect(),
            jwt: None,
            reject_invalid: true,
        };
        let who = creds.identify(&HeaderMap::new(), Some("x=1&api_key=a%2Bb%2Fc+d")).unwrap();
        assert!(matches!(who, Who::Key(k) if k.tier == "gold"));
        assert!(creds.identify(&HeaderMap::new(), Some("api_key=a+b/c")).is_err(), "a wrong key is refused");
    }
}
