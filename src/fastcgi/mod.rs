//! FastCGI routes: `--fastcgi MATCH=ADDR[,ADDR…]` forwards requests to
//! FastCGI servers that already run (php-fpm), `--spawn MATCH=CMD` to pools
//! of workers cgihost starts and supervises itself (`supervisor`, `worker`);
//! both over the same pooled keep-alive connections. A spawned route's
//! backend is whatever generation of its pool is serving right now.
//!
//! Pipeline of [`FastCgi::handle`]:
//! 1. the script was found by the router (`target` for `*.EXT`, the prefix
//!    split for `/prefix`); the body is prepared exactly as for CGI
//!    (`gateway::request_body::prepare`: 413 over `--max-body`, chunked → spooled so
//!    CONTENT_LENGTH is exact);
//! 2. params = the CGI meta-variables (`cgi::env`, the one builder);
//! 3. `pool`: a connection from the least busy healthy backend (failover,
//!    back-off, a cap per backend);
//! 4. `exchange`: request out, header block in (one stale pooled connection
//!    is retried transparently when nothing of the body was sent);
//! 5. `cgi::response::classify` — the CGI header parser, shared — then the
//!    rest of STDOUT streams to the client.
//!
//! Why our own protocol code instead of the fastcgi-client crate (0.12):
//! its response stream ends the same way on END_REQUEST and on a backend
//! that closes mid-response, so a truncated page would look complete; it
//! sends the whole request body before it reads any answer (no full
//! duplex); its params are `str` only (header values are bytes); and it
//! allocates and zeroes a 64 KiB buffer per record batch with several
//! small writes per request. The record layer (`proto`) is ~150 lines.

pub mod exchange;
pub mod pool;
pub mod proto;
mod routes;
use routes::RouteGroup;
pub mod sendfile;
pub mod supervisor;
pub mod target;
pub mod worker;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use http::Request;
use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::body::ReqBody;
use crate::cgi::response::{self, Classified};
use crate::cgi::{env, Outcome};
use crate::config::{BackendAddr, SpawnRoute};
use crate::conn::ConnInfo;
use crate::error::Error;
use crate::gateway::head::{Head, HeadError, Origin};
use crate::gateway::request_body::{self, RequestBody};
use crate::gateway::timed::Timed;
use crate::stats::{FastCgiCounters, RouteCounters};
use crate::uri_path::SafePath;
use exchange::{BodySource, Exchange, FcgiBody};
use pool::{Backend, Balancer, CheckoutError, Lease};
use supervisor::PoolHandle;
pub use target::ScriptTarget;

/// One configured route.
pub struct Route {
    /// `*.php` or `/app`, for logs.
    pub label: String,
    /// Counters of `fastcgi *.php` or `spawn /app/*` on the status page.
    pub tag: Arc<RouteCounters>,
    pub upstream: Upstream,
    /// A backend silent this long mid-request → 504.
    pub idle: Duration,
    /// The whole response must be done within this.
    pub request_timeout: Option<Duration>,
    /// Largest request body (else 413); `None`: unlimited.
    pub max_body: Option<u64>,
    /// `*.EXT` routes: the front controller (`fallback`).
    pub fallback: Option<String>,
    /// Extra params (`params`), after the meta-variables.
    pub params: crate::meta::ExtraVars,
    /// `x_sendfile`: the directories an `X-Sendfile` may name; without
    /// them the header passes through as any other.
    pub x_sendfile: Option<sendfile::SendFileDirs>,
}

/// Where a route's requests go.
pub enum Upstream {
    /// `--fastcgi`: fixed addresses.
    Fixed(Balancer),
    /// `--spawn`: the serving generation of a supervised pool (shared
    /// with the next configuration when a reload leaves it unchanged).
    Spawned(Arc<PoolHandle>),
}

/// Which script a request runs on a route.
pub struct Script<'a> {
    pub name: &'a str,
    pub path_info: &'a str,
    pub filename: &'a std::path::Path,
    /// `DOCUMENT_ROOT`: the site's root, or the alias dir.
    pub document_root: &'a std::path::Path,
}

/// All FastCGI routes and their backends.
pub struct FastCgi {
    /// Group 0: the top-level routes; then one per `[[site]]` with its
    /// own `[[fastcgi]]` (see [`FastCgi::group_of_site`]).
    groups: Vec<RouteGroup>,
    /// For each `[[site]]`, the group it uses.
    site_groups: Vec<usize>,
    /// Every `--fastcgi` backend, shared by the routes that name the same
    /// address (spawned pools have their own, per generation).
    pub backends: Vec<Arc<Backend>>,
    /// Private (0700) directory of the pools' sockets; removed when the
    /// last configuration using it lets go.
    runtime_dir: Mutex<Option<Arc<tempfile::TempDir>>>,
    /// Each spawned pool and the definition it was started from.
    spawned: Vec<(SpawnRoute, Arc<PoolHandle>)>,
    /// Which of `spawned` were taken over from the previous configuration
    /// (indices: holding more `Arc`s would upset `stop_pools`' count).
    carried: Vec<usize>,
    server: env::ServerFacts,
    max_header: usize,
    spool_dir: PathBuf,
    connect_timeout: Duration,
    queue_timeout: Duration,
    shutdown_grace: Duration,
    counters: FastCgiCounters,
}

impl FastCgi {
    /// Every spawned pool's snapshot, in configuration order.
    pub fn pool_statuses(&self) -> Vec<supervisor::PoolStatus> {
        self.spawned.iter().map(|(_, pool)| pool.status()).collect()
    }

    /// After a reload: pools kept from the old configuration start a
    /// fresh generation (the graceful switch a file change makes).
    pub fn reload_carried(&self) {
        for &i in &self.carried {
            self.spawned[i]
                .1
                .reload("reloading (configuration reloaded)");
        }
    }

    /// Shutdown: stop every pool's workers (SIGTERM, SIGKILL after a
    /// grace of at most [`supervisor::TERM_GRACE`]), then remove the
    /// runtime directory.
    ///
    /// `all` false (a replaced configuration): only the pools no newer
    /// configuration took over — held by nothing but our route and our
    /// list. `all` true (shutdown): every one.
    pub async fn stop_pools(&self, all: bool) {
        let grace = self.shutdown_grace.min(supervisor::TERM_GRACE);
        // All pools at once: each may take its whole grace.
        let mut stops = tokio::task::JoinSet::new();
        for (_, pool) in &self.spawned {
            if all || Arc::strong_count(pool) == 2 {
                let pool = pool.clone();
                stops.spawn(async move { pool.stop(grace).await });
            }
        }
        while stops.join_next().await.is_some() {}
        let dir = self
            .runtime_dir
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(dir);
    }

    /// The `/prefix` route owning `path` (segment boundary), and the rest.
    pub fn match_prefix<'p>(
        &self,
        group: usize,
        path: &'p SafePath,
    ) -> Option<(&Route, &[String], &'p [String])> {
        self.groups
            .get(group)?
            .prefix_routes
            .iter()
            .find(|(segs, _)| path.segments.starts_with(segs))
            .map(|(segs, route)| (&**route, segs.as_slice(), &path.segments[segs.len()..]))
    }

    /// The `*.EXT` script `path` runs, if it exists under `dir` (the
    /// root or an alias dir, `path` relative to it); `/dir/` tries the
    /// `index` names in order.
    pub fn match_script(
        &self,
        group: usize,
        dir: &target::ScriptDir,
        path: &SafePath,
    ) -> Option<(&Route, ScriptTarget)> {
        let group = self.groups.get(group)?;
        if group.ext_routes.is_empty() {
            return None;
        }
        let exts: Vec<&str> = group.extensions.iter().map(String::as_str).collect();
        let t = target::find(dir, path, &exts)?;
        Some((&group.ext_routes[t.route], t))
    }

    /// Whether `name` (a file name) is a script of an `*.EXT` route of
    /// `group`.
    pub fn is_script_name(&self, group: usize, name: &str) -> bool {
        self.groups.get(group).is_some_and(|g| {
            g.extensions
                .iter()
                .any(|ext| target::has_extension(name, ext))
        })
    }

    /// The `*.EXT` route of `group` whose `fallback` takes a path that
    /// matched no file (the first route with one).
    pub fn fallback(&self, group: usize) -> Option<(&Route, &str)> {
        self.groups
            .get(group)?
            .ext_routes
            .iter()
            .find_map(|r| r.fallback.as_deref().map(|f| (r.as_ref(), f)))
    }

    /// Forward one request on `route`.
    pub async fn handle(
        &self,
        route: &Route,
        req: Request<ReqBody>,
        conn: &ConnInfo,
        script: Script<'_>,
        request_id: u64,
    ) -> Result<Outcome, Error> {
        let deadline = route.request_timeout.map(|t| Instant::now() + t);
        let (parts, body) = req.into_parts();
        let declared = request_body::declares_body(&parts.headers);
        let body =
            request_body::prepare(body, declared, route.max_body, &self.spool_dir, route.idle)
                .await?;
        let mut head = self.request_head(route, &parts, body.content_length(), conn, &script);
        let tag = format!("{}#{request_id}", script.name);
        let mut source = Some(match body {
            RequestBody::None | RequestBody::Empty => BodySource::None,
            RequestBody::Streamed(b, _) => BodySource::Stream(b),
            RequestBody::Spooled(f, _) => BodySource::File(f),
        });
        // Without a body the request can be replayed on a fresh connection
        // when a pooled one turns out stale.
        let attempts = if matches!(source, Some(BodySource::None)) {
            proto::put_stream_end(&mut head, proto::STDIN);
            2
        } else {
            1
        };
        let mut last_error = None;
        for _ in 0..attempts {
            let lease = self.checkout(route).await?;
            let backend = lease.backend.clone();
            let backend = &backend.addr;
            let body = source.take().unwrap_or(BodySource::None);
            let mut ex = match Exchange::start(lease, &head, body, route.idle, tag.clone()).await {
                Ok(ex) => ex,
                Err(e) => {
                    last_error = Some(Error::BadGateway(format!(
                        "FastCGI {backend}: sending the request: {e}"
                    )));
                    continue;
                }
            };
            let read = ex.read_head(self.max_header, route.idle);
            let head = wait_head(route, read, deadline, &tag).await?;
            match head {
                Ok(head) => {
                    let answered = Answered {
                        route,
                        backend,
                        tag: &tag,
                        deadline,
                    };
                    return answered.outcome(ex, head, parts).await;
                }
                Err(HeadError::Stale(e)) => {
                    tracing::debug!(
                        "pooled connection to {backend} was stale ({e}); retrying on a fresh one"
                    );
                    last_error = Some(Error::BadGateway(format!(
                        "FastCGI {backend}: connection lost: {e}"
                    )));
                }
                Err(e) => {
                    let from = Origin {
                        tag: &tag,
                        backend: Some(backend),
                    };
                    return Err(e.into_error(&from, route.idle));
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Error::BadGateway(format!("{tag}: no FastCGI answer"))))
    }

    /// BEGIN_REQUEST and the PARAMS (the CGI meta-variables, one builder).
    fn request_head(
        &self,
        route: &Route,
        parts: &http::request::Parts,
        content_length: Option<u64>,
        conn: &ConnInfo,
        script: &Script<'_>,
    ) -> BytesMut {
        let mut facts = env::RequestFacts::new(parts, conn, content_length);
        if !route.params.0.is_empty() {
            facts.extra = &route.params.0;
        }
        let script_facts = env::ScriptFacts {
            script_name: script.name,
            path_info: script.path_info,
            script_filename: script.filename,
            document_root: script.document_root,
        };
        let mut pairs = Vec::with_capacity(2048);
        env::build_into(&facts, &script_facts, &self.server, &mut |k, v| {
            proto::put_pair(&mut pairs, k.as_bytes(), v)
        });
        let mut head = BytesMut::with_capacity(pairs.len() + 64);
        proto::put_begin(&mut head, true);
        proto::put_stream(&mut head, proto::PARAMS, &pairs);
        proto::put_stream_end(&mut head, proto::PARAMS);
        head
    }

    /// A connection for `route`: from its fixed backends, or from the
    /// generation of its pool that is serving now.
    async fn checkout(&self, route: &Route) -> Result<Lease, Error> {
        let (c, q) = (self.connect_timeout, self.queue_timeout);
        match &route.upstream {
            Upstream::Fixed(balancer) => balancer.checkout(c, q).await,
            Upstream::Spawned(pool) => {
                // The guard keeps the generation from retiring until the
                // lease (which it then counts as in flight) exists.
                let gen = pool.current()?;
                gen.balancer.checkout(c, q).await
            }
        }
        .inspect_err(|e| {
            if matches!(e, CheckoutError::Busy) {
                self.counters.queue_rejections.inc();
            }
        })
        .map_err(|e| checkout_error(route, e))
        .inspect(|lease| {
            let reused = lease.conn.as_ref().is_some_and(|c| c.reused);
            self.counters.checked_out(reused);
        })
    }
}

/// A backend's answer to one request, being turned into the outcome.
struct Answered<'a> {
    route: &'a Route,
    backend: &'a BackendAddr,
    tag: &'a str,
    deadline: Option<Instant>,
}

impl Answered<'_> {
    /// The header block classified: a local redirect, a file the script
    /// hands over (`x_sendfile`), or the response with the rest of STDOUT
    /// streaming as its body.
    async fn outcome(
        &self,
        ex: Exchange,
        Head { block, first_body }: Head,
        parts: http::request::Parts,
    ) -> Result<Outcome, Error> {
        let (tag, backend, route) = (self.tag, self.backend, self.route);
        let bad = |why: String| {
            Error::BadGateway(format!(
                "{tag}: invalid response from FastCGI {backend}: {why}"
            ))
        };
        let (status, reason, mut headers, length) = match response::classify(&block).map_err(bad)? {
            Classified::LocalRedirect(location) => {
                return Ok(Outcome::LocalRedirect { location, parts })
            }
            Classified::Respond {
                status,
                reason,
                headers,
                length,
            } => (status, reason, headers, length),
        };
        let target = route
            .x_sendfile
            .as_ref()
            .and_then(|dirs| Some((dirs, sendfile::SendFileDirs::take_target(&mut headers)?)));
        if let Some((dirs, target)) = target {
            // The script's own body is not wanted.
            drop(ex);
            let resp = dirs.serve(&target?, &parts, headers, tag).await?;
            return Ok(Outcome::Response(resp));
        }
        let body = FcgiBody::new(ex, first_body, route.idle, length);
        let tag = format!("{tag}: FastCGI {backend}");
        let body = Timed::new(body, route.idle, self.deadline, tag).boxed();
        Ok(Outcome::Response(response::build_response(
            status, reason, headers, body,
        )))
    }
}

/// The header block, unless the route's `request_timeout` passes first
/// (504) or its spawned pool turns out to be failing (503).
async fn wait_head<T>(
    route: &Route,
    read: impl std::future::Future<Output = T>,
    deadline: Option<Instant>,
    tag: &str,
) -> Result<T, Error> {
    let timeout = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    let failed = async {
        match &route.upstream {
            Upstream::Spawned(pool) => pool.failed().await,
            Upstream::Fixed(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        head = read => Ok(head),
        _ = timeout => Err(Error::GatewayTimeout(format!(
            "{tag}: no response header within the route's request_timeout"
        ))),
        e = failed => Err(e),
    }
}

fn checkout_error(route: &Route, e: CheckoutError) -> Error {
    match e {
        CheckoutError::AllDown(why) => Error::BadGateway(format!("no FastCGI backend for {} is reachable: {why}", route.label)),
        CheckoutError::Busy => Error::ServiceUnavailable {
            retry_after_secs: 5,
            why: format!("every FastCGI connection for {} stayed busy (raise fastcgi_max_conns if the backend has more processes)", route.label),
        },
    }
}
