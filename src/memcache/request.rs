//! Parse: the ambassador's reading of client commands, text and meta protocol,
//! framed and checked the way memcached 1.6 frames and checks them, so that a
//! client sees the same answer to a bad line through ringmaster as from
//! memcached itself and the connection stays in step.
//!
//! Only what framing and routing need is checked here (the command's token
//! count, key length, a storage command's byte count, value size); numbers a
//! server interprets (flags, exptime, deltas, meta flags) are left for the
//! server to judge, and its answer goes back unchanged.

use super::validate::{self, Refusal, MAX_GET_LINE, MAX_LINE};
use bytes::{Bytes, BytesMut};
use std::ops::Range;

pub use super::validate::MAX_KEY;
/// memcached's token limit per command line (the rest is one last token).
const MAX_TOKENS: usize = 24;
/// Meta commands take at most this many tokens (memcached's MFLAG_MAX_OPT_LENGTH).
const MAX_META_TOKENS: usize = 20;

/// What a command does, as far as routing and answering go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// get, gets, gat, gats: `cas` asks for cas uniques, `touch` carries an exptime first.
    Get {
        cas: bool,
        touch: bool,
    },
    /// set, add, replace, append, prepend, cas: a line and a data block.
    Store,
    Delete,
    /// incr, decr.
    Arith,
    Touch,
    FlushAll,
    Version,
    Verbosity,
    Quit,
    Stats,
    /// mg, ms, md, ma, me: one key, flags passed through.
    MetaGet,
    MetaSet,
    MetaDelete,
    MetaArith,
    MetaDebug,
    /// mn: answered in order by the ambassador itself.
    MetaNoop,
}

impl Verb {
    /// The index of its name in `service::COMMANDS`.
    pub fn index(self) -> usize {
        match self {
            Verb::Get { .. } => 0,
            Verb::Store => 1,
            Verb::Delete => 2,
            Verb::Arith => 3,
            Verb::Touch => 4,
            Verb::FlushAll => 5,
            Verb::Version => 6,
            Verb::Verbosity => 7,
            Verb::Quit => 8,
            Verb::Stats => 9,
            Verb::MetaGet => 10,
            Verb::MetaSet => 11,
            Verb::MetaDelete => 12,
            Verb::MetaArith => 13,
            Verb::MetaDebug => 14,
            Verb::MetaNoop => 15,
        }
    }
}

/// One framed command.
#[derive(Debug, Clone)]
pub struct Command {
    pub verb: Verb,
    /// The line (without its end) and, for storage commands, the data block with its `\r\n`.
    pub raw: Bytes,
    /// The tokens of the line, as ranges into `raw` (all of them, however many).
    pub tokens: Vec<Range<usize>>,
    /// `noreply` (text) or `q` (meta): the client wants no nominal answer.
    pub quiet: bool,
    /// The bytes to send to a server: `raw` without `noreply`, meta `q`, `P`
    /// and `L` tokens (servers always answer, so their connections stay in step),
    /// with `\r\n` line ends.
    pub wire: Bytes,
    /// For `cas`: the plain `set` the other replicas get once the cas succeeded.
    pub as_set: Option<Bytes>,
    /// A meta key sent in base64 (`b`), decoded and checked.
    pub decoded: Option<Bytes>,
}

impl Command {
    pub fn token(&self, i: usize) -> &[u8] {
        &self.raw[self.tokens[i].clone()]
    }

    /// The key that places a single-key command: the first key, decoded for a
    /// meta command with the `b` (base64) flag.
    pub fn key(&self) -> &[u8] {
        match &self.decoded {
            Some(k) => k,
            None => self.token(1),
        }
    }

    /// The keys of a get-family command, as token indexes.
    pub fn get_keys(&self) -> Range<usize> {
        match self.verb {
            Verb::Get { touch: true, .. } => 2..self.tokens.len(),
            _ => 1..self.tokens.len(),
        }
    }
}

/// What the parser made of the front of the buffer.
#[derive(Debug)]
pub enum Parsed {
    Command(Box<Command>),
    /// Answered here, as memcached would (nothing when the client said noreply).
    Answer(Option<&'static str>),
    /// Answered (nothing when empty), and the connection closes: the stream
    /// cannot be framed any more, or it is another protocol.
    Close(&'static str),
}

pub const ERROR: &str = "ERROR\r\n";
pub const END: &str = "END\r\n";
pub const BAD_FORMAT: &str = "CLIENT_ERROR bad command line format\r\n";
pub const BAD_CHUNK: &str = "CLIENT_ERROR bad data chunk\r\n";
pub const TOO_LARGE: &str = "SERVER_ERROR object too large for cache\r\n";
const BAD_EXPTIME: &str = "CLIENT_ERROR invalid exptime argument\r\n";
const BAD_DELETE: &str = "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n";
const FLAGS_TOO_LONG: &str = "CLIENT_ERROR options flags too long\r\n";
const MG_FLAGS_TOO_LONG: &str = "CLIENT_ERROR options flags are too long\r\n";
pub const LINE_TOO_LONG: &str = "CLIENT_ERROR line too long\r\n";

/// Frames commands out of a client's byte stream.
pub struct Parser {
    /// Values above this get memcached's "object too large" and are skipped.
    pub max_value: usize,
    /// Bytes still to discard: the data block of a refused storage command.
    skip: usize,
}

impl Parser {
    pub fn new(max_value: usize) -> Parser {
        Parser { max_value, skip: 0 }
    }

    /// The next command or answer at the front of `buf`, consuming it; `None`
    /// when more bytes are needed.
    pub fn next(&mut self, buf: &mut BytesMut) -> Option<Parsed> {
        if self.skip > 0 {
            let n = self.skip.min(buf.len());
            let _ = buf.split_to(n);
            self.skip -= n;
            if self.skip > 0 {
                return None;
            }
        }
        let limit = if starts_get(buf) { MAX_GET_LINE } else { MAX_LINE };
        let Some(nl) = memchr(b'\n', buf) else {
            return (buf.len() > limit).then_some(Parsed::Close(LINE_TOO_LONG));
        };
        // The same limit whether or not the line's end came in the same read.
        if nl > limit {
            return Some(Parsed::Close(LINE_TOO_LONG));
        }
        let end = if nl > 0 && buf[nl - 1] == b'\r' { nl - 1 } else { nl };
        let tokens = tokenize(&buf[..end]);
        if let Err(why) = validate::line(&buf[..end]) {
            return Some(self.refuse(buf, end, nl, &tokens, why));
        }
        match self.frame(buf, end, nl, tokens) {
            Step::Need => None,
            Step::Done(p) => Some(p),
        }
    }

    /// Decides what the line `buf[..end]` (its `\n` at `nl`) is.
    fn frame(&mut self, buf: &mut BytesMut, end: usize, nl: usize, tokens: Vec<Range<usize>>) -> Step {
        let line = &buf[..end];
        let n = tokens.len().min(MAX_TOKENS - 1) + 1; // memcached's count, with its terminal token
        let word = tokens.first().map(|t| &line[t.clone()]).unwrap_or(b"");
        if tokens.is_empty() || word.len() < 2 {
            return self.answer(buf, nl, Some(ERROR));
        }
        let noreply = n > 2 && tokens.get(n - 2).is_some_and(|t| &line[t.clone()] == b"noreply");
        let key = tokens.get(1).map_or(Err(Refusal::KeyLength), |t| validate::text_key(&line[t.clone()]));
        let verb = match word {
            b"get" | b"gets" | b"gat" | b"gats" => {
                let (cas, touch) = (word.ends_with(b"s"), word.starts_with(b"gat"));
                if n < 3 {
                    return self.answer(buf, nl, Some(ERROR));
                }
                if touch && !is_long(&line[tokens[1].clone()]) {
                    return self.answer(buf, nl, Some(BAD_EXPTIME));
                }
                if touch && n == 3 {
                    return self.answer(buf, nl, Some(END));
                }
                if let Some(why) = tokens[1 + touch as usize..].iter().find_map(|t| validate::text_key(&line[t.clone()]).err()) {
                    return self.answer(buf, nl, Some(why.answer()));
                }
                Verb::Get { cas, touch }
            }
            b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => return self.storage(buf, end, nl, tokens, n, noreply),
            b"delete" => {
                if !(3..=5).contains(&n) {
                    return self.answer(buf, nl, Some(ERROR));
                }
                if n > 3 {
                    let zero = &line[tokens[2].clone()] == b"0";
                    if !((n == 4 && (zero || noreply)) || (n == 5 && zero && noreply)) {
                        return self.answer(buf, nl, quiet(noreply, BAD_DELETE));
                    }
                }
                if let Err(why) = key {
                    return self.answer(buf, nl, quiet(noreply, why.answer()));
                }
                Verb::Delete
            }
            b"incr" | b"decr" | b"touch" => {
                if n != 4 && n != 5 {
                    return self.answer(buf, nl, Some(ERROR));
                }
                if let Err(why) = key {
                    return self.answer(buf, nl, quiet(noreply, why.answer()));
                }
                if word == b"touch" {
                    Verb::Touch
                } else {
                    Verb::Arith
                }
            }
            b"flush_all" if (2..=4).contains(&n) => Verb::FlushAll,
            b"version" => Verb::Version,
            b"quit" => Verb::Quit,
            b"verbosity" if n == 3 || n == 4 => {
                if !is_u32(&line[tokens[1].clone()]) {
                    return self.answer(buf, nl, quiet(noreply, BAD_FORMAT));
                }
                Verb::Verbosity
            }
            b"stats" => Verb::Stats,
            b"mn" => Verb::MetaNoop,
            b"mg" | b"ms" | b"md" | b"ma" | b"me" => return self.meta(buf, end, nl, tokens, n),
            // memcached closes a connection that sends it an HTTP request line,
            // so a browser cannot be made to send commands across protocols.
            _ if tokens.get(n - 2).is_some_and(|t| line[t.clone()].starts_with(b"HTTP/")) => {
                let _ = buf.split_to(nl + 1);
                return Step::Done(Parsed::Close(""));
            }
            _ => return self.answer(buf, nl, Some(ERROR)),
        };
        let line = buf.split_to(nl + 1).freeze();
        let raw = line.slice(..end);
        let quiet = noreply && !matches!(verb, Verb::Get { .. } | Verb::Version | Verb::Quit | Verb::Stats | Verb::MetaNoop);
        let wire = if quiet { line_without(&raw, &tokens, &[n - 2], None) } else { with_crlf(line, end) };
        Step::Done(Parsed::Command(Box::new(Command { verb, raw, tokens, quiet, wire, as_set: None, decoded: None })))
    }

    /// set, add, replace, append, prepend, cas: the line's checks, then the data block.
    fn storage(&mut self, buf: &mut BytesMut, end: usize, nl: usize, tokens: Vec<Range<usize>>, n: usize, noreply: bool) -> Step {
        let line = &buf[..end];
        let cas = &line[tokens[0].clone()] == b"cas";
        let want = if cas { [7, 8] } else { [6, 7] };
        if !want.contains(&n) {
            return self.answer(buf, nl, Some(ERROR));
        }
        if let Err(why) = validate::text_key(&line[tokens[1].clone()]) {
            return Step::Done(self.refuse(buf, end, nl, &tokens, why));
        }
        let t = |i: usize| &line[tokens[i].clone()];
        let len = parse_i32(t(4));
        if !is_u32(t(2)) || !is_long(t(3)) || len.is_none() || (cas && !is_u64(t(5))) {
            return self.answer(buf, nl, quiet(noreply, BAD_FORMAT));
        }
        let Some(len) = len.filter(|&l| l >= 0).map(|l| l as usize) else {
            return self.answer(buf, nl, quiet(noreply, BAD_FORMAT));
        };
        let block = match self.data_block(buf, nl, len, noreply) {
            Ok(b) => b,
            Err(step) => return step,
        };
        let data_at = nl + 1;
        let raw = block.clone();
        let wire = if noreply { line_without(&raw, &tokens, &[n - 2], Some(data_at)) } else { raw.clone() };
        // What the other replicas get after a cas succeeded on the first: the same value, plain.
        let as_set = cas.then(|| {
            let mut b = BytesMut::with_capacity(raw.len());
            b.extend_from_slice(b"set");
            for t in &tokens[1..5] {
                b.extend_from_slice(b" ");
                b.extend_from_slice(&raw[t.clone()]);
            }
            b.extend_from_slice(b"\r\n");
            b.extend_from_slice(&raw[data_at..]);
            b.freeze()
        });
        Step::Done(Parsed::Command(Box::new(Command { verb: Verb::Store, raw, tokens, quiet: noreply, wire, as_set, decoded: None })))
    }

    /// mg, ms, md, ma, me: one key and flags; `q` is kept here (answers are
    /// suppressed by the ambassador), `P` and `L` hints are dropped.
    fn meta(&mut self, buf: &mut BytesMut, end: usize, nl: usize, tokens: Vec<Range<usize>>, n: usize) -> Step {
        let line = &buf[..end];
        let word = &line[tokens[0].clone()];
        let set = word == b"ms";
        if n < 3 {
            // memcached: `me` without a key is a bad line, the others fail its token count.
            return self.answer(buf, nl, Some(if word == b"me" { BAD_FORMAT } else { ERROR }));
        }
        if set && n == 3 {
            return self.answer(buf, nl, Some(BAD_FORMAT));
        }
        if n > MAX_META_TOKENS && word != b"me" {
            return self.answer(buf, nl, Some(if word == b"mg" { MG_FLAGS_TOO_LONG } else { FLAGS_TOO_LONG }));
        }
        let flags_from = if set { 3 } else { 2 };
        let flag = |t: &Range<usize>| line.get(t.start).copied();
        // The key, checked as text, or decoded from base64 with the `b` flag.
        let key = &line[tokens[1].clone()];
        let b64 = tokens[flags_from.min(tokens.len())..].iter().any(|t| &line[t.clone()] == b"b");
        let checked = if b64 { validate::base64_key(key).map(Some) } else { validate::text_key(key).map(|()| None) };
        let decoded = match checked {
            Ok(d) => d,
            Err(why) => return Step::Done(self.refuse(buf, end, nl, &tokens, why)),
        };
        let quiet = tokens[flags_from.min(tokens.len())..].iter().any(|t| t.len() == 1 && flag(t) == Some(b'q'));
        let drop: Vec<usize> = (flags_from..tokens.len())
            .filter(|&i| matches!(flag(&tokens[i]), Some(b'P' | b'L')) || (tokens[i].len() == 1 && flag(&tokens[i]) == Some(b'q')))
            .collect();
        let verb = match word {
            b"mg" => Verb::MetaGet,
            b"md" => Verb::MetaDelete,
            b"ma" => Verb::MetaArith,
            b"me" => Verb::MetaDebug,
            _ => Verb::MetaSet,
        };
        if !set {
            let line = buf.split_to(nl + 1).freeze();
            let raw = line.slice(..end);
            let wire = if drop.is_empty() { with_crlf(line, end) } else { line_without(&raw, &tokens, &drop, None) };
            return Step::Done(Parsed::Command(Box::new(Command { verb, raw, tokens, quiet, wire, as_set: None, decoded })));
        }
        let Some(len) = parse_i32(&line[tokens[2].clone()]).filter(|&l| l >= 0).map(|l| l as usize) else {
            return self.answer(buf, nl, Some(BAD_FORMAT));
        };
        // Meta commands always answer errors, quiet or not.
        let raw = match self.data_block(buf, nl, len, false) {
            Ok(b) => b,
            Err(step) => return step,
        };
        let wire = if drop.is_empty() { raw.clone() } else { line_without(&raw, &tokens, &drop, Some(nl + 1)) };
        // An ms with a compare (`C`) goes to one replica like a text cas; what
        // the others get once it stored: the same ms without the compare.
        let compare = (flags_from..tokens.len()).find(|&i| raw.get(tokens[i].start) == Some(&b'C'));
        let as_set = compare.map(|c| line_without(&raw, &tokens, &[&drop[..], &[c]].concat(), Some(nl + 1)));
        Step::Done(Parsed::Command(Box::new(Command { verb, raw, tokens, quiet, wire, as_set, decoded })))
    }

    /// A line refused for `why` (a bad key, a NUL): answered as memcached
    /// answers a bad line; a storage command's data block, when its length
    /// reads right, is swallowed with it, so a value is never run as commands.
    fn refuse(&mut self, buf: &mut BytesMut, end: usize, nl: usize, tokens: &[Range<usize>], why: Refusal) -> Parsed {
        let line = &buf[..end];
        let t = |i: usize| tokens.get(i).map(|r| &line[r.clone()]);
        let n = tokens.len().min(MAX_TOKENS - 1) + 1;
        let noreply = n > 2 && t(n - 2) == Some(b"noreply");
        let (len_at, quiet_ok) = match t(0) {
            Some(b"set" | b"add" | b"replace" | b"append" | b"prepend") if n == 6 || n == 7 => (Some(4), true),
            Some(b"cas") if n == 7 || n == 8 => (Some(4), true),
            Some(b"ms") if n >= 4 => (Some(2), false),
            Some(b"get" | b"gets" | b"gat" | b"gats" | b"delete" | b"incr" | b"decr" | b"touch") => (None, true),
            _ => (None, false),
        };
        if let Some(len) = len_at.and_then(|i| parse_i32(t(i)?)).filter(|&l| l >= 0) {
            self.skip = len as usize + 2;
        }
        let _ = buf.split_to(nl + 1);
        Parsed::Answer(if quiet_ok { quiet(noreply, why.answer()) } else { Some(why.answer()) })
    }

    /// The line (its `\n` at `nl`) and its data block of `len` bytes: a value
    /// over `max_value` is refused and skipped, a block not ending in `\r\n`
    /// is refused, as memcached does; `Step::Need` while it is incomplete.
    fn data_block(&mut self, buf: &mut BytesMut, nl: usize, len: usize, noreply: bool) -> Result<Bytes, Step> {
        if len > self.max_value {
            let _ = buf.split_to(nl + 1);
            self.skip = len + 2;
            return Err(Step::Done(Parsed::Answer(quiet(noreply, TOO_LARGE))));
        }
        let total = nl + 1 + len + 2;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Err(Step::Need);
        }
        if &buf[total - 2..total] != b"\r\n" {
            let _ = buf.split_to(total);
            return Err(Step::Done(Parsed::Answer(quiet(noreply, BAD_CHUNK))));
        }
        Ok(buf.split_to(total).freeze())
    }

    /// Consumes the line and answers it here.
    fn answer(&mut self, buf: &mut BytesMut, nl: usize, text: Option<&'static str>) -> Step {
        let _ = buf.split_to(nl + 1);
        Step::Done(Parsed::Answer(text))
    }
}

enum Step {
    Need,
    Done(Parsed),
}

/// memcached suppresses even error answers of a noreply command.
fn quiet(noreply: bool, text: &'static str) -> Option<&'static str> {
    (!noreply).then_some(text)
}

fn memchr(b: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&c| c == b)
}

fn starts_get(buf: &[u8]) -> bool {
    let trimmed = &buf[buf.iter().take(100).take_while(|&&c| c == b' ').count()..];
    trimmed.starts_with(b"get ") || trimmed.starts_with(b"gets ")
}

/// Space-separated tokens of a line, as memcached splits them (runs of spaces
/// are one separator; other whitespace belongs to the token).
pub fn tokenize(line: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::with_capacity(8);
    let mut start = None;
    for (i, &c) in line.iter().enumerate() {
        match (c == b' ', start) {
            (true, Some(s)) => {
                out.push(s..i);
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(s..line.len());
    }
    out
}

/// The line (`line[..end]` and its end) with `\r\n`: as it came, or with a
/// bare `\n` line end made canonical.
fn with_crlf(line: Bytes, end: usize) -> Bytes {
    if line.len() == end + 2 {
        return line;
    }
    let mut b = BytesMut::with_capacity(end + 2);
    b.extend_from_slice(&line[..end]);
    b.extend_from_slice(b"\r\n");
    b.freeze()
}

/// The line rebuilt without the tokens `drop`, with `\r\n`, then the data block
/// from `data` on when there is one.
fn line_without(raw: &Bytes, tokens: &[Range<usize>], drop: &[usize], data: Option<usize>) -> Bytes {
    let mut b = BytesMut::with_capacity(raw.len() + 2);
    for (i, t) in tokens.iter().enumerate() {
        if drop.contains(&i) {
            continue;
        }
        if !b.is_empty() {
            b.extend_from_slice(b" ");
        }
        b.extend_from_slice(&raw[t.clone()]);
    }
    b.extend_from_slice(b"\r\n");
    if let Some(d) = data {
        b.extend_from_slice(&raw[d..]);
    }
    b.freeze()
}

/// strtol's view of a decimal: optional sign, digits (a whole token).
fn digits(t: &[u8]) -> Option<(bool, &[u8])> {
    let (neg, rest) = match t.first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    (!rest.is_empty() && rest.iter().all(u8::is_ascii_digit)).then_some((neg, rest))
}

/// Whether memcached's safe_strtol accepts `t` (a C long, 64 bits here).
fn is_long(t: &[u8]) -> bool {
    digits(t).is_some_and(|(neg, d)| {
        let v: Option<u64> = std::str::from_utf8(d).ok().and_then(|s| s.parse().ok());
        v.is_some_and(|v| v <= i64::MAX as u64 + neg as u64)
    })
}

/// safe_strtol into an int32, as memcached reads a byte count: parsed as a
/// long, then truncated to 32 bits.
fn parse_i32(t: &[u8]) -> Option<i32> {
    if !is_long(t) {
        return None;
    }
    let v: i128 = std::str::from_utf8(t).ok()?.trim_start_matches('+').parse().ok()?;
    Some(v as i64 as i32)
}

/// safe_strtoul: an unsigned long; a minus sign is only refused when the value
/// is so large it would read negative.
/// (strtoul negates "-N" modulo 2^64, which reads negative, so memcached refuses
/// every negative number but "-0"; a value over 32 bits is truncated, not refused.)
fn is_u32(t: &[u8]) -> bool {
    is_u64(t)
}

fn is_u64(t: &[u8]) -> bool {
    digits(t).is_some_and(|(neg, d)| std::str::from_utf8(d).ok().and_then(|s| s.parse::<u64>().ok()).is_some_and(|v| !neg || v == 0))
}

#[cfg(test)]
mod tests;
