//! A server's answers, framed: where one answer ends in the bytes a memcached
//! sent, and whether they are an answer at all. A server that sends anything
//! else is out of step with its connection, which is then closed.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The shape of the answer a command gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// `VALUE` blocks, then `END` (get, gets, gat, gats).
    Values,
    /// One text-protocol line (storage, delete, incr/decr, touch, flush_all).
    Line,
    /// A meta answer: one line, or `VA <size> ...` and a data block (mg, ms, md, ma, me).
    Meta,
}

/// The server sent something that is not an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("server sent a malformed answer: {0}")]
pub struct Garbage(pub &'static str);

/// The longest answer line accepted from a server.
const MAX_LINE: usize = 8 * 1024;

/// The length of the complete answer at the front of `buf`; `Ok(None)` while it
/// is incomplete. Values are at most `max_value` bytes.
pub fn frame(buf: &[u8], expect: Expect, max_value: usize) -> Result<Option<usize>, Garbage> {
    let mut at = 0;
    loop {
        let Some(nl) = buf[at..].iter().position(|&c| c == b'\n') else {
            return if buf.len() - at > MAX_LINE { Err(Garbage("line too long")) } else { Ok(None) };
        };
        let line_end = at + nl + 1;
        if nl == 0 || buf[at + nl - 1] != b'\r' {
            return Err(Garbage("line without \\r\\n"));
        }
        let line = &buf[at..at + nl - 1];
        if is_error(line) {
            return Ok(Some(line_end));
        }
        match expect {
            Expect::Values if line == b"END" => return Ok(Some(line_end)),
            Expect::Values if line.starts_with(b"VALUE ") => {
                let size = line.split(|&c| c == b' ').nth(3).and_then(number).ok_or(Garbage("VALUE line without a size"))?;
                match block(buf, line_end, size, max_value)? {
                    Some(end) => at = end,
                    None => return Ok(None),
                }
            }
            Expect::Values => return Err(Garbage("expected VALUE or END")),
            Expect::Line => {
                return if is_text_code(line) { Ok(Some(line_end)) } else { Err(Garbage("unknown answer line")) };
            }
            Expect::Meta if line.starts_with(b"VA ") => {
                let size = line.split(|&c| c == b' ').nth(1).and_then(number).ok_or(Garbage("VA line without a size"))?;
                return block(buf, line_end, size, max_value);
            }
            Expect::Meta => {
                let code = line.get(..2).unwrap_or(b"");
                let ok = matches!(code, b"HD" | b"NS" | b"EX" | b"NF" | b"EN" | b"MN" | b"ME") && (line.len() == 2 || line[2] == b' ');
                return if ok { Ok(Some(line_end)) } else { Err(Garbage("unknown meta answer")) };
            }
        }
    }
}

/// The end of a data block of `size` bytes and its `\r\n` starting at `at`.
fn block(buf: &[u8], at: usize, size: usize, max_value: usize) -> Result<Option<usize>, Garbage> {
    if size > max_value {
        return Err(Garbage("value larger than max_value_bytes"));
    }
    let end = at + size + 2;
    if buf.len() < end {
        return Ok(None);
    }
    if &buf[end - 2..end] != b"\r\n" {
        return Err(Garbage("data block without \\r\\n"));
    }
    Ok(Some(end))
}

fn number(t: &[u8]) -> Option<usize> {
    if t.is_empty() || t.len() > 10 || !t.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(t).ok()?.parse().ok()
}

/// ERROR, CLIENT_ERROR ..., SERVER_ERROR ...: every command may get one.
pub fn is_error(line: &[u8]) -> bool {
    line == b"ERROR" || line.starts_with(b"CLIENT_ERROR") || line.starts_with(b"SERVER_ERROR")
}

fn is_text_code(line: &[u8]) -> bool {
    matches!(line, b"STORED" | b"NOT_STORED" | b"EXISTS" | b"NOT_FOUND" | b"DELETED" | b"TOUCHED" | b"OK")
        || (!line.is_empty() && line.len() <= 20 && line.iter().all(u8::is_ascii_digit))
}

/// How an answer is matched to the command it answers, so a server connection
/// that is out of step is closed instead of handing one client's answer to
/// another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// Nothing to match (text storage, delete, arithmetic, touch answers).
    None,
    /// The opaque the ambassador added (` O<n>`, last on the request line):
    /// the answer's first line must carry it among its flags, and it is taken
    /// off before the client sees it.
    Added(u32),
    /// The client's own opaque token (`Oxyz`): the answer must carry it.
    Echo(bytes::Bytes),
    /// A get: the answer's `VALUE` keys must be the request's keys, in order,
    /// some left out; the request line is kept to read them from.
    Keys(bytes::Bytes),
}

/// The first line of an answer, without its `\r\n`.
fn first_line(answer: &[u8]) -> &[u8] {
    let nl = answer.iter().position(|&c| c == b'\n').unwrap_or(answer.len());
    &answer[..nl.saturating_sub(1)]
}

/// Where the opaque ` O<n>` that `check` expects sits in `answer` (a range to
/// cut), `Ok(None)` when there is nothing to cut; `Err` when the answer is not
/// the one the command gets (an error answer matches any command).
pub fn matches(answer: &[u8], check: &Check) -> Result<Option<std::ops::Range<usize>>, Garbage> {
    let line = first_line(answer);
    if is_error(line) {
        return Ok(None);
    }
    match check {
        Check::None => Ok(None),
        Check::Added(n) => {
            // Echoed among the flags; memcached adds its own (X, W, Z) after them.
            let mut buf = [0u8; 20];
            let digits = crate::value::decimal(u64::from(*n), &mut buf);
            let mut at = 0;
            for t in line.split(|&c| c == b' ') {
                if at > 0 && t.len() == digits.len() + 1 && t[0] == b'O' && &t[1..] == digits {
                    return Ok(Some(at - 1..at + t.len()));
                }
                at += t.len() + 1;
            }
            Err(Garbage("answer without its opaque"))
        }
        Check::Echo(token) => {
            let found = line.split(|&c| c == b' ').skip(1).any(|t| t == &token[..]);
            if found {
                Ok(None)
            } else {
                Err(Garbage("answer without the client's opaque"))
            }
        }
        Check::Keys(request) => {
            let req = first_line(request);
            let mut words = req.split(|&c| c == b' ').filter(|w| !w.is_empty());
            let verb = words.next().unwrap_or_default();
            if verb.starts_with(b"gat") {
                words.next();
            }
            let mut at = 0;
            while answer[at..].starts_with(b"VALUE ") {
                let nl = at + answer[at..].iter().position(|&c| c == b'\n').ok_or(Garbage("VALUE line without its end"))?;
                let line = &answer[at..nl];
                let mut parts = line.strip_suffix(b"\r").unwrap_or(line).split(|&c| c == b' ');
                let key = parts.nth(1).unwrap_or_default();
                let size: usize = parts.next().and_then(|_| parts.next()).and_then(number).ok_or(Garbage("VALUE line without a size"))?;
                if !words.any(|w| w == key) {
                    return Err(Garbage("a value of a key not asked for, or out of order"));
                }
                at = nl + 1 + size + 2;
            }
            Ok(None)
        }
    }
}

/// The `VALUE` blocks in a framed get answer.
pub fn count_values(answer: &[u8]) -> usize {
    let (mut at, mut n) = (0, 0);
    while answer[at..].starts_with(b"VALUE ") {
        let Some(nl) = answer[at..].iter().position(|&c| c == b'\n').map(|i| at + i) else { break };
        let size = answer[at..nl].split(|&c| c == b' ').nth(3).and_then(|t| number(t.strip_suffix(b"\r").unwrap_or(t)));
        let Some(size) = size else { break };
        n += 1;
        at = nl + 1 + size + 2;
        if at > answer.len() {
            break;
        }
    }
    n
}

/// The keys a get line asks for (`gat` and `gats` carry an exptime first).
pub fn keys_asked(request: &[u8]) -> usize {
    let line = first_line(request);
    let words = line.split(|&c| c == b' ').filter(|w| !w.is_empty()).count();
    words.saturating_sub(if line.starts_with(b"gat") { 2 } else { 1 })
}

/// Counts a read's keys found and not found into `hits` and `misses`: each
/// key of a get (as memcached counts them), one for a meta get; an error
/// counts neither.
pub fn count_reads(request: &[u8], answer: &[u8], expect: Expect, hits: &AtomicU64, misses: &AtomicU64) {
    if is_error(first_line(answer)) {
        return;
    }
    let (found, asked) = match expect {
        Expect::Values => (count_values(answer), keys_asked(request)),
        Expect::Meta if request.starts_with(b"me") => return,
        _ => (usize::from(!is_miss(answer)), 1),
    };
    hits.fetch_add(found as u64, Relaxed);
    misses.fetch_add(asked.saturating_sub(found) as u64, Relaxed);
}

/// Whether an answer is a failure of the server rather than an answer to the
/// command: `SERVER_ERROR` (a client error is the command's fault, and every
/// replica would say the same).
pub fn is_server_error(answer: &[u8]) -> bool {
    answer.starts_with(b"SERVER_ERROR")
}

/// Whether an answer says the key is not there.
pub fn is_miss(answer: &[u8]) -> bool {
    answer == b"END\r\n" || answer == b"EN\r\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_framed_whole() {
        let a = b"VALUE a 0 3\r\nabc\r\nVALUE b 5 1 77\r\nx\r\nEND\r\n";
        assert_eq!(frame(a, Expect::Values, 100), Ok(Some(a.len())));
        for cut in 0..a.len() {
            assert_eq!(frame(&a[..cut], Expect::Values, 100), Ok(None), "cut at {cut}");
        }
        let mut two = a.to_vec();
        two.extend_from_slice(b"END\r\n");
        assert_eq!(frame(&two, Expect::Values, 100), Ok(Some(a.len())));
        assert_eq!(frame(b"END\r\n", Expect::Values, 100), Ok(Some(5)));
    }

    #[test]
    fn garbage_is_refused() {
        assert!(frame(b"HELLO\r\n", Expect::Values, 100).is_err());
        assert!(frame(b"VALUE a 0 3\r\nabcd\r\n", Expect::Values, 100).is_err());
        assert!(frame(b"VALUE a 0 300\r\n", Expect::Values, 100).is_err(), "above max_value");
        assert!(frame(b"STORED\n", Expect::Line, 100).is_err());
        assert!(frame(b"WHAT\r\n", Expect::Line, 100).is_err());
        assert!(frame(b"VALUE a 0 1\r\nx\r\n", Expect::Line, 100).is_err());
        assert!(frame(b"HDX\r\n", Expect::Meta, 100).is_err());
        assert!(frame(&[b'x'; 9000], Expect::Line, 100).is_err());
    }

    #[test]
    fn reads_are_counted_per_key() {
        let (h, m) = (AtomicU64::new(0), AtomicU64::new(0));
        count_reads(b"get a b\r\n", b"END\r\n", Expect::Values, &h, &m);
        assert_eq!((h.load(Relaxed), m.load(Relaxed)), (0, 2));
        count_reads(b"gat 10 a b c\r\n", b"VALUE b 0 1\r\nx\r\nEND\r\n", Expect::Values, &h, &m);
        assert_eq!((h.load(Relaxed), m.load(Relaxed)), (1, 4));
        count_reads(b"get a\r\n", b"SERVER_ERROR the server timed out\r\n", Expect::Values, &h, &m);
        count_reads(b"mg a v\r\n", b"EN\r\n", Expect::Meta, &h, &m);
        count_reads(b"mg a v\r\n", b"VA 1\r\nx\r\n", Expect::Meta, &h, &m);
        assert_eq!((h.load(Relaxed), m.load(Relaxed)), (2, 5));
        assert_eq!(count_values(b"VALUE a 0 3\r\nEND\r\nVALUE b 0 0\r\n\r\nEND\r\n"), 2, "a value that looks like END");
    }

    #[test]
    fn answers_are_matched_to_their_commands() {
        let keys = Check::Keys(bytes::Bytes::from_static(b"get a b c\r\n"));
        assert_eq!(matches(b"VALUE a 0 1\r\nx\r\nVALUE c 0 1\r\ny\r\nEND\r\n", &keys), Ok(None));
        assert_eq!(matches(b"END\r\n", &keys), Ok(None));
        assert!(matches(b"VALUE c 0 1\r\nx\r\nVALUE a 0 1\r\ny\r\nEND\r\n", &keys).is_err(), "out of order");
        assert!(matches(b"VALUE secret 0 1\r\nx\r\nEND\r\n", &keys).is_err(), "a key not asked for");
        let gat = Check::Keys(bytes::Bytes::from_static(b"gat 10 a\r\n"));
        assert_eq!(matches(b"VALUE a 0 1\r\nx\r\nEND\r\n", &gat), Ok(None));
        assert!(matches(b"VALUE 10 0 1\r\nx\r\nEND\r\n", &gat).is_err(), "the exptime is not a key");
        let added = Check::Added(17);
        assert_eq!(matches(b"HD O17\r\n", &added), Ok(Some(2..6)));
        assert_eq!(matches(b"VA 2 f0 O17\r\nhi\r\n", &added), Ok(Some(7..11)));
        assert_eq!(matches(b"VA 1 O17 X W\r\nx\r\n", &added), Ok(Some(4..8)), "before memcached's own flags");
        assert!(matches(b"HD O1\r\n", &added).is_err());
        assert!(matches(b"O17\r\n", &added).is_err(), "not the code");
        assert!(matches(b"HD O117\r\n", &added).is_err());
        assert!(matches(b"HD\r\n", &added).is_err());
        assert_eq!(matches(b"CLIENT_ERROR bad data chunk\r\n", &added), Ok(None), "an error answers any command");
        let echo = Check::Echo(bytes::Bytes::from_static(b"Oabc"));
        assert_eq!(matches(b"EN Oabc\r\n", &echo), Ok(None));
        assert!(matches(b"EN Oab\r\n", &echo).is_err());
    }

    #[test]
    fn lines_and_meta_answers() {
        for ok in [&b"STORED\r\n"[..], b"NOT_FOUND\r\n", b"18446744073709551615\r\n", b"SERVER_ERROR out of memory\r\n", b"ERROR\r\n"] {
            assert_eq!(frame(ok, Expect::Line, 100), Ok(Some(ok.len())));
        }
        for ok in [&b"HD\r\n"[..], b"HD c5 Oabc\r\n", b"EN\r\n", b"VA 2 f0\r\nhi\r\n", b"ME a exp=-1 la=1\r\n", b"CLIENT_ERROR bad\r\n"] {
            assert_eq!(frame(ok, Expect::Meta, 100), Ok(Some(ok.len())));
        }
        assert_eq!(frame(b"VA 2 f0\r\nh", Expect::Meta, 100), Ok(None));
    }
}
