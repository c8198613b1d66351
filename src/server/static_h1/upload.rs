//! Request bodies on the sendfile path: a `Content-Length` body for a CGI
//! program stays on this path and goes from the socket into the
//! program's stdin by splice(2) (`body::socket`), never through user
//! space (a client that sent `Expect: 100-continue` gets its `100
//! Continue` once the program runs). Any other request with a body
//! (FastCGI, an upload rule, a chunked one, ...) is hyper's, as before.
//!
//! The connection reads its next request only when the body's views are
//! gone and every byte of the body has left the socket: what the program
//! did not read (it exited early) is drained, up to the CGI engine's
//! `DRAIN_LIMIT` and within `header_read_timeout`, or the connection
//! closes (and the response said so). The client's close is watched once
//! the whole body is in, as for a bodiless request.

use std::io;

use bytes::{Buf, Bytes};
use http::Request;
use http_body_util::BodyExt;
use tokio::time::Instant;

use super::head::expects_continue;
use super::send::Watch;
use super::Connection;
use crate::body::{socket_body, Views};
use crate::cgi::stdin::DRAIN_LIMIT;
use crate::router;

impl Connection<'_> {
    /// Whether this path takes `req`'s body: it goes to a CGI program.
    pub(super) fn upload_here(&self, req: &Request<()>) -> bool {
        let app = self.live.current();
        let conn = app.trusted_proxies.apply(self.conn, req.headers());
        router::body_goes_to_cgi(&app, req, conn.client.ip)
    }

    /// Answer a request whose body (`length` bytes) goes to a CGI
    /// program (its head `head_len` bytes, still in the input); false
    /// when the connection is over.
    pub(super) async fn send_upload(
        &mut self,
        req: Box<Request<()>>,
        head_len: usize,
        length: u64,
    ) -> bool {
        self.input.advance(head_len);
        // The body's first bytes may have come with the head; what
        // follows the body in the input is the next request's.
        let with_head = self
            .input
            .len()
            .min(usize::try_from(length).unwrap_or(usize::MAX));
        let prefix = Bytes::copy_from_slice(&self.input[..with_head]);
        self.input.advance(with_head);
        let app = self.live.current();
        let counters = (&app.stats.bytes_in, &app.stats.bytes_spliced);
        let expects = expects_continue(req.headers());
        let views = match socket_body(&self.stream, (prefix, length, expects), counters) {
            Ok(views) => views,
            Err(e) => {
                tracing::warn!(peer = %self.conn.peer, "cannot read the request body: {e}");
                return false;
            }
        };
        drop(app);
        let Views {
            body,
            spliceable,
            progress,
            mut unread_at_end,
        } = views;
        let mut req = req.map(|()| body.boxed_unsync());
        req.extensions_mut().insert(spliceable);
        // A body left with more than can be drained (a 413, a 404, a
        // program that exited) ends the connection: the response says so.
        let mut left = None;
        let abandons = || {
            left = unread_at_end.try_recv().ok();
            left.is_some_and(|n| n > DRAIN_LIMIT)
        };
        // The client's close is watched once the body is in: until then
        // the socket shows the body's bytes.
        let watch = if self.input.is_empty() {
            Watch::AfterBody(progress)
        } else {
            Watch::Never
        };
        let result = self.write_dynamic(req, watch, abandons).await;
        // The response may be complete while the program still reads its
        // stdin (it sent a Content-Length first): it gets the rest of its
        // body before anything else reads the socket (the next request,
        // or the lingering close). The feeding task ends at the body's
        // end, with the program, or when either side stalls for the CGI
        // timeout.
        let left = match left {
            Some(left) => left,
            None => unread_at_end.await.unwrap_or(u64::MAX),
        };
        if matches!(result, Ok(true)) && left > 0 && !self.drain(left).await {
            return self.after(Ok(false)).await;
        }
        self.after(result).await
    }

    /// Read and drop the `left` body bytes the program did not read;
    /// false when that is more than `DRAIN_LIMIT`, the client stalls for
    /// `header_read_timeout` or goes.
    async fn drain(&mut self, mut left: u64) -> bool {
        if left > DRAIN_LIMIT {
            tracing::debug!(peer = %self.conn.peer, "{left} unread body bytes: closing");
            return false;
        }
        let give_up = Instant::now() + self.front.header_read_timeout;
        let mut scratch = vec![0; 16 * 1024];
        while left > 0 {
            // Never past the body: the next request may follow it.
            let room = scratch
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            match self.stream.try_read(&mut scratch[..room]) {
                Ok(0) => return false,
                Ok(n) => {
                    left -= n as u64;
                    self.live.current().stats.bytes_in.inc_by(n as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let wait = tokio::time::timeout_at(give_up, self.stream.readable());
                    if !matches!(wait.await, Ok(Ok(()))) {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }
}
