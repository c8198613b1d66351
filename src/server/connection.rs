//! One client connection: the PROXY protocol header (on listeners that
//! take it), the TLS handshake, hyper serving HTTP/1.1 or HTTP/2 on it,
//! and the one timer that enforces the connection limits.
//!
//! The timer, per connection rather than per request, wakes at most every
//! few seconds and decides:
//! - nothing in flight for `keepalive_timeout` (the first request:
//!   `header_read_timeout` from accept, TLS handshake included) → close
//!   gracefully: hyper finishes what it is writing, HTTP/2 sends GOAWAY;
//!   a second later the connection is dropped if still open (hyper would
//!   wait for a head that is still trickling in);
//! - the client has not taken a byte for `send_timeout` while we have
//!   something to send (it stopped reading) → drop the connection, which
//!   also ends the CGI program or FastCGI request behind it; over HTTP/2
//!   the same for a CGI/FastCGI response whose stream the client grants no
//!   window for `send_timeout` (hyper offers no per-stream reset from
//!   here, so the connection goes);
//! - server shutdown → close gracefully (the drain waits for it).
//!
//! Bytes alone (a slow head, HTTP/2 pings) never count as activity, so a
//! slow client cannot keep a connection by trickling.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::proxy_protocol::{self, Refused};
use super::{serve_request, static_h1, FrontEnd, OpenConnection};
use crate::app::Live;
use crate::conn::{Client, ConnInfo, ConsumerWatch, WaitingSince};

/// How long an idle connection closed by a timeout may take to close
/// gracefully before it is dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A connection just accepted, nothing read from it yet.
pub(super) struct Accepted {
    pub(super) stream: TcpStream,
    /// It must start with a PROXY protocol header.
    pub(super) proxy_protocol: bool,
    pub(super) conn: ConnInfo,
}

/// The PROXY header (where the listener takes one), the handshake (for
/// TLS), then serve until the connection ends.
///
/// An async block rather than an async fn: an async fn keeps its arguments
/// twice in its state (rust-lang/rust#62958), and this state is what every
/// waiting connection carries. For the same reason the fields of
/// `accepted` are used in place, not moved out into new locals.
#[allow(clippy::manual_async_fn)]
pub(super) fn handle(
    mut accepted: Accepted,
    tls: Option<TlsAcceptor>,
    live: Arc<Live>,
    open: OpenConnection,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let front = &*open.front;
        let start = Instant::now();
        // The client's first bytes, read with the PROXY header.
        let mut first = BytesMut::new();
        if accepted.proxy_protocol {
            let header = proxy_header(&mut accepted.stream, &mut accepted.conn, &live, front);
            let Some(rest) = Box::pin(header).await else {
                return;
            };
            first = rest;
        }
        let Some(acceptor) = tls else {
            // Static files first; hyper takes over at the first other request.
            let conn = &accepted.conn;
            let handed = static_h1::serve((accepted.stream, first), conn, &live, front, start);
            let Some((stream, read, activity)) = handed.await else {
                return;
            };
            let io = Tracked::new(stream, read, &activity);
            let conn = accepted.conn;
            return Box::pin(serve(TokioIo::new(io), conn, live, front, activity)).await;
        };
        // Boxed, as is hyper's state: a cleartext connection on the static
        // path (most of them) should not carry their size.
        let activity = Arc::new(Activity::new(start));
        let io = Tracked::new(accepted.stream, first, &activity);
        let conn = accepted.conn;
        Box::pin(handshake_and_serve(
            io, acceptor, conn, live, front, activity,
        ))
        .await;
    }
}

/// Read the PROXY protocol header, within the header timeout (or until
/// shutdown), and take the client it names. The bytes read past it; None:
/// no usable header, the connection closes (said in the log).
///
/// With `trusted_proxies` set, only those peers may send one: anyone else
/// could name any client (127.0.0.1, an allowed network) by sending the
/// header themselves, as nginx takes the PROXY address only from
/// `set_real_ip_from` peers. Without it, the port must be reachable from
/// the load balancer alone (README).
async fn proxy_header(
    stream: &mut TcpStream,
    conn: &mut ConnInfo,
    live: &Live,
    front: &FrontEnd,
) -> Option<BytesMut> {
    let trusted = &live.current().trusted_proxies;
    if !trusted.is_empty() && !trusted.contains(conn.peer.ip()) {
        let peer = conn.peer;
        tracing::warn!(%peer, "PROXY protocol listener: peer not in trusted_proxies; closing the connection");
        return None;
    }
    let mut stop = front.stop.clone();
    let read = tokio::select! {
        read = proxy_protocol::read_header(stream, front.header_read_timeout) => read,
        _ = stopped(&mut stop) => return None,
    };
    let peer = conn.peer;
    match read {
        Ok((proxied, rest)) => {
            if let Some(source) = proxied.source {
                conn.client = Client::from(source);
            }
            conn.https |= proxied.tls;
            Some(rest)
        }
        // A TCP health check, or a port scan: nothing to say.
        Err(why @ Refused::Silent) => {
            tracing::debug!(%peer, "{why}");
            None
        }
        Err(why @ Refused::Invalid(_)) => {
            tracing::warn!(%peer, "PROXY protocol listener: {why}; closing the connection");
            None
        }
        Err(why) => {
            tracing::info!(%peer, "PROXY protocol listener: {why}; closing the connection");
            None
        }
    }
}

/// TLS: the handshake within the header timeout, then hyper.
async fn handshake_and_serve(
    io: Tracked<TcpStream>,
    acceptor: TlsAcceptor,
    conn: ConnInfo,
    live: Arc<Live>,
    front: &FrontEnd,
    activity: Arc<Activity>,
) {
    let peer = conn.peer;
    let mut stop = front.stop.clone();
    let handshake = tokio::time::timeout(front.header_read_timeout, acceptor.accept(io));
    tokio::select! {
        done = handshake => match done {
            Ok(Ok(tls_stream)) => Box::pin(serve(TokioIo::new(tls_stream), conn, live, front, activity)).await,
            Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
        },
        _ = stopped(&mut stop) => {}
    }
}

/// What the connection timer decided at one tick.
#[derive(Debug, PartialEq, Eq)]
enum Tick {
    /// The client stopped taking our bytes: drop the connection.
    Drop(String),
    /// Closing, and nothing left to finish: drop it now.
    Done,
    /// Idle past its limit: close gracefully.
    CloseIdle(Duration),
    /// Look again at this time.
    Wait(Instant),
}

/// The connection limits at `now` (see the module doc): a client that
/// takes nothing for `send_timeout` is dropped (socket writes, or an
/// HTTP/2 stream granted no window); a connection idle for its limit is
/// closed; a closing one with nothing in flight is dropped after its grace.
fn timer_decision(
    activity: &Activity,
    front: &FrontEnd,
    closing: Option<(Instant, Duration)>,
    now: Instant,
) -> Tick {
    let check_every = front.keepalive_timeout.min(front.header_read_timeout);
    let stalled = activity.stalled_for(now);
    if stalled >= front.send_timeout {
        return Tick::Drop(format!("client took no data for {}s", stalled.as_secs()));
    }
    let starved = activity.consumer_stalled_for(now);
    if starved >= front.send_timeout {
        return Tick::Drop(format!(
            "client granted no HTTP/2 window for {}s to a CGI/FastCGI response",
            starved.as_secs()
        ));
    }
    let busy = activity.in_flight.load(Ordering::Acquire) > 0;
    if let Some((since, allowed)) = closing {
        // Closing and nothing left to finish, yet still open.
        // (`is_waiting`, not a zero stall: a write blocked this very
        // instant has waited zero, yet the client is still reading.)
        if !busy && !activity.write_blocked_since.is_waiting() && now - since >= allowed {
            return Tick::Done;
        }
        return Tick::Wait(now + check_every.min(allowed));
    }
    if busy {
        return Tick::Wait(now + check_every);
    }
    // A fresh connection gets the header timeout for its first request
    // (TLS handshake and HTTP/2 preface included); later, keep-alive.
    let limit = if activity.requests.load(Ordering::Relaxed) == 0 {
        front.header_read_timeout
    } else {
        front.keepalive_timeout
    };
    let deadline = activity.at(activity.idle_since.load(Ordering::Acquire)) + limit;
    if deadline <= now {
        Tick::CloseIdle(limit)
    } else {
        Tick::Wait(deadline.min(now + check_every))
    }
}

/// Resolves once the server is shutting down.
pub(super) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    // `changed` rather than `wait_for`: a smaller future, and every waiting
    // connection holds one. A sender gone counts as stopping.
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Requests in flight on one connection, since when it has been idle, and
/// since when a write has been waiting for the client.
pub(super) struct Activity {
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds after `epoch` when a request last finished.
    idle_since: AtomicU64,
    /// Since when a write has been refused by a full socket buffer.
    write_blocked_since: WaitingSince,
    epoch: Instant,
    /// HTTP/2 responses from CGI/FastCGI, watched for a client that stops
    /// granting flow-control window (see [`ConsumerWatch`]).
    watched: Mutex<Vec<Weak<ConsumerWatch>>>,
}

impl Activity {
    pub(super) fn new(epoch: Instant) -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            write_blocked_since: WaitingSince::default(),
            epoch,
            watched: Mutex::new(Vec::new()),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// How long the client has refused our bytes (zero if it has not).
    fn stalled_for(&self, now: Instant) -> Duration {
        self.write_blocked_since.waited(self.epoch, now)
    }

    /// The longest any watched response has waited for the client to take
    /// the frame it was handed (zero if none waits).
    fn consumer_stalled_for(&self, now: Instant) -> Duration {
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        watched.retain(|w| w.strong_count() > 0);
        watched
            .iter()
            .filter_map(Weak::upgrade)
            .map(|w| w.waited(now))
            .max()
            .unwrap_or_default()
    }

    fn wrote(&self, result: &Poll<io::Result<usize>>) {
        match result {
            Poll::Pending => self.write_blocked_since.start_if_idle(self.epoch),
            Poll::Ready(Ok(n)) if *n > 0 => self.write_blocked_since.stop(),
            Poll::Ready(_) => {}
        }
    }
}

/// Held by a response body: the connection is busy until it is dropped.
pub struct InFlight(Arc<Activity>);

impl InFlight {
    pub(super) fn start(a: &Arc<Activity>) -> InFlight {
        a.in_flight.fetch_add(1, Ordering::AcqRel);
        a.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(a.clone())
    }

    /// Watch this response for a client that stops taking it (HTTP/2: no
    /// WINDOW_UPDATE, so hyper never asks the body for more and no socket
    /// write ever blocks). The body reports through the returned handle.
    pub fn watch_consumer(&self) -> Arc<ConsumerWatch> {
        let watch = Arc::new(ConsumerWatch::new(self.0.epoch));
        self.0
            .watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::downgrade(&watch));
        watch
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Stamped before the count drops: whoever sees zero in flight sees
        // this time (or a later one), never a stale one.
        self.0.idle_since.store(self.0.now_ms(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The socket, noting when the client stops taking our bytes; reads
/// start with the bytes the static path already took from it.
struct Tracked<T> {
    inner: T,
    read_first: BytesMut,
    activity: Arc<Activity>,
}

impl<T> Tracked<T> {
    fn new(inner: T, read_first: BytesMut, activity: &Arc<Activity>) -> Tracked<T> {
        Tracked {
            inner,
            read_first,
            activity: activity.clone(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read_first.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.read_first.len().min(buf.remaining());
        buf.put_slice(&self.read_first[..n]);
        self.read_first.advance(n);
        if self.read_first.is_empty() {
            // hyper has its own buffer: do not keep this one's capacity.
            self.read_first = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.activity.wrote(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.activity.wrote(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn serve<I>(io: I, conn: ConnInfo, live: Arc<Live>, front: &FrontEnd, activity: Arc<Activity>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let conn = Arc::new(conn);
    let service = {
        let activity = activity.clone();
        service_fn(move |req| {
            let app = live.current();
            let conn = conn.clone();
            let busy = InFlight::start(&activity);
            async move { Ok::<_, Infallible>(serve_request(app, req, conn, busy).await) }
        })
    };
    // After static HTTP/1 requests on the connection, an HTTP/2 preface is
    // not a protocol switch but garbage.
    let builder = if activity.requests.load(Ordering::Relaxed) > 0 {
        &front.http1_builder
    } else {
        &front.builder
    };
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut stop = front.stop.clone();
    let check_every = front.keepalive_timeout.min(front.header_read_timeout);
    let timer = tokio::time::sleep(check_every);
    tokio::pin!(timer);
    // When a graceful close was asked for, and how long it may take with
    // nothing in flight before the connection is dropped.
    let mut closing: Option<(Instant, Duration)> = None;
    loop {
        tokio::select! {
            // The connection first: a request handed over with the
            // connection is read before a shutdown can cancel it.
            biased;
            ended = &mut connection => {
                if let Err(e) = ended {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
                return;
            }
            _ = stopped(&mut stop), if closing.is_none() => {
                connection.as_mut().graceful_shutdown();
                // A request handed over at this moment still gets read.
                closing = Some((Instant::now(), front.header_read_timeout));
            }
            _ = &mut timer => {
                let now = Instant::now();
                match timer_decision(&activity, front, closing, now) {
                    Tick::Drop(why) => {
                        tracing::info!(%peer, "{why}; closing");
                        return;
                    }
                    Tick::Done => return,
                    Tick::CloseIdle(limit) => {
                        tracing::debug!(%peer, "closing idle connection after {}s", limit.as_secs());
                        connection.as_mut().graceful_shutdown();
                        // Time enough to flush a GOAWAY; a head still coming
                        // in (which hyper would wait for) has had its time.
                        closing = Some((now, IDLE_CLOSE_GRACE));
                        timer.as_mut().reset(now + IDLE_CLOSE_GRACE);
                    }
                    Tick::Wait(at) => timer.as_mut().reset(at),
                }
            }
        }
    }
}

#[cfg(test)]
mod timer_tests;
