//! A request head from the bytes a client sent: the request line and fields
//! parsed by `httparse`, then the framing decided and checked before any
//! phase reads a value (RFC 9112 sections 6 and 9): Transfer-Encoding with
//! Content-Length refused, Content-Length values that differ refused,
//! Transfer-Encoding other than `chunked` refused (501), a bare CR or a NUL
//! in a field refused, obs-fold refused (httparse's default), and the
//! keep-alive the version and Connection ask for.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Method, Uri, Version};
use std::mem::MaybeUninit;

/// How much of a head is read before it is refused.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_headers: usize,
    pub max_head_bytes: usize,
}

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (no Content-Length, no Transfer-Encoding on a request; HEAD,
    /// 1xx, 204 and 304 answers).
    None,
    Length(u64),
    Chunked,
    /// A response read until the upstream closes the connection.
    UntilClose,
}

/// A parsed and checked response head from an upstream.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: http::StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// Whether the upstream connection may carry another request.
    pub keep_alive: bool,
    pub len: usize,
}

/// A parsed and checked request head.
#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
    /// Bytes of the buffer the head took, its blank line included.
    pub len: usize,
}

/// Why a head is refused, and the status that says so.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("the request head is too large")]
    TooLarge,
    #[error("too many request header fields")]
    TooManyHeaders,
    #[error("a malformed request head: {0}")]
    Malformed(&'static str),
    #[error("a request with both Transfer-Encoding and Content-Length")]
    LengthAndChunked,
    #[error("an invalid or ambiguous Content-Length")]
    BadContentLength,
    #[error("a transfer coding other than chunked")]
    UnsupportedCoding,
}

impl HeadError {
    /// The status a client gets for it.
    pub fn status(&self) -> http::StatusCode {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            HeadError::UnsupportedCoding => http::StatusCode::NOT_IMPLEMENTED,
            _ => http::StatusCode::BAD_REQUEST,
        }
    }
}

/// The head at the start of `buf`: `Ok(None)` while it is incomplete (and
/// within the limits), the head once its blank line has arrived, or why it
/// is refused. (The server reads with [`request_from`], which copies nothing.)
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Option<RequestHead>, HeadError> {
    request_from(&Bytes::copy_from_slice(buf), limits)
}

/// As [`parse_request`], over bytes already shared: the target and the field
/// values are slices of `buf`, not copies (one allocation for a request
/// head, where a copy each took one per field).
pub fn request_from(buf: &Bytes, limits: &Limits) -> Result<Option<RequestHead>, HeadError> {
    let mut stack = [const { MaybeUninit::uninit() }; STACK_FIELDS];
    let mut heap = Vec::new();
    let mut req = httparse::Request::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut req,
        buf,
        slots(&mut stack, &mut heap, limits.max_headers),
    );
    let Some(len) = complete(parsed, buf.len(), limits)? else { return Ok(None) };
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(HeadError::Malformed("an unknown HTTP version")),
    };
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes()).map_err(|_| HeadError::Malformed("a bad method"))?;
    let target = buf.slice_ref(req.path.unwrap_or_default().as_bytes());
    let uri = Uri::from_maybe_shared(target).map_err(|_| HeadError::Malformed("a bad request target"))?;
    let headers = fields(req.headers, |v| HeaderValue::from_maybe_shared(buf.slice_ref(v)))?;
    let framing = framing(&headers, version)?;
    let keep_alive = keep_alive(&headers, version);
    Ok(Some(RequestHead { method, uri, version, headers, framing, keep_alive, len }))
}

/// The response head at the start of `buf`, an answer to a `method`
/// request (RFC 9112 section 6.3): HEAD answers, 1xx, 204 and 304 have no
/// body; Transfer-Encoding wins over a Content-Length, which is then dropped
/// (the RFC's choice for an intermediary that forwards such a message);
/// without either, the body runs until the upstream closes.
pub fn parse_response(buf: &[u8], method: &Method, limits: &Limits) -> Result<Option<ResponseHead>, HeadError> {
    let mut stack = [const { MaybeUninit::uninit() }; STACK_FIELDS];
    let mut heap = Vec::new();
    let mut res = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut res,
        buf,
        slots(&mut stack, &mut heap, limits.max_headers),
    );
    let Some(len) = complete(parsed, buf.len(), limits)? else { return Ok(None) };
    let version = if res.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    let status = http::StatusCode::from_u16(res.code.unwrap_or(0)).map_err(|_| HeadError::Malformed("a bad status code"))?;
    let mut headers = fields(res.headers, HeaderValue::from_bytes)?;
    let bodiless = method == Method::HEAD || status.is_informational() || status == 204 || status == 304;
    let framing = if bodiless {
        Framing::None
    } else if headers.contains_key(TRANSFER_ENCODING) {
        let codings: Vec<&str> = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        let chunked_last = codings.last().is_some_and(|c| c.eq_ignore_ascii_case("chunked"));
        headers.remove(CONTENT_LENGTH);
        if chunked_last {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        match content_length(&headers)? {
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    let keep_alive = framing != Framing::UntilClose && keep_alive(&headers, version);
    Ok(Some(ResponseHead { status, version, headers, framing, keep_alive, len }))
}

/// Field slots on the stack; a limit above this many takes them from the heap.
const STACK_FIELDS: usize = 128;

/// `max` field slots for httparse: on the stack when they fit there.
fn slots<'a, 'b>(
    stack: &'a mut [MaybeUninit<httparse::Header<'b>>; STACK_FIELDS],
    heap: &'a mut Vec<MaybeUninit<httparse::Header<'b>>>,
    max: usize,
) -> &'a mut [MaybeUninit<httparse::Header<'b>>] {
    if max <= STACK_FIELDS {
        return &mut stack[..max];
    }
    heap.resize_with(max, MaybeUninit::uninit);
    heap
}

/// The length of a complete head, `None` while one is arriving within the
/// limits, or why it is refused.
fn complete(parsed: httparse::Result<usize>, buffered: usize, limits: &Limits) -> Result<Option<usize>, HeadError> {
    match parsed {
        Ok(httparse::Status::Complete(n)) if n > limits.max_head_bytes => Err(HeadError::TooLarge),
        Ok(httparse::Status::Complete(n)) => Ok(Some(n)),
        Ok(httparse::Status::Partial) if buffered > limits.max_head_bytes => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooManyHeaders),
        Err(e) => Err(HeadError::Malformed(parse_error(e))),
    }
}

/// The fields httparse found, as a `HeaderMap`, each value made by `value`;
/// a CR, LF or NUL in a value refused.
fn fields<E>(parsed: &[httparse::Header<'_>], value: impl Fn(&[u8]) -> Result<HeaderValue, E>) -> Result<HeaderMap, HeadError> {
    let mut headers = HeaderMap::with_capacity(parsed.len());
    for f in parsed {
        if f.value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(HeadError::Malformed("a CR, LF or NUL in a field value"));
        }
        let name = HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| HeadError::Malformed("a bad field name"))?;
        let value = value(f.value).map_err(|_| HeadError::Malformed("a bad field value"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

fn parse_error(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "a bad field name",
        httparse::Error::HeaderValue => "a bad field value (obs-fold or a control byte)",
        httparse::Error::NewLine => "a bad line ending",
        httparse::Error::Status | httparse::Error::Token => "a bad request line",
        httparse::Error::Version => "an unknown HTTP version",
        httparse::Error::TooManyHeaders => "too many fields",
    }
}

/// The body framing of a request (RFC 9112 section 6.3).
fn framing(h: &HeaderMap, version: Version) -> Result<Framing, HeadError> {
    let has_te = h.contains_key(TRANSFER_ENCODING);
    let length = content_length(h)?;
    match (has_te, length) {
        (true, Some(_)) => Err(HeadError::LengthAndChunked),
        // Transfer-Encoding in an HTTP/1.0 message: its framing is faulty (section 6.1).
        (true, None) if version == Version::HTTP_10 => Err(HeadError::Malformed("Transfer-Encoding in an HTTP/1.0 request")),
        (true, None) => {
            let codings: Vec<String> = h
                .get_all(TRANSFER_ENCODING)
                .iter()
                .flat_map(|v| v.to_str().unwrap_or("\u{0}").split(','))
                .map(|c| c.trim().to_ascii_lowercase())
                .collect();
            match codings.as_slice() {
                [only] if only == "chunked" => Ok(Framing::Chunked),
                // chunked not last (or twice) cannot be framed; other codings are not ours to undo.
                list if list.iter().any(|c| c == "chunked") => Err(HeadError::Malformed("chunked is not the only transfer coding")),
                _ => Err(HeadError::UnsupportedCoding),
            }
        }
        (false, Some(n)) => Ok(Framing::Length(n)),
        (false, None) => Ok(Framing::None),
    }
}

/// The Content-Length, when every field and list member says the same digits.
fn content_length(h: &HeaderMap) -> Result<Option<u64>, HeadError> {
    let mut found: Option<u64> = None;
    for v in h.get_all(CONTENT_LENGTH) {
        for part in v.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Err(HeadError::BadContentLength);
            }
            let n: u64 = std::str::from_utf8(part).ok().and_then(|s| s.parse().ok()).ok_or(HeadError::BadContentLength)?;
            match found {
                Some(m) if m != n => return Err(HeadError::BadContentLength),
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

/// Whether the connection stays open after this exchange, as the client asks.
fn keep_alive(h: &HeaderMap, version: Version) -> bool {
    let has = |token: &str| {
        h.get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    match version {
        Version::HTTP_10 => has("keep-alive") && !has("close"),
        _ => !has("close"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits { max_headers: 16, max_head_bytes: 1024 };

    fn parse(raw: &str) -> Result<Option<RequestHead>, HeadError> {
        parse_request(raw.as_bytes(), &L)
    }

    #[test]
    fn a_plain_head_is_parsed_with_its_framing_and_keep_alive() {
        let h = parse("GET /a?b=1 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\nrest").unwrap().unwrap();
        assert_eq!((h.method, h.uri.to_string(), h.version), (Method::GET, "/a?b=1".to_string(), Version::HTTP_11));
        assert_eq!((h.framing, h.keep_alive, h.len), (Framing::None, true, 45));
        assert_eq!(h.headers["host"], "x");
        let h = parse("POST / HTTP/1.0\r\nContent-Length: 5\r\n\r\n").unwrap().unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(5), false));
        let h = parse("POST / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n").unwrap().unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(5), true), "the same length repeated is one length");
        let h = parse("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\nConnection: Close\r\n\r\n").unwrap().unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, false));
        assert!(
            parse("GET http://a.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n").unwrap().unwrap().uri.authority().is_some(),
            "absolute form"
        );
    }

    #[test]
    fn field_limits_above_the_stack_slots_are_kept_exactly() {
        let head = |n: usize| {
            let mut h = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..n {
                h.extend_from_slice(format!("x-f{i}: {i}\r\n").as_bytes());
            }
            h.extend_from_slice(b"content-length: 0\r\n\r\n");
            h
        };
        let limits = Limits { max_headers: 100, max_head_bytes: 64 * 1024 };
        let ok = parse_response(&head(99), &Method::GET, &limits).unwrap().unwrap();
        assert_eq!(ok.headers.len(), 100, "99 fields and the length: at the limit of 100");
        assert_eq!(parse_response(&head(100), &Method::GET, &limits).unwrap_err(), HeadError::TooManyHeaders);
        let small = Limits { max_headers: 8, max_head_bytes: 64 * 1024 };
        assert_eq!(parse_response(&head(8), &Method::GET, &small).unwrap_err(), HeadError::TooManyHeaders);
    }

    #[test]
    fn an_incomplete_head_waits_within_the_limit_and_is_refused_past_it() {
        assert!(parse("GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(1100));
        assert_eq!(parse(&long).unwrap_err(), HeadError::TooLarge);
        let many: String = (0..17).map(|i| format!("X{i}: 1\r\n")).collect();
        let err = parse(&format!("GET / HTTP/1.1\r\n{many}\r\n")).unwrap_err();
        assert_eq!((err.status().as_u16(), err), (431, HeadError::TooManyHeaders));
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for (raw, why) in [
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", HeadError::LengthAndChunked),
            ("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", HeadError::BadContentLength),
            ("POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n", HeadError::BadContentLength),
            ("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", HeadError::BadContentLength),
            ("POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\n", HeadError::BadContentLength),
            ("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", HeadError::BadContentLength),
            ("POST / HTTP/1.1\r\nContent-Length: \r\n\r\n", HeadError::BadContentLength),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", HeadError::UnsupportedCoding),
        ] {
            assert_eq!(parse(raw).unwrap_err(), why, "{raw:?}");
        }
        for raw in [
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let err = parse(raw).unwrap_err();
            assert_eq!(err.status().as_u16(), 400, "{raw:?}: {err}");
        }
        assert_eq!(HeadError::UnsupportedCoding.status().as_u16(), 501);
    }

    #[test]
    fn a_responses_framing_follows_the_request_method_and_status() {
        let l = &L;
        let parse = |raw: &str, m: Method| parse_response(raw.as_bytes(), &m, l).unwrap().unwrap();
        let r = parse("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", Method::GET);
        assert_eq!((r.status.as_u16(), r.framing, r.keep_alive), (200, Framing::Length(12), true));
        assert_eq!(parse("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", Method::HEAD).framing, Framing::None);
        for code in ["100 Continue", "103 Early Hints", "204 No Content", "304 Not Modified"] {
            assert_eq!(parse(&format!("HTTP/1.1 {code}\r\nContent-Length: 7\r\n\r\n"), Method::GET).framing, Framing::None, "{code}");
        }
        let r = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n", Method::GET);
        assert_eq!(r.framing, Framing::Chunked);
        assert!(!r.headers.contains_key(CONTENT_LENGTH), "the Content-Length beside Transfer-Encoding is dropped");
        let r = parse("HTTP/1.1 200 OK\r\nServer: x\r\n\r\n", Method::GET);
        assert_eq!((r.framing, r.keep_alive), (Framing::UntilClose, false));
        let r = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", Method::GET);
        assert_eq!((r.framing, r.keep_alive), (Framing::UntilClose, false));
        assert!(!parse("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", Method::GET).keep_alive);
        assert!(!parse("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n", Method::GET).keep_alive);
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", &Method::GET, l).is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", &Method::GET, l).is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Le", &Method::GET, l).unwrap().is_none());
    }

    #[test]
    fn hostile_bytes_in_a_head_are_refused() {
        for raw in [
            "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\0b\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\r\n  folded\r\n\r\n",
            "GET / HTTP/1.1\r\nX : a\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
            "G\x01T / HTTP/1.1\r\n\r\n",
        ] {
            let err = parse(raw).unwrap_err();
            assert_eq!(err.status().as_u16(), 400, "{raw:?}: {err}");
        }
    }
}
