//! Key-split for hot keys (`[services.NAME.hot_keys] split = N`), after
//! mcrouter's KeySplitRoute: a hot key has copies on the next N-1 distinct
//! shards of its ring walk, stored under its own name, and each `get` of it
//! reads one of the N places at random, so its load is split N ways even
//! across roots that do not share a hot-key cache.
//!
//! Copies are filled by reads and live at most `ttl` (whole seconds): a
//! copy that misses sends the read on to the owner, whose value is then set
//! on the copy with that exptime. Any write of a hot key through this root
//! deletes its copies once the owner answered. A copy can therefore be stale
//! for at most `ttl` (a write through another root, or a fill that raced a
//! write), the same bound as the root cache's. Only `get` is split: `gets`
//! and `mg ... c` return cas values of the owner, and touches change expiry.

use super::reply::Expect;
use super::service::Service;
use bytes::{Bytes, BytesMut};
use std::sync::Arc;

/// The shards that hold `key` when it is split `n` ways: its owner first,
/// then the next distinct shards of its ring walk.
pub fn places(svc: &Service, key: &[u8], owner: usize, n: usize) -> Vec<usize> {
    let mut out = vec![owner];
    let hash = svc.ring.hash_key(crate::hash::hash_tag(key, svc.tag));
    // The walk visits each shard once at most, so it ends.
    svc.ring.walk(hash, &mut |s| {
        if !out.contains(&s) {
            out.push(s);
        }
        out.len() >= n
    });
    out
}

/// A `get` of hot `key` (one key, `wire` as the client sent it) from one of
/// its places at random, falling back to the owner on a copy's miss or
/// failure, and filling the copy from the owner's value.
pub async fn get(svc: Arc<Service>, key: Bytes, owner: usize, n: usize, wire: Bytes, lane: usize) -> Bytes {
    let at = places(&svc, &key, owner, n);
    let pick = at[fastrand::usize(..at.len())];
    if pick != owner {
        match super::replicas::read(&svc, pick, wire.clone(), Expect::Values, lane, None, false).await {
            Ok(a) if a.starts_with(b"VALUE ") => return a,
            _ => {}
        }
    }
    let a = super::replicas::answer(super::replicas::read(&svc, owner, wire, Expect::Values, lane, None, false).await);
    if pick != owner {
        if let Some(set) = fill(&key, &a, ttl_secs(&svc)) {
            let svc = svc.clone();
            tokio::spawn(async move { super::replicas::write(&svc, pick, &set, Expect::Line, lane, Some(&key)).await });
        }
    }
    a
}

/// Deletes `key`'s copies (a write of it went to its owner); the write is
/// answered after, so the client's next get sees what it wrote. The delete is
/// a meta delete built by the validator: a key that is not a text key (one
/// sent in base64) goes in base64 again, never as raw bytes on a line.
pub async fn drop_copies(svc: &Service, key: &[u8], owner: usize, n: usize, lane: usize) {
    let copies: Vec<usize> = places(svc, key, owner, n).into_iter().skip(1).collect();
    let line = delete_line(key);
    let key = Bytes::copy_from_slice(key);
    futures_util::future::join_all(copies.into_iter().map(|s| super::replicas::write(svc, s, &line, Expect::Meta, lane, Some(&key)))).await;
}

/// `md KEY\r\n`, or `md BASE64 b\r\n` for a key that is not a text key.
pub fn delete_line(key: &[u8]) -> Bytes {
    let mut line = BytesMut::with_capacity(key.len() * 4 / 3 + 12);
    line.extend_from_slice(b"md");
    let flag = super::validate::put_meta_key(&mut line, key);
    line.extend_from_slice(flag.as_bytes());
    line.extend_from_slice(b"\r\n");
    line.freeze()
}

fn ttl_secs(svc: &Service) -> u64 {
    svc.heat.policy().mitigation.split_ttl.max(1)
}

/// The `set` that copies a one-value get answer of `key` (`VALUE key flags
/// bytes`, the data, `END`) with exptime `ttl`; `None` for a miss or anything
/// else. The line is built from `key` (a client's validated text key) and the
/// numbers read back, never from the server's bytes as they came.
pub fn fill(key: &[u8], answer: &[u8], ttl: u64) -> Option<Bytes> {
    super::validate::text_key(key).ok()?;
    let nl = answer.iter().position(|&c| c == b'\n')?;
    let head = answer[..nl].strip_suffix(b"\r")?;
    let mut w = head.split(|&c| c == b' ');
    let (Some(b"VALUE"), Some(named), Some(flags), Some(bytes), None) = (w.next(), w.next(), w.next(), w.next(), w.next()) else {
        return None;
    };
    let number = |t: &[u8]| std::str::from_utf8(t).ok()?.parse::<u64>().ok();
    let (flags, size) = (number(flags)?, number(bytes)? as usize);
    if named != key {
        return None;
    }
    let data = answer.get(nl + 1..nl + 1 + size + 2)?;
    if answer.get(nl + 1 + size + 2..)? != b"END\r\n" || !data.ends_with(b"\r\n") {
        return None;
    }
    let mut set = BytesMut::with_capacity(head.len() + data.len() + 16);
    set.extend_from_slice(b"set ");
    set.extend_from_slice(key);
    set.extend_from_slice(format!(" {flags} {ttl} {size}\r\n").as_bytes());
    set.extend_from_slice(data);
    Some(set.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_set_from_a_whole_value_only() {
        let set = fill(b"k", b"VALUE k 7 3\r\nabc\r\nEND\r\n", 2).unwrap();
        assert_eq!(&set[..], b"set k 7 2 3\r\nabc\r\n");
        assert_eq!(fill(b"k", b"END\r\n", 2), None);
        assert_eq!(fill(b"k", b"VALUE k 7 3\r\nabcd\r\nEND\r\n", 2), None, "a size that does not match");
        assert_eq!(fill(b"k", b"VALUE k 7 3 99\r\nabc\r\nEND\r\n", 2), None, "a gets answer");
        assert_eq!(fill(b"k", b"SERVER_ERROR out of memory\r\n", 2), None);
        assert_eq!(fill(b"k", b"VALUE other 7 3\r\nabc\r\nEND\r\n", 2), None, "another key's answer");
        assert_eq!(fill(b"k", b"VALUE k 7\r\n 3\r\nabc\r\nEND\r\n", 2), None);
        assert_eq!(fill(b"k", b"VALUE k x7 3\r\nabc\r\nEND\r\n", 2), None, "flags that are not a number");
        assert_eq!(fill(b"a b", b"VALUE a b 7 3\r\nabc\r\nEND\r\n", 2), None, "a key that is not a text key");
    }

    #[test]
    fn copies_are_dropped_by_a_line_that_holds_the_key_whole() {
        assert_eq!(&delete_line(b"hot")[..], b"md hot\r\n");
        let line = delete_line(b"x\r\nset injected 0 0 3\r\nabc");
        assert!(line.starts_with(b"md ") && line.ends_with(b" b\r\n"), "{line:?}");
        assert_eq!(line.iter().filter(|&&c| c == b'\n').count(), 1);
    }
}
