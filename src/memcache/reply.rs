//! A server's answers, framed: where one answer ends in the bytes a memcached
//! sent, and whether they are an answer at all. A server that sends anything
//! else is out of step with its connection, which is then closed.

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
