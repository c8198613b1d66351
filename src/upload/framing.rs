//! Caps on what multer would otherwise buffer whole.
//!
//! multer keeps everything it has not parsed yet in one buffer and rescans
//! it on every read: the preamble until the first delimiter, and a part's
//! header block until its blank line. Neither has a limit in multer, so a
//! body that never sends the delimiter or the blank line grows that buffer
//! without bound (and costs quadratic CPU in rescans). [`Framing`] follows
//! the same framing as the bytes go by, before multer sees them, and fails
//! the stream as soon as the preamble or a part's header block is over its
//! cap; [`Capped`] is the request body with that check applied.
//!
//! The states mirror multer's (`multipart.rs`): the preamble ends at the
//! first `--BOUNDARY` anywhere; after a delimiter, `--` ends the body,
//! otherwise optional spaces and tabs, then CRLF, then the header block up
//! to CRLFCRLF; a part's data ends at CRLF `--BOUNDARY`. Where multer would
//! fail anyway (no CRLF after the delimiter), this fails first.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use memchr::memmem::Finder;

use crate::body::ReqBody;

/// The framing caps, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes before the first delimiter.
    pub preamble: u64,
    /// Bytes from the end of a delimiter to the blank line that ends the
    /// part's header block (transport padding and line ends included).
    pub part_header: u64,
}

/// The body broke a framing cap (or the framing itself): a 400.
#[derive(Debug)]
pub struct FramingError(pub String);

impl std::fmt::Display for FramingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FramingError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first `--BOUNDARY`.
    Preamble,
    /// Just after a delimiter: `--` ends the body, anything else starts a part.
    AfterDelimiter,
    /// One `-` after a delimiter: a second one ends the body.
    Dash,
    /// Spaces and tabs, then CR.
    Padding,
    /// The LF of the delimiter line.
    Lf,
    /// The part's header block, up to CRLFCRLF.
    Headers,
    /// The part's data, up to CRLF `--BOUNDARY`.
    Data,
    /// After the close delimiter: multer reads no further.
    Done,
}

/// Follows the framing of one multipart body.
pub struct Framing {
    limits: Limits,
    state: State,
    /// `--BOUNDARY` (the preamble's end).
    first: Finder<'static>,
    /// CRLF `--BOUNDARY` (a part's end).
    next: Finder<'static>,
    headers_end: Finder<'static>,
    /// The last bytes of the current region, shorter than its pattern: a
    /// match may straddle two chunks.
    carry: Vec<u8>,
    /// Bytes of the current capped region seen so far (the preamble, or a
    /// part head counted from the end of its delimiter).
    seen: u64,
}

/// Where a pattern was found: its start within the region, and the offset
/// in the chunk just past its end.
struct Found {
    start: u64,
    end: usize,
}

impl Framing {
    pub fn new(boundary: &str, limits: Limits) -> Framing {
        let first = format!("--{boundary}");
        let next = format!("\r\n--{boundary}");
        Framing {
            limits,
            state: State::Preamble,
            first: Finder::new(first.as_bytes()).into_owned(),
            next: Finder::new(next.as_bytes()).into_owned(),
            headers_end: Finder::new(b"\r\n\r\n").into_owned(),
            carry: Vec::new(),
            seen: 0,
        }
    }

    /// Account for the next chunk of the body.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), FramingError> {
        while !chunk.is_empty() {
            match self.state {
                State::Done => return Ok(()),
                State::Preamble => {
                    let cap = self.limits.preamble;
                    let found = self.scan(Which::First, chunk);
                    let Some(found) = found else {
                        return self.check(cap, "the preamble before the first boundary");
                    };
                    if found.start > cap {
                        return Err(over("the preamble before the first boundary", cap));
                    }
                    chunk = &chunk[found.end..];
                    self.enter(State::AfterDelimiter);
                }
                State::Data => {
                    let Some(found) = self.scan(Which::Next, chunk) else {
                        // multer does not hold a part's data: no cap here.
                        return Ok(());
                    };
                    chunk = &chunk[found.end..];
                    self.enter(State::AfterDelimiter);
                }
                State::Headers => {
                    let cap = self.limits.part_header;
                    let Some(found) = self.scan(Which::HeadersEnd, chunk) else {
                        return self.check(cap, "a part's header block");
                    };
                    if found.start > cap {
                        return Err(over("a part's header block", cap));
                    }
                    chunk = &chunk[found.end..];
                    self.state = State::Data;
                    self.carry.clear();
                    self.seen = 0;
                }
                State::AfterDelimiter | State::Dash | State::Padding | State::Lf => {
                    let b = chunk[0];
                    chunk = &chunk[1..];
                    self.seen += 1;
                    self.state = match (self.state, b) {
                        (State::AfterDelimiter | State::Padding, b' ' | b'\t') => State::Padding,
                        (State::AfterDelimiter | State::Padding, b'\r') => State::Lf,
                        (State::AfterDelimiter, b'-') => State::Dash,
                        (State::Dash, b'-') => State::Done,
                        (State::Lf, b'\n') => {
                            self.carry.clear();
                            State::Headers
                        }
                        _ => {
                            return Err(FramingError(
                                "malformed multipart upload: a boundary line does not end in CRLF"
                                    .into(),
                            ))
                        }
                    };
                    if self.seen > self.limits.part_header {
                        return Err(over("a part's header block", self.limits.part_header));
                    }
                }
            }
        }
        Ok(())
    }

    fn enter(&mut self, state: State) {
        self.state = state;
        self.carry.clear();
        self.seen = 0;
    }

    /// No match in this chunk: the earliest a match can still start is the
    /// first carried byte; past the cap, the region is too long.
    fn check(&self, cap: u64, what: &str) -> Result<(), FramingError> {
        let earliest = self.seen - self.carry.len() as u64;
        if earliest > cap {
            return Err(over(what, cap));
        }
        Ok(())
    }

    /// Look for the region's pattern across the carry and `chunk`. Without
    /// a match, count the chunk and keep its tail as the new carry.
    fn scan(&mut self, which: Which, chunk: &[u8]) -> Option<Found> {
        let finder = match which {
            Which::First => &self.first,
            Which::Next => &self.next,
            Which::HeadersEnd => &self.headers_end,
        };
        let pat = finder.needle().len();
        let base = self.seen - self.carry.len() as u64;
        if !self.carry.is_empty() {
            // A match that starts in the carry ends within pat - 1 bytes
            // of the chunk.
            let mut joined = self.carry.clone();
            joined.extend_from_slice(&chunk[..chunk.len().min(pat - 1)]);
            if let Some(i) = finder.find(&joined).filter(|&i| i < self.carry.len()) {
                return Some(Found {
                    start: base + i as u64,
                    end: i + pat - self.carry.len(),
                });
            }
        }
        if let Some(i) = finder.find(chunk) {
            return Some(Found {
                start: self.seen + i as u64,
                end: i + pat,
            });
        }
        self.seen += chunk.len() as u64;
        let keep = pat - 1;
        if chunk.len() >= keep {
            self.carry.clear();
            self.carry.extend_from_slice(&chunk[chunk.len() - keep..]);
        } else {
            self.carry.extend_from_slice(chunk);
            let extra = self.carry.len().saturating_sub(keep);
            self.carry.drain(..extra);
        }
        None
    }
}

#[derive(Clone, Copy)]
enum Which {
    First,
    Next,
    HeadersEnd,
}

fn over(what: &str, cap: u64) -> FramingError {
    FramingError(format!(
        "multipart upload: {what} is over {cap} bytes (raise max_preamble / max_part_header in [[upload]])"
    ))
}

/// The request body, failing as soon as [`Framing`] does.
pub struct Capped {
    body: ReqBody,
    framing: Framing,
}

impl Capped {
    pub fn new(body: ReqBody, framing: Framing) -> Capped {
        Capped { body, framing }
    }
}

impl http_body::Body for Capped {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.framing.feed(data)?;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(Box::new(e)))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        preamble: 16,
        part_header: 64,
    };

    /// Feed `body` in chunks of `step` bytes.
    fn run(body: &[u8], step: usize) -> Result<State, FramingError> {
        let mut f = Framing::new("XB", LIMITS);
        for chunk in body.chunks(step) {
            f.feed(chunk)?;
        }
        Ok(f.state)
    }

    fn all_steps(body: &[u8]) -> Vec<Result<State, String>> {
        (1..=body.len().max(1))
            .map(|s| run(body, s).map_err(|e| e.0))
            .collect()
    }

    #[test]
    fn a_well_formed_body_passes_in_any_chunking() {
        let body = b"pre\r\n--XB\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nvalue\r\n--XB \t\r\nX: y\r\n\r\n\r\n--X\r\n--XB--\r\nepilogue";
        for r in all_steps(body) {
            assert_eq!(r, Ok(State::Done));
        }
    }

    #[test]
    fn the_preamble_is_capped_exactly() {
        let ok = [&b"p".repeat(16)[..], b"--XB--"].concat();
        let bad = [&b"p".repeat(17)[..], b"--XB--"].concat();
        for step in 1..ok.len() {
            assert!(run(&ok, step).is_ok(), "step {step}");
            assert!(run(&bad, step).is_err(), "step {step}");
        }
        // Without any delimiter: fails once the cap is certainly passed.
        assert!(run(&b"-".repeat(1000), 7).is_err());
        assert!(run(&b"p".repeat(16), 3).is_ok());
    }

    #[test]
    fn a_part_header_block_is_capped_exactly() {
        // From the end of the delimiter: CRLF + 62 bytes = 64, then CRLFCRLF.
        let head =
            |n: usize| [&b"--XB\r\n"[..], &b"h".repeat(n), b"\r\n\r\ndata\r\n--XB--"].concat();
        for step in 1..20 {
            assert!(run(&head(62), step).is_ok(), "step {step}");
            assert!(run(&head(63), step).is_err(), "step {step}");
        }
        let endless = [&b"--XB\r\n"[..], &b"h: v\r\n".repeat(1000)].concat();
        assert!(run(&endless, 100).is_err());
        let padding = [&b"--XB"[..], &b" ".repeat(1000)].concat();
        assert!(run(&padding, 100).is_err());
    }

    #[test]
    fn part_data_is_not_capped() {
        let body = [
            &b"--XB\r\n\r\n"[..],
            &b"d".repeat(100_000),
            b"\r\n--XB\r\nh: v\r\n\r\n\r\n--XB--",
        ]
        .concat();
        // `--XB\r\n\r\n`: the header search starts after the CRLF, as
        // multer's does, so that header block runs up to the next CRLFCRLF.
        assert!(run(&body, 4096).is_err());
        let body = [
            &b"--XB\r\nh: v\r\n\r\n"[..],
            &b"d".repeat(100_000),
            b"\r\n--XB--",
        ]
        .concat();
        assert_eq!(run(&body, 4096).map_err(|e| e.0), Ok(State::Done));
    }

    #[test]
    fn a_delimiter_line_must_end_in_crlf() {
        assert!(run(b"--XB-x", 1).is_err());
        assert!(run(b"--XBx", 1).is_err());
        assert!(run(b"--XB\rx", 1).is_err());
    }
}
