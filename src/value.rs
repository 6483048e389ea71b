//! Header values the request path makes for each answer (Age, Content-Length,
//! Cache-Status, the rate-limit counts), each in at most one allocation:
//! `HeaderValue::from(u64)` takes two (a buffer, then the shared header it is
//! frozen into) and `HeaderValue::from_str(&format!(..))` two more. Small
//! numbers come from a table made once and cost none.

use bytes::Bytes;
use http::HeaderValue;
use std::sync::OnceLock;

/// Numbers below this come from the table.
const TABLE: u64 = 1024;

/// `n` as a header value.
pub fn number(n: u64) -> HeaderValue {
    static SMALL: OnceLock<Box<[HeaderValue]>> = OnceLock::new();
    if n < TABLE {
        let table = SMALL.get_or_init(|| (0..TABLE).map(|i| HeaderValue::from_static(Box::leak(i.to_string().into_boxed_str()))).collect());
        return table[n as usize].clone();
    }
    let mut digits = [0u8; 20];
    from_parts(&[decimal(n, &mut digits)]).expect("digits are a valid value")
}

/// A value made of `parts` in one allocation; none when they are not a valid value.
pub fn from_parts(parts: &[&[u8]]) -> Option<HeaderValue> {
    let mut v = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        v.extend_from_slice(p);
    }
    // A Vec filled to its capacity becomes Bytes without another allocation.
    HeaderValue::from_maybe_shared(Bytes::from(v)).ok()
}

/// `n` in decimal, written at the end of `buf`.
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_from_u64_makes_them() {
        for n in [0, 7, 10, 999, 1023, 1024, 65_536, u64::MAX] {
            assert_eq!(number(n), HeaderValue::from(n), "{n}");
        }
        assert_eq!(from_parts(&[b"ringmaster; ", b"hit", b"; ttl=", b"-5"]).unwrap(), "ringmaster; hit; ttl=-5");
        assert!(from_parts(&[b"a\r\nb"]).is_none());
    }
}
