//! The chunked transfer coding (RFC 9112 section 7.1), decoded exactly and
//! incrementally: bytes go in as they arrive, split anywhere, and the body's
//! bytes come out unchanged, whatever the chunking. Strict where leniency is
//! how requests are smuggled: every line ends in CR LF (no bare LF), a size
//! is 1 to 16 hex digits, extensions and trailers are bounded and hold no
//! control bytes, and the data of each chunk is followed by CR LF.

/// How much the framing itself may take (the data is the caller's to bound).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// A size line with its extensions, CR LF included.
    pub max_line: usize,
    /// Every trailer line together.
    pub max_trailers: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_line: 4096, max_trailers: 8192 }
    }
}

/// Why a chunked body is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("a chunk size that is not 1 to 16 hex digits")]
    BadSize,
    #[error("a chunk size line over the limit")]
    LineTooLong,
    #[error("a bad chunk extension")]
    BadExtension,
    #[error("a line not ended by CR LF")]
    BadLineEnd,
    #[error("chunk data not followed by CR LF")]
    BadDataEnd,
    #[error("a bad trailer field")]
    BadTrailer,
    #[error("trailer fields over the limit")]
    TrailersTooLarge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Hex digits of a size (`digits` so far).
    Size {
        digits: u8,
    },
    /// After the size: whitespace, then (once a `;` came) extensions, until CR.
    Extension {
        named: bool,
    },
    /// The LF after a size line's CR.
    SizeLf,
    /// `left` bytes of chunk data to go.
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer line, until CR.
    Trailer,
    TrailerLf {
        last: bool,
    },
    Done,
}

/// An incremental decoder of one chunked body.
#[derive(Debug)]
pub struct Decoder {
    state: State,
    limits: Limits,
    size: u64,
    /// Bytes of the current size line, or of the trailers so far.
    line: usize,
    /// The current trailer line, checked once whole.
    trailer: Vec<u8>,
    trailers: Vec<u8>,
}

impl Decoder {
    pub fn new(limits: Limits) -> Decoder {
        Decoder { state: State::Size { digits: 0 }, limits, size: 0, line: 0, trailer: Vec::new(), trailers: Vec::new() }
    }

    /// Whether the last chunk and the trailers have been read.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// The trailer fields (each `name: value\r\n`), once done.
    pub fn trailers(&self) -> &[u8] {
        &self.trailers
    }

    /// Decodes what `input` holds: the body's bytes are appended to `out`.
    /// Returns how many bytes of `input` were used (fewer than all only once
    /// done: what follows belongs to the next message).
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Done => return Ok(i),
                State::Data { left } => {
                    let n = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    out.extend_from_slice(&input[i..i + n]);
                    i += n;
                    let left = left - n as u64;
                    self.state = if left == 0 { State::DataCr } else { State::Data { left } };
                    continue;
                }
                State::Size { digits } => {
                    self.count_line()?;
                    match (b as char).to_digit(16) {
                        Some(d) if digits < 16 => {
                            self.size = self.size << 4 | u64::from(d);
                            self.state = State::Size { digits: digits + 1 };
                        }
                        Some(_) => return Err(ChunkError::BadSize),
                        None if digits == 0 => return Err(ChunkError::BadSize),
                        None => {
                            self.state = State::Extension { named: false };
                            continue;
                        }
                    }
                }
                State::Extension { named } => {
                    self.count_line()?;
                    match b {
                        b'\r' => self.state = State::SizeLf,
                        b'\n' => return Err(ChunkError::BadLineEnd),
                        // Only whitespace (BWS) between the size and the first `;`.
                        b'\t' | b' ' => {}
                        b';' => self.state = State::Extension { named: true },
                        // Extensions are skipped, their bytes checked: visible text.
                        b'!'..=b'~' if named => {}
                        _ => return Err(ChunkError::BadExtension),
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadLineEnd);
                    }
                    self.line = 0;
                    self.state = if self.size == 0 { State::TrailerStart } else { State::Data { left: self.size } };
                    self.size = 0;
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError::BadDataEnd);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadDataEnd);
                    }
                    self.state = State::Size { digits: 0 };
                }
                State::TrailerStart => {
                    if b == b'\r' {
                        self.state = State::TrailerLf { last: true };
                    } else if b == b'\n' {
                        return Err(ChunkError::BadLineEnd);
                    } else {
                        self.trailer.clear();
                        self.state = State::Trailer;
                        continue;
                    }
                }
                State::Trailer => {
                    self.line += 1;
                    if self.line > self.limits.max_trailers {
                        return Err(ChunkError::TrailersTooLarge);
                    }
                    match b {
                        b'\r' => self.state = State::TrailerLf { last: false },
                        b'\n' | 0 => return Err(ChunkError::BadTrailer),
                        _ => self.trailer.push(b),
                    }
                }
                State::TrailerLf { last } => {
                    if b != b'\n' {
                        return Err(ChunkError::BadLineEnd);
                    }
                    if last {
                        self.state = State::Done;
                    } else {
                        self.check_trailer()?;
                        self.state = State::TrailerStart;
                    }
                }
            }
            i += 1;
        }
        Ok(i)
    }

    fn count_line(&mut self) -> Result<(), ChunkError> {
        self.line += 1;
        if self.line > self.limits.max_line {
            return Err(ChunkError::LineTooLong);
        }
        Ok(())
    }

    /// A trailer line is `name: value`, the name a token (obs-fold refused).
    fn check_trailer(&mut self) -> Result<(), ChunkError> {
        let line = std::mem::take(&mut self.trailer);
        let colon = line.iter().position(|&b| b == b':').ok_or(ChunkError::BadTrailer)?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if http::HeaderName::from_bytes(name).is_err() || http::HeaderValue::from_bytes(value.trim_ascii()).is_err() {
            return Err(ChunkError::BadTrailer);
        }
        self.trailers.extend_from_slice(&line);
        self.trailers.extend_from_slice(b"\r\n");
        Ok(())
    }
}

/// `body` in the chunked coding with chunks of the given sizes (the rest in
/// one last chunk), for tests and for re-framing.
pub fn encode(body: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 16 * (sizes.len() + 2));
    let mut rest = body;
    for &s in sizes.iter().chain(std::iter::once(&usize::MAX)) {
        let n = s.min(rest.len());
        if n > 0 {
            out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            out.extend_from_slice(&rest[..n]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[n..];
        }
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(wire: &[u8]) -> Result<(Vec<u8>, usize, Vec<u8>), ChunkError> {
        let mut d = Decoder::new(Limits::default());
        let mut out = Vec::new();
        let used = d.decode(wire, &mut out)?;
        assert!(d.done(), "not done after {wire:?}");
        Ok((out, used, d.trailers().to_vec()))
    }

    #[test]
    fn a_body_with_extensions_and_trailers_is_decoded_and_what_follows_left() {
        let wire = b"5;name=\"v\" ; x\r\nhello\r\n6\r\n world\r\n0\r\nExpires: never\r\nX-Sum: 7\r\n\r\nGET / HTTP/1.1\r\n";
        let (body, used, trailers) = decode_all(wire).unwrap();
        assert_eq!(body, b"hello world");
        assert_eq!(&wire[used..], b"GET / HTTP/1.1\r\n");
        assert_eq!(trailers, b"Expires: never\r\nX-Sum: 7\r\n");
        assert_eq!(decode_all(b"A\r\n0123456789\r\n0\r\n\r\n").unwrap().0, b"0123456789", "upper-case hex");
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        for (wire, why) in [
            (&b"5\nhello\r\n0\r\n\r\n"[..], ChunkError::BadLineEnd),
            (b"5\r\nhello\n0\r\n\r\n", ChunkError::BadDataEnd),
            (b"5\r\nhelloX\r\n0\r\n\r\n", ChunkError::BadDataEnd),
            (b"-5\r\nhello\r\n0\r\n\r\n", ChunkError::BadSize),
            (b"0x5\r\nhello\r\n0\r\n\r\n", ChunkError::BadExtension),
            (b"\r\nhello\r\n0\r\n\r\n", ChunkError::BadSize),
            (b" 5\r\nhello\r\n0\r\n\r\n", ChunkError::BadSize),
            (b"10000000000000000\r\n", ChunkError::BadSize),
            (b"5;\x01\r\nhello\r\n0\r\n\r\n", ChunkError::BadExtension),
            (b"0\r\nX: a\nb\r\n\r\n", ChunkError::BadTrailer),
            (b"0\r\nno colon\r\n\r\n", ChunkError::BadTrailer),
            (b"0\r\n folded: x\r\n\r\n", ChunkError::BadTrailer),
            (b"0\r\n\n", ChunkError::BadLineEnd),
        ] {
            let mut d = Decoder::new(Limits::default());
            assert_eq!(d.decode(wire, &mut Vec::new()), Err(why), "{:?}", String::from_utf8_lossy(wire));
        }
        let long = format!("5;{}\r\n", "x".repeat(5000));
        assert_eq!(Decoder::new(Limits::default()).decode(long.as_bytes(), &mut Vec::new()), Err(ChunkError::LineTooLong));
        let many = format!("0\r\n{}", "X: y\r\n".repeat(2000));
        assert_eq!(Decoder::new(Limits::default()).decode(many.as_bytes(), &mut Vec::new()), Err(ChunkError::TrailersTooLarge));
    }

    proptest! {
        /// Any chunking of any body, fed in any pieces, decodes to the body
        /// byte for byte and stops exactly at its end.
        #[test]
        fn any_framing_in_any_pieces_gives_the_body(
            body in proptest::collection::vec(any::<u8>(), 0..3000),
            sizes in proptest::collection::vec(1usize..700, 0..8),
            cuts in proptest::collection::vec(1usize..64, 1..40),
        ) {
            let mut wire = encode(&body, &sizes);
            let end = wire.len();
            wire.extend_from_slice(b"NEXT");
            let mut d = Decoder::new(Limits::default());
            let (mut out, mut at, mut k) = (Vec::new(), 0, 0);
            while !d.done() {
                let piece = cuts[k % cuts.len()];
                k += 1;
                let upto = (at + piece).min(wire.len());
                at += d.decode(&wire[at..upto], &mut out).unwrap();
                prop_assert!(at <= end);
            }
            prop_assert_eq!(out, body);
            prop_assert_eq!(at, end);
        }
    }
}
