//! Validate: the one check of keys and command lines that every memcache
//! command passes before any phase reads it, and that every command the
//! ambassador writes itself (split copies, warm-up reads, hot-cache fills) is
//! built from. A server that read a line differently from the ambassador
//! would answer a different number of times, and a shared server connection
//! would hand one client's answer to another; so nothing a server could frame
//! otherwise gets through:
//!
//! - keys are 1..=250 bytes with no byte <= 0x20 and no 0x7F (memcached's
//!   protocol.txt, mcrouter's key check); a meta key sent in base64 (`b`)
//!   may hold any bytes once decoded, and is only ever written upstream in
//!   base64 again;
//! - no NUL anywhere in a command line (memcached reads a line as a C string
//!   and would end it there);
//! - a line other than a get is at most 2048 bytes (memcached's limit for a
//!   line it has not seen the end of; here the same whatever the segmentation).

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};

/// memcached's longest key.
pub const MAX_KEY: usize = 250;
/// The longest command line other than a get's.
pub const MAX_LINE: usize = 2048;
/// A get's line may carry many keys, up to this.
pub const MAX_GET_LINE: usize = 64 * 1024;

/// Why a key or line is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("key is empty or longer than 250 bytes")]
    KeyLength,
    #[error("key holds a control byte, a space or DEL")]
    KeyByte,
    #[error("command line holds a NUL byte")]
    Nul,
    #[error("base64 key does not decode")]
    Base64,
}

impl Refusal {
    /// The answer memcached gives to such a command.
    pub fn answer(self) -> &'static str {
        match self {
            Refusal::Base64 => "CLIENT_ERROR error decoding key\r\n",
            _ => super::request::BAD_FORMAT,
        }
    }
}

/// A key as it may be sent to a server in a text command: 1..=250 bytes, no
/// control byte, space or DEL.
pub fn text_key(k: &[u8]) -> Result<(), Refusal> {
    if k.is_empty() || k.len() > MAX_KEY {
        return Err(Refusal::KeyLength);
    }
    if k.iter().any(|&c| c <= b' ' || c == 0x7f) {
        return Err(Refusal::KeyByte);
    }
    Ok(())
}

/// A command line (without its end) holds no NUL.
pub fn line(l: &[u8]) -> Result<(), Refusal> {
    if l.contains(&0) {
        return Err(Refusal::Nul);
    }
    Ok(())
}

/// A meta key in base64 (`b` flag), decoded: any bytes, 1..=250 of them.
pub fn base64_key(token: &[u8]) -> Result<Bytes, Refusal> {
    let decoded = base64::engine::general_purpose::STANDARD.decode(token).map_err(|_| Refusal::Base64)?;
    if decoded.is_empty() || decoded.len() > MAX_KEY {
        return Err(Refusal::KeyLength);
    }
    Ok(decoded.into())
}

/// A key as the ambassador writes it in a meta command of its own: as text
/// when it is a valid text key, else in base64 with the `b` flag. `into`
/// gets ` KEY` or ` BASE64`, and the flag (` b`) is returned to be added.
pub fn put_meta_key(into: &mut BytesMut, key: &[u8]) -> &'static str {
    into.put_u8(b' ');
    if text_key(key).is_ok() {
        into.extend_from_slice(key);
        ""
    } else {
        into.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(key).as_bytes());
        " b"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_as_memcached_documents_them() {
        assert_eq!(text_key(b"user:1"), Ok(()));
        assert_eq!(text_key("ключ".as_bytes()), Ok(()), "UTF-8 is allowed");
        assert_eq!(text_key(&[b'k'; 250]), Ok(()));
        assert_eq!(text_key(&[b'k'; 251]), Err(Refusal::KeyLength));
        assert_eq!(text_key(b""), Err(Refusal::KeyLength));
        for bad in [&b"a b"[..], b"a\rb", b"a\nb", b"a\x00b", b"a\x7fb", b"a\tb", b"\x01"] {
            assert_eq!(text_key(bad), Err(Refusal::KeyByte), "{bad:?}");
        }
        assert_eq!(line(b"mg k v q\0"), Err(Refusal::Nul));
        assert_eq!(line(b"mg k v q"), Ok(()));
    }

    #[test]
    fn base64_keys_decode_to_any_bytes_and_are_written_back_in_base64() {
        let hostile = b"x\r\nset injected 0 0 3\r\nabc";
        let token = base64::engine::general_purpose::STANDARD.encode(hostile);
        assert_eq!(&base64_key(token.as_bytes()).unwrap()[..], hostile);
        assert_eq!(base64_key(b"!!!!"), Err(Refusal::Base64));
        assert_eq!(base64_key(b""), Err(Refusal::KeyLength));
        let mut line = BytesMut::from(&b"md"[..]);
        let flag = put_meta_key(&mut line, hostile);
        assert_eq!(flag, " b");
        assert!(!line.contains(&b'\n') && !line.contains(&b'\r'), "{line:?}");
        let mut plain = BytesMut::from(&b"md"[..]);
        assert_eq!(put_meta_key(&mut plain, b"k"), "");
        assert_eq!(&plain[..], b"md k");
    }
}
