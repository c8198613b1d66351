//! FastCGI routes (`--fastcgi MATCH=ADDR[,ADDR…]`): requests forwarded to
//! FastCGI servers that already run (php-fpm), over pooled keep-alive
//! connections.
//!
//! Pipeline of [`FastCgi::handle`]:
//! 1. the script was found by the router (`target` for `*.EXT`, the prefix
//!    split for `/prefix`); the body is prepared exactly as for CGI
//!    (`cgi::stdin::prepare`: 413 over `--max-body`, chunked → spooled so
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
pub mod target;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use http::Request;
use http_body_util::BodyExt;

use crate::cgi::response::{self, Classified};
use crate::cgi::{env, stdin, Outcome};
use crate::config::{BackendAddr, Config, FastCgiRoute, RouteMatch};
use crate::error::Error;
use crate::router::ReqBody;
use crate::server::ConnInfo;
use crate::uri_path::SafePath;
use exchange::{BodySource, Exchange, FcgiBody, HeadError};
use pool::{Backend, Balancer, CheckoutError};
pub use target::ScriptTarget;

/// One configured route.
pub struct Route {
    /// `*.php` or `/app`, for logs.
    pub label: String,
    pub balancer: Balancer,
}

/// Which script a request runs on a route.
pub struct Script<'a> {
    pub name: &'a str,
    pub path_info: &'a str,
    pub filename: &'a std::path::Path,
}

/// All FastCGI routes and their backends.
pub struct FastCgi {
    /// `/prefix` routes, longest prefix first: (prefix segments, route).
    prefix_routes: Vec<(Vec<String>, Route)>,
    /// `*.EXT` routes in configuration order, and their extensions.
    ext_routes: Vec<Route>,
    extensions: Vec<String>,
    /// Every backend, shared by the routes that name the same address.
    pub backends: Vec<Arc<Backend>>,
    document_root: PathBuf,
    server: env::ServerFacts,
    idle: Duration,
    max_header: usize,
    max_body: Option<u64>,
    spool_dir: PathBuf,
    connect_timeout: Duration,
    queue_timeout: Duration,
}

impl FastCgi {
    pub fn new(config: &Config, document_root: PathBuf) -> FastCgi {
        let mut by_addr: HashMap<BackendAddr, Arc<Backend>> = HashMap::new();
        let mut backends = Vec::new();
        let mut make_route = |r: &FastCgiRoute, label: String| {
            let list = r
                .addrs
                .iter()
                .map(|a| {
                    by_addr
                        .entry(a.clone())
                        .or_insert_with(|| {
                            let b = Backend::new(a.clone(), config.fastcgi_max_conns);
                            backends.push(b.clone());
                            b
                        })
                        .clone()
                })
                .collect();
            Route {
                label,
                balancer: Balancer::new(list),
            }
        };
        let mut prefix_routes = Vec::new();
        let mut ext_routes = Vec::new();
        let mut extensions = Vec::new();
        for r in &config.fastcgi {
            match &r.matcher {
                RouteMatch::Prefix(p) => {
                    let segs = SafePath::parse(p).map(|s| s.segments).unwrap_or_default();
                    prefix_routes.push((segs, make_route(r, p.clone())));
                }
                RouteMatch::Extension(ext) => {
                    ext_routes.push(make_route(r, format!("*.{ext}")));
                    extensions.push(ext.clone());
                }
            }
        }
        prefix_routes.sort_by_key(|(segs, _)| std::cmp::Reverse(segs.len()));
        FastCgi {
            prefix_routes,
            ext_routes,
            extensions,
            backends,
            document_root,
            server: env::ServerFacts::new(config.cgi.pass_authorization),
            idle: config.cgi.timeout,
            max_header: config.cgi.max_response_header,
            max_body: config.max_body,
            spool_dir: config.spool_dir.clone().unwrap_or_else(std::env::temp_dir),
            connect_timeout: config.fastcgi_connect_timeout,
            queue_timeout: config.cgi.queue_timeout,
        }
    }

    /// The `/prefix` route owning `path` (segment boundary), and the rest.
    pub fn match_prefix<'p>(
        &self,
        path: &'p SafePath,
    ) -> Option<(&Route, &[String], &'p [String])> {
        self.prefix_routes
            .iter()
            .find(|(segs, _)| path.segments.starts_with(segs))
            .map(|(segs, route)| (route, segs.as_slice(), &path.segments[segs.len()..]))
    }

    /// The `*.EXT` script `path` runs, if it exists under the root.
    pub fn match_script(&self, path: &SafePath) -> Option<(&Route, ScriptTarget)> {
        if self.ext_routes.is_empty() {
            return None;
        }
        let exts: Vec<&str> = self.extensions.iter().map(String::as_str).collect();
        let t = target::find(&self.document_root, path, &exts)?;
        Some((&self.ext_routes[t.route], t))
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
        let (parts, body) = req.into_parts();
        let body = stdin::prepare(body, self.max_body, &self.spool_dir, self.idle).await?;
        let facts = env::RequestFacts::new(&parts, conn, body.content_length());
        let script_facts = env::ScriptFacts {
            script_name: script.name,
            path_info: script.path_info,
            script_filename: script.filename,
            document_root: &self.document_root,
        };
        let mut pairs = Vec::with_capacity(2048);
        env::build_into(&facts, &script_facts, &self.server, &mut |k, v| {
            proto::put_pair(&mut pairs, k.as_bytes(), v)
        });
        let mut head = BytesMut::with_capacity(pairs.len() + 64);
        proto::put_begin(&mut head, true);
        proto::put_stream(&mut head, proto::PARAMS, &pairs);
        proto::put_stream_end(&mut head, proto::PARAMS);

        let tag = format!("{}#{request_id}", script.name);
        let mut source = Some(match body {
            stdin::RequestBody::None => BodySource::None,
            stdin::RequestBody::Streamed(b, _) => BodySource::Stream(b),
            stdin::RequestBody::Spooled(f, _) => BodySource::File(f),
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
            let lease = route
                .balancer
                .checkout(self.connect_timeout, self.queue_timeout)
                .await
                .map_err(|e| checkout_error(route, e))?;
            let backend = lease.backend.clone();
            let backend = &backend.addr;
            let body = source.take().unwrap_or(BodySource::None);
            let mut ex = match Exchange::start(lease, &head, body, self.idle, tag.clone()).await {
                Ok(ex) => ex,
                Err(e) => {
                    last_error = Some(Error::BadGateway(format!(
                        "FastCGI {backend}: sending the request: {e}"
                    )));
                    continue;
                }
            };
            match ex.read_head(self.max_header, self.idle).await {
                Ok((mut buf, head_len, body_start)) => {
                    let first = buf.split_off(body_start).freeze();
                    let bad = |why: String| {
                        Error::BadGateway(format!(
                            "{tag}: invalid response from FastCGI {backend}: {why}"
                        ))
                    };
                    return match response::classify(&buf[..head_len]).map_err(bad)? {
                        Classified::LocalRedirect(location) => {
                            Ok(Outcome::LocalRedirect { location, parts })
                        }
                        Classified::Respond {
                            status,
                            reason,
                            headers,
                        } => {
                            let body = FcgiBody::new(ex, first, self.idle).boxed();
                            Ok(Outcome::Response(response::build_response(
                                status, reason, headers, body,
                            )))
                        }
                    };
                }
                Err(HeadError::Stale(e)) => {
                    tracing::debug!(
                        "pooled connection to {backend} was stale ({e}); retrying on a fresh one"
                    );
                    last_error = Some(Error::BadGateway(format!(
                        "FastCGI {backend}: connection lost: {e}"
                    )));
                }
                Err(e) => return Err(head_error(e, &tag, backend, self.idle)),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::BadGateway(format!("{tag}: no FastCGI answer"))))
    }

    /// One line per route for the startup log and `--check-config`.
    pub fn route_lines(config: &Config) -> Vec<String> {
        config
            .fastcgi
            .iter()
            .map(|r| {
                let m = match &r.matcher {
                    RouteMatch::Prefix(p) => format!("{p}/*"),
                    RouteMatch::Extension(e) => format!("*.{e}"),
                };
                let addrs: Vec<String> = r.addrs.iter().map(|a| a.to_string()).collect();
                format!("FastCGI  {m} -> {}", addrs.join(", "))
            })
            .collect()
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

fn head_error(e: HeadError, tag: &str, backend: &BackendAddr, idle: Duration) -> Error {
    match e {
        HeadError::Timeout => Error::GatewayTimeout(format!(
            "{tag}: FastCGI {backend} sent no response header within {}s (--cgi-timeout)",
            idle.as_secs()
        )),
        HeadError::TooBig(limit) => Error::BadGateway(format!(
            "{tag}: FastCGI {backend} sent a response header block over {limit} bytes \
             (limit: cgi.max_response_header in the config file)"
        )),
        HeadError::Ended { protocol_status: proto::OVERLOADED, .. } => Error::ServiceUnavailable {
            retry_after_secs: 5,
            why: format!("{tag}: FastCGI {backend} is overloaded"),
        },
        HeadError::Ended { protocol_status, stdout_bytes: 0 } if protocol_status != proto::REQUEST_COMPLETE => {
            Error::BadGateway(format!("{tag}: FastCGI {backend} refused the request (protocol status {protocol_status})"))
        }
        HeadError::Ended { stdout_bytes: 0, .. } => {
            Error::BadGateway(format!("{tag}: FastCGI {backend} ended the request without any output"))
        }
        HeadError::Ended { stdout_bytes, .. } => Error::BadGateway(format!(
            "{tag}: FastCGI {backend} ended the request after {stdout_bytes} bytes without the blank line that ends the header block"
        )),
        HeadError::Stale(err) | HeadError::Io(err) => {
            Error::BadGateway(format!("{tag}: FastCGI {backend}: connection lost before the response header: {err}"))
        }
        HeadError::Protocol(why) => Error::BadGateway(format!("{tag}: FastCGI {backend}: {why}")),
    }
}
