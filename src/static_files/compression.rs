//! Content codings: which ones the client accepts (`Accept-Encoding` with
//! q-values, RFC 9110 §12.5.3), and the streaming gzip encoder used for
//! text files that have no precompressed sibling.
//!
//! Policy (the pipeline in `mod.rs` applies it):
//! - no `Accept-Encoding` header means identity, as in nginx and browsers'
//!   expectations, although the RFC would allow any coding;
//! - a precompressed `FILE.br` / `FILE.gz` is served whenever the client
//!   accepts that coding, in the client's order of preference (ties go to
//!   br, the smaller one); it is never older than FILE (`resolve` checks);
//! - otherwise text types of at least [`MIN_ON_THE_FLY`] bytes are gzipped
//!   on the fly, streamed, without `Content-Length`;
//! - ranges are always served from the identity file.

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use http::{header, HeaderMap};
use http_body::Frame;
use http_body_util::BodyExt;

use crate::body::Body;

/// Smaller files are sent as they are: gzip's 18-byte frame and the lost
/// `Content-Length` cost more than the few bytes saved.
pub const MIN_ON_THE_FLY: u64 = 1024;

/// zlib level for on-the-fly gzip: level 6's ratio within a few percent at
/// noticeably less CPU; precompressed siblings are the way to maximum ratio.
const LEVEL: u32 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Br,
    Gzip,
}

impl Coding {
    /// The `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Gzip => "gzip",
        }
    }

    /// The precompressed sibling's extension: `FILE.br`, `FILE.gz`.
    pub fn extension(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Gzip => "gz",
        }
    }

    /// Suffix that keeps this coding's ETag apart from identity's.
    pub fn etag_suffix(self) -> &'static str {
        match self {
            Coding::Br => "-br",
            Coding::Gzip => "-gz",
        }
    }
}

/// The q-values (in thousandths) the client gave br and gzip; 0 = refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Accepted {
    br: u16,
    gzip: u16,
}

impl Accepted {
    /// Read every `Accept-Encoding` line. Elements with a malformed q-value
    /// are skipped; `*` covers codings not named; `x-gzip` is gzip.
    pub fn parse(headers: &HeaderMap) -> Accepted {
        let (mut br, mut gzip, mut star) = (None, None, None);
        let values = headers.get_all(header::ACCEPT_ENCODING).iter();
        for element in values
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
        {
            let mut parts = element.split(';');
            let name = parts.next().unwrap_or("").trim();
            let Some(q) = quality(parts) else { continue };
            if name.eq_ignore_ascii_case("br") {
                br = Some(q);
            } else if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
                gzip = Some(q);
            } else if name == "*" {
                star = Some(q);
            }
        }
        Accepted {
            br: br.or(star).unwrap_or(0),
            gzip: gzip.or(star).unwrap_or(0),
        }
    }

    /// The acceptable codings, most preferred first (ties: br first).
    pub fn in_order(self) -> impl Iterator<Item = Coding> {
        let order = if self.gzip > self.br {
            [(Coding::Gzip, self.gzip), (Coding::Br, self.br)]
        } else {
            [(Coding::Br, self.br), (Coding::Gzip, self.gzip)]
        };
        order.into_iter().filter(|(_, q)| *q > 0).map(|(c, _)| c)
    }
}

/// The `q` parameter among `params` (default 1000), None if malformed.
fn quality<'a>(params: impl Iterator<Item = &'a str>) -> Option<u16> {
    for p in params {
        let (name, value) = p.split_once('=')?;
        if name.trim().eq_ignore_ascii_case("q") {
            return qvalue(value.trim());
        }
    }
    Some(1000)
}

/// RFC 9110 qvalue: `0[.ddd]` or `1[.000]`, in thousandths.
fn qvalue(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Gzips another body as it streams: each input chunk is compressed when
/// it arrives and whatever the encoder produced is passed on, so memory
/// stays at one chunk plus the encoder's window.
pub struct GzipBody {
    inner: Body,
    encoder: Option<GzEncoder<Vec<u8>>>,
}

impl GzipBody {
    pub fn wrap(inner: Body) -> Body {
        GzipBody {
            inner,
            encoder: Some(GzEncoder::new(Vec::new(), Compression::new(LEVEL))),
        }
        .boxed()
    }
}

impl http_body::Body for GzipBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        loop {
            let Some(encoder) = this.encoder.as_mut() else {
                return Poll::Ready(None);
            };
            let data = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue, // trailers: files have none
                },
                Poll::Ready(None) => {
                    let rest = this.encoder.take().map(GzEncoder::finish);
                    return Poll::Ready(rest.map(|r| r.map(|v| Frame::data(Bytes::from(v)))));
                }
            };
            encoder.write_all(&data)?;
            let out = std::mem::take(encoder.get_mut());
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn order(values: &[&str]) -> Vec<Coding> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        Accepted::parse(&h).in_order().collect()
    }

    #[test]
    fn accept_encoding_table() {
        use Coding::*;
        let table: &[(&[&str], &[Coding])] = &[
            (&[], &[]),
            (&[""], &[]),
            (&["identity"], &[]),
            (&["gzip"], &[Gzip]),
            (&["x-gzip"], &[Gzip]),
            (&["GZIP, BR"], &[Br, Gzip]),
            (&["gzip, deflate, br, zstd"], &[Br, Gzip]),
            (&["gzip;q=1.0, br;q=0.5"], &[Gzip, Br]),
            (&["br;q=0.9", "gzip;q=0.8"], &[Br, Gzip]),
            (&["gzip;q=0, br"], &[Br]),
            (&["gzip;q=0.000"], &[]),
            (&["gzip; q=0.001"], &[Gzip]),
            (&["*"], &[Br, Gzip]),
            (&["*;q=0"], &[]),
            (&["*;q=0.5, gzip;q=0"], &[Br]),
            (&["gzip, *;q=0"], &[Gzip]),
            (&["gzip;q=1.5"], &[]),
            (&["gzip;q=0.5000"], &[]),
            (&["gzip;q=abc, br"], &[Br]),
            (&["gzip;level"], &[]),
        ];
        for (values, want) in table {
            assert_eq!(order(values), *want, "{values:?}");
        }
    }

    #[test]
    fn qvalues() {
        for (s, want) in [
            ("1", Some(1000)),
            ("1.000", Some(1000)),
            ("1.001", None),
            ("0.5", Some(500)),
            ("0.25", Some(250)),
            ("0.", Some(0)),
            ("", None),
            ("-0", None),
        ] {
            assert_eq!(qvalue(s), want, "{s:?}");
        }
    }

    /// A body that yields the given chunks one per poll.
    struct Chunks(std::collections::VecDeque<Bytes>);

    impl http_body::Body for Chunks {
        type Data = Bytes;
        type Error = io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    #[tokio::test]
    async fn gzip_body_round_trips_in_chunks() {
        use flate2::read::GzDecoder;
        use std::io::Read;
        let text: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let chunks = text.chunks(7_000).map(Bytes::copy_from_slice).collect();
        let gz = GzipBody::wrap(Chunks(chunks).boxed())
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert!(gz.len() < text.len() / 3);
        let mut out = Vec::new();
        GzDecoder::new(&gz[..]).read_to_end(&mut out).unwrap();
        assert_eq!(out, text);
    }
}
