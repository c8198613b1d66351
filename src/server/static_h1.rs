//! HTTP/1.x on cleartext connections without hyper, for as long as the
//! client sends requests this path takes: so that files go out with
//! sendfile(2) (hyper's body model takes every byte through user space,
//! twice), a small file costs a parse, a lookup and one write (a memo's:
//! `hot.rs`), an upload to a CGI program goes into its stdin with
//! splice(2) (`upload.rs`), and a waiting connection holds no buffer.
//!
//! A request is served here when it is HTTP/1.0 or 1.1 with an
//! origin-form target, no `Transfer-Encoding` or `Upgrade`, and either a
//! bodiless GET or HEAD, or a `Content-Length` body for a CGI program
//! (with or without `Expect: 100-continue`, on HTTP/1.1). Static files
//! and rules' answers are made here; anything else the router routes
//! (CGI, FastCGI, the status page) is answered by the same
//! `answer_request` as on the hyper side and written here (`send.rs`). Any other request (a body for anything but a CGI program,
//! an HTTP/2 preface, a head that does not parse or is too large) hands
//! the connection, with every byte read so far, to hyper, which serves it
//! from then on; so malformed requests get hyper's 400 or 431.
//!
//! The limits are those of the hyper side: the first head must arrive
//! within `header_read_timeout` of accept, later ones within
//! `keepalive_timeout` of the previous response (and then within
//! `header_read_timeout` of their first byte); a client that takes no bytes
//! for `send_timeout` is dropped; at shutdown an idle connection closes at
//! once and a busy one after its response.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Buf, BytesMut};
use http::Request;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::buffers::{self, Kind};
use super::connection::{stopped, Activity, InFlight};
use super::send_file::try_recv;
use super::FrontEnd;
use crate::app::Live;
use crate::conn::ConnInfo;

mod head;
mod hot;
mod respond;
mod send;
mod upload;

use head::{body_length, parse_head_probing, Head};

/// Header lines one request may have here; more go to hyper (which takes
/// up to 100).
const MAX_HEADERS: usize = 64;

/// Response bytes gathered before a write; a larger body chunk is written
/// on its own.
pub(super) const GATHER: usize = 16 * 1024;

/// A file range up to this size is read behind the response head and sent
/// in the same write; larger ones go with sendfile.
const INLINE_FILE: u64 = GATHER as u64 - 1024;

/// Serve static requests on `stream` (whose first bytes were read already:
/// `read`) until the connection ends (None) or a request for hyper
/// arrives: then the stream, the bytes already read from it and the
/// connection's activity are returned, for hyper to serve (those bytes
/// first).
///
/// Not an async fn, for the reason `connection::handle` gives.
pub(super) fn serve<'a>(
    (stream, read): (TcpStream, BytesMut),
    conn: &'a ConnInfo,
    live: &'a Live,
    front: &'a FrontEnd,
    accepted: Instant,
) -> impl Future<Output = Option<(TcpStream, BytesMut, Arc<Activity>)>> + Send + 'a {
    let mut c = Connection::new((stream, read), (front, live), conn, accepted);
    async move {
        'requests: loop {
            // Reads and writes here bypass tokio's cooperative budget (they
            // are `try_` calls): yield now and then, or a client whose next
            // request is always ready would starve the worker's other tasks.
            // (Before the head, so that no request is held across the yield:
            // this future is what every waiting connection carries.)
            tokio::task::consume_budget().await;
            // In a block: nothing of the request is held across a write.
            let turn = 'full: {
                let (terms, answered) = {
                    let (req, head_len, key) = match c.next_head().await {
                        Next::Head(req, len, key) => (req, len, key),
                        // Answered from a memo: what is left to do is done
                        // after the block, where no head is held.
                        Next::Hot(answer, len) => {
                            c.input.advance(len);
                            break 'full Turn::Memo(answer);
                        }
                        Next::HandOver => return Some(c.hand_over()),
                        Next::Close => return None,
                    };
                    let length = body_length(req.headers()).unwrap_or(0);
                    if length > 0 {
                        // A body: this path takes only a CGI program's.
                        if !c.upload_here(&req) {
                            return Some(c.hand_over());
                        }
                        break 'full Turn::Upload(Box::new(req), head_len, length);
                    }
                    match c.answer_here(req, head_len, key) {
                        Ok(answered) => answered,
                        Err(req) => break 'full Turn::Dynamic(req),
                    }
                };
                c.first = false;
                // Boxed: writing a response (sendfile windows, gzip) keeps
                // more state than waiting for a head, which is what an idle
                // connection does; the idle connection should not carry it.
                if !Box::pin(c.send(terms, answered)).await {
                    return None;
                }
                c.between_requests();
                continue 'requests;
            };
            c.first = false;
            let more = match turn {
                Turn::Memo(hot::Answer::Sent(keep_alive)) => {
                    drop(InFlight::start(c.activity()));
                    // Boxed, as `send`: the lingering close has a buffer.
                    keep_alive || Box::pin(c.close()).await
                }
                Turn::Memo(hot::Answer::Partly(hit)) => Box::pin(c.send_hot(hit)).await,
                Turn::Dynamic(req) => Box::pin(c.send_dynamic(req)).await,
                Turn::Upload(req, head_len, length) => {
                    Box::pin(c.send_upload(req, head_len, length)).await
                }
            };
            if !more {
                return None;
            }
            c.between_requests();
        }
    }
}

/// A request the static path did not finish in its first step: a memo's
/// answer still to finish, or a request for the router (CGI, FastCGI, a
/// built-in page). Boxed: this is held while the response is written,
/// and a waiting connection should carry no request.
enum Turn {
    Memo(hot::Answer),
    Dynamic(Box<Request<()>>),
    /// A request whose body goes to a CGI program, its head's length and
    /// its body's (`upload.rs`).
    Upload(Box<Request<()>>, usize, u64),
}

/// What the next request head brought.
// Returned once per request and never stored: boxing the request would
// only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Next {
    /// The request, its head's length, and its memo key (`hot.rs`).
    Head(Request<()>, usize, Option<Box<[u8]>>),
    /// A memo answered it.
    Hot(hot::Answer, usize),
    /// Not a request this path takes (or too large): hyper's, from here.
    HandOver,
    /// The client went, timed out, or the server is stopping.
    Close,
}

/// One connection on this path: the socket, its buffers and its timer.
struct Connection<'a> {
    stream: TcpStream,
    /// What was read and not yet used: a buffer from the thread's pool
    /// while a head is coming in, none while the connection waits.
    input: BytesMut,
    stop: tokio::sync::watch::Receiver<bool>,
    front: &'a FrontEnd,
    /// Borrowed: this struct is what a waiting connection carries.
    conn: &'a ConnInfo,
    /// For memo hits (`hot.rs`), answered as soon as their head is in.
    live: &'a Live,
    /// When the head being read must be complete. The timer is armed for
    /// this or an earlier time and re-armed when it fires early, so a
    /// deadline that moves later (each keep-alive request) does not touch
    /// the timer wheel; one that moves earlier re-arms it.
    deadline: Instant,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// No request answered yet (keep-alive timing starts after one).
    first: bool,
    accepted: Instant,
    /// Made at the first request: a silent connection needs none.
    activity: Option<Arc<Activity>>,
}

impl<'a> Connection<'a> {
    fn new(
        (stream, read): (TcpStream, BytesMut),
        (front, live): (&'a FrontEnd, &'a Live),
        conn: &'a ConnInfo,
        accepted: Instant,
    ) -> Self {
        let deadline = accepted + front.header_read_timeout;
        Connection {
            stream,
            // Nothing is allocated before the client sends a byte (unless
            // bytes came with a PROXY header): a silent or idle connection
            // costs no buffers (see `next_head`).
            input: read,
            stop: front.stop.clone(),
            front,
            conn,
            live,
            deadline,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            first: true,
            accepted,
            activity: None,
        }
    }

    /// The connection's activity, made now if this is its first request.
    fn activity(&mut self) -> &Arc<Activity> {
        let accepted = self.accepted;
        self.activity
            .get_or_insert_with(|| Arc::new(Activity::new(accepted)))
    }

    /// The socket, what was read of it and the connection's activity, for
    /// hyper.
    fn hand_over(mut self) -> (TcpStream, BytesMut, Arc<Activity>) {
        let activity = self.activity().clone();
        (self.stream, self.input, activity)
    }

    /// Move the deadline; re-arm the timer only if it comes earlier.
    fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
        if deadline < self.timer.deadline() {
            self.timer.as_mut().reset(deadline);
        }
    }

    /// Read until a whole head is in, within the deadline; answer it from
    /// a memo (`hot.rs`) if one of `live`'s has it.
    async fn next_head(&mut self) -> Next {
        loop {
            if !self.input.is_empty() {
                let stopping = *self.stop.borrow();
                let on = (self.conn.client.ip, &self.stream);
                let live = self.live;
                let probe = |raw: &hot::RawHead| hot::probe(raw, &live.current(), on, stopping);
                let max = self.front.max_header_size;
                match parse_head_probing(&self.input, max, probe) {
                    // hyper's 431
                    Head::Complete(_, len, _) if len > self.front.max_header_size => {
                        return Next::HandOver
                    }
                    Head::Complete(req, len, key) => return Next::Head(req, len, key),
                    Head::Hot(answer, len) => return Next::Hot(answer, len),
                    Head::Partial if self.input.len() < self.front.max_header_size => {}
                    Head::Partial | Head::NotOurs => return Next::HandOver,
                }
            }
            let was_empty = self.input.is_empty();
            if self.input.capacity() == 0 {
                self.input = buffers::take(Kind::Input);
            } else if self.input.capacity() - self.input.len() < 1024 {
                self.input.reserve(4096);
            }
            match try_recv(&self.stream, &mut self.input) {
                Ok(0) => return Next::Close,
                Ok(_) if was_empty && !self.first => {
                    // Keep-alive waits for the first byte; the rest of the
                    // head gets the header timeout.
                    self.set_deadline(Instant::now() + self.front.header_read_timeout);
                    continue;
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!(peer = %self.conn.peer, "read failed: {e}");
                    return Next::Close;
                }
            }
            // Nothing came (an accepted socket is first assumed readable):
            // wait without a buffer.
            if self.input.is_empty() {
                buffers::release(Kind::Input, &mut self.input);
            }
            if let Some(next) = self.wait_readable().await {
                return next;
            }
        }
    }

    /// Wait for bytes; `Some(Close)` when the deadline passed, the client
    /// went or the server stops.
    ///
    /// Polled by hand rather than with `select!` over `readable()`: the
    /// socket's poll keeps its waker in the reactor, not in a future, and
    /// this future is what every waiting connection carries.
    async fn wait_readable(&mut self) -> Option<Next> {
        let Connection {
            stream,
            stop,
            timer,
            deadline,
            conn,
            ..
        } = self;
        let mut stopping = std::pin::pin!(stopped(stop));
        std::future::poll_fn(|cx| {
            if let Poll::Ready(ready) = stream.poll_read_ready(cx) {
                return Poll::Ready(ready.is_err().then_some(Next::Close));
            }
            if timer.as_mut().poll(cx).is_ready() {
                if Instant::now() < *deadline {
                    timer.as_mut().reset(*deadline);
                    return Poll::Ready(None);
                }
                tracing::debug!(peer = %conn.peer, "closing idle connection");
                return Poll::Ready(Some(Next::Close));
            }
            if stopping.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Some(Next::Close));
            }
            Poll::Pending
        })
        .await
    }

    /// Between requests: skip empty lines, give the buffer back if nothing
    /// of the next head is in, set the timer for the next head.
    fn between_requests(&mut self) {
        // Blank lines between requests are allowed (RFC 9112 §2.2) and
        // are not the start of a head.
        let blank = blank_lines(&self.input);
        self.input.advance(blank);
        // An idle connection holds no buffer, whatever it needed before.
        if self.input.is_empty() {
            buffers::release(Kind::Input, &mut self.input);
        }
        // A pipelined head has begun already: it gets the header timeout.
        let wait = if self.input.is_empty() {
            self.front.keepalive_timeout
        } else {
            self.front.header_read_timeout
        };
        self.set_deadline(Instant::now() + wait);
    }
}

/// The length of the empty lines (CRLF or LF) `input` starts with. A CR
/// not followed by LF is not one: it stays, and makes the next head the
/// 400 it is on the hyper path (httparse skips the same empty lines).
/// A CR at the very end may be the start of a CRLF: it stays too.
fn blank_lines(input: &[u8]) -> usize {
    let mut n = 0;
    loop {
        match input.get(n..) {
            Some([b'\r', b'\n', ..]) => n += 2,
            Some([b'\n', ..]) => n += 1,
            _ => return n,
        }
    }
}

#[cfg(test)]
use head::{parse_head, wants_keep_alive};
#[cfg(test)]
use std::time::Duration;
#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests;
