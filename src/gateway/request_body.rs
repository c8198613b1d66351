//! The request body on its way to a script, for CGI and FastCGI alike:
//! [`prepare`] (`--max-body` before anything runs; a body of unknown
//! length spooled so CONTENT_LENGTH is exact) and the one loop that moves
//! a body into wherever it goes, [`pump`] — a CGI script's stdin pipe
//! (`cgi::stdin`), FastCGI STDIN records (`fastcgi::exchange`) or the
//! spool file ([`spool`]). The destinations differ in what a failed write
//! means; the loop (each wait for the client bounded by the idle timeout,
//! trailers skipped, a client error reported as one) is the same.
//!
//! The spool file is anonymous (O_TMPFILE: it has no name, so it
//! disappears when closed, even if cgihost is killed); the file itself
//! then becomes the script's stdin, or is sent as STDIN records.

use std::future::Future;
use std::io;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;

use crate::body::ReqBody;
use crate::error::Error;

/// Where [`pump`] puts the body.
pub trait BodySink {
    type Error;
    /// Take the next piece of the body.
    fn put(&mut self, data: Bytes) -> impl Future<Output = Result<(), Self::Error>>;
}

/// Why [`pump`] stopped before the end of the body.
#[derive(Debug)]
pub enum PumpError<E> {
    /// The client's body failed (connection lost, bad framing).
    Client(io::Error),
    /// The client sent nothing for the idle timeout.
    Stalled(Duration),
    /// The sink refused.
    Sink(E),
}

/// Move `body` into `sink` as it arrives; each wait for the client is
/// bounded by `idle`. Returns the bytes moved.
pub async fn pump<S: BodySink>(
    body: &mut ReqBody,
    idle: Duration,
    sink: &mut S,
) -> Result<u64, PumpError<S::Error>> {
    let mut moved: u64 = 0;
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Ok(Some(Ok(f))) => f,
            Ok(Some(Err(e))) => return Err(PumpError::Client(e)),
            Ok(None) => return Ok(moved),
            Err(_) => return Err(PumpError::Stalled(idle)),
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        moved += data.len() as u64;
        sink.put(data).await.map_err(PumpError::Sink)?;
    }
}

/// A request body, ready to hand to a handler with an exact length.
pub enum RequestBody {
    /// No body: no `Content-Length` or `Transfer-Encoding` (CONTENT_LENGTH unset).
    None,
    /// A declared body of no bytes (`Content-Length: 0`): CONTENT_LENGTH=0,
    /// as for an empty chunked body, with nothing to send.
    Empty,
    /// Known length: stream it as it arrives.
    Streamed(ReqBody, u64),
    /// Unknown length (chunked): spooled to an anonymous temp file.
    Spooled(std::fs::File, u64),
}

impl RequestBody {
    /// CONTENT_LENGTH, when there is a body.
    pub fn content_length(&self) -> Option<u64> {
        match self {
            RequestBody::None => None,
            RequestBody::Empty => Some(0),
            RequestBody::Streamed(_, n) | RequestBody::Spooled(_, n) => Some(*n),
        }
    }
}

/// Whether the request head announces a body (RFC 9112 §6.3: a
/// `Content-Length`, even 0, or a `Transfer-Encoding`).
pub fn declares_body(headers: &http::HeaderMap) -> bool {
    headers.contains_key(http::header::CONTENT_LENGTH)
        || headers.contains_key(http::header::TRANSFER_ENCODING)
}

/// Enforce `--max-body` (before any handler runs when the length is
/// known) and spool bodies of unknown length. `declared`: the head
/// announced a body ([`declares_body`]), so an empty one is still a body.
pub async fn prepare(
    body: ReqBody,
    declared: bool,
    max_body: Option<u64>,
    spool_dir: &Path,
    idle: Duration,
) -> Result<RequestBody, Error> {
    use http_body::Body as _;
    if body.is_end_stream() {
        return Ok(if declared {
            RequestBody::Empty
        } else {
            RequestBody::None
        });
    }
    match body.size_hint().exact() {
        Some(n) if max_body.is_some_and(|m| n > m) => Err(Error::PayloadTooLarge(format!(
            "request body of {n} bytes over --max-body"
        ))),
        Some(n) => Ok(RequestBody::Streamed(body, n)),
        None => {
            let (file, len) = spool(body, spool_dir, max_body, idle).await?;
            Ok(RequestBody::Spooled(file, len))
        }
    }
}

/// The spool file as a [`BodySink`], enforcing `max`.
struct Spool {
    out: tokio::fs::File,
    len: u64,
    max: Option<u64>,
}

enum SpoolError {
    TooLarge(u64),
    Io(io::Error),
}

impl BodySink for Spool {
    type Error = SpoolError;

    async fn put(&mut self, data: Bytes) -> Result<(), SpoolError> {
        self.len += data.len() as u64;
        if let Some(max) = self.max.filter(|&m| self.len > m) {
            return Err(SpoolError::TooLarge(max));
        }
        self.out.write_all(&data).await.map_err(SpoolError::Io)
    }
}

/// Spool a body of unknown length into an anonymous temp file, enforcing
/// `max_body`. Returns the file positioned at its start, and its length.
pub async fn spool(
    mut body: ReqBody,
    dir: &Path,
    max_body: Option<u64>,
    idle: Duration,
) -> Result<(std::fs::File, u64), Error> {
    let file = tempfile::tempfile_in(dir).map_err(|e| {
        Error::Internal(format!(
            "cannot create spool file in {}: {e}",
            dir.display()
        ))
    })?;
    let mut sink = Spool {
        out: tokio::fs::File::from_std(file),
        len: 0,
        max: max_body,
    };
    let len = pump(&mut body, idle, &mut sink)
        .await
        .map_err(|e| match e {
            PumpError::Client(e) => Error::BadRequest(format!("request body: {e}")),
            PumpError::Stalled(idle) => {
                Error::BadRequest(format!("request body stalled for {}s", idle.as_secs()))
            }
            PumpError::Sink(SpoolError::TooLarge(max)) => Error::PayloadTooLarge(format!(
                "chunked request body over --max-body ({max} bytes)"
            )),
            PumpError::Sink(SpoolError::Io(e)) => spool_err(e),
        })?;
    let mut out = sink.out;
    out.flush().await.map_err(spool_err)?;
    let mut file = out.into_std().await;
    use std::io::Seek;
    file.seek(io::SeekFrom::Start(0)).map_err(spool_err)?;
    Ok((file, len))
}

fn spool_err(e: io::Error) -> Error {
    Error::Internal(format!("writing request body spool file: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Frame;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    struct Collect(Vec<u8>);

    impl BodySink for Collect {
        type Error = ();

        async fn put(&mut self, data: Bytes) -> Result<(), ()> {
            self.0.extend_from_slice(&data);
            Ok(())
        }
    }

    /// A request body of `frames`, then its end or (`stall`) a wait forever.
    struct Frames {
        frames: Vec<Frame<Bytes>>,
        stall: bool,
    }

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
            if !self.frames.is_empty() {
                return Poll::Ready(Some(Ok(self.frames.remove(0))));
            }
            if self.stall {
                Poll::Pending
            } else {
                Poll::Ready(None)
            }
        }
    }

    fn body(stall: bool) -> ReqBody {
        let frames = vec![
            Frame::data(Bytes::from_static(b"abc")),
            Frame::trailers(http::HeaderMap::new()),
            Frame::data(Bytes::from_static(b"de")),
        ];
        Frames { frames, stall }.boxed_unsync()
    }

    #[tokio::test(start_paused = true)]
    async fn pumps_data_skips_trailers_and_reports_a_stall() {
        let idle = Duration::from_secs(5);
        let mut sink = Collect(Vec::new());
        let moved = pump(&mut body(false), idle, &mut sink).await;
        assert_eq!((moved.ok(), &sink.0[..]), (Some(5), &b"abcde"[..]));
        let start = tokio::time::Instant::now();
        let mut sink = Collect(Vec::new());
        let stalled = pump(&mut body(true), idle, &mut sink).await;
        assert!(matches!(stalled, Err(PumpError::Stalled(d)) if d == idle));
        assert_eq!((start.elapsed(), sink.0.len()), (idle, 5));
    }
}
