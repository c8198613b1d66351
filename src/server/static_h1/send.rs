//! The static path's answers, once a head is in: a static file or a
//! rule's answer made here (`answer_here`, with a memo kept for the next
//! time), a memo's answer whose write had to wait, a request the router
//! routes elsewhere (CGI, FastCGI, a built-in page) answered through the
//! same `answer_request` as the hyper side, and the end of the
//! connection with a lingering close.

use std::io;
use std::time::Duration;

use http::{Method, Request, Response};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::super::buffers::{self, Kind};
use super::super::connection::{stopped, InFlight};
use super::super::send_file::write_all;
use super::super::{answer_request, answer_static};
use super::head::wants_keep_alive;
use super::respond::{respond, Terms};
use super::{hot, Connection};
use crate::body::{self, Body, ReqBody};
use crate::log::AccessRecord;
use crate::router;
use crate::static_files::FileRange;

/// A response made here, for `send`: status and headers, the file bytes
/// to send behind them, and the access record.
pub(super) type Answered = (Response<Body>, Option<FileRange>, AccessRecord);

impl Connection<'_> {
    /// The static path's answer to `req` (its head `head_len` bytes, its
    /// memo key `key`): a static file, a rule's answer or an error page of
    /// the static kind; the request back when the router routes it
    /// elsewhere. The head is consumed either way.
    pub(super) fn answer_here(
        &mut self,
        req: Request<()>,
        head_len: usize,
        key: Option<Box<[u8]>>,
    ) -> Result<(Terms, Answered), Box<Request<()>>> {
        use bytes::Buf;
        self.input.advance(head_len);
        let app = self.live.current();
        // From a trusted proxy: the client and scheme it names.
        let conn = app.trusted_proxies.apply(self.conn, req.headers());
        let Some(answer) = router::static_path(&app, &req, conn.client.ip) else {
            return Err(Box::new(req));
        };
        let busy = || InFlight::start(self.activity());
        let Some((mut served, record)) = answer_static(app.clone(), &req, answer, &conn, busy)
        else {
            return Err(Box::new(req));
        };
        if let Some((key, memo)) = key.zip(served.memo.take()) {
            hot::remember(&app, key, memo, served.resp.headers(), &record);
        }
        let terms = Terms {
            version: req.version(),
            head_only: req.method() == Method::HEAD,
            keep_alive: wants_keep_alive(&req) && !*self.stop.borrow(),
        };
        Ok((terms, (served.resp, served.file, record)))
    }

    /// Send one response; false when the connection is over.
    pub(super) async fn send(&mut self, ex: Terms, (resp, file, mut record): Answered) -> bool {
        // Body bytes the client was sent (the access log's count).
        let mut sent = 0;
        let send_timeout = self.front.send_timeout;
        let mut out = buffers::take(Kind::Output);
        let result = respond(
            &self.stream,
            &mut out,
            (resp, file),
            &ex,
            send_timeout,
            &mut record.status,
            &mut sent,
        )
        .await;
        buffers::give(Kind::Output, out);
        self.finish(record, sent, result).await
    }

    /// Answer a bodiless request the router routes elsewhere (a CGI
    /// program, a FastCGI backend, a built-in page) as the hyper side
    /// would, through the same `answer_request`, and write its response
    /// here; false when the connection is over. (Its access log line is
    /// written when the body is done, as on the hyper side.)
    pub(super) async fn send_dynamic(&mut self, req: Box<Request<()>>) -> bool {
        // With a pipelined request read already, a close from the client
        // may only mean it has sent all it will: its answers are still due
        // (as hyper, which watches for a close only with nothing unread).
        let watch = if self.input.is_empty() {
            Watch::Now
        } else {
            Watch::Never
        };
        let req = req.map(|()| body::empty_request());
        let result = self.write_dynamic(req, watch, || false).await;
        self.after(result).await
    }

    /// Answer `req` through `answer_request` and write the response:
    /// `Ok(keep the connection?)`. A client that goes while the request
    /// runs (watched as `watch` says) ends it, as on the hyper side
    /// (dropping the response drops the program). `abandons`, asked once
    /// the response is there: whether the connection will close after it
    /// (the response then says so).
    pub(super) async fn write_dynamic(
        &mut self,
        req: Request<ReqBody>,
        watch: Watch,
        abandons: impl FnOnce() -> bool,
    ) -> io::Result<bool> {
        let (version, head_only) = (req.version(), req.method() == Method::HEAD);
        let wants = wants_keep_alive(&req);
        let busy = InFlight::start(self.activity());
        let stream = &self.stream;
        let gone = async {
            match &watch {
                Watch::Never => std::future::pending().await,
                Watch::Now => {}
                Watch::AfterBody(progress) => progress.all_in().await,
            }
            client_gone(stream).await
        };
        let mut gone = std::pin::pin!(gone);
        let answered = answer_request(self.live.current(), req, self.conn, busy);
        let resp = tokio::select! {
            resp = answered => resp,
            () = &mut gone => {
                tracing::debug!(peer = %self.conn.peer, "client went before the response");
                return Err(io::ErrorKind::ConnectionAborted.into());
            }
        };
        // Whether the server began to stop while the request ran.
        let keep_alive = wants && !*self.stop.borrow() && !abandons();
        let ex = Terms {
            version,
            head_only,
            keep_alive,
        };
        let (mut status, mut sent) = (0, 0);
        let mut out = buffers::take(Kind::Output);
        let send_timeout = self.front.send_timeout;
        let written = respond(
            stream,
            &mut out,
            (resp, None),
            &ex,
            send_timeout,
            &mut status,
            &mut sent,
        );
        let result = tokio::select! {
            result = written => result,
            () = &mut gone => Err(io::ErrorKind::ConnectionAborted.into()),
        };
        buffers::give(Kind::Output, out);
        result
    }

    /// Log and count a response that was sent (`Ok(keep the connection?)`)
    /// or cut short; false when the connection is over.
    async fn finish(&mut self, record: AccessRecord, sent: u64, result: io::Result<bool>) -> bool {
        record.finish(sent, result.is_ok());
        self.after(result).await
    }

    /// After a response was sent (`Ok(keep the connection?)`) or cut
    /// short; false when the connection is over.
    pub(super) async fn after(&mut self, result: io::Result<bool>) -> bool {
        let peer = self.conn.peer;
        match result {
            Ok(true) => true,
            Ok(false) => self.close().await,
            Err(e) => {
                match e.kind() {
                    io::ErrorKind::TimedOut => tracing::info!(%peer, "{e}; closing"),
                    io::ErrorKind::UnexpectedEof => {
                        tracing::warn!(%peer, "response cut short: {e}")
                    }
                    _ => tracing::debug!(%peer, "response not sent: {e}"),
                }
                false
            }
        }
    }

    /// Send a memo's answer; false when the connection is over.
    pub(super) async fn send_hot(&mut self, hit: Box<hot::Hit>) -> bool {
        let hot::Hit {
            out,
            sent,
            keep_alive,
            record,
        } = *hit;
        let busy = InFlight::start(self.activity());
        let result = write_all(&self.stream, &out, false, self.front.send_timeout).await;
        buffers::give(Kind::Output, out);
        drop(busy);
        self.finish(record, sent, result.map(|()| keep_alive)).await
    }

    /// After the last response: our FIN, then the lingering close. False:
    /// the connection is over.
    pub(super) async fn close(&mut self) -> bool {
        let _ = self.stream.shutdown().await;
        linger(&self.stream, &mut self.stop).await;
        false
    }
}

/// When to watch for the client's close while a request runs.
pub(super) enum Watch {
    /// Not at all: a pipelined request is read already.
    Never,
    /// From the start: a bodiless request.
    Now,
    /// Once the whole body is in: before, the socket shows its bytes.
    AfterBody(std::sync::Arc<crate::body::Progress>),
}

/// Resolves when the client has closed or reset the connection. Never
/// when the client sends more bytes: a close then only ends what it
/// sends. (Not asked at all with a request pipelined: `Watch::Never`.)
async fn client_gone(stream: &TcpStream) {
    let mut byte = [0u8; 1];
    if matches!(stream.peek(&mut byte).await, Ok(1..)) {
        std::future::pending::<()>().await;
    }
}

/// A lingering close, as nginx's: after our FIN, read and drop what the
/// client still sends until it closes too, pauses for `LINGER_PAUSE`, or
/// `LINGER_MAX` has passed. Closing a socket with unread bytes in it sends
/// a reset, and a reset makes the client's kernel discard the end of the
/// response it has not read yet (a pipelined request behind a
/// `Connection: close` one is enough).
async fn linger(stream: &TcpStream, stop: &mut tokio::sync::watch::Receiver<bool>) {
    const LINGER_PAUSE: Duration = Duration::from_secs(5);
    const LINGER_MAX: Duration = Duration::from_secs(30);
    let give_up = Instant::now() + LINGER_MAX;
    let mut scratch = [0u8; 4096];
    loop {
        match stream.try_read(&mut scratch) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
        let pause_over = (Instant::now() + LINGER_PAUSE).min(give_up);
        tokio::select! {
            ready = stream.readable() => if ready.is_err() { return },
            _ = tokio::time::sleep_until(pause_over) => return,
            _ = stopped(stop) => return,
        }
    }
}
