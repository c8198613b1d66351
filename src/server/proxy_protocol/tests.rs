//! The header parser: a table of real headers and near misses, and
//! properties over generated ones (any prefix is incomplete, the client's
//! bytes after a header are never taken, arbitrary bytes never panic).

use super::*;
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};

const SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 header: `command` (0x20 LOCAL, 0x21 PROXY), family/protocol
/// byte, the address block and TLVs.
fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[(u8, &[u8])]) -> Vec<u8> {
    let mut payload = addresses.to_vec();
    for (kind, value) in tlvs {
        payload.push(*kind);
        payload.extend_from_slice(&(value.len() as u16).to_be_bytes());
        payload.extend_from_slice(value);
    }
    let mut h = SIG.to_vec();
    h.push(command);
    h.push(family);
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&payload);
    h
}

fn v4_block(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut b = src.to_vec();
    b.extend_from_slice(&dst);
    b.extend_from_slice(&sport.to_be_bytes());
    b.extend_from_slice(&dport.to_be_bytes());
    b
}

fn v6_block(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16) -> Vec<u8> {
    let mut b = src.octets().to_vec();
    b.extend_from_slice(&dst.octets());
    b.extend_from_slice(&sport.to_be_bytes());
    b.extend_from_slice(&dport.to_be_bytes());
    b
}

fn header(source: Option<&str>, tls: bool, len: usize) -> Parsed {
    Parsed::Header(
        Proxied {
            source: source.map(|s| s.parse().unwrap()),
            tls,
        },
        len,
    )
}

#[test]
fn v1_headers() {
    let table: &[(&str, Option<&str>)] = &[
        (
            "PROXY TCP4 203.0.113.7 10.0.0.1 4711 443\r\n",
            Some("203.0.113.7:4711"),
        ),
        (
            "PROXY TCP6 2001:db8::7 2001:db8::1 4711 443\r\n",
            Some("[2001:db8::7]:4711"),
        ),
        ("PROXY UNKNOWN\r\n", None),
        ("PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n", None),
    ];
    for (text, source) in table {
        let mut bytes = text.as_bytes().to_vec();
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            parse(&bytes),
            header(*source, false, text.len()),
            "{text:?}"
        );
    }
    // Cut right after a space (or before the LF): more is to come.
    for partial in [
        "PROXY TCP4 1.2.3.4 5.6.7.8 1234 ",
        "PROXY TCP4 1.2.3.4 ",
        "PROXY UNKNOWN\r",
    ] {
        assert_eq!(parse(partial.as_bytes()), Parsed::Incomplete, "{partial:?}");
    }
}

#[test]
fn near_misses_are_refused() {
    let long = format!("PROXY TCP4 1.2.3.4 5.6.7.8 1 2{}\r\n", " ".repeat(100));
    let bad: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01",
        b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
        b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        long.as_bytes(),
        &[b'P'; 200],
        // v2 with version 1, a bad command, a bad family.
        b"\r\n\r\n\0\r\nQUIT\n\x11\x11\x00\x0c123456789012",
        b"\r\n\r\n\0\r\nQUIT\n\x2f\x11\x00\x0c123456789012",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x41\x00\x0c123456789012",
        // An address block shorter than its family's.
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x04abcd",
        b"\r\n\r\nGET / ",
    ];
    for bytes in bad {
        assert!(
            matches!(parse(bytes), Parsed::Invalid(_)),
            "{:?} → {:?}",
            String::from_utf8_lossy(bytes),
            parse(bytes)
        );
    }
    // A truncated TLV.
    let mut h = v2(0x21, 0x11, &v4_block([1, 2, 3, 4], 1, [5, 6, 7, 8], 2), &[]);
    h.extend_from_slice(&[0x20, 0x00]);
    h[15] += 2;
    assert!(matches!(parse(&h), Parsed::Invalid(_)), "{:?}", parse(&h));
    // A declared length over the cap is refused before it arrives.
    let mut h = SIG.to_vec();
    h.extend_from_slice(&[0x21, 0x11]);
    h.extend_from_slice(&((V2_MAX_PAYLOAD + 1) as u16).to_be_bytes());
    assert!(matches!(parse(&h), Parsed::Invalid(_)), "{:?}", parse(&h));
}

#[test]
fn v2_headers() {
    let v4 = v4_block([203, 0, 113, 7], 4711, [10, 0, 0, 1], 443);
    let proxy = v2(0x21, 0x11, &v4, &[]);
    assert_eq!(
        parse(&proxy),
        header(Some("203.0.113.7:4711"), false, proxy.len())
    );
    let v6 = v6_block(
        "2001:db8::7".parse().unwrap(),
        4711,
        Ipv6Addr::LOCALHOST,
        443,
    );
    let proxy6 = v2(0x21, 0x21, &v6, &[(0x04, &[])]);
    assert_eq!(
        parse(&proxy6),
        header(Some("[2001:db8::7]:4711"), false, proxy6.len())
    );
    // LOCAL: the peer, whatever the block says.
    let local = v2(0x20, 0x11, &v4, &[]);
    assert_eq!(parse(&local), header(None, false, local.len()));
    let unspec = v2(0x21, 0x00, &[], &[]);
    assert_eq!(parse(&unspec), header(None, false, unspec.len()));
    // The SSL TLV: client bit set, then clear.
    let ssl = v2(0x21, 0x11, &v4, &[(0x20, &[0x01, 0, 0, 0, 0])]);
    assert_eq!(
        parse(&ssl),
        header(Some("203.0.113.7:4711"), true, ssl.len())
    );
    let plain = v2(0x21, 0x11, &v4, &[(0x20, &[0x00, 0, 0, 0, 0])]);
    assert_eq!(
        parse(&plain),
        header(Some("203.0.113.7:4711"), false, plain.len())
    );
}

fn v1_text(src: IpAddrPair, sport: u16, dport: u16) -> String {
    match src {
        IpAddrPair::V4(s, d) => format!("PROXY TCP4 {s} {d} {sport} {dport}\r\n"),
        IpAddrPair::V6(s, d) => format!("PROXY TCP6 {s} {d} {sport} {dport}\r\n"),
    }
}

#[derive(Debug, Clone, Copy)]
enum IpAddrPair {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

fn pair() -> impl Strategy<Value = IpAddrPair> {
    prop_oneof![
        (any::<u32>(), any::<u32>()).prop_map(|(s, d)| IpAddrPair::V4(s.into(), d.into())),
        (any::<u128>(), any::<u128>()).prop_map(|(s, d)| IpAddrPair::V6(s.into(), d.into())),
    ]
}

/// A valid header (v1 or v2, with TLVs) and the client address it names.
fn any_header() -> impl Strategy<Value = (Vec<u8>, SocketAddr)> {
    let tlv = (1u8..0x30, proptest::collection::vec(any::<u8>(), 0..40));
    (
        pair(),
        any::<u16>(),
        any::<u16>(),
        any::<bool>(),
        proptest::collection::vec(tlv, 0..4),
    )
        .prop_map(|(pair, sport, dport, text, tlvs)| {
            let source = match pair {
                IpAddrPair::V4(s, _) => SocketAddr::from((s, sport)),
                IpAddrPair::V6(s, _) => SocketAddr::from((s, sport)),
            };
            if text {
                return (v1_text(pair, sport, dport).into_bytes(), source);
            }
            let (family, block) = match pair {
                IpAddrPair::V4(s, d) => (0x11, v4_block(s.octets(), sport, d.octets(), dport)),
                IpAddrPair::V6(s, d) => (0x21, v6_block(s, sport, d, dport)),
            };
            // Not the SSL TLV: it would set `tls`.
            let tlvs: Vec<(u8, &[u8])> = tlvs
                .iter()
                .filter(|(k, _)| *k != PP2_TYPE_SSL)
                .map(|(k, v)| (*k, &v[..]))
                .collect();
            (v2(0x21, family, &block, &tlvs), source)
        })
}

proptest! {
    /// Any header, with any client bytes behind it, parses to its own
    /// length and address; every shorter prefix is incomplete.
    #[test]
    fn headers_parse_and_prefixes_wait(
        (h, source) in any_header(),
        tail in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = h.clone();
        bytes.extend_from_slice(&tail);
        prop_assert_eq!(
            parse(&bytes),
            Parsed::Header(Proxied { source: Some(source), tls: false }, h.len())
        );
        for cut in 0..h.len() {
            prop_assert_eq!(parse(&h[..cut]), Parsed::Incomplete, "cut at {}", cut);
        }
    }

    /// Arbitrary bytes never panic; a header found lies within them and
    /// within the limits; a start that is neither signature is refused.
    #[test]
    fn arbitrary_bytes_are_safe(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        match parse(&bytes) {
            Parsed::Header(_, len) => {
                prop_assert!(len <= bytes.len() && len <= 16 + V2_MAX_PAYLOAD);
            }
            Parsed::Incomplete => prop_assert!(bytes.len() < 16 + V2_MAX_PAYLOAD),
            Parsed::Invalid(_) => {}
        }
        if bytes.first().is_some_and(|b| *b != b'P' && *b != b'\r') {
            prop_assert!(matches!(parse(&bytes), Parsed::Invalid(_)));
        }
    }

    /// A mangled v2 header (one byte of its fixed part changed) is never
    /// read as a header longer than the bytes.
    #[test]
    fn mangled_v2_headers_are_safe(
        (h, _) in any_header(),
        at in 0usize..16,
        byte in any::<u8>(),
    ) {
        let mut h = h;
        if h.len() > at {
            h[at] = byte;
        }
        if let Parsed::Header(_, len) = parse(&h) {
            prop_assert!(len <= h.len());
        }
    }
}
