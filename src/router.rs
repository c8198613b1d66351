//! The application: configuration plus the handlers built from it, shared
//! read-only by every connection, and the routing of SPEC.md "Routing".
//!
//! Order: (1) `/prefix` FastCGI routes, longest first; (2) the CGI prefix;
//! (3) `*.EXT` FastCGI routes whose script exists under the root; (4)
//! static files.
//! A CGI local redirect (`Location: /path`) is routed again as a GET, at
//! most [`MAX_LOCAL_REDIRECTS`] times.

use std::time::Instant;

use bytes::Bytes;
use http::{header, Method, Request, Response, Uri};
use http_body_util::{BodyExt, Empty};

use crate::app::App;
use crate::body::{Body, ReqBody};
use crate::cgi::Outcome;
use crate::conn::ConnInfo;
use crate::error::Error;
use crate::fastcgi::{self, ScriptTarget};
use crate::log::RequestNote;
use crate::static_files::FileRange;
use crate::status;
use crate::upload;
use crate::uri_path::{join_url, SafePath};

/// Local redirects followed per request before giving up with a 500.
pub const MAX_LOCAL_REDIRECTS: usize = 10;

enum Route<'a> {
    FastCgiPrefix {
        route: &'a fastcgi::Route,
        prefix: &'a [String],
        rest: &'a [String],
    },
    Cgi(&'a [String]),
    FastCgiScript(&'a fastcgi::Route, ScriptTarget),
    Static,
}

fn route<'a>(app: &'a App, path: &'a SafePath) -> Route<'a> {
    if let Some((route, prefix, rest)) = app.fastcgi.match_prefix(path) {
        return Route::FastCgiPrefix {
            route,
            prefix,
            rest,
        };
    }
    if path.segments.starts_with(&app.cgi_prefix) {
        return Route::Cgi(&path.segments[app.cgi_prefix.len()..]);
    }
    if let Some((route, target)) = app.fastcgi.match_script(path) {
        return Route::FastCgiScript(route, target);
    }
    Route::Static
}

/// Serve one request: offload a multipart upload if a rule says so, then
/// route it (following local redirects). The upload's files live until the
/// response body is done.
pub async fn dispatch(
    app: &App,
    req: Request<ReqBody>,
    conn: &ConnInfo,
    request_id: u64,
    note: &mut RequestNote,
) -> Result<Response<Body>, Error> {
    if let Some(status) = &app.config.status {
        if status::is_status_path(&status.path, req.uri().path()) {
            note.route = Some(app.labels.status.clone());
            return status::serve(|| app.status_snapshot(), status, &req, conn);
        }
    }
    // Most sites have no upload rule: do not parse the path twice for them.
    if app.uploads.is_empty() {
        return route_and_serve(app, req, conn, request_id, note).await;
    }
    let path = SafePath::parse(req.uri().path())?;
    let offload = upload::rule_for(&app.uploads, &path).zip(upload::is_multipart(&req));
    let Some((rule, content_type)) = offload else {
        return route_and_serve(app, req, conn, request_id, note).await;
    };
    let (req, guard) = Box::pin(upload::offload(req, &content_type, rule)).await?;
    let resp = route_and_serve(app, req, conn, request_id, note).await?;
    let guard = guard.keep_if(rule.keep);
    Ok(resp.map(|body| crate::body::with_guard(body, guard)))
}

/// The path of a bodiless GET or HEAD that `dispatch` would give to the
/// static files, or None when another route owns it (status page, upload
/// rule, CGI, FastCGI). The front end's sendfile path
/// (`server/static_h1.rs`) takes only these. An unusable path is
/// `Some(Err)`: its 400/403/404 page is the same whoever answers.
pub fn static_path(app: &App, uri_path: &str) -> Option<Result<SafePath, Error>> {
    if let Some(status) = &app.config.status {
        if status::is_status_path(&status.path, uri_path) {
            return None;
        }
    }
    let path = match SafePath::parse(uri_path) {
        Ok(path) => path,
        Err(e) => return Some(Err(e.into())),
    };
    if upload::rule_for(&app.uploads, &path).is_some() {
        return None;
    }
    matches!(route(app, &path), Route::Static).then_some(Ok(path))
}

/// Answer a request [`static_path`] accepted, for a front end that sends
/// the file bytes itself (a `FileRange` instead of a body).
pub fn serve_static(
    app: &App,
    req: &Request<()>,
    path: SafePath,
    note: &mut RequestNote,
) -> Result<(Response<Body>, Option<FileRange>), Error> {
    note.route = Some(app.labels.statics.clone());
    app.statics
        .serve_sending_files(req.method(), &path, req.uri(), req.headers())
}

async fn route_and_serve(
    app: &App,
    mut req: Request<ReqBody>,
    conn: &ConnInfo,
    request_id: u64,
    note: &mut RequestNote,
) -> Result<Response<Body>, Error> {
    for _ in 0..=MAX_LOCAL_REDIRECTS {
        let path = SafePath::parse(req.uri().path())?;
        let route = route(app, &path);
        note.route = Some(match &route {
            Route::FastCgiPrefix { route, .. } | Route::FastCgiScript(route, _) => {
                route.tag.clone()
            }
            Route::Cgi(_) => app.labels.cgi.clone(),
            Route::Static => app.labels.statics.clone(),
        });
        let upstream_started = Instant::now();
        let outcome = match route {
            Route::FastCgiPrefix {
                route,
                prefix,
                rest,
            } => {
                let name = join_url(prefix);
                let mut path_info = join_url(rest);
                if path.trailing_slash && !rest.is_empty() {
                    path_info.push('/');
                }
                let filename = app.root().join(name.trim_start_matches('/'));
                let script = fastcgi::Script {
                    name: &name,
                    path_info: &path_info,
                    filename: &filename,
                };
                // Boxed: the backends' futures are large and static
                // requests should not carry (and move) their size.
                Box::pin(app.fastcgi.handle(route, req, conn, script, request_id)).await?
            }
            Route::Cgi(rest) => {
                Box::pin(
                    app.cgi
                        .handle(req, conn, rest, path.trailing_slash, request_id),
                )
                .await?
            }
            Route::FastCgiScript(route, t) => {
                let script = fastcgi::Script {
                    name: &t.script_name,
                    path_info: &t.path_info,
                    filename: &t.filename,
                };
                // Boxed: the backends' futures are large and static
                // requests should not carry (and move) their size.
                Box::pin(app.fastcgi.handle(route, req, conn, script, request_id)).await?
            }
            Route::Static => {
                return app
                    .statics
                    .serve(req.method(), &path, req.uri(), req.headers())
                    .await
            }
        };
        note.upstream = Some(upstream_started.elapsed());
        match outcome {
            Outcome::Response(resp) => return Ok(resp),
            Outcome::LocalRedirect { location, parts } => req = redirect_request(parts, &location)?,
        }
    }
    Err(Error::Internal(format!(
        "more than {MAX_LOCAL_REDIRECTS} local redirects"
    )))
}

/// The GET a local redirect turns into: same headers minus the body's.
fn redirect_request(
    mut parts: http::request::Parts,
    location: &str,
) -> Result<Request<ReqBody>, Error> {
    parts.uri = location.parse::<Uri>().map_err(|_| {
        Error::BadGateway(format!(
            "CGI local redirect to an invalid path {location:?}"
        ))
    })?;
    parts.method = Method::GET;
    for h in [
        header::CONTENT_LENGTH,
        header::CONTENT_TYPE,
        header::TRANSFER_ENCODING,
    ] {
        parts.headers.remove(h);
    }
    let body = Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync();
    Ok(Request::from_parts(parts, body))
}
