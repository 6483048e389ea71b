//! A stored response's header fields, kept as one byte block rendered as they
//! go on the wire (`name: value\r\n` each), so that a stored object costs one
//! allocation for its head and a hit writes it without building a header map.
//! What each answer sets itself (Content-Length, Age, the cache's own fields)
//! is left out; Date is kept at the block's end, outside the rendered lines,
//! because it goes in the answer's own fields (the writer adds its own Date to
//! an answer that has none).

use crate::body::Body;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Response;

/// Fields a phase after the cache may set on an answer, or that frame it: a
/// block holding one of them is served through a header map instead, so that
/// a set replaces the stored field rather than adding a second.
fn set_later(name: &HeaderName) -> bool {
    let n = name.as_str();
    matches!(*name, header::STRICT_TRANSPORT_SECURITY | header::RETRY_AFTER | header::CONNECTION | header::TRANSFER_ENCODING)
        || n.starts_with("x-ratelimit")
        || n.starts_with("ratelimit")
        || n == "keep-alive"
}

/// Fields every answer sets for itself, never stored.
fn per_answer(name: &HeaderName) -> bool {
    matches!(*name, header::CONTENT_LENGTH | header::AGE | header::DATE) || name == "x-cache" || name == "cache-status"
}

/// A stored response's fields.
pub struct Fields {
    /// `name: value\r\n` for each stored field but Date, in order, then
    /// Date's value (from `date_at`) when the response had one.
    block: Bytes,
    date_at: u32,
    /// No field in the block is one a later phase may set (see `set_later`).
    plain: bool,
}

impl Fields {
    /// The fields of `h` worth storing. The block is a copy: it never keeps
    /// alive the upstream read buffer `h`'s values may point into.
    pub fn from_map(h: &HeaderMap) -> Fields {
        let mut block = Vec::with_capacity(h.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum());
        let mut plain = true;
        for (name, value) in h {
            if per_answer(name) {
                continue;
            }
            plain &= !set_later(name);
            block.extend_from_slice(name.as_str().as_bytes());
            block.extend_from_slice(b": ");
            block.extend_from_slice(value.as_bytes());
            block.extend_from_slice(b"\r\n");
        }
        let date_at = block.len() as u32;
        if let Some(d) = h.get(header::DATE) {
            block.extend_from_slice(d.as_bytes());
        }
        Fields { block: Bytes::from(block), date_at, plain }
    }

    /// The rendered field lines (Date is not among them).
    pub fn lines(&self) -> Bytes {
        self.block.slice(..self.date_at as usize)
    }

    pub fn date(&self) -> Option<HeaderValue> {
        Some(shared_value(&self.block, self.date_bytes()?))
    }

    fn date_bytes(&self) -> Option<&[u8]> {
        Some(&self.block[self.date_at as usize..]).filter(|d| !d.is_empty())
    }

    /// Whether the block can be written after an answer's own fields as it is.
    pub fn plain(&self) -> bool {
        self.plain
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.block.len()
    }

    /// Each stored field (Date last), as name and value bytes.
    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        lines(&self.block[..self.date_at as usize]).chain(self.date_bytes().map(|d| (&b"date"[..], d)))
    }

    /// The first value of `name`.
    pub fn get(&self, name: &HeaderName) -> Option<HeaderValue> {
        self.each().find(|(n, _)| *n == name.as_str().as_bytes()).map(|(_, v)| shared_value(&self.block, v))
    }

    /// Every stored field as a header map (values share the block).
    pub fn to_map(&self) -> HeaderMap {
        let mut m = HeaderMap::new();
        append_lines(&self.lines(), &mut m);
        if let Some(d) = self.date() {
            m.append(header::DATE, d);
        }
        m
    }
}

/// The fields of a rendered `block` appended to `m`, their values sharing it.
fn append_lines(block: &Bytes, m: &mut HeaderMap) {
    for (n, v) in lines(block) {
        m.append(HeaderName::from_bytes(n).expect("stored from a valid name"), shared_value(block, v));
    }
}

/// `v` (a slice of `block`) as a value sharing its bytes.
fn shared_value(block: &Bytes, v: &[u8]) -> HeaderValue {
    HeaderValue::from_maybe_shared(block.slice_ref(v)).expect("stored from a valid value")
}

/// `resp` with a stored body's rendered fields moved into its header map,
/// for a writer other than our HTTP/1 loop (hyper's HTTP/1 and HTTP/2).
pub fn spread(resp: Response<Body>) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    let body = match body {
        Body::Stored { fields, data } => {
            append_lines(&fields, &mut parts.headers);
            Body::Full(data)
        }
        other => other,
    };
    Response::from_parts(parts, body)
}

/// The name and value of each line of a rendered block.
fn lines(block: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    block.split(|&b| b == b'\n').filter_map(|line| line.strip_suffix(b"\r")).filter_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        Some((&line[..colon], &line[colon + 2..]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        m
    }

    #[test]
    fn fields_round_trip_without_what_each_answer_sets() {
        let h = map(&[
            ("content-type", "text/plain"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("content-length", "5"),
            ("age", "3"),
            ("x-cache", "MISS"),
            ("date", "Mon, 07 Dec 2026 09:00:00 GMT"),
            ("etag", "\"v1\""),
            ("x-empty", ""),
        ]);
        let f = Fields::from_map(&h);
        assert_eq!(&f.lines()[..], b"content-type: text/plain\r\nset-cookie: a=1\r\nset-cookie: b=2\r\netag: \"v1\"\r\nx-empty: \r\n");
        assert_eq!(f.date().unwrap(), "Mon, 07 Dec 2026 09:00:00 GMT");
        assert!(f.plain());
        assert_eq!(f.get(&header::ETAG).unwrap(), "\"v1\"");
        assert_eq!(f.get(&header::DATE).unwrap(), "Mon, 07 Dec 2026 09:00:00 GMT");
        assert_eq!(f.get(&header::LAST_MODIFIED), None);
        let back = f.to_map();
        let want = map(&[
            ("content-type", "text/plain"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("etag", "\"v1\""),
            ("x-empty", ""),
            ("date", "Mon, 07 Dec 2026 09:00:00 GMT"),
        ]);
        assert_eq!(back, want);
    }

    #[test]
    fn a_field_a_later_phase_sets_makes_the_block_not_plain() {
        for name in ["strict-transport-security", "x-ratelimit-remaining", "ratelimit-policy", "retry-after", "connection"] {
            assert!(!Fields::from_map(&map(&[("content-type", "a"), (name, "1")])).plain(), "{name}");
        }
    }

    #[test]
    fn a_value_with_a_colon_and_spaces_comes_back_whole() {
        let f = Fields::from_map(&map(&[("location", "http://a.example:8080/p?q= 1"), ("link", "</s>; rel=preload")]));
        assert_eq!(f.get(&header::LOCATION).unwrap(), "http://a.example:8080/p?q= 1");
        assert_eq!(f.to_map()["link"], "</s>; rel=preload");
    }
}
