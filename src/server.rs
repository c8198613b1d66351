//! The HTTP/1.1 front end: [`run`] takes an already-bound listener and a
//! shutdown future, serves connections with hyper (keep-alive, header read
//! timeout), and drains gracefully.
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
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::body::Body;
use crate::log::{AccessRecord, LoggedBody};
use crate::router::{self, App};

/// Facts about one client connection, fixed for its lifetime.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub tls: bool,
}

/// Serve `listener` until `shutdown` resolves, then drain.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(app.config.header_read_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(peer);
        let conn_info = Arc::new(ConnInfo {
            peer,
            local,
            tls: false,
        });
        let app = app.clone();
        let service = service_fn(move |req| {
            let app = app.clone();
            let conn_info = conn_info.clone();
            async move { Ok::<_, Infallible>(serve_request(app, req, conn_info).await) }
        });
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    drain(app, graceful).await;
    Ok(())
}

async fn drain(app: Arc<App>, graceful: GracefulShutdown) {
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !app.cgi.groups.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.fastcgi.stop_pools().await;
    tracing::info!("stopped");
}

/// One request: id, span, routing, error page, access log.
async fn serve_request(
    app: Arc<App>,
    req: Request<Incoming>,
    conn: Arc<ConnInfo>,
) -> Response<Body> {
    let id = app.next_request_id();
    let mut record = AccessRecord::new(
        app.config.log_format,
        conn.peer.ip(),
        req.method(),
        req.uri(),
        req.version(),
        req.headers(),
    );
    let span = tracing::info_span!("req", id);
    let req = req.map(|b| b.boxed_unsync());
    let resp = router::dispatch(&app, req, &conn, id)
        .instrument(span.clone())
        .await
        .unwrap_or_else(|e| span.in_scope(|| e.into_response()));
    record.status = resp.status().as_u16();
    resp.map(|body| LoggedBody::wrap(body, record))
}
