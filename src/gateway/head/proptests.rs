//! Property tests for the CGI/FastCGI response head: finding its end
//! however the output is split ([`HeadBuf`]), and the header-block parser
//! it feeds (`cgi::response::{parse_head, classify}`).

use http::HeaderMap;
use proptest::prelude::*;

use super::*;
use crate::cgi::response::{classify, find_head_end, parse_head, CgiHead, Classified};

/// One of `items`, owned.
fn pick(items: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(items).prop_map(<[u8]>::to_vec)
}

/// Header lines as scripts write them, right and wrong.
fn line() -> impl Strategy<Value = Vec<u8>> {
    let name = pick(&[
        b"Status",
        b"status",
        b"Content-Type",
        b"Location",
        b"Content-Length",
        b"content-length",
        b"X-A",
        b"Set-Cookie",
        b"Connection",
        b"Transfer-Encoding",
        b"Keep-Alive",
        b"Bad Name",
        b"",
        b"X\x00",
        b"\xc3\xa9",
    ]);
    let sep = pick(&[b":", b": ", b" : ", b":\t", b":  ", b""]);
    let value = pick(&[
        b"200",
        b"204",
        b"304 Not Modified",
        b"403 Go Away",
        b"099",
        b"2000",
        b"200\tOK",
        b"/path?x=1",
        b"//host/",
        b"http://example.org/",
        b"text/html; charset=utf-8",
        b"0",
        b"3",
        b"3, 3",
        b"3, 4",
        b"+3",
        b"99999999999999999999999",
        b"",
        b" spaced  out ",
        b"a\tb",
        b"\x80\xff",
        b"\x7f",
        b"close",
    ]);
    let end = pick(&[b"\n", b"\r\n", b"\r", b""]);
    let value = prop_oneof![3 => value, 1 => prop::collection::vec(any::<u8>(), 0..12)];
    prop_oneof![
        8 => (name, sep, value, end).prop_map(|(n, s, v, e)| [n, s, v, e].concat()),
        1 => Just(b" folded\n".to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..16),
    ]
}

/// A well-formed line: a known name, a colon, a value, a line end.
fn good_line() -> impl Strategy<Value = Vec<u8>> {
    let name = pick(&[
        b"Status",
        b"Content-Type",
        b"Content-Type",
        b"Location",
        b"Content-Length",
        b"X-A",
        b"x-a",
        b"Set-Cookie",
        b"Connection",
    ]);
    let value = pick(&[
        b"200",
        b"204",
        b"304 Not Modified",
        b"403 Go Away",
        b"/path?x=1",
        b"https://example.org/",
        b"text/plain",
        b"3",
        b"3, 3",
        b" spaced  out ",
        b"\x80\xff",
        b"",
    ]);
    let sep = pick(&[b": ", b":", b":\t"]);
    let end = pick(&[b"\n", b"\r\n"]);
    (name, sep, value, end).prop_map(|(n, s, v, e)| [n, s, v, e].concat())
}

fn block() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(good_line(), 1..6).prop_map(|lines| lines.concat()),
        3 => prop::collection::vec(line(), 0..8).prop_map(|lines| lines.concat()),
        1 => prop::collection::vec(any::<u8>(), 0..128),
    ]
}

/// The head as a script would write it again: `Status:` first, then every
/// header it passes on.
fn serialise(head: &CgiHead) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some((code, reason)) = &head.status {
        out.extend_from_slice(format!("Status: {}", code.as_u16()).as_bytes());
        if let Some(r) = reason {
            out.push(b' ');
            out.extend_from_slice(r.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in &head.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A response a classified head comes to: status, reason, headers, length.
type Respond = (u16, Option<String>, HeaderMap, Option<u64>);

/// What a classified head comes to, comparably: a local redirect's path,
/// or the response.
fn outcome(c: Classified) -> (Option<String>, Option<Respond>) {
    match c {
        Classified::LocalRedirect(to) => (Some(to), None),
        Classified::Respond {
            status,
            reason,
            headers,
            length,
        } => (None, Some((status.as_u16(), reason, headers, length))),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Any bytes: an answer, never a panic; and a head that parses
    /// re-serialises to a block that parses to the same head.
    #[test]
    fn a_parsed_head_round_trips(block in block()) {
        let classified = classify(&block);
        let Ok(head) = parse_head(&block) else {
            prop_assert!(classified.is_err());
            return Ok(());
        };
        for (name, _) in &head.headers {
            prop_assert!(
                !matches!(name.as_str(), "connection" | "transfer-encoding" | "keep-alive" | "status"),
                "{name} passed on"
            );
        }
        prop_assert!(head.headers.get_all("content-length").iter().count() <= 1);
        let again = serialise(&head);
        let reparsed = parse_head(&again);
        prop_assert!(reparsed.is_ok(), "{:?} → {:?}: {:?}",
            String::from_utf8_lossy(&block), String::from_utf8_lossy(&again), reparsed.err());
        let reparsed = reparsed.unwrap();
        prop_assert_eq!(&reparsed.headers, &head.headers);
        prop_assert_eq!(&reparsed.status, &head.status);
        prop_assert_eq!(&reparsed.location, &head.location);
        prop_assert_eq!(reparsed.content_length, head.content_length);
        prop_assert_eq!(reparsed.has_content_type, head.has_content_type);
        // And it is the same kind of response.
        let again = classify(&again).map(outcome);
        prop_assert_eq!(again, classified.map(outcome));
    }

    /// A whole response (head, blank line, body) in any split: the
    /// incremental scan finds what a scan of everything finds, as soon as
    /// the blank line is in, and looks back at most two bytes.
    #[test]
    fn the_end_is_found_in_any_split(
        head in block(),
        blank in pick(&[b"\n\n", b"\r\n\r\n", b"\n\r\n", b""]),
        body in prop::collection::vec(any::<u8>(), 0..16),
        cuts in prop::collection::vec(1usize..24, 0..16),
        limit in prop_oneof![Just(usize::MAX), 0usize..96],
    ) {
        let input = [head, blank, body].concat();
        let mut buf = HeadBuf::new(limit);
        let mut at = 0;
        let mut cuts = cuts.into_iter();
        let got = loop {
            let n = cuts.next().unwrap_or(input.len() - at).min(input.len() - at);
            let before = buf.len();
            buf.extend(&input[at..at + n]);
            at += n;
            let seen = &input[..at];
            let result = buf.check();
            prop_assert!(buf.scan_from + 2 >= buf.len());
            match (result, find_head_end(seen)) {
                (Ok(None), None) if seen.len() <= limit => {}
                (Err(HeadError::TooBig { .. }), None) if seen.len() > limit => break None,
                (Ok(Some(end)), Some(whole)) if end.0 <= limit => {
                    prop_assert_eq!(end, whole);
                    // Found as soon as it could be: not already in what
                    // came before this piece.
                    prop_assert!(find_head_end(&input[..before]).is_none());
                    break Some(end);
                }
                (Err(HeadError::TooBig { .. }), Some(whole)) if whole.0 > limit => break None,
                (other, whole) => {
                    prop_assert!(false, "{:?} after {} bytes: {:?} vs {:?}",
                        String::from_utf8_lossy(seen), at, other.map_err(|e| format!("{e:?}")), whole);
                }
            }
            if at == input.len() {
                break None;
            }
        };
        if let Some((head_len, body_start)) = got {
            prop_assert!(head_len <= body_start && body_start <= input.len());
            let found = buf.into_head((head_len, body_start));
            prop_assert_eq!(&found.block[..], &input[..head_len]);
            prop_assert_eq!(&found.first_body[..], &input[body_start..at]);
        }
    }
}

/// The generator is not vacuous: many of its blocks parse, and of those
/// many classify (else the round trip above proves little).
#[test]
fn generated_blocks_often_parse() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut parsed, mut classified) = (0, 0);
    for _ in 0..1000 {
        let block = block().new_tree(&mut runner).unwrap().current();
        parsed += usize::from(parse_head(&block).is_ok());
        classified += usize::from(classify(&block).is_ok());
    }
    assert!(parsed >= 100 && classified >= 50, "{parsed} {classified}");
}
