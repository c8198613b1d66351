//! FastCGI 1.0 records: encoding what we send (BEGIN_REQUEST, PARAMS,
//! STDIN) and incrementally decoding what backends send (STDOUT, STDERR,
//! END_REQUEST) out of a read buffer without copying the payload.
//!
//! Written here rather than taken from the fastcgi-client crate; see
//! `fastcgi/mod.rs` for why.

use bytes::{Buf, BufMut, Bytes, BytesMut};

const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 8;
/// Largest content one record carries.
pub const MAX_CONTENT: usize = 65_535;

pub const BEGIN_REQUEST: u8 = 1;
pub const END_REQUEST: u8 = 3;
pub const PARAMS: u8 = 4;
pub const STDIN: u8 = 5;
pub const STDOUT: u8 = 6;
pub const STDERR: u8 = 7;

const ROLE_RESPONDER: u16 = 1;
const FLAG_KEEP_CONN: u8 = 1;

/// We never multiplex: one request per connection at a time, id 1
/// (nginx, lighttpd and Apache do the same; php-fpm cannot multiplex).
pub const REQUEST_ID: u16 = 1;

fn put_header(buf: &mut BytesMut, kind: u8, id: u16, len: usize) {
    buf.put_u8(VERSION);
    buf.put_u8(kind);
    buf.put_u16(id);
    buf.put_u16(len as u16);
    buf.put_u8(0); // no padding
    buf.put_u8(0);
}

/// BEGIN_REQUEST for a responder.
pub fn put_begin(buf: &mut BytesMut, keep_conn: bool) {
    put_header(buf, BEGIN_REQUEST, REQUEST_ID, 8);
    buf.put_u16(ROLE_RESPONDER);
    buf.put_u8(if keep_conn { FLAG_KEEP_CONN } else { 0 });
    buf.put_bytes(0, 5);
}

fn put_len(buf: &mut Vec<u8>, n: usize) {
    if n < 128 {
        buf.push(n as u8);
    } else {
        buf.extend_from_slice(&((n as u32) | 0x8000_0000).to_be_bytes());
    }
}

/// Append one name-value pair in the FastCGI encoding.
pub fn put_pair(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    put_len(out, name.len());
    put_len(out, value.len());
    out.extend_from_slice(name);
    out.extend_from_slice(value);
}

/// A stream (PARAMS or STDIN) payload split into records, without the
/// terminating empty record.
pub fn put_stream(buf: &mut BytesMut, kind: u8, mut data: &[u8]) {
    while !data.is_empty() {
        let n = data.len().min(MAX_CONTENT);
        put_header(buf, kind, REQUEST_ID, n);
        buf.put_slice(&data[..n]);
        data = &data[n..];
    }
}

/// The empty record that ends a PARAMS or STDIN stream.
pub fn put_stream_end(buf: &mut BytesMut, kind: u8) {
    put_header(buf, kind, REQUEST_ID, 0);
}

/// Just the record header for `len` bytes of STDIN that the caller writes
/// right after (avoids copying large body chunks).
pub fn stdin_header(len: usize) -> [u8; HEADER_LEN] {
    let l = (len as u16).to_be_bytes();
    let id = REQUEST_ID.to_be_bytes();
    [VERSION, STDIN, id[0], id[1], l[0], l[1], 0, 0]
}

/// One decoded record.
#[derive(Debug, PartialEq, Eq)]
pub struct Record {
    pub kind: u8,
    pub id: u16,
    pub content: Bytes,
}

/// Take one complete record off the front of `buf`, if there is one.
///
/// A record for another request id, or an END_REQUEST whose body is not
/// the 8 bytes the protocol says, is a protocol error: the connection is
/// not to be trusted (or pooled) any more — taking it as ours would hand
/// one client's answer to the next.
pub fn take_record(buf: &mut BytesMut) -> Result<Option<Record>, String> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[0] != VERSION {
        return Err(format!(
            "FastCGI record with version {} (expected 1)",
            buf[0]
        ));
    }
    let content_len = u16::from_be_bytes([buf[4], buf[5]]) as usize;
    let padding = buf[6] as usize;
    if buf.len() < HEADER_LEN + content_len + padding {
        return Ok(None);
    }
    let kind = buf[1];
    let id = u16::from_be_bytes([buf[2], buf[3]]);
    if id != REQUEST_ID {
        return Err(format!(
            "FastCGI record (type {kind}) for request id {id}; ours is {REQUEST_ID}"
        ));
    }
    if kind == END_REQUEST && content_len != 8 {
        return Err(format!(
            "FastCGI END_REQUEST with a {content_len}-byte body (expected 8)"
        ));
    }
    buf.advance(HEADER_LEN);
    let content = buf.split_to(content_len).freeze();
    buf.advance(padding);
    Ok(Some(Record { kind, id, content }))
}

/// END_REQUEST body (8 bytes, checked by [`take_record`]):
/// (appStatus, protocolStatus).
pub fn end_request_status(content: &[u8]) -> (u32, u8) {
    match content {
        [a, b, c, d, protocol, ..] => (u32::from_be_bytes([*a, *b, *c, *d]), *protocol),
        _ => (0, u8::MAX),
    }
}

pub const REQUEST_COMPLETE: u8 = 0;
pub const OVERLOADED: u8 = 2;

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_use_short_and_long_lengths() {
        let long = vec![b'v'; 300];
        let mut enc = Vec::new();
        put_pair(&mut enc, b"A", b"1");
        put_pair(&mut enc, b"LONG", &long);
        assert_eq!(&enc[..4], &[1, 1, b'A', b'1']);
        assert_eq!(&enc[4..9], &[4, 0x80, 0, 1, 44]);
        assert_eq!(&enc[9..13], b"LONG");
        assert_eq!(enc.len(), 13 + 300);
    }

    #[test]
    fn records_split_and_decode_incrementally() {
        let mut buf = BytesMut::new();
        put_stream(&mut buf, STDIN, &vec![7u8; MAX_CONTENT + 10]);
        put_stream_end(&mut buf, STDIN);
        let mut partial = buf.split_to(HEADER_LEN + 100);
        assert_eq!(
            take_record(&mut partial).unwrap(),
            None,
            "incomplete record"
        );
        partial.unsplit(buf);
        let mut buf = partial;
        let a = take_record(&mut buf).unwrap().unwrap();
        let b = take_record(&mut buf).unwrap().unwrap();
        let c = take_record(&mut buf).unwrap().unwrap();
        assert_eq!((a.kind, a.id, a.content.len()), (STDIN, 1, MAX_CONTENT));
        assert_eq!(b.content.len(), 10);
        assert!(c.content.is_empty());
        assert!(buf.is_empty());
    }

    #[test]
    fn padding_is_skipped_and_bad_version_refused() {
        let mut buf = BytesMut::from(&[1, STDOUT, 0, 1, 0, 2, 3, 0, b'h', b'i', 0, 0, 0][..]);
        let r = take_record(&mut buf).unwrap().unwrap();
        assert_eq!(&r.content[..], b"hi");
        assert!(buf.is_empty());
        let mut bad = BytesMut::from(&[2u8, STDOUT, 0, 1, 0, 0, 0, 0][..]);
        assert!(take_record(&mut bad).is_err());
        assert_eq!(
            end_request_status(&[0, 0, 0, 5, OVERLOADED, 0, 0, 0]),
            (5, OVERLOADED)
        );
    }

    #[test]
    fn another_request_id_or_a_short_end_request_is_refused() {
        let mut other = BytesMut::from(&[1, STDOUT, 0, 2, 0, 2, 0, 0, b'h', b'i'][..]);
        let err = take_record(&mut other).unwrap_err();
        assert!(err.contains("request id 2"), "{err}");
        let mut management =
            BytesMut::from(&[1, END_REQUEST, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..]);
        assert!(take_record(&mut management).is_err());
        let mut short = BytesMut::from(&[1, END_REQUEST, 0, 1, 0, 3, 0, 0, 0, 0, 0][..]);
        assert!(take_record(&mut short).unwrap_err().contains("3-byte"));
        let mut good =
            BytesMut::from(&[1, END_REQUEST, 0, 1, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..]);
        assert_eq!(take_record(&mut good).unwrap().unwrap().kind, END_REQUEST);
    }
}
