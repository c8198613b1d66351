//! The HTTP front end: accept on one or more listeners (plain or TLS),
//! serve HTTP/1.1 and HTTP/2 (ALPN over TLS, prior knowledge in cleartext)
//! with hyper, enforce the connection limits, and drain gracefully.
//!
//! Limits, per connection: the TLS handshake and the first request head
//! must arrive within `header_read_timeout`; a connection with nothing in
//! flight closes after `keepalive_timeout` (HTTP/1 and HTTP/2 alike; bytes
//! without a complete request — a slow head, pings — do not keep it open,
//! so a later request's head must arrive within it); heads over
//! `max_header_size` get 431. At most `max_connections` are open at once:
//! further clients wait in the kernel's accept queue rather than being
//! refused.
//!
//! Shutdown, in order: stop accepting; idle keep-alive connections close at
//! once, in-flight requests get up to the grace period; then every CGI
//! process group still alive is killed; finally we wait (briefly) until the
//! supervisors have reaped them, and the spawned FastCGI pools stop their
//! workers (SIGTERM, then SIGKILL), so nothing is left behind.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::body::Body;
use crate::log::{AccessRecord, LoggedBody, RequestNote};
use crate::reload::Live;
use crate::router::{self, App};
use crate::stats::Stats;

/// Facts about one client connection, fixed for its lifetime.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub tls: bool,
}

/// A bound socket; `tls`: HTTPS only (with the live certificate).
pub struct Listener {
    pub tcp: TcpListener,
    pub tls: bool,
}

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
    let front = Arc::new(FrontEnd::new(&live.current()));
    let graceful = Arc::new(GracefulShutdown::new());
    let accepting: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            tokio::spawn(accept_loop(
                l,
                live.clone(),
                front.clone(),
                graceful.clone(),
            ))
        })
        .collect();
    shutdown.await;
    for task in &accepting {
        task.abort();
    }
    for task in accepting {
        let _ = task.await;
    }
    // The accept loops held the only other references.
    let graceful = Arc::try_unwrap(graceful).unwrap_or_else(|_| GracefulShutdown::new());
    drain(live, graceful).await;
    Ok(())
}

/// Connection-level settings and the open-connection cap, shared by every
/// listener.
struct FrontEnd {
    builder: auto::Builder<TokioExecutor>,
    slots: Arc<Semaphore>,
    header_read_timeout: Duration,
    keepalive_timeout: Duration,
    max_connections: usize,
    stats: Arc<Stats>,
}

impl FrontEnd {
    fn new(app: &App) -> FrontEnd {
        let config = &app.config;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            // Our per-connection idle timer covers slow heads (see
            // `serve_io`) without a timer reset per request.
            .header_read_timeout(None)
            // The read buffer never grows past the head limit, so a larger
            // head is refused with 431.
            .max_buf_size(config.max_header_size.max(8192))
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(config.max_header_size.min(u32::MAX as usize) as u32)
            .max_concurrent_streams(128)
            .adaptive_window(true);
        FrontEnd {
            builder,
            slots: Arc::new(Semaphore::new(config.max_connections)),
            header_read_timeout: config.header_read_timeout,
            keepalive_timeout: config.keepalive_timeout,
            max_connections: config.max_connections,
            stats: app.stats.clone(),
        }
    }
}

async fn accept_loop(
    listener: Listener,
    live: Arc<Live>,
    front: Arc<FrontEnd>,
    graceful: Arc<GracefulShutdown>,
) {
    let mut warned_full = false;
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
        let (stream, peer) = match listener.tcp.accept().await {
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
        let conn = ConnInfo {
            peer,
            local,
            tls: listener.tls,
        };
        let (live, front, watcher) = (live.clone(), front.clone(), graceful.watcher());
        let tls = if listener.tls { live.tls() } else { None };
        tokio::spawn(async move {
            front.stats.connection_opened();
            handle_connection(stream, tls, conn, live, &front, watcher).await;
            front.stats.connection_closed();
            drop(permit);
        });
    }
}

async fn handle_connection(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    conn: ConnInfo,
    live: Arc<Live>,
    front: &FrontEnd,
    watcher: Watcher,
) {
    let peer = conn.peer;
    match tls {
        None => serve_io(TokioIo::new(stream), conn, live, front, watcher).await,
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(front.header_read_timeout, acceptor.accept(stream));
            match handshake.await {
                Ok(Ok(tls_stream)) => {
                    serve_io(TokioIo::new(tls_stream), conn, live, front, watcher).await
                }
                Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

/// Requests in flight on one connection, and since when it has been idle.
struct Activity {
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds after `epoch` when `in_flight` last dropped to zero.
    idle_since: AtomicU64,
    epoch: Instant,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// Held by a response body: the connection is busy until it is dropped.
pub struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(a: &Arc<Activity>) -> InFlight {
        a.in_flight.fetch_add(1, Ordering::AcqRel);
        a.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle_since.store(self.0.now_ms(), Ordering::Release);
        }
    }
}

async fn serve_io<I>(io: I, conn: ConnInfo, live: Arc<Live>, front: &FrontEnd, watcher: Watcher)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let conn = Arc::new(conn);
    let activity = Arc::new(Activity {
        in_flight: AtomicUsize::new(0),
        requests: AtomicU64::new(0),
        idle_since: AtomicU64::new(0),
        epoch: Instant::now(),
    });
    let service = {
        let activity = activity.clone();
        service_fn(move |req| {
            let app = live.current();
            let conn = conn.clone();
            let busy = InFlight::start(&activity);
            async move { Ok::<_, Infallible>(serve_request(app, req, conn, busy).await) }
        })
    };
    let connection = watcher.watch(front.builder.serve_connection(io, service));
    tokio::pin!(connection);
    // One timer per connection, not per request: it wakes at most every
    // `check_every`, works out when the connection would become too idle,
    // and sleeps until then (or closes it).
    let check_every = front.keepalive_timeout.min(front.header_read_timeout);
    let timer = tokio::time::sleep(check_every);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            ended = &mut connection => {
                if let Err(e) = ended {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
                return;
            }
            _ = &mut timer => {
                let now = Instant::now();
                let next = if activity.in_flight.load(Ordering::Acquire) > 0 {
                    now + check_every
                } else {
                    // A fresh connection gets the header timeout for its
                    // first request (this also bounds a slow TLS handshake
                    // or HTTP/2 preface); later, keep-alive.
                    let limit = if activity.requests.load(Ordering::Relaxed) == 0 {
                        front.header_read_timeout
                    } else {
                        front.keepalive_timeout
                    };
                    let idle_since = activity.idle_since.load(Ordering::Acquire);
                    let deadline = activity.epoch + Duration::from_millis(idle_since) + limit;
                    if deadline <= now {
                        tracing::debug!(%peer, "closing idle connection after {}s", limit.as_secs());
                        return;
                    }
                    deadline
                };
                timer.as_mut().reset(next);
            }
        }
    }
}

async fn drain(live: Arc<Live>, graceful: GracefulShutdown) {
    let app = live.current();
    let grace = app.config.shutdown_grace;
    tracing::info!(
        "shutting down: no new connections; waiting up to {}s for requests in flight",
        grace.as_secs()
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        let n = app.cgi.groups.kill_all();
        tracing::warn!("grace period over: killed {n} CGI process group(s) still running");
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while !app.cgi.groups.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    live.stop_all().await;
    tracing::info!("stopped");
}

/// One request: id, span, routing, error page, access log.
async fn serve_request(
    app: Arc<App>,
    req: Request<Incoming>,
    conn: Arc<ConnInfo>,
    busy: InFlight,
) -> Response<Body> {
    let id = app.next_request_id();
    let mut record = AccessRecord::new(
        app.config.access_log.then_some(app.config.log_format),
        conn.peer.ip(),
        req.method(),
        req.uri(),
        req.version(),
        req.headers(),
    );
    let span = tracing::info_span!("req", id);
    let req = req.map(|b| b.boxed_unsync());
    let mut note = RequestNote::default();
    let resp = router::dispatch(&app, req, &conn, id, &mut note)
        .instrument(span.clone())
        .await
        .unwrap_or_else(|e| span.in_scope(|| e.into_response()));
    record.status = resp.status().as_u16();
    record.attach(note, busy);
    resp.map(|body| LoggedBody::wrap(body, record))
}
