//! One request/response exchange on a backend connection.
//!
//! 1. [`Exchange::start`] writes BEGIN_REQUEST and the PARAMS in one write;
//!    a request body is then sent as STDIN records by its own task, as it
//!    arrives, while this side already reads the answer (full duplex: an
//!    application that answers before reading its whole body is fine).
//! 2. [`Exchange::read_head`] collects STDOUT until the CGI header block is
//!    complete (capped), logging STDERR lines as they come.
//! 3. [`FcgiBody`] streams the rest of STDOUT to the client, reading the
//!    socket only when the client wants more (backpressure). END_REQUEST
//!    ends it and returns the connection to the pool — only if the whole
//!    request went out and the backend ended cleanly. A connection that
//!    closes before END_REQUEST is a truncated response, reported as an
//!    error (the client's connection is aborted, never a clean end).
//!    Dropping the body (client gone) closes the connection, which is how
//!    php-fpm learns to abort the request.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::task::JoinHandle;

mod body;
pub use body::FcgiBody;
use body::DRAIN_MAX;

use super::pool::{Conn, Lease, Stream, STALL_AFTER};
use super::proto::{self, Record};
use crate::body::ReqBody;
use crate::gateway::head::{read_head, Head, HeadBuf, HeadError, HeadSource, Step};
use crate::gateway::request_body::{pump, BodySink, PumpError};
use crate::gateway::stderr::StderrLines;

/// What goes to the backend as STDIN.
pub enum BodySource {
    None,
    /// Streamed as it arrives from the client.
    Stream(ReqBody),
    /// A spooled chunked body (its length was sent as CONTENT_LENGTH).
    File(std::fs::File),
}

enum Writer {
    Done(WriteHalf<Stream>),
    Running(WriterTask),
}

/// The STDIN task; aborted if the exchange is dropped first.
struct WriterTask(JoinHandle<io::Result<WriteHalf<Stream>>>);

impl Drop for WriterTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub struct Exchange {
    lease: Lease,
    read: ReadHalf<Stream>,
    rbuf: BytesMut,
    writer: Writer,
    answered: bool,
    reused: bool,
    /// The connection had never answered before this request.
    fresh: bool,
    /// The backend's STDERR as log lines (tagged `SCRIPT#request`).
    stderr: StderrLines,
}

impl Exchange {
    /// Send the request head (BEGIN_REQUEST and PARAMS, plus the empty STDIN
    /// record when there is no body), then start the body's STDIN task.
    pub async fn start(
        mut lease: Lease,
        head: &[u8],
        body: BodySource,
        idle: Duration,
        tag: String,
    ) -> io::Result<Exchange> {
        let Some(Conn {
            io,
            rbuf,
            reused,
            served,
        }) = lease.conn.take()
        else {
            return Err(io::Error::other("lease without a connection"));
        };
        let (read, mut write) = tokio::io::split(io);
        write.write_all(head).await?;
        lease.sent(served);
        let writer = match body {
            BodySource::None => Writer::Done(write),
            BodySource::Stream(b) => {
                Writer::Running(WriterTask(tokio::spawn(send_stream(write, b, idle))))
            }
            BodySource::File(f) => Writer::Running(WriterTask(tokio::spawn(send_file(write, f)))),
        };
        Ok(Exchange {
            lease,
            read,
            rbuf: rbuf_or_new(rbuf),
            writer,
            answered: false,
            fresh: !served,
            reused,
            stderr: StderrLines::per_request(tag),
        })
    }

    fn poll_record(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Record>>> {
        loop {
            match proto::take_record(&mut self.rbuf) {
                Ok(Some(rec)) => {
                    if !self.answered {
                        self.answered = true;
                        self.lease.answered();
                    }
                    return Poll::Ready(Ok(Some(rec)));
                }
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e))),
            }
            if self.rbuf.capacity() - self.rbuf.len() < 4096 {
                self.rbuf.reserve(32 * 1024);
            }
            let n = {
                let spare = self.rbuf.spare_capacity_mut();
                let mut rb = ReadBuf::uninit(spare);
                match Pin::new(&mut self.read).poll_read(cx, &mut rb) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => rb.filled().len(),
                }
            };
            if n == 0 {
                return Poll::Ready(Ok(None));
            }
            // SAFETY: poll_read initialised n bytes of spare capacity.
            unsafe { self.rbuf.set_len(self.rbuf.len() + n) };
        }
    }

    /// The next complete buffered record if it is an empty STDOUT, a
    /// STDERR or the END_REQUEST (never response data: that stays for
    /// `poll_record`, in order). Does not read the socket.
    fn take_buffered_control(&mut self) -> Option<Record> {
        let b = &self.rbuf;
        if b.len() < proto::HEADER_LEN {
            return None;
        }
        let empty = b[4] == 0 && b[5] == 0;
        let control = match b[1] {
            proto::STDOUT => empty,
            proto::STDERR | proto::END_REQUEST => true,
            _ => false,
        };
        if !control {
            return None;
        }
        proto::take_record(&mut self.rbuf).ok().flatten()
    }

    fn log_stderr(&mut self, data: &[u8]) {
        self.stderr.feed(data);
    }

    /// Read STDOUT until the header block is complete.
    pub async fn read_head(&mut self, limit: usize, idle: Duration) -> Result<Head, HeadError> {
        let mut early = None;
        if self.fresh {
            // A fresh connection still unanswered after STALL_AFTER may sit in
            // the backend's accept queue behind processes pinned by our idle
            // connections: close those so a process frees up for it.
            match tokio::time::timeout(STALL_AFTER, poll_fn(|cx| self.poll_record(cx))).await {
                Ok(r) => early = Some(r),
                Err(_) => self.lease.backend.shed_idle(),
            }
        }
        read_head(&mut Records { ex: self, early }, limit, idle).await
    }

    /// The head's view of the next record.
    fn head_step(
        &mut self,
        next: io::Result<Option<Record>>,
        head: &mut HeadBuf,
    ) -> Result<Step, HeadError> {
        let stale = !self.answered && self.reused;
        let rec = match next {
            Err(e) if stale => return Err(HeadError::Stale(e)),
            Err(e) => return Err(HeadError::Io(e)),
            Ok(None) => {
                let e = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "backend closed the connection",
                );
                return Err(if stale {
                    HeadError::Stale(e)
                } else {
                    HeadError::Io(e)
                });
            }
            Ok(Some(rec)) => rec,
        };
        match rec.kind {
            // An empty record is no output: it neither completes the block
            // nor keeps the request alive.
            proto::STDOUT if rec.content.is_empty() => Ok(Step::Chatter),
            proto::STDOUT => {
                head.extend(&rec.content);
                Ok(Step::Output)
            }
            proto::STDERR => {
                self.log_stderr(&rec.content);
                Ok(Step::Chatter)
            }
            proto::END_REQUEST => {
                let (_, protocol_status) = proto::end_request_status(&rec.content);
                let overloaded = protocol_status == proto::OVERLOADED;
                Err(
                    if overloaded || (protocol_status != proto::REQUEST_COMPLETE && head.is_empty())
                    {
                        HeadError::Refused {
                            protocol_status,
                            overloaded,
                        }
                    } else {
                        HeadError::Ended { got: head.len() }
                    },
                )
            }
            other => Err(HeadError::Protocol(format!(
                "unexpected record type {other}"
            ))),
        }
    }

    /// END_REQUEST seen: pool the connection if the request went out whole.
    fn finish(self, cx: &mut Context<'_>) {
        let Exchange {
            mut lease,
            read,
            rbuf,
            writer,
            ..
        } = self;
        let write = match writer {
            Writer::Done(w) => Some(w),
            Writer::Running(mut task) => match Pin::new(&mut task.0).poll(cx) {
                Poll::Ready(Ok(Ok(w))) => Some(w),
                _ => None, // still sending, or failed: the connection is closed
            },
        };
        if let Some(w) = write.filter(|_| rbuf.is_empty()) {
            let io = read.unsplit(w);
            lease.conn = Some(Conn {
                io,
                rbuf,
                reused: false,
                served: true,
            });
            lease.release();
        }
    }
}

impl Exchange {
    /// The client has the whole response (its declared length) but the
    /// backend has not ended the request yet: read on to END_REQUEST,
    /// logging STDERR and dropping STDOUT, then pool the connection. A
    /// backend silent for `idle`, or sending more than [`DRAIN_MAX`] past
    /// its length, loses the connection instead.
    async fn drain(mut self, idle: Duration) {
        let mut extra = 0usize;
        loop {
            let rec = match tokio::time::timeout(idle, poll_fn(|cx| self.poll_record(cx))).await {
                Ok(Ok(Some(rec))) => rec,
                Ok(Ok(None)) | Ok(Err(_)) => return,
                Err(_) => {
                    tracing::debug!(script = %self.stderr.tag(), "no END_REQUEST within {}s of a complete response: connection closed", idle.as_secs());
                    return;
                }
            };
            match rec.kind {
                proto::STDOUT => {
                    extra += rec.content.len();
                    if extra > DRAIN_MAX {
                        tracing::warn!(script = %self.stderr.tag(), "FastCGI output goes on past its Content-Length: connection closed");
                        return;
                    }
                }
                proto::STDERR => self.log_stderr(&rec.content),
                proto::END_REQUEST => {
                    if extra > 0 {
                        tracing::warn!(script = %self.stderr.tag(), "FastCGI output {extra} bytes longer than its Content-Length: the excess was dropped");
                    }
                    self.finish(&mut Context::from_waker(std::task::Waker::noop()));
                    return;
                }
                _ => return,
            }
        }
    }
}

/// An exchange's records, as the source of the header block.
struct Records<'a> {
    ex: &'a mut Exchange,
    /// A record already read (while waiting for a fresh connection).
    early: Option<io::Result<Option<Record>>>,
}

impl HeadSource for Records<'_> {
    async fn next(&mut self, head: &mut HeadBuf) -> Result<Step, HeadError> {
        let next = match self.early.take() {
            Some(r) => r,
            None => poll_fn(|cx| self.ex.poll_record(cx)).await,
        };
        self.ex.head_step(next, head)
    }
}

fn rbuf_or_new(mut b: BytesMut) -> BytesMut {
    b.clear();
    b
}

/// A backend connection's write side as a [`BodySink`]: STDIN records.
struct StdinRecords<'a>(&'a mut WriteHalf<Stream>);

impl BodySink for StdinRecords<'_> {
    type Error = io::Error;

    async fn put(&mut self, data: Bytes) -> io::Result<()> {
        write_stdin(self.0, &data).await
    }
}

/// STDIN records from a streamed request body. On a client error the
/// write side is shut down, so the backend sees EOF and gives up.
async fn send_stream(
    mut w: WriteHalf<Stream>,
    mut body: ReqBody,
    idle: Duration,
) -> io::Result<WriteHalf<Stream>> {
    let failed = match pump(&mut body, idle, &mut StdinRecords(&mut w)).await {
        Ok(_) => None,
        Err(PumpError::Sink(e)) => return Err(e),
        Err(PumpError::Client(e)) => Some(io::Error::other(format!("request body: {e}"))),
        Err(PumpError::Stalled(_)) => Some(io::Error::new(
            io::ErrorKind::TimedOut,
            "request body stalled",
        )),
    };
    if let Some(e) = failed {
        let _ = w.shutdown().await;
        return Err(e);
    }
    let mut end = BytesMut::new();
    proto::put_stream_end(&mut end, proto::STDIN);
    w.write_all(&end).await?;
    Ok(w)
}

/// STDIN records from a spooled body file.
async fn send_file(mut w: WriteHalf<Stream>, file: std::fs::File) -> io::Result<WriteHalf<Stream>> {
    let mut file = tokio::fs::File::from_std(file);
    let mut buf = vec![0u8; proto::MAX_CONTENT];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        write_stdin(&mut w, &buf[..n]).await?;
    }
    let mut end = BytesMut::new();
    proto::put_stream_end(&mut end, proto::STDIN);
    w.write_all(&end).await?;
    Ok(w)
}

async fn write_stdin(w: &mut WriteHalf<Stream>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let n = data.len().min(proto::MAX_CONTENT);
        w.write_all(&proto::stdin_header(n)).await?;
        w.write_all(&data[..n]).await?;
        data = &data[n..];
    }
    Ok(())
}
