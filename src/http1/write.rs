//! Heads and chunks as bytes on the wire, written into one buffer so that a
//! head (and a first body chunk) go out in one write: the request head a
//! forward sends upstream, the response head a client gets, and the chunk
//! framing of a streamed body. Field names and values are `http` types, so
//! nothing written here can hold a CR, LF or NUL.

use http::{HeaderMap, Method, StatusCode, Uri, Version};

/// `METHOD target HTTP/1.1` and the fields, then the blank line. The target
/// is origin-form (path and query) unless the method is CONNECT
/// (authority-form) or the request is `OPTIONS *`.
pub fn request_head(out: &mut Vec<u8>, method: &Method, uri: &Uri, headers: &HeaderMap) {
    request_head_with(out, method, uri, headers, b"");
}

/// As [`request_head`], with `extra` field lines (each ending in CR LF, such
/// as the framing the proxy chose) after the request's own fields.
pub fn request_head_with(out: &mut Vec<u8>, method: &Method, uri: &Uri, headers: &HeaderMap, extra: &[u8]) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    match (method, uri.authority()) {
        (&Method::CONNECT, Some(a)) => out.extend_from_slice(a.as_str().as_bytes()),
        _ => out.extend_from_slice(uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes()),
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    fields(out, headers, extra);
}

/// `HTTP/1.x code reason` and the fields, then the blank line.
pub fn response_head(out: &mut Vec<u8>, version: Version, status: StatusCode, headers: &HeaderMap) {
    response_head_with(out, version, status, headers, b"", b"");
}

/// As [`response_head`], with field lines (each ending in CR LF) around the
/// answer's own: `rendered` before them (a cache hit's stored fields, as they
/// were stored) and `extra` after (the framing, Connection and Date the
/// server chose).
pub fn response_head_with(out: &mut Vec<u8>, version: Version, status: StatusCode, headers: &HeaderMap, rendered: &[u8], extra: &[u8]) {
    out.extend_from_slice(if version == Version::HTTP_10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(rendered);
    fields(out, headers, extra);
}

/// How many bytes [`response_head_with`] writes, at most, for these fields
/// (`extra` bytes of the server's own), so the buffer is sized once.
pub fn head_size(headers: &HeaderMap, rendered: &[u8], extra: usize) -> usize {
    let fields: usize = headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    // "HTTP/1.1 " and the longest status line's rest, the blank line.
    48 + rendered.len() + fields + extra + 2
}

fn fields(out: &mut Vec<u8>, headers: &HeaderMap, extra: &[u8]) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(extra);
    out.extend_from_slice(b"\r\n");
}

/// The framing before a chunk of `len` bytes (its size line); the data and
/// then [`CHUNK_END`] follow. A zero `len` writes nothing: an empty chunk
/// would end the body.
pub fn chunk_start(out: &mut Vec<u8>, len: usize) {
    if len > 0 {
        out.extend_from_slice(format!("{len:x}\r\n").as_bytes());
    }
}

/// What follows each chunk's data.
pub const CHUNK_END: &[u8] = b"\r\n";

/// The last chunk and the trailer fields (`trailers` as the decoder keeps
/// them: each `name: value\r\n`), then the blank line.
pub fn last_chunk(out: &mut Vec<u8>, trailers: &[u8]) {
    out.extend_from_slice(b"0\r\n");
    out.extend_from_slice(trailers);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::super::chunked::{Decoder, Limits};
    use super::super::head::{parse_request, parse_response, Framing, Limits as HeadLimits};
    use super::*;
    use proptest::prelude::*;

    const L: HeadLimits = HeadLimits { max_headers: 16, max_head_bytes: 4096 };

    #[test]
    fn a_written_request_head_parses_back_to_itself() {
        let mut h = HeaderMap::new();
        h.insert("host", "a.example".parse().unwrap());
        h.append("x-many", "1".parse().unwrap());
        h.append("x-many", "2".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        let mut out = Vec::new();
        request_head(&mut out, &Method::POST, &"http://a.example/p?q=1".parse().unwrap(), &h);
        assert!(out.starts_with(b"POST /p?q=1 HTTP/1.1\r\n"), "{}", String::from_utf8_lossy(&out));
        let back = parse_request(&out, &L).unwrap().unwrap();
        assert_eq!(
            (back.method, back.uri.to_string(), back.framing, back.len),
            (Method::POST, "/p?q=1".to_string(), Framing::Chunked, out.len())
        );
        assert_eq!(back.headers, h);
        let mut out = Vec::new();
        request_head(&mut out, &Method::CONNECT, &"a.example:443".parse().unwrap(), &HeaderMap::new());
        assert_eq!(out, b"CONNECT a.example:443 HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn a_written_response_and_chunked_body_read_back() {
        let mut h = HeaderMap::new();
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        let mut out = Vec::new();
        response_head(&mut out, Version::HTTP_11, StatusCode::NOT_FOUND, &h);
        assert!(out.starts_with(b"HTTP/1.1 404 Not Found\r\n"));
        let head = parse_response(&out, &Method::GET, &L).unwrap().unwrap();
        assert_eq!((head.status, head.framing), (StatusCode::NOT_FOUND, Framing::Chunked));
        let start = out.len();
        for piece in [&b"hello"[..], b"", b" world"] {
            chunk_start(&mut out, piece.len());
            if !piece.is_empty() {
                out.extend_from_slice(piece);
                out.extend_from_slice(CHUNK_END);
            }
        }
        last_chunk(&mut out, b"X-Sum: 1\r\n");
        let mut d = Decoder::new(Limits::default());
        let mut body = Vec::new();
        assert_eq!(d.decode(&out[start..], &mut body).unwrap(), out.len() - start);
        assert!(d.done());
        assert_eq!((body.as_slice(), d.trailers()), (&b"hello world"[..], &b"X-Sum: 1\r\n"[..]));
    }

    proptest! {
        /// Any head made of valid parts is written and parsed back to the same
        /// method, target and fields (names lower-cased by `http`, values kept
        /// byte for byte, repeats in order).
        #[test]
        fn any_valid_request_head_round_trips(
            method in prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PURGE"]),
            path in "(/[a-zA-Z0-9._~%-]{0,12}){1,4}",
            query in proptest::option::of("[a-zA-Z0-9=&%._-]{0,20}"),
            fields in proptest::collection::vec(("[a-zA-Z][a-zA-Z0-9-]{0,15}", "[!-~]([ !-~]{0,30}[!-~])?"), 0..12),
        ) {
            let target = match &query { Some(q) => format!("{path}?{q}"), None => path.clone() };
            let mut h = HeaderMap::new();
            for (n, v) in &fields {
                h.append(http::HeaderName::from_bytes(n.as_bytes()).unwrap(), v.parse().unwrap());
            }
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let mut out = Vec::new();
            request_head(&mut out, &method, &target.parse().unwrap(), &h);
            let back = parse_request(&out, &HeadLimits { max_headers: 16, max_head_bytes: 8192 }).unwrap().unwrap();
            prop_assert_eq!(back.method, method);
            prop_assert_eq!(back.uri.to_string(), target);
            prop_assert_eq!(back.headers, h);
            prop_assert_eq!(back.len, out.len());
        }
    }
}
