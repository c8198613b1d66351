//! The HTTP front end: accept on one or more listeners (plain or TLS),
//! serve HTTP/1.1 and HTTP/2 (ALPN over TLS, prior knowledge in cleartext)
//! with hyper, enforce the connection limits, and drain gracefully.
//!
//! Limits: heads over `max_header_size` get 431 (hyper); the timeouts of
//! one connection (header read, keep-alive, send) live in
//! `server/connection.rs`. At most `max_connections` are open at once,
//! over all listeners: further clients wait in the kernel's accept queue
//! rather than being refused.
//!
//! Behind a load balancer, a listener may take the PROXY protocol
//! (`server/proxy_protocol.rs`), and a trusted proxy's `X-Forwarded-For`
//! and `-Proto` name each request's client (`conn/forwarded.rs`).
//!
//! Shutdown, in order: the health endpoint answers 503, and for
//! `shutdown_delay` everything else is served as before (the balancer
//! notices and stops sending); stop accepting; idle keep-alive connections
//! close at once, in-flight requests get up to the grace period; then every CGI
//! process group still alive is killed; finally we wait (briefly) until the
//! supervisors have reaped them, and the spawned FastCGI pools stop their
//! workers (SIGTERM, then SIGKILL), so nothing is left behind.

mod buffers;
mod connection;
mod listen;
pub use listen::Listener;
mod proxy_protocol;
mod send_file;
mod static_h1;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::Instrument;

use crate::app::App;
use crate::app::Live;
use crate::body::{self, Body};
use crate::cgi::process::GroupRegistry;
use crate::conn::ConnInfo;
use crate::error::Error;
use crate::log::{AccessRecord, LoggedBody, RequestNote};
use crate::router;
use crate::stats::Stats;

/// HTTP/2 keep-alive pings: how often, and how long to wait for the answer.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Serve one listener (TLS when `app.config.tls` is set) until `shutdown`
/// resolves, then drain. Tests and simple embeddings use this.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let tls = match &app.config.tls {
        Some(files) => Some(
            crate::tls::acceptor(files)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.0))?,
        ),
        None => None,
    };
    let listeners = vec![Listener {
        tcp: listener,
        tls: tls.is_some(),
        proxy_protocol: false,
    }];
    serve(listeners, Live::new(app, tls), shutdown).await
}

/// Serve every listener with whatever application `live` holds at the
/// time of each request (SIGHUP swaps it), until `shutdown`; then drain.
pub async fn serve(
    listeners: Vec<Listener>,
    live: Arc<Live>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let front = Arc::new(FrontEnd::new(&live.current(), stop_rx));
    let accepting = tokio::spawn(accept_loop(listeners, live.clone(), front.clone()));
    shutdown.await;
    live.start_draining();
    let delay = live.current().config.balancer.shutdown_delay;
    if !delay.is_zero() {
        tracing::info!(
            "shutting down: the health endpoint answers 503; serving on for {}s (shutdown_delay)",
            delay.as_secs()
        );
        tokio::time::sleep(delay).await;
    }
    accepting.abort();
    let _ = accepting.await;
    let _ = stop_tx.send(true);
    drain(live, &front).await;
    Ok(())
}

/// Connection-level settings and the open-connection cap, shared by every
/// listener.
struct FrontEnd {
    builder: auto::Builder<TokioExecutor>,
    /// The same, HTTP/1 only: for a connection the static path already
    /// served HTTP/1 requests on.
    http1_builder: auto::Builder<TokioExecutor>,
    slots: Arc<Semaphore>,
    header_read_timeout: Duration,
    keepalive_timeout: Duration,
    send_timeout: Duration,
    /// The longest request head (larger: 431, from hyper).
    max_header_size: usize,
    max_connections: usize,
    stats: Arc<Stats>,
    /// Becomes true when the server shuts down.
    stop: watch::Receiver<bool>,
}

impl FrontEnd {
    fn new(app: &App, stop: watch::Receiver<bool>) -> FrontEnd {
        let config = &app.config;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            // The per-connection timer covers slow heads (see
            // `connection.rs`) without a timer reset per request.
            .header_read_timeout(None)
            // The read buffer never grows past the head limit, so a larger
            // head is refused with 431.
            .max_buf_size(max_header_size(config))
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(config.max_header_size.min(u32::MAX as usize) as u32)
            .max_concurrent_streams(128)
            .adaptive_window(true)
            // A client that vanished (no FIN) stops answering pings: its
            // connection and the requests on it end instead of waiting on
            // flow control forever.
            .keep_alive_interval(Some(H2_PING_INTERVAL))
            .keep_alive_timeout(H2_PING_TIMEOUT);
        FrontEnd {
            http1_builder: builder.clone().http1_only(),
            builder,
            slots: Arc::new(Semaphore::new(config.max_connections)),
            header_read_timeout: config.header_read_timeout,
            keepalive_timeout: config.keepalive_timeout,
            send_timeout: config.send_timeout,
            max_header_size: max_header_size(config),
            max_connections: config.max_connections,
            stats: app.stats.clone(),
            stop,
        }
    }
}

/// hyper's smallest read buffer is 8 KiB.
fn max_header_size(config: &crate::config::Config) -> usize {
    config.max_header_size.max(8192)
}

/// One loop for every listener, so the cap counts connections, not
/// listeners: take a slot, then accept from whichever listener is ready
/// (starting the scan at a different one each time, so none starves).
async fn accept_loop(listeners: Vec<Listener>, live: Arc<Live>, front: Arc<FrontEnd>) {
    let mut warned_full = false;
    let mut next = 0usize;
    loop {
        // Take a slot before accepting: at the cap, clients queue in the
        // kernel's backlog instead of being accepted and dropped.
        let permit = match front.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if !warned_full {
                    tracing::warn!(
                        "max_connections ({}) reached: new clients wait until one closes",
                        front.max_connections
                    );
                    warned_full = true;
                }
                match front.slots.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                }
            }
        };
        let (accepted, index) = std::future::poll_fn(|cx| {
            for i in 0..listeners.len() {
                let index = (next + i) % listeners.len();
                if let Poll::Ready(r) = listeners[index].tcp.poll_accept(cx) {
                    return Poll::Ready((r, index));
                }
            }
            Poll::Pending
        })
        .await;
        next = index + 1;
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        warned_full = false;
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(peer);
        let Listener {
            tls,
            proxy_protocol,
            ..
        } = listeners[index];
        let conn = ConnInfo::direct(peer, local, tls);
        let acceptor = if tls { live.tls() } else { None };
        // Counted and holding its slot until the task ends, even by panic.
        let open = OpenConnection::new(front.clone(), permit);
        let accepted = connection::Accepted {
            stream,
            proxy_protocol,
            conn,
        };
        tokio::spawn(connection::handle(accepted, acceptor, live.clone(), open));
    }
}

/// A connection's slot and its place in the open-connection count, with
/// the front end it is served by.
struct OpenConnection {
    front: Arc<FrontEnd>,
    _permit: OwnedSemaphorePermit,
}

impl OpenConnection {
    fn new(front: Arc<FrontEnd>, permit: OwnedSemaphorePermit) -> OpenConnection {
        front.stats.connection_opened();
        OpenConnection {
            front,
            _permit: permit,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.front.stats.connection_closed();
    }
}

/// After the listeners closed and every connection was told to finish:
/// wait for them (up to the grace period), kill what CGI still runs, stop
/// the pools.
async fn drain(live: Arc<Live>, front: &FrontEnd) {
    live.closing();
    let app = live.current();
    let grace = app.config.shutdown_grace;
    tracing::info!(
        "shutting down: no new connections; waiting up to {}s for requests in flight",
        grace.as_secs()
    );
    // Every slot back means every connection task has ended.
    let all = u32::try_from(front.max_connections).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(grace, front.slots.acquire_many(all)).await;
    if drained.is_err() {
        let n = app.cgi.groups.kill_all();
        tracing::warn!("grace period over: killed {n} CGI process group(s) still running");
    }
    stop_cgi_groups(&app.cgi.groups).await;
    live.stop_all().await;
    tracing::info!("stopped");
}

/// How long CGI groups left at shutdown get between SIGTERM and SIGKILL.
const CGI_TERM_GRACE: Duration = Duration::from_secs(2);

/// No connection is left, but CGI groups may be: scripts that answered and
/// closed stdout but have not exited, or are inside their post-response
/// grace. None may outlive cgihost: SIGTERM, then SIGKILL, and wait for
/// their supervisors to reap them.
async fn stop_cgi_groups(groups: &GroupRegistry) {
    async fn gone_within(groups: &GroupRegistry, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while !groups.is_empty() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
    let n = groups.signal_all(libc::SIGTERM);
    if n == 0 {
        return;
    }
    tracing::info!("stopping {n} CGI process group(s) that outlived their response (SIGTERM)");
    if gone_within(groups, CGI_TERM_GRACE).await {
        return;
    }
    let n = groups.kill_all();
    tracing::warn!(
        "killed {n} CGI process group(s) still running {}s after SIGTERM",
        CGI_TERM_GRACE.as_secs()
    );
    if !gone_within(groups, Duration::from_secs(3)).await {
        tracing::warn!("{} CGI process group(s) not reaped at exit", groups.len());
    }
}

/// One request hyper read.
async fn serve_request(
    app: Arc<App>,
    req: Request<Incoming>,
    conn: Arc<ConnInfo>,
    busy: connection::InFlight,
) -> Response<Body> {
    let req = req.map(|b| body::counted_request(b, &app.stats.bytes_in));
    answer_request(app, req, &conn, busy).await
}

/// One request, from either front end: id, span, routing, error page,
/// access log (written when the response body is done).
async fn answer_request(
    app: Arc<App>,
    req: Request<body::ReqBody>,
    conn: &ConnInfo,
    busy: connection::InFlight,
) -> Response<Body> {
    let id = app.next_request_id();
    // From a trusted proxy: the client and scheme it names.
    let conn = app.trusted_proxies.apply(conn, req.headers());
    let mut record = access_record(&app, &conn, &req);
    let span = tracing::info_span!("req", id);
    let mut note = RequestNote::default();
    let mut resp = match host_problem(req.version(), req.headers()) {
        Some(why) => span.in_scope(|| {
            let mut resp = Error::BadRequest(why.into()).into_response();
            resp.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
            resp
        }),
        None => router::dispatch(&app, req, &conn, id, &mut note)
            .instrument(span.clone())
            .await
            .unwrap_or_else(|e| span.in_scope(|| e.into_response())),
    };
    if record.version == http::Version::HTTP_10 {
        say_close_if_close_delimited(&mut resp, record.method == http::Method::HEAD);
    }
    record.status = resp.status().as_u16();
    // HTTP/2 flow control can starve a response without any socket write
    // blocking; watch those that hold a CGI process or FastCGI connection.
    let watch = record.version == http::Version::HTTP_2 && note.upstream.is_some();
    if watch {
        record.watch_consumer(busy.watch_consumer());
    }
    record.attach(note, Box::new((busy, app.clone())));
    resp.map(|body| LoggedBody::wrap(body, record))
}

/// RFC 9112 §3.2: any request with more than one `Host` header or an
/// invalid one, and an HTTP/1.1 request without one, is a 400. (Both
/// paths: the static one hands such a request to hyper, which lands here.)
pub(crate) fn host_problem(
    version: http::Version,
    headers: &http::HeaderMap,
) -> Option<&'static str> {
    let mut hosts = headers.get_all(http::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Some("more than one Host header"),
        (None, _) if version == http::Version::HTTP_11 => {
            Some("an HTTP/1.1 request without a Host header")
        }
        (Some(host), None) if !valid_host(host.as_bytes()) => Some("an invalid Host header"),
        _ => None,
    }
}

/// `uri-host [ ":" port ]`, or empty (RFC 9110 §7.2).
fn valid_host(value: &[u8]) -> bool {
    value.is_empty() || (!value.contains(&b'@') && http::uri::Authority::try_from(value).is_ok())
}

/// An HTTP/1.0 response whose body has no length (CGI output without
/// `Content-Length`, on-the-fly gzip) can only end with the connection,
/// HTTP/1.0 having no chunked coding. Say so with `Connection: close`, as
/// the static path does (`static_h1::write_head`), and make the response
/// HTTP/1.0: hyper then neither keeps the connection nor, for a client
/// that asked for keep-alive, adds a `Connection: keep-alive` it would
/// break by closing after the body.
fn say_close_if_close_delimited(resp: &mut Response<Body>, head_only: bool) {
    use http::StatusCode;
    use http_body::Body as _;
    let status = resp.status();
    let bodiless = head_only
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let body = resp.body();
    let delimited = resp.headers().contains_key(http::header::CONTENT_LENGTH)
        || body.is_end_stream()
        || body.size_hint().exact().is_some();
    if bodiless || delimited {
        return;
    }
    resp.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    *resp.version_mut() = http::Version::HTTP_10;
}

/// The access log's record of `req`, started now.
fn access_record<B>(app: &App, conn: &ConnInfo, req: &Request<B>) -> AccessRecord {
    AccessRecord::new(
        app.config.access_log.then_some(app.config.log_format),
        conn.client.ip,
        req.method(),
        req.uri(),
        req.version(),
        req.headers(),
    )
}

/// One static request on the sendfile path (`static_h1.rs`): id, span,
/// error page; the caller sends the response (and the file) and ends the
/// record. `None`: only hyper can answer it (a fallback script, an
/// error page of the site's).
fn answer_static(
    app: Arc<App>,
    req: &Request<()>,
    answer: Result<router::StaticAnswer, Error>,
    conn: &ConnInfo,
    busy: impl FnOnce() -> connection::InFlight,
) -> Option<(router::StaticResponse, AccessRecord)> {
    let mut note = RequestNote::default();
    let served = match answer {
        Ok(answer) => router::serve_static(&app, req, answer, &mut note)?,
        Err(e) => Err(e),
    };
    let id = app.next_request_id();
    let mut record = access_record(&app, conn, req);
    let span = tracing::info_span!("req", id);
    let served = span.in_scope(|| {
        served.unwrap_or_else(|e| router::StaticResponse {
            resp: e.into_response(),
            file: None,
            memo: None,
        })
    });
    record.status = served.resp.status().as_u16();
    record.attach(note, Box::new((busy(), app)));
    Some((served, record))
}
