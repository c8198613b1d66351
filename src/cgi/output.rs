//! Reading a script's stdout: first the header block (its pipe as a
//! `gateway::head` source), then the body as a streaming [`http_body::Body`].
//!
//! Backpressure is structural: stdout is read only when hyper asks for the
//! next frame, i.e. when the client has taken the previous one. A slow client
//! fills the pipe and blocks the script; cgihost holds at most one read
//! buffer per response.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::process::ChildStdout;
use tokio::time::{Instant, Sleep};

use super::process::ProcessHandle;
use crate::gateway::head::{HeadBuf, HeadError, HeadSource, Step};

/// Read size for the body; also the most cgihost holds per response.
const READ_CHUNK: usize = 64 * 1024;
/// After the main process exited (and its group was killed), how long an
/// empty stdout may stay open before the response ends without its EOF:
/// only a process that escaped the group (setsid) can still hold it.
const EXITED_STDOUT_GRACE: Duration = Duration::from_secs(2);

/// A script's stdout, as the source of its header block.
pub struct Stdout<'a>(pub &'a mut ChildStdout);

impl HeadSource for Stdout<'_> {
    async fn next(&mut self, head: &mut HeadBuf) -> Result<Step, HeadError> {
        match self.0.read_buf(head.read_buf()).await {
            Ok(0) => Ok(Step::End),
            Ok(_) => Ok(Step::Output),
            Err(e) => Err(HeadError::Io(e)),
        }
    }
}

/// The script's stdout after the header block, as a response body (its
/// idle timeout is `gateway::timed`'s).
///
/// With a `Content-Length` (or a status that has no body) the body is
/// exactly that long: it ends — `is_end_stream`, and the script gets its
/// exit grace as at EOF — once the last declared byte is handed out, not
/// when stdout closes. hyper stops polling (and drops) a body at that
/// point, and scripts such as Fossil or hgweb go on working after their
/// reply; dropping an unfinished body kills the group instead. Output
/// beyond the declared length is never read; output that ends short of
/// it is an error (a truncated response, not a complete one).
pub struct CgiBody {
    stdout: ChildStdout,
    /// Body bytes that arrived together with the header block.
    first: Option<Bytes>,
    buf: BytesMut,
    /// Present until the output is complete; dropping it (client gone)
    /// kills the group.
    handle: Option<ProcessHandle>,
    /// Wait this long for the script to exit after its output is complete.
    exit_grace: Duration,
    /// Bytes still to read after `first` when the length is declared.
    remaining: Option<u64>,
    /// All of the output was read: the body ends after `first`.
    done: bool,
    /// `SCRIPT_NAME#request`, for log lines.
    tag: String,
    /// Resolves when the main process has exited.
    exit_signal: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Once it has: ends the response if stdout stays empty this long.
    escaped: Option<Pin<Box<Sleep>>>,
}

impl CgiBody {
    /// `length`: the declared body length (`Content-Length`, or 0 for a
    /// status without a body), if any.
    pub fn new(
        stdout: ChildStdout,
        mut first: Bytes,
        handle: ProcessHandle,
        exit_grace: Duration,
        length: Option<u64>,
        tag: String,
    ) -> CgiBody {
        let mut handle = handle;
        let exit_signal = handle.take_exit_signal();
        if let Some(n) = length {
            first.truncate(usize::try_from(n).unwrap_or(usize::MAX));
        }
        let remaining = length.map(|n| n - first.len() as u64);
        let mut body = CgiBody {
            stdout,
            first: Some(first).filter(|b| !b.is_empty()),
            buf: BytesMut::new(),
            handle: Some(handle),
            exit_grace,
            remaining,
            done: false,
            tag,
            exit_signal,
            escaped: None,
        };
        if body.remaining == Some(0) {
            body.complete();
        }
        body
    }

    /// All of the output is out: the script may finish by itself.
    fn complete(&mut self) {
        self.done = true;
        if let Some(h) = self.handle.take() {
            h.finish(self.exit_grace);
        }
    }

    /// Stdout is empty for now: has the main process exited, and stdout
    /// stayed empty for the grace since (or since the last read)?
    fn poll_escaped(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(signal) = self.exit_signal.as_mut() {
            // Sent, or dropped with the supervisor: either way, no group left.
            ready!(Pin::new(signal).poll(cx)).ok();
            self.exit_signal = None;
            self.escaped = Some(Box::pin(tokio::time::sleep(EXITED_STDOUT_GRACE)));
        }
        match self.escaped.as_mut() {
            Some(timer) => timer.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }

    /// `data` was read: count it against the declared length.
    fn read(&mut self, data: Bytes) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(left) = self.remaining.as_mut() {
            *left = left.saturating_sub(data.len() as u64);
            if *left == 0 {
                self.complete();
            }
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }
}

impl CgiBody {
    /// Stdout is done: the end of the body, or a truncated one.
    fn end_of_output(&mut self) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(left) = self.remaining {
            if let Some(h) = self.handle.take() {
                h.finish(self.exit_grace);
            }
            tracing::warn!(
                script = %self.tag,
                "CGI output ended {left} bytes short of its Content-Length: response truncated"
            );
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "CGI output shorter than its Content-Length",
            ))));
        }
        self.complete();
        Poll::Ready(None)
    }
}

impl http_body::Body for CgiBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if this.done || this.handle.is_none() {
            return Poll::Ready(None);
        }
        if this.buf.capacity() < READ_CHUNK {
            this.buf.reserve(READ_CHUNK);
        }
        // Never read past the declared length: the rest stays in the pipe.
        let spare = this.buf.spare_capacity_mut();
        let want = match this.remaining {
            Some(left) => spare.len().min(usize::try_from(left).unwrap_or(usize::MAX)),
            None => spare.len(),
        };
        let mut read_buf = ReadBuf::uninit(&mut spare[..want]);
        match Pin::new(&mut this.stdout).poll_read(cx, &mut read_buf) {
            Poll::Ready(Ok(())) => {
                let n = read_buf.filled().len();
                if n == 0 {
                    return this.end_of_output();
                }
                // SAFETY: poll_read initialised the first n spare bytes.
                unsafe { this.buf.set_len(n) };
                let data = this.buf.split().freeze();
                if let Some(t) = this.escaped.as_mut() {
                    t.as_mut().reset(Instant::now() + EXITED_STDOUT_GRACE);
                }
                this.read(data)
            }
            Poll::Ready(Err(e)) => {
                this.handle = None; // kills the group
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => {
                if this.poll_escaped(cx).is_ready() {
                    tracing::warn!(
                        script = %this.tag,
                        "the CGI program exited but a process that escaped its group \
                         (setsid?) still holds stdout: response ended {}s later",
                        EXITED_STDOUT_GRACE.as_secs()
                    );
                    return this.end_of_output();
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
