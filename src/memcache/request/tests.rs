use super::*;

fn parse_all(input: &[u8]) -> Vec<Parsed> {
    let mut p = Parser::new(1024);
    let mut buf = BytesMut::from(input);
    // A Close leaves the stream as it is (the connection ends): stop there.
    std::iter::from_fn(|| p.next(&mut buf)).take(16).collect()
}

fn command(input: &[u8]) -> Box<Command> {
    match parse_all(input).pop() {
        Some(Parsed::Command(c)) => c,
        other => panic!("not a command: {other:?}"),
    }
}

#[test]
fn a_command_split_anywhere_is_framed_once_whole() {
    let input = b"set k 1 2 5\r\nhello\r\nget k\r\n";
    for cut in 1..input.len() {
        let mut p = Parser::new(1024);
        let mut buf = BytesMut::from(&input[..cut]);
        let mut got = Vec::new();
        while let Some(x) = p.next(&mut buf) {
            got.push(x);
        }
        buf.extend_from_slice(&input[cut..]);
        while let Some(x) = p.next(&mut buf) {
            got.push(x);
        }
        let verbs: Vec<Verb> = got.iter().map(|g| if let Parsed::Command(c) = g { c.verb } else { panic!("{g:?}") }).collect();
        assert_eq!(verbs, [Verb::Store, Verb::Get { cas: false, touch: false }], "cut at {cut}");
    }
}

#[test]
fn noreply_and_quiet_flags_are_stripped_for_the_server() {
    let c = command(b"set k 0 0 1 noreply\r\nx\r\n");
    assert!(c.quiet);
    assert_eq!(&c.wire[..], b"set k 0 0 1\r\nx\r\n");
    let c = command(b"mg k v q Lpath Pp k\r\n");
    assert!(c.quiet);
    assert_eq!(&c.wire[..], b"mg k v k\r\n");
    let c = command(b"get k\n");
    assert_eq!(&c.wire[..], b"get k\r\n", "a bare \\n line end is made canonical");
    let c = command(b"cas k 3 0 1 77\r\nx\r\n");
    assert_eq!(c.as_set.as_deref(), Some(&b"set k 3 0 1\r\nx\r\n"[..]));
}

#[test]
fn bad_input_gets_memcached_answers_and_the_stream_stays_framed() {
    let got = parse_all(b"set k 0 0 2000\r\n");
    assert!(matches!(got[..], [Parsed::Answer(Some(TOO_LARGE))]), "{got:?}");
    // The refused value is skipped, however it arrives.
    let mut p = Parser::new(4);
    let mut buf = BytesMut::from(&b"set k 0 0 6\r\nabc"[..]);
    assert!(matches!(p.next(&mut buf), Some(Parsed::Answer(Some(TOO_LARGE)))));
    assert!(p.next(&mut buf).is_none());
    buf.extend_from_slice(b"def\r\nmn\r\n");
    assert!(matches!(p.next(&mut buf), Some(Parsed::Command(c)) if c.verb == Verb::MetaNoop));
    let got = parse_all(b"set k 0 0 1\r\nxy\r\n");
    assert!(matches!(got[0], Parsed::Answer(Some(BAD_CHUNK))), "{got:?}");
    assert!(matches!(parse_all(&[b'a'; 3000])[0], Parsed::Close(LINE_TOO_LONG)));
    assert!(parse_all(&[b'a'; 1000]).is_empty(), "a short partial line waits");
    let long_key = format!("get {}\r\n", "k".repeat(251));
    assert!(matches!(parse_all(long_key.as_bytes())[..], [Parsed::Answer(Some(BAD_FORMAT))]));
    assert!(matches!(parse_all(b"set k 0 0 x noreply\r\n")[..], [Parsed::Answer(None)]), "noreply silences errors too");
}

#[test]
fn numbers_are_read_as_memcached_reads_them() {
    assert!(is_long(b"-5") && is_long(b"+7") && !is_long(b"5x") && !is_long(b"99999999999999999999"));
    assert_eq!(parse_i32(b"4294967297"), Some(1), "truncated to 32 bits, as memcached does");
    assert!(is_u32(b"-0") && !is_u32(b"-1") && is_u32(b"4294967296"));
}

#[test]
fn meta_base64_keys_are_placed_by_their_decoded_bytes() {
    let c = command(b"mg Zm9v b v\r\n");
    assert_eq!(c.key(), b"foo");
}

#[test]
fn refused_lines_never_leave_a_data_block_to_be_read_as_commands() {
    // A NUL, a bad key byte, a key too long: refused, the data block swallowed.
    let long = "k".repeat(251);
    for line in [&b"set k\0 0 0 9\r\n"[..], b"set a\x01 0 0 9\r\n", format!("set {long} 0 0 9\r\n").as_bytes(), b"ms a\x02 9\r\n"] {
        let mut input = line.to_vec();
        input.extend_from_slice(b"flush_all\r\nmn\r\n");
        let got = parse_all(&input);
        assert!(matches!(got[0], Parsed::Answer(Some(BAD_FORMAT))), "{line:?}: {got:?}");
        assert!(matches!(&got[1], Parsed::Command(c) if c.verb == Verb::MetaNoop), "{line:?}: {got:?}");
        assert_eq!(got.len(), 2);
    }
    // A length that does not read cannot be swallowed: the rest is read as memcached reads it.
    let got = parse_all(b"set k\0 0 0 -1\r\nmn\r\n");
    assert!(matches!(got[..], [Parsed::Answer(Some(BAD_FORMAT)), Parsed::Command(_)]), "{got:?}");
    // A base64 key is decoded once, and any bytes are allowed in it.
    let c = command(b"mg eAENCg== b v\r\n");
    assert_eq!(c.key(), b"x\x01\r\n");
    assert!(matches!(parse_all(b"mg !!!! b v\r\n")[..], [Parsed::Answer(Some("CLIENT_ERROR error decoding key\r\n"))]));
    // An HTTP request line closes with no answer; a get naming HTTP/1.1 as a key is a get.
    assert!(matches!(parse_all(b"GET / HTTP/1.1\r\nmn\r\n")[0], Parsed::Close("")));
    assert!(matches!(&parse_all(b"get HTTP/1.1\r\n")[..], [Parsed::Command(c)] if matches!(c.verb, Verb::Get { .. })));
    // The line limit does not depend on where the line's end arrives.
    let long_delete = format!("delete {}\r\n", "k".repeat(3000));
    assert!(matches!(parse_all(long_delete.as_bytes())[0], Parsed::Close(LINE_TOO_LONG)));
}
