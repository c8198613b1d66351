//! The response header block, read the same way from both transports: a
//! CGI script's stdout pipe and a FastCGI backend's STDOUT records.
//!
//! Owns what is common to both: accumulating the block ([`HeadBuf`], which
//! scans only the bytes that are new since the last look, so a block that
//! arrives a byte or an empty record at a time costs linear time), the cap
//! (`cgi.max_response_header`), the idle timeout (reset only by output,
//! never by empty records or chatter), the ONE [`HeadError`] and the ONE
//! mapping of it to a status and a log line ([`HeadError::into_error`]).
//! The transports differ only in how the next piece of output arrives:
//! that is a [`HeadSource`].

use std::fmt;
use std::future::Future;
use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use crate::cgi::response::find_head_end_from;
use crate::error::Error;

/// Why no header block could be read.
#[derive(Debug)]
pub enum HeadError {
    /// The output ended (stdout EOF, END_REQUEST) before the blank line,
    /// after `got` bytes.
    Ended {
        got: usize,
    },
    /// A FastCGI backend refused the request (END_REQUEST with a protocol
    /// status other than REQUEST_COMPLETE); `overloaded`: FCGI_OVERLOADED.
    Refused {
        protocol_status: u8,
        overloaded: bool,
    },
    /// Over the cap without a blank line.
    TooBig {
        limit: usize,
    },
    /// No output for the idle timeout.
    Timeout,
    Io(io::Error),
    /// A pooled FastCGI connection closed before answering anything: it
    /// was stale (the caller may retry on a fresh one).
    Stale(io::Error),
    /// A FastCGI protocol violation.
    Protocol(String),
}

/// Who sent (or failed to send) the header block, for the log line:
/// `SCRIPT#request` and, for FastCGI, the backend address.
pub struct Origin<'a> {
    pub tag: &'a str,
    pub backend: Option<&'a dyn fmt::Display>,
}

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.backend {
            Some(b) => write!(f, "{}: FastCGI {b}", self.tag),
            None => f.write_str(self.tag),
        }
    }
}

impl HeadError {
    /// The one mapping to a status: 504 for silence, 503 for an
    /// overloaded backend, 502 for everything else.
    pub fn into_error(self, from: &Origin<'_>, idle: Duration) -> Error {
        match self {
            HeadError::Ended { got: 0 } => {
                Error::BadGateway(format!("{from}: output ended without any response header"))
            }
            HeadError::Ended { got } => Error::BadGateway(format!(
                "{from}: output ended after {got} bytes without the blank line that ends the header block"
            )),
            HeadError::Refused {
                overloaded: true, ..
            } => Error::ServiceUnavailable {
                retry_after_secs: 5,
                why: format!("{from} is overloaded"),
            },
            HeadError::Refused {
                protocol_status, ..
            } => Error::BadGateway(format!(
                "{from}: refused the request (protocol status {protocol_status})"
            )),
            HeadError::TooBig { limit } => Error::BadGateway(format!(
                "{from}: response header block over {limit} bytes without a blank line \
                 (limit: cgi.max_response_header in the config file)"
            )),
            HeadError::Timeout => Error::GatewayTimeout(format!(
                "{from}: no response header within {}s (--cgi-timeout, or the route's idle timeout)",
                idle.as_secs()
            )),
            HeadError::Io(err) | HeadError::Stale(err) => Error::BadGateway(format!(
                "{from}: connection lost before the response header: {err}"
            )),
            HeadError::Protocol(why) => Error::BadGateway(format!("{from}: {why}")),
        }
    }
}

/// A complete header block and the body bytes that came with it.
pub struct Head {
    /// The header lines, without the blank line that ends them.
    pub block: BytesMut,
    /// Body bytes read together with the block.
    pub first_body: Bytes,
}

/// The header block as it accumulates.
pub struct HeadBuf {
    buf: BytesMut,
    /// Where the next scan for the blank line starts: everything before
    /// it is known not to complete the block.
    scan_from: usize,
    limit: usize,
}

impl HeadBuf {
    pub fn new(limit: usize) -> HeadBuf {
        HeadBuf {
            buf: BytesMut::with_capacity(8 * 1024),
            scan_from: 0,
            limit,
        }
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The buffer to read more output into (with room for a read).
    pub fn read_buf(&mut self) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(8 * 1024);
        }
        &mut self.buf
    }

    /// Append output that arrived in a record.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Look at the new bytes: the block once it is complete, an error
    /// once it is over the cap.
    pub fn check(&mut self) -> Result<Option<(usize, usize)>, HeadError> {
        let found = find_head_end_from(&self.buf, self.scan_from);
        // A blank line may start in the last two bytes (`\n` `\r` `\n`).
        self.scan_from = self.buf.len().saturating_sub(2);
        match found {
            Some((head_len, _)) if head_len > self.limit => {
                Err(HeadError::TooBig { limit: self.limit })
            }
            Some(end) => Ok(Some(end)),
            None if self.buf.len() > self.limit => Err(HeadError::TooBig { limit: self.limit }),
            None => Ok(None),
        }
    }

    fn into_head(mut self, (head_len, body_start): (usize, usize)) -> Head {
        let first_body = self.buf.split_off(body_start).freeze();
        self.buf.truncate(head_len);
        Head {
            block: self.buf,
            first_body,
        }
    }
}

/// What one wait for output brought.
pub enum Step {
    /// Output was added to the [`HeadBuf`]: progress.
    Output,
    /// Something that is not output (an empty record, a STDERR record):
    /// not progress, so it does not restart the idle timer.
    Chatter,
    /// The output ended.
    End,
}

/// How a transport delivers its output.
pub trait HeadSource {
    /// Wait for the next piece of output and add it to `head`.
    fn next(&mut self, head: &mut HeadBuf) -> impl Future<Output = Result<Step, HeadError>>;
}

/// Read from `source` until the header block is complete: at most `limit`
/// bytes, and never silent for `idle`.
pub async fn read_head<S: HeadSource>(
    source: &mut S,
    limit: usize,
    idle: Duration,
) -> Result<Head, HeadError> {
    let mut head = HeadBuf::new(limit);
    let mut deadline = Instant::now() + idle;
    loop {
        let step = tokio::time::timeout_at(deadline, source.next(&mut head))
            .await
            .map_err(|_| HeadError::Timeout)??;
        match step {
            Step::Output => {
                if let Some(end) = head.check()? {
                    return Ok(head.into_head(end));
                }
                deadline = Instant::now() + idle;
            }
            // A stream of chatter that is always ready would never let the
            // timeout above fire: check the deadline by hand.
            Step::Chatter if Instant::now() >= deadline => return Err(HeadError::Timeout),
            Step::Chatter => {}
            Step::End => return Err(HeadError::Ended { got: head.len() }),
        }
    }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgi::response::find_head_end;

    /// Fed in any split, the incremental scan finds what a scan of the
    /// whole buffer finds, and never looks back more than two bytes.
    #[test]
    fn incremental_scan_agrees_with_a_whole_scan() {
        let inputs: &[&[u8]] = &[
            b"A: b\n\nbody",
            b"A: b\r\n\r\nbody",
            b"A: b\r\n\nbody",
            b"\r\nbody",
            b"\nbody",
            b"A: b\r\nC: d\r\n",
            b"A: b\nC: d\n\r\nrest",
        ];
        for input in inputs {
            for split in 1..=3 {
                let mut head = HeadBuf::new(1024);
                let mut got = None;
                for piece in input.chunks(split) {
                    head.extend(piece);
                    got = head.check().unwrap();
                    assert!(head.scan_from + 2 >= head.len());
                    if got.is_some() {
                        break;
                    }
                }
                assert_eq!(got, find_head_end(input), "{input:?} in pieces of {split}");
            }
        }
    }

    #[test]
    fn over_the_cap_is_too_big() {
        let mut head = HeadBuf::new(8);
        head.extend(b"X-Long: 123");
        assert!(matches!(head.check(), Err(HeadError::TooBig { limit: 8 })));
        let mut head = HeadBuf::new(8);
        head.extend(b"X-Long: 123\n\n");
        assert!(matches!(head.check(), Err(HeadError::TooBig { limit: 8 })));
    }

    /// Chatter that never stops does not keep the wait alive.
    struct Chatty(u64);

    impl HeadSource for Chatty {
        async fn next(&mut self, _head: &mut HeadBuf) -> Result<Step, HeadError> {
            self.0 += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(Step::Chatter)
        }
    }

    /// Chatter that is always ready at once.
    struct Eager;

    impl HeadSource for Eager {
        async fn next(&mut self, _head: &mut HeadBuf) -> Result<Step, HeadError> {
            Ok(Step::Chatter)
        }
    }

    #[tokio::test]
    async fn chatter_that_is_always_ready_still_times_out() {
        let mut eager = Eager;
        let read = read_head(&mut eager, 1024, Duration::from_millis(100));
        let got = tokio::time::timeout(Duration::from_secs(30), read).await;
        assert!(matches!(got, Ok(Err(HeadError::Timeout))));
    }

    #[tokio::test(start_paused = true)]
    async fn chatter_is_not_progress() {
        let mut src = Chatty(0);
        let got = read_head(&mut src, 1024, Duration::from_secs(1)).await;
        assert!(matches!(got, Err(HeadError::Timeout)));
        assert!(src.0 >= 90, "the chatter went on until the timeout");
    }
}
