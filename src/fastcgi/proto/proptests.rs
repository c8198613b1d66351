//! Property tests for the FastCGI record reader: any bytes are an answer
//! (never a panic, never a record taken from a buffer it does not fully
//! hold), and what we encode decodes to itself however the bytes arrive.

use proptest::prelude::*;

use super::*;

/// A record as a backend (or we) would send it.
#[derive(Debug, Clone)]
struct Sent {
    kind: u8,
    content: Vec<u8>,
    padding: u8,
}

fn content() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => prop::collection::vec(any::<u8>(), 0..64),
        // Past one record's limit: `put_stream` splits it.
        1 => (any::<u8>(), 0usize..40).prop_map(|(b, extra)| vec![b; MAX_CONTENT + extra]),
    ]
}

fn sent() -> impl Strategy<Value = Sent> {
    prop_oneof![
        // A stream's data, through `put_stream` (no padding).
        4 => (prop::sample::select(&[STDOUT, STDERR, STDIN, PARAMS][..]), content())
            .prop_map(|(kind, content)| Sent { kind, content, padding: 0 }),
        // One record, by hand, padded as backends may pad.
        2 => (
            prop::sample::select(&[STDOUT, STDERR, 0, 11, 255][..]),
            prop::collection::vec(any::<u8>(), 0..64),
            any::<u8>(),
        )
            .prop_map(|(kind, content, padding)| Sent { kind, content, padding }),
        1 => (any::<[u8; 8]>(), any::<u8>()).prop_map(|(body, padding)| Sent {
            kind: END_REQUEST,
            content: body.to_vec(),
            padding,
        }),
    ]
}

/// Encode `records`; returns the bytes and the records a reader must
/// see (a stream's data split at [`MAX_CONTENT`]).
fn encode(records: &[Sent]) -> (BytesMut, Vec<(u8, Vec<u8>)>) {
    let mut buf = BytesMut::new();
    let mut want = Vec::new();
    for r in records {
        let by_stream = r.padding == 0 && matches!(r.kind, STDOUT | STDERR | STDIN | PARAMS);
        if by_stream && !r.content.is_empty() {
            put_stream(&mut buf, r.kind, &r.content);
            for chunk in r.content.chunks(MAX_CONTENT) {
                want.push((r.kind, chunk.to_vec()));
            }
        } else if by_stream {
            put_stream_end(&mut buf, r.kind);
            want.push((r.kind, Vec::new()));
        } else {
            put_header(&mut buf, r.kind, REQUEST_ID, r.content.len());
            let at = buf.len() - 2;
            buf[at] = r.padding;
            buf.put_slice(&r.content);
            buf.put_bytes(0xa5, r.padding as usize);
            want.push((r.kind, r.content.clone()));
        }
    }
    (buf, want)
}

/// Feed `bytes` in pieces cut at `cuts`, taking every complete record
/// after each piece.
fn decode_in_pieces(bytes: &[u8], cuts: &[usize]) -> Result<Vec<Record>, String> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.push(bytes.len());
    cuts.sort_unstable();
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    let mut at = 0;
    for cut in cuts {
        buf.extend_from_slice(&bytes[at..cut]);
        at = cut;
        while let Some(record) = take_record(&mut buf)? {
            got.push(record);
        }
    }
    if !buf.is_empty() {
        return Err(format!("{} bytes left over", buf.len()));
    }
    Ok(got)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any bytes: no panic; a record is taken only when it is all there,
    /// exactly its bytes are consumed, and nothing is consumed otherwise.
    #[test]
    fn any_bytes_are_an_answer(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut buf = BytesMut::from(&bytes[..]);
        loop {
            let before = buf.clone();
            match take_record(&mut buf) {
                Ok(Some(r)) => {
                    let len = u16::from_be_bytes([before[4], before[5]]) as usize;
                    let used = HEADER_LEN + len + before[6] as usize;
                    prop_assert_eq!(before[0], 1);
                    prop_assert_eq!(r.id, REQUEST_ID);
                    prop_assert_eq!(r.kind, before[1]);
                    prop_assert_eq!(&r.content[..], &before[HEADER_LEN..HEADER_LEN + len]);
                    prop_assert_eq!(&buf[..], &before[used..]);
                    if r.kind == END_REQUEST {
                        prop_assert_eq!(r.content.len(), 8);
                    }
                }
                Ok(None) => {
                    prop_assert_eq!(&buf, &before);
                    break;
                }
                Err(_) => {
                    prop_assert_eq!(&buf, &before);
                    break;
                }
            }
        }
    }

    /// Records we encode, in any split, decode to themselves.
    #[test]
    fn records_survive_any_split(
        records in prop::collection::vec(sent(), 0..8),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let (bytes, want) = encode(&records);
        let got = decode_in_pieces(&bytes, &cuts);
        prop_assert!(got.is_ok(), "{:?}", got.as_ref().err());
        let got: Vec<(u8, Vec<u8>)> = got
            .unwrap()
            .into_iter()
            .map(|r| (r.kind, r.content.to_vec()))
            .collect();
        prop_assert_eq!(got, want);
    }

    /// A record for another request id is an error, in any split, once
    /// it is complete; the records before it are still delivered.
    #[test]
    fn another_request_id_is_an_error(
        records in prop::collection::vec(sent(), 0..4),
        id in any::<u16>().prop_filter("another id", |id| *id != REQUEST_ID),
        kind in any::<u8>(),
        content in prop::collection::vec(any::<u8>(), 0..32),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let (mut bytes, want) = encode(&records);
        put_header(&mut bytes, kind, id, content.len());
        bytes.put_slice(&content);
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.push(bytes.len());
        cuts.sort_unstable();
        let mut buf = BytesMut::new();
        let mut got = 0;
        let mut at = 0;
        let mut refused = None;
        'feed: for cut in cuts {
            buf.extend_from_slice(&bytes[at..cut]);
            at = cut;
            loop {
                match take_record(&mut buf) {
                    Ok(Some(_)) => got += 1,
                    Ok(None) => break,
                    Err(e) => {
                        refused = Some((e, at));
                        break 'feed;
                    }
                }
            }
        }
        let (err, when) = refused.expect("refused");
        prop_assert_eq!(got, want.len());
        prop_assert_eq!(when, bytes.len(), "refused before it was complete");
        prop_assert!(err.contains(&format!("request id {id}")), "{err}");
    }

    /// An END_REQUEST with a body other than 8 bytes is an error.
    #[test]
    fn a_short_or_long_end_request_is_an_error(
        len in (0usize..64).prop_filter("not 8", |n| *n != 8),
        padding in any::<u8>(),
    ) {
        let mut buf = BytesMut::new();
        put_header(&mut buf, END_REQUEST, REQUEST_ID, len);
        buf[6] = padding;
        buf.put_bytes(0, len + padding as usize);
        let err = take_record(&mut buf).unwrap_err();
        prop_assert!(err.contains(&format!("{len}-byte")), "{err}");
    }
}

#[test]
fn begin_request_and_stdin_header_decode() {
    for keep in [false, true] {
        let mut buf = BytesMut::new();
        put_begin(&mut buf, keep);
        buf.put_slice(&stdin_header(3));
        buf.put_slice(b"abc");
        let begin = take_record(&mut buf).unwrap().unwrap();
        assert_eq!(begin.kind, BEGIN_REQUEST);
        assert_eq!(&begin.content[..], &[0, 1, u8::from(keep), 0, 0, 0, 0, 0]);
        let stdin = take_record(&mut buf).unwrap().unwrap();
        assert_eq!((stdin.kind, &stdin.content[..]), (STDIN, &b"abc"[..]));
        assert!(buf.is_empty());
    }
}
