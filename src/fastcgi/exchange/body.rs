//! The response body of a FastCGI exchange: STDOUT records as frames, read
//! only when the client wants more (backpressure), STDERR to the log,
//! END_REQUEST ending it (and pooling the connection); with a declared
//! length it ends at that length and a task reads on to END_REQUEST.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::super::proto;
use super::Exchange;

/// The backend's STDOUT after the header block, as a response body (its
/// idle timeout is `gateway::timed`'s).
///
/// With a `Content-Length` (or a status that has no body) the body is
/// exactly that long and ends — `is_end_stream` — once the last declared
/// byte is handed out: hyper stops polling (and drops) a body at that
/// point. If END_REQUEST has not come by then, dropping the body hands the
/// exchange to a task that reads on to END_REQUEST (discarding anything
/// beyond the declared length) and only then pools the connection; an
/// application that works after its reply keeps its connection, and no
/// later request reads this one's records. Output beyond the declared
/// length never reaches the client; END_REQUEST short of it is an error.
pub struct FcgiBody {
    exchange: Option<Exchange>,
    first: Option<Bytes>,
    /// How long the drain after a complete response waits for END_REQUEST.
    idle: Duration,
    /// Bytes still due after `first` when the length is declared.
    remaining: Option<u64>,
    /// END_REQUEST came (the exchange is finished); the body ends once
    /// `first` is out, short of its declared length if `remaining` says so.
    ended: bool,
}

/// Most STDOUT a backend may send past its declared length before its
/// connection is closed instead of drained to END_REQUEST.
pub(super) const DRAIN_MAX: usize = 64 * 1024;

impl FcgiBody {
    /// `length`: the declared body length (`Content-Length`, or 0 for a
    /// status without a body), if any.
    pub fn new(
        exchange: Exchange,
        mut first: Bytes,
        idle: Duration,
        length: Option<u64>,
    ) -> FcgiBody {
        if let Some(n) = length {
            first.truncate(usize::try_from(n).unwrap_or(usize::MAX));
        }
        let remaining = length.map(|n| n - first.len() as u64);
        let mut body = FcgiBody {
            exchange: Some(exchange),
            first: Some(first).filter(|b| !b.is_empty()),
            idle,
            remaining,
            ended: false,
        };
        body.settle(&mut Context::from_waker(std::task::Waker::noop()));
        body
    }

    /// Every declared byte has been handed out.
    fn delivered(&self) -> bool {
        self.first.is_none() && self.remaining == Some(0)
    }

    /// The declared length was not reached.
    fn short(&self) -> bool {
        self.remaining.is_some_and(|left| left > 0)
    }

    /// END_REQUEST: finish the exchange (pooling the connection).
    fn end_request(&mut self, cx: &mut Context<'_>) {
        let Some(ex) = self.exchange.take() else {
            return;
        };
        if let Some(left) = self.remaining.filter(|&left| left > 0) {
            tracing::warn!(
                script = %ex.stderr.tag(),
                "FastCGI response ended {left} bytes short of its Content-Length: response truncated"
            );
        }
        ex.finish(cx);
        self.ended = true;
    }

    /// STDOUT `data` came: count it against the declared length (and cut
    /// what lies beyond it).
    fn hand_out(
        &mut self,
        mut data: Bytes,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(left) = self.remaining.as_mut() {
            data.truncate(usize::try_from(*left).unwrap_or(usize::MAX));
            *left -= data.len() as u64;
        }
        self.settle(cx);
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    /// Handle the records already buffered behind the data handed out so
    /// far, up to the next data: an END_REQUEST among them ends the
    /// exchange now and pools the connection.
    fn settle(&mut self, cx: &mut Context<'_>) {
        while let Some(ex) = self.exchange.as_mut() {
            let Some(rec) = ex.take_buffered_control() else {
                return;
            };
            match rec.kind {
                proto::STDERR => ex.log_stderr(&rec.content),
                proto::END_REQUEST => self.end_request(cx),
                _ => {} // an empty STDOUT
            }
        }
    }
}

impl Drop for FcgiBody {
    fn drop(&mut self) {
        // Complete but END_REQUEST still to come: read on to it. Else
        // (client gone mid-response) the connection closes with the
        // exchange, which is how php-fpm learns to abort.
        if !self.delivered() {
            return;
        }
        let Some(ex) = self.exchange.take() else {
            return;
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(ex.drain(self.idle));
        }
    }
}

impl http_body::Body for FcgiBody {
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
        loop {
            if this.delivered() {
                return Poll::Ready(None);
            }
            let Some(ex) = this.exchange.as_mut() else {
                if this.ended && this.short() {
                    this.ended = false; // reported once
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "FastCGI response shorter than its Content-Length",
                    ))));
                }
                return Poll::Ready(None);
            };
            match ex.poll_record(cx) {
                Poll::Ready(Ok(Some(rec))) => match rec.kind {
                    proto::STDOUT if !rec.content.is_empty() => {
                        return this.hand_out(rec.content, cx);
                    }
                    proto::STDOUT => {}
                    proto::STDERR => ex.log_stderr(&rec.content),
                    proto::END_REQUEST => this.end_request(cx),
                    other => {
                        this.exchange = None;
                        let e = io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("unexpected FastCGI record type {other}"),
                        );
                        return Poll::Ready(Some(Err(e)));
                    }
                },
                Poll::Ready(Ok(None)) => {
                    let tag = ex.stderr.tag().to_string();
                    this.exchange = None;
                    tracing::warn!(script = %tag, "FastCGI backend closed the connection before END_REQUEST: response truncated");
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "FastCGI response truncated",
                    ))));
                }
                Poll::Ready(Err(e)) => {
                    this.exchange = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && (self.delivered() || (self.ended && !self.short()))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
