//! `ringmaster mc`: one memcache command from the command line, so the demo
//! (and an operator on a bare machine) can talk to the ambassador without
//! `nc`. Words become one command: `set KEY VALUE [TTL]` gets its length and
//! data block written for it; the answer is read until it is complete, framed
//! as the ambassador frames a server's answers.

use super::reply::{frame, is_error, Expect};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Why a command got no answer, or an error for one.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("usage: {0}")]
    Usage(&'static str),
    #[error("{addr}: {source}")]
    Io { addr: SocketAddr, source: std::io::Error },
    #[error("{addr} closed the connection before the answer was complete")]
    Closed { addr: SocketAddr },
    #[error("{addr} sent something that is not a memcache answer: {why}")]
    Garbage { addr: SocketAddr, why: &'static str },
}

/// The longest answer read (a value of memcached's default 1 MiB item size, and its lines).
const MAX_ANSWER: usize = 2 * 1024 * 1024;

/// The bytes to send for `words`, and the shape of the answer.
pub fn command(words: &[String]) -> Result<(Vec<u8>, Shape), AskError> {
    let verb = words.first().ok_or(AskError::Usage("ringmaster mc ADDR COMMAND [ARGS...]"))?;
    match verb.as_str() {
        "set" | "add" | "replace" | "append" | "prepend" => {
            let (key, value, ttl) = match &words[1..] {
                [k, v] => (k, v, "0"),
                [k, v, t] => (k, v, t.as_str()),
                _ => return Err(AskError::Usage("ringmaster mc ADDR set KEY VALUE [TTL]")),
            };
            let mut wire = format!("{verb} {key} 0 {ttl} {}\r\n", value.len()).into_bytes();
            wire.extend_from_slice(value.as_bytes());
            wire.extend_from_slice(b"\r\n");
            Ok((wire, Shape::Framed(Expect::Line)))
        }
        "get" | "gets" | "gat" | "gats" => Ok((line(words), Shape::Framed(Expect::Values))),
        "stats" => Ok((line(words), Shape::UntilEnd)),
        v if v.len() == 2 && v.starts_with('m') => Ok((line(words), Shape::Framed(Expect::Meta))),
        _ => Ok((line(words), Shape::Framed(Expect::Line))),
    }
}

fn line(words: &[String]) -> Vec<u8> {
    let mut wire = words.join(" ").into_bytes();
    wire.extend_from_slice(b"\r\n");
    wire
}

/// How an answer ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Framed(Expect),
    /// `STAT` lines, then `END` (or one error line).
    UntilEnd,
}

/// The length of the complete answer at the front of `buf`, if it is there.
fn complete(buf: &[u8], shape: Shape) -> Result<Option<usize>, &'static str> {
    match shape {
        Shape::Framed(expect) => frame(buf, expect, MAX_ANSWER).map_err(|g| g.0),
        Shape::UntilEnd => {
            let mut at = 0;
            while let Some(nl) = buf[at..].iter().position(|&c| c == b'\n') {
                let l = buf[at..at + nl].strip_suffix(b"\r").ok_or("line without \\r\\n")?;
                at += nl + 1;
                if l == b"END" || is_error(l) {
                    return Ok(Some(at));
                }
            }
            Ok(None)
        }
    }
}

/// Sends `words` as one command to `addr` and returns the answer; `Ok` with
/// an error line when the server answered with one.
pub fn ask(addr: SocketAddr, words: &[String], timeout: Duration) -> Result<String, AskError> {
    let (wire, shape) = command(words)?;
    let io = |source| AskError::Io { addr, source };
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.write_all(&wire).map_err(io)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match complete(&buf, shape).map_err(|why| AskError::Garbage { addr, why })? {
            Some(end) => return Ok(String::from_utf8_lossy(&buf[..end]).into_owned()),
            None if buf.len() > MAX_ANSWER => return Err(AskError::Garbage { addr, why: "answer too long" }),
            None => {}
        }
        match s.read(&mut chunk).map_err(io)? {
            0 => return Err(AskError::Closed { addr }),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Whether an answer is an error line (the command line's exit status).
pub fn failed(answer: &str) -> bool {
    answer.lines().next().is_some_and(|l| is_error(l.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn a_set_gets_its_length_and_data_block() {
        let (wire, shape) = command(&words("set greeting hello")).unwrap();
        assert_eq!(wire, b"set greeting 0 0 5\r\nhello\r\n");
        assert_eq!(shape, Shape::Framed(Expect::Line));
        assert_eq!(command(&words("add k v 30")).unwrap().0, b"add k 0 30 1\r\nv\r\n");
        assert!(matches!(command(&words("set k")), Err(AskError::Usage(_))));
        assert!(matches!(command(&[]), Err(AskError::Usage(_))));
    }

    #[test]
    fn answers_end_where_their_shape_says() {
        let values = Shape::Framed(Expect::Values);
        assert_eq!(complete(b"VALUE k 0 2\r\nhi\r\n", values), Ok(None));
        assert_eq!(complete(b"VALUE k 0 2\r\nhi\r\nEND\r\n", values), Ok(Some(22)));
        assert_eq!(complete(b"STAT a 1\r\nSTAT b 2\r\n", Shape::UntilEnd), Ok(None));
        assert_eq!(complete(b"STAT a 1\r\nEND\r\n", Shape::UntilEnd), Ok(Some(15)));
        assert_eq!(complete(b"ERROR\r\n", Shape::UntilEnd), Ok(Some(7)));
        assert!(complete(b"STAT a 1\n", Shape::UntilEnd).is_err());
        assert!(failed("SERVER_ERROR out of memory\r\n") && !failed("STORED\r\n"));
    }
}
