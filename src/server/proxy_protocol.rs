//! The PROXY protocol (HAProxy's; v1 text and v2 binary, parsed by the
//! `ppp` crate) on listeners with `proxy_protocol = true`: every
//! connection starts with a header in which the proxy in front (HAProxy,
//! a cloud TCP load balancer) names the client it relays. It comes before
//! anything else, a TLS ClientHello included.
//!
//! The header must arrive whole within `header_read_timeout` and be at
//! most 107 bytes (v1) or 16 + [`V2_MAX_PAYLOAD`] bytes (v2); a connection
//! without one, or with a malformed one, is closed. A v2 `LOCAL` header
//! (the proxy's own health check), a v1 `UNKNOWN` one and a v2 address
//! family without addresses (unspecified, unix) leave the TCP peer as the
//! client. A v2 `PP2_TYPE_SSL` TLV with the `PP2_CLIENT_SSL` bit says the
//! client spoke TLS to the proxy: `HTTPS` is on.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use ppp::{v1, v2, PartialResult};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The longest v1 header, CRLF included (the spec's limit).
const V1_MAX: usize = 107;
/// The longest v2 address-and-TLV block taken (the header's own field
/// allows 64 KiB; proxies send a few hundred bytes at most).
pub const V2_MAX_PAYLOAD: usize = 4096;
/// `PP2_TYPE_SSL`, and its `PP2_CLIENT_SSL` flag.
const PP2_TYPE_SSL: u8 = 0x20;
const PP2_CLIENT_SSL: u8 = 0x01;

/// What a header says about the connection it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proxied {
    /// The client's address; None: the TCP peer is the client.
    pub source: Option<SocketAddr>,
    /// The client connected to the proxy over TLS.
    pub tls: bool,
}

/// What the bytes read so far are.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A header of this many bytes (the client's bytes follow).
    Header(Proxied, usize),
    /// The start of a header: more bytes may complete it.
    Incomplete,
    /// Not a PROXY header, nor the start of one.
    Invalid(String),
}

/// Parse the start of a connection.
pub fn parse(buf: &[u8]) -> Parsed {
    match buf.first() {
        None => Parsed::Incomplete,
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => Parsed::Invalid("no PROXY protocol header".into()),
    }
}

fn parse_v1(buf: &[u8]) -> Parsed {
    const PREFIX: &[u8] = b"PROXY ";
    let n = buf.len().min(PREFIX.len());
    if buf[..n] != PREFIX[..n] {
        return Parsed::Invalid("no PROXY protocol header".into());
    }
    // Parsed once the line is in: `ppp` takes a header cut right after a
    // space ("… 4711 ") as an empty field, not as one still to come.
    match buf.iter().find(|b| matches!(b, b'\r' | b'\n')) {
        Some(b'\r') => {}
        Some(_) => return Parsed::Invalid("a v1 header line ending in a bare LF".into()),
        None if buf.len() < V1_MAX => return Parsed::Incomplete,
        None => return Parsed::Invalid(format!("no v1 header end in {V1_MAX} bytes")),
    }
    let header = v1::Header::try_from(buf);
    if header.is_incomplete() {
        return Parsed::Incomplete;
    }
    match header {
        Ok(h) => {
            let source = match h.addresses {
                v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Unknown => None,
            };
            Parsed::Header(Proxied { source, tls: false }, h.header.len())
        }
        Err(e) => Parsed::Invalid(format!("malformed v1 header: {e}")),
    }
}

fn parse_v2(buf: &[u8]) -> Parsed {
    let header = v2::Header::try_from(buf);
    if let Err(v2::ParseError::Partial(_, payload)) = &header {
        if *payload > V2_MAX_PAYLOAD {
            return Parsed::Invalid(format!(
                "v2 header of {payload} bytes after the fixed 16 (at most {V2_MAX_PAYLOAD})"
            ));
        }
    }
    if header.is_incomplete() {
        return Parsed::Incomplete;
    }
    let h = match header {
        Ok(h) => h,
        Err(e) => return Parsed::Invalid(format!("malformed v2 header: {e}")),
    };
    if h.length() > V2_MAX_PAYLOAD {
        return Parsed::Invalid(format!(
            "v2 header of {} bytes after the fixed 16 (at most {V2_MAX_PAYLOAD})",
            h.length()
        ));
    }
    let mut tls = false;
    for tlv in h.tlvs() {
        match tlv {
            Ok(t) if t.kind == PP2_TYPE_SSL => {
                tls = t.value.first().is_some_and(|c| c & PP2_CLIENT_SSL != 0);
            }
            Ok(_) => {}
            Err(e) => return Parsed::Invalid(format!("malformed v2 TLV: {e}")),
        }
    }
    let source = match (h.command, h.addresses) {
        (v2::Command::Local, _) => None,
        (_, v2::Addresses::IPv4(a)) => Some(SocketAddr::from((a.source_address, a.source_port))),
        (_, v2::Addresses::IPv6(a)) => Some(SocketAddr::from((a.source_address, a.source_port))),
        (_, v2::Addresses::Unspecified | v2::Addresses::Unix(_)) => None,
    };
    // LOCAL: the proxy speaks for itself, TLS flag and all.
    let tls = tls && h.command == v2::Command::Proxy;
    Parsed::Header(Proxied { source, tls }, h.len())
}

/// Why a connection did not start with a usable header.
#[derive(Debug)]
pub enum Refused {
    /// It closed (or reset) before sending a byte: a TCP health check.
    Silent,
    /// No whole header within the time allowed.
    TimedOut,
    Invalid(String),
    Io(std::io::Error),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Silent => f.write_str("closed before a PROXY protocol header"),
            Refused::TimedOut => f.write_str("no whole PROXY protocol header in time"),
            Refused::Invalid(why) => f.write_str(why),
            Refused::Io(e) => write!(f, "reading the PROXY protocol header: {e}"),
        }
    }
}

/// Read the header the connection starts with, within `limit`: what it
/// says, and the bytes read past it (the client's first bytes, for TLS or
/// HTTP to take before the socket's).
pub(super) async fn read_header(
    stream: &mut TcpStream,
    limit: Duration,
) -> Result<(Proxied, BytesMut), Refused> {
    let read = async {
        let mut buf = BytesMut::with_capacity(512);
        loop {
            match parse(&buf) {
                Parsed::Header(proxied, len) => {
                    buf.advance(len);
                    if buf.is_empty() {
                        // An idle connection holds no buffer.
                        buf = BytesMut::new();
                    }
                    return Ok((proxied, buf));
                }
                Parsed::Invalid(why) => return Err(Refused::Invalid(why)),
                Parsed::Incomplete => {}
            }
            // `parse` refuses a header longer than the limits, so this
            // buffer stays within 16 + V2_MAX_PAYLOAD bytes plus one read.
            match stream.read_buf(&mut buf).await {
                Ok(0) if buf.is_empty() => return Err(Refused::Silent),
                Ok(0) => {
                    return Err(Refused::Invalid(
                        "the connection closed inside the PROXY protocol header".into(),
                    ))
                }
                Ok(_) => {}
                Err(e) if buf.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Err(Refused::Silent)
                }
                Err(e) => return Err(Refused::Io(e)),
            }
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .unwrap_or(Err(Refused::TimedOut))
}

#[cfg(test)]
mod tests;
