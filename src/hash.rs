//! Key hashing: fixed, documented and platform-independent, so that every
//! process on every machine maps a key to the same place.
//!
//! The default is XXH3-64 with the seed [`SEED`]. The twemproxy-compatible
//! functions reproduce nutcracker's (32-bit results, as it computes them).

use serde::{Deserialize, Serialize};

/// The seed of every XXH3 key hash ringmaster computes. Changing it moves every key.
pub const SEED: u64 = 0x7269_6e67_6d61_7374; // "ringmast"

/// XXH3-64 of `key` with [`SEED`].
#[inline]
pub fn xxh3(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key, SEED)
}

/// XXH3-64 of `key` with another seed, for derived hashes (maglev offsets and skips).
#[inline]
pub fn xxh3_seeded(key: &[u8], seed: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key, seed)
}

/// A key hash function as twemproxy names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyHash {
    /// XXH3-64 with ringmaster's fixed seed (the default).
    Xxh3,
    /// twemproxy's `fnv1a_64`: FNV-1a computed in 32 bits with the 64-bit constants truncated.
    #[serde(rename = "fnv1a_64")]
    Fnv1a64,
    /// twemproxy's `fnv1a_32`.
    #[serde(rename = "fnv1a_32")]
    Fnv1a32,
    /// twemproxy's `md5`: the first four bytes of the MD5 digest, little-endian.
    Md5,
}

impl KeyHash {
    /// The name config and twemproxy use.
    pub fn name(self) -> &'static str {
        match self {
            KeyHash::Xxh3 => "xxh3",
            KeyHash::Fnv1a64 => "fnv1a_64",
            KeyHash::Fnv1a32 => "fnv1a_32",
            KeyHash::Md5 => "md5",
        }
    }

    /// The hash of `key`; the 32-bit functions fill the low half.
    #[inline]
    pub fn hash(self, key: &[u8]) -> u64 {
        match self {
            KeyHash::Xxh3 => xxh3(key),
            KeyHash::Fnv1a64 => fnv1a_64_twemproxy(key) as u64,
            KeyHash::Fnv1a32 => fnv1a_32(key) as u64,
            KeyHash::Md5 => md5_u32(key, 0) as u64,
        }
    }
}

/// twemproxy's `hash_fnv1a_64`, byte for byte: 32-bit arithmetic with the 64-bit
/// offset basis and prime truncated, and bytes sign-extended as C's `char` is.
pub fn fnv1a_64_twemproxy(key: &[u8]) -> u32 {
    let mut h: u32 = 0xcbf2_9ce4_8422_2325u64 as u32;
    for &b in key {
        h ^= b as i8 as i32 as u32;
        h = h.wrapping_mul(0x0000_0100_0000_01b3u64 as u32);
    }
    h
}

/// FNV-1a, 32 bits (twemproxy's `hash_fnv1a_32`).
pub fn fnv1a_32(key: &[u8]) -> u32 {
    let mut h: u32 = 2_166_136_261;
    for &b in key {
        h ^= b as i8 as i32 as u32;
        h = h.wrapping_mul(16_777_619);
    }
    h
}

/// Four little-endian bytes of the MD5 digest of `key`, at word `alignment` (0..4),
/// as ketama and twemproxy read them.
pub fn md5_u32(key: &[u8], alignment: usize) -> u32 {
    use md5::{Digest, Md5};
    let d = Md5::digest(key);
    let i = alignment * 4;
    u32::from_le_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]])
}

/// The part of `key` that decides its shard: with a hash tag such as `{}`, the
/// text between the first `{` and the next `}` when it is not empty (as in
/// twemproxy and Redis Cluster); otherwise the whole key.
pub fn hash_tag(key: &[u8], tag: Option<[u8; 2]>) -> &[u8] {
    let Some([open, close]) = tag else { return key };
    let Some(start) = key.iter().position(|&b| b == open) else { return key };
    match key[start + 1..].iter().position(|&b| b == close) {
        Some(len) if len > 0 => &key[start + 1..start + 1 + len],
        _ => key,
    }
}

/// Maps a 64-bit hash uniformly onto `0..n` without a division (Lemire's
/// multiply-shift), which keeps lookups in a few nanoseconds.
#[inline]
pub fn reduce(hash: u64, n: usize) -> usize {
    ((hash as u128 * n as u128) >> 64) as usize
}

/// A strong 64-bit mixer (the SplitMix64 finaliser).
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_reference_values() {
        // FNV-1a 32 of "a" and "foobar" (reference vectors of the FNV authors).
        assert_eq!(fnv1a_32(b"a"), 0xe40c292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9cf968);
        // twemproxy's fnv1a_64 is FNV-1a 32-bit arithmetic with basis 0x84222325
        // and prime 0x000001b3; for the empty key it is the truncated basis.
        assert_eq!(fnv1a_64_twemproxy(b""), 0x84222325);
        let expected = (0x84222325u32 ^ b'a' as u32).wrapping_mul(0x1b3);
        assert_eq!(fnv1a_64_twemproxy(b"a"), expected);
    }

    #[test]
    fn md5_words() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(md5_u32(b"", 0), 0xd98c1dd4);
        assert_eq!(md5_u32(b"", 3), 0x7e42f8ec);
    }

    #[test]
    fn hash_tags() {
        let t = Some(*b"{}");
        assert_eq!(hash_tag(b"user:{42}:profile", t), b"42");
        assert_eq!(hash_tag(b"user:{}:profile", t), b"user:{}:profile");
        assert_eq!(hash_tag(b"user:{42:profile", t), b"user:{42:profile");
        assert_eq!(hash_tag(b"plain", t), b"plain");
        assert_eq!(hash_tag(b"a{b}c", None), b"a{b}c");
    }

    #[test]
    fn xxh3_is_pinned() {
        // Placement must never change across versions or platforms.
        assert_eq!(xxh3(b"user:42"), 0x20c8_2598_6a97_9fd3);
    }

    #[test]
    fn reduce_is_in_range_and_uniform() {
        let mut counts = [0u32; 7];
        for i in 0..70_000u64 {
            counts[reduce(mix64(i), 7)] += 1;
        }
        for c in counts {
            assert!((9_500..10_500).contains(&c), "{counts:?}");
        }
    }
}
