//! Routing (SPEC.md "Routing, in order"): the health endpoint and the
//! status page; the site for
//! the request's host; the site's rules (`plan.rs`: redirect, rewrite,
//! access, auth); then (1) `/prefix` FastCGI routes, longest first; (2)
//! the CGI prefix; (3) `*.EXT` FastCGI routes whose script exists under
//! the root or an alias dir; (4) static files; (5) a `*.EXT` route's
//! `fallback` script when nothing matched a file; (6) the site's
//! `[errors]` page for the status that results (`errors.rs`).
//!
//! A CGI local redirect (`Location: /path`) and a rewrite both restart
//! routing with the new path; together at most [`MAX_HOPS`] times.

mod acme;
mod errors;
mod plan;
mod statics;

use std::net::IpAddr;
use std::time::Instant;

use http::{header, Method, Request, Response, Uri};

use crate::app::App;
use crate::body::{Body, ReqBody};
use crate::cgi::Outcome;
use crate::conn::ConnInfo;
use crate::error::Error;
use crate::fastcgi::{self, target::ScriptDir, ScriptTarget};
use crate::log::RequestNote;
use crate::meta::{ClientUri, RemoteUser};
use crate::site::{FileDir, Site};
use crate::status;
use crate::upload;
use crate::uri_path::{join_url, SafePath};
pub use plan::{Plan, Planned};
pub use statics::{
    body_goes_to_cgi, replay_static, serve_static, static_path, StaticAnswer, StaticMemo,
    StaticResponse,
};

/// Rewrites and local redirects followed per request before a 500.
pub const MAX_HOPS: usize = 10;

enum Route<'a> {
    FastCgiPrefix {
        route: &'a fastcgi::Route,
        prefix: &'a [String],
        rest: &'a [String],
    },
    Cgi(&'a [String]),
    FastCgiScript(&'a fastcgi::Route, ScriptTarget, &'a FileDir),
    Static(&'a FileDir, SafePath),
}

impl Route<'_> {
    fn runs_a_script(&self) -> bool {
        !matches!(self, Route::Static(..))
    }
}

fn route<'a>(app: &'a App, site: &'a Site, path: &'a SafePath) -> Route<'a> {
    let group = site.fastcgi_group;
    if let Some((route, prefix, rest)) = app.fastcgi.match_prefix(group, path) {
        return Route::FastCgiPrefix {
            route,
            prefix,
            rest,
        };
    }
    if path.segments.starts_with(&app.cgi_prefix) {
        return Route::Cgi(&path.segments[app.cgi_prefix.len()..]);
    }
    let (dir, rel) = site.file_dir(path);
    let at = script_dir(site, dir);
    if let Some((route, target)) = app.fastcgi.match_script(group, &at, &rel) {
        return Route::FastCgiScript(route, target, dir);
    }
    Route::Static(dir, rel)
}

fn script_dir<'a>(site: &'a Site, dir: &'a FileDir) -> ScriptDir<'a> {
    ScriptDir {
        dir: &dir.dir,
        url_prefix: &dir.url_prefix,
        index: &site.settings.index,
        follow: site.settings.follow_symlinks,
        files: Some(&dir.statics),
    }
}

/// The request's host: the target's authority without userinfo (absolute-form,
/// HTTP/2 `:authority`, as `SERVER_NAME` sees it), else `Host`.
fn host_of<B>(req: &Request<B>) -> Option<&str> {
    req.uri()
        .authority()
        .map(|a| crate::uri_path::without_userinfo(a.as_str()))
        .or_else(|| req.headers().get(header::HOST)?.to_str().ok())
}

/// Serve one request: the status page, or the site's rules, an upload
/// offload if a rule says so, then the route (following rewrites and
/// local redirects), and the site's error page if it ends in one.
pub async fn dispatch(
    app: &App,
    req: Request<ReqBody>,
    conn: &ConnInfo,
    request_id: u64,
    note: &mut RequestNote,
) -> Result<Response<Body>, Error> {
    if status::health::is_health_path(&app.config, req.uri().path()) {
        note.unlogged = true;
        return Ok(status::health::answer(req.method(), app.is_draining()));
    }
    if let Some(answer) = acme::answer(app, &req, conn.https) {
        return answer;
    }
    if let Some(status) = &app.config.status {
        if status::is_status_path(&status.path, req.uri().path()) {
            note.route = Some(app.labels.status.clone());
            return status::serve(|| app.status_snapshot(), &app.stats, status, &req, conn);
        }
    }
    let site = app.sites.pick(host_of(&req));
    if site.index.is_some() {
        note.site = Some(site.name.clone());
    }
    if site.settings.errors.is_empty() {
        return serve_in_site(app, site, req, conn, request_id, note).await;
    }
    let failed = errors::FailedRequest::of(&req);
    match serve_in_site(app, site, req, conn, request_id, note).await {
        Err(e) => Box::pin(errors::page(app, site, e, failed, conn, request_id)).await,
        ok => ok,
    }
}

/// The rules, then the route, until a response (or an error) comes.
async fn serve_in_site(
    app: &App,
    site: &Site,
    mut req: Request<ReqBody>,
    conn: &ConnInfo,
    request_id: u64,
    note: &mut RequestNote,
) -> Result<Response<Body>, Error> {
    let mut hops = 0;
    let mut offloaded = None;
    loop {
        let planned = match plan::plan(site, req.method(), req.uri(), conn.client.ip, &mut hops) {
            Ok(Plan::Route(p)) => p,
            Ok(Plan::Answer(resp, rule)) => {
                note.rule = Some(rule);
                note.route = site.counters.rules.clone();
                return Ok(resp);
            }
            Err(e) => {
                note.route = site.counters.rules.clone();
                return Err(e);
            }
        };
        if planned.rule.is_some() {
            note.rule = planned.rule.clone();
        }
        if let Some(new) = &planned.rewritten {
            rewrite_request(&mut req, new.clone());
        }
        if let Some(check) = &planned.auth {
            let headers = req.headers().clone();
            let user = authenticate(check, headers, conn.client.ip)
                .await
                .inspect_err(|_| {
                    note.route = site.counters.rules.clone();
                })?;
            note.user = Some(user.clone());
            req.extensions_mut().insert(RemoteUser(user));
        }
        // Uploads are offloaded once, by the path the client sent.
        if offloaded.is_none() && !app.uploads.is_empty() {
            let (r, guard) = offload_upload(app, &planned.path, req).await?;
            req = r;
            offloaded = Some(guard);
        }
        let outcome = serve_route(app, site, req, conn, &planned, request_id, note).await?;
        match outcome {
            Outcome::Response(resp) => {
                let guard = offloaded.flatten();
                return Ok(match guard {
                    Some(g) => resp.map(|body| crate::body::with_guard(body, g)),
                    None => resp,
                });
            }
            Outcome::LocalRedirect { location, parts } => {
                hops += 1;
                if hops > MAX_HOPS {
                    return Err(Error::Internal(format!(
                        "more than {MAX_HOPS} rewrites and local redirects (last: {location})"
                    )));
                }
                req = redirect_request(parts, &location)?;
            }
        }
    }
}

/// Check the request's credentials against the rule's htpasswd file, off
/// the async workers (bcrypt takes milliseconds).
async fn authenticate(
    check: &crate::rules::AuthCheck,
    headers: http::HeaderMap,
    peer: IpAddr,
) -> Result<String, Error> {
    let check = check.clone();
    tokio::task::spawn_blocking(move || check.verify(&headers, peer))
        .await
        .map_err(|e| Error::Internal(format!("password check failed: {e}")))?
}

/// The request goes on with the rewritten path and query; `REQUEST_URI`
/// keeps what the client sent.
fn rewrite_request(req: &mut Request<ReqBody>, new: Uri) {
    if req.extensions().get::<ClientUri>().is_none() {
        let client = req.uri().clone();
        req.extensions_mut().insert(ClientUri(client));
    }
    *req.uri_mut() = new;
}

/// Offload a multipart upload when a rule covers `path`; the guard keeps
/// its files until the response is done.
async fn offload_upload(
    app: &App,
    path: &SafePath,
    req: Request<ReqBody>,
) -> Result<(Request<ReqBody>, Option<upload::UploadGuard>), Error> {
    let offload = upload::rule_for(&app.uploads, path).zip(upload::is_multipart(&req));
    let Some((rule, content_type)) = offload else {
        return Ok((req, None));
    };
    let (req, guard) = Box::pin(upload::offload(req, &content_type, rule)).await?;
    Ok((req, Some(guard.keep_if(rule.keep))))
}

/// Run the route the planned path leads to, once.
async fn serve_route(
    app: &App,
    site: &Site,
    mut req: Request<ReqBody>,
    conn: &ConnInfo,
    planned: &Planned,
    request_id: u64,
    note: &mut RequestNote,
) -> Result<Outcome, Error> {
    let path = &planned.path;
    let route = route(app, site, path);
    refuse_scripts_if_off(app, site, planned, &route, req.uri(), note)?;
    note.route = Some(match &route {
        Route::FastCgiPrefix { route, .. } | Route::FastCgiScript(route, ..) => route.tag.clone(),
        Route::Cgi(_) => site.counters.cgi.clone(),
        Route::Static(..) => site.counters.statics.clone(),
    });
    let upstream_started = Instant::now();
    let outcome = match route {
        Route::FastCgiPrefix {
            route,
            prefix,
            rest,
        } => {
            let (name, path_info) = (join_url(prefix), prefix_path_info(rest, path));
            let filename = site.document_root().join(name.trim_start_matches('/'));
            let script = fastcgi::Script {
                name: &name,
                path_info: &path_info,
                filename: &filename,
                document_root: site.document_root(),
            };
            // Boxed: the backends' futures are large and static
            // requests should not carry (and move) their size.
            Box::pin(app.fastcgi.handle(route, req, conn, script, request_id)).await?
        }
        Route::Cgi(rest) => {
            if let Some(env) = &site.cgi_env {
                req.extensions_mut().insert(env.clone());
            }
            let root = site.document_root();
            let trailing = path.trailing_slash;
            Box::pin(app.cgi.handle(req, conn, root, rest, trailing, request_id)).await?
        }
        Route::FastCgiScript(route, t, dir) => {
            let script = fastcgi::Script {
                name: &t.script_name,
                path_info: &t.path_info,
                filename: &t.filename,
                document_root: &dir.dir,
            };
            Box::pin(app.fastcgi.handle(route, req, conn, script, request_id)).await?
        }
        Route::Static(dir, rel) => {
            let fallback = fallback_for(app, site, planned, &rel, dir);
            let Some((route, target)) = fallback else {
                let served = dir
                    .statics
                    .serve(req.method(), &rel, req.uri(), req.headers());
                return served.await.map(Outcome::Response);
            };
            note.route = Some(route.tag.clone());
            note.rule = Some(format!("fallback {} ({})", target.script_name, route.label));
            let script = fastcgi::Script {
                name: &target.script_name,
                path_info: "",
                filename: &target.filename,
                document_root: site.document_root(),
            };
            Box::pin(app.fastcgi.handle(route, req, conn, script, request_id)).await?
        }
    };
    note.upstream = Some(upstream_started.elapsed());
    Ok(outcome)
}

/// Under a `scripts = false` prefix a script is a 403, never its source.
fn refuse_scripts_if_off(
    app: &App,
    site: &Site,
    planned: &Planned,
    route: &Route,
    uri: &Uri,
    note: &mut RequestNote,
) -> Result<(), Error> {
    if planned.scripts || !(route.runs_a_script() || is_script_file(app, site, &planned.path)) {
        return Ok(());
    }
    note.rule = planned.scripts_rule.clone();
    Err(Error::Forbidden(format!(
        "{}: scripts are off here (scripts = false)",
        uri.path()
    )))
}

/// `PATH_INFO` of a `/prefix` route: the rest of the path, with the
/// request's trailing slash.
fn prefix_path_info(rest: &[String], path: &SafePath) -> String {
    let mut path_info = join_url(rest);
    if path.trailing_slash && !rest.is_empty() {
        path_info.push('/');
    }
    path_info
}

/// The file `path` names is a script (its extension is an `*.EXT`
/// route's), which a `scripts = false` prefix must not serve as source.
fn is_script_file(app: &App, site: &Site, path: &SafePath) -> bool {
    path.segments
        .last()
        .is_some_and(|name| app.fastcgi.is_script_name(site.fastcgi_group, name))
}

/// The front controller for a static path that names no file (nor an
/// index): the site's `*.EXT` route with a `fallback`, and its script.
/// A path that itself names a script of that route stays a 404.
/// Under a `scripts = false` prefix the front controller still answers a
/// path with no file: the script that runs is not under the prefix (as
/// nginx's `try_files … /index.php` beside a `deny` for `uploads/*.php`),
/// and the application gives its own 404.
fn fallback_for<'a>(
    app: &'a App,
    site: &Site,
    planned: &Planned,
    rel: &SafePath,
    dir: &FileDir,
) -> Option<(&'a fastcgi::Route, ScriptTarget)> {
    let path = &planned.path;
    let (route, fallback) = app.fastcgi.fallback(site.fastcgi_group)?;
    if is_script_file(app, site, path) {
        return None;
    }
    match dir.statics.resolves(rel) {
        Err(Error::NotFound | Error::NoIndex(_)) => {}
        // A file is there: GET/HEAD serve it, other methods get 405.
        _ => return None,
    }
    let script = SafePath::parse(fallback).ok()?;
    let at = script_dir(site, &site.root);
    let group = site.fastcgi_group;
    let (found, target) = app.fastcgi.match_script(group, &at, &script)?;
    std::ptr::eq(found, route).then_some((route, target))
}

/// The GET a local redirect turns into: same headers minus the body's.
fn redirect_request(
    mut parts: http::request::Parts,
    location: &str,
) -> Result<Request<ReqBody>, Error> {
    // REQUEST_URI is the new location (as before a rewrite).
    parts.extensions.remove::<ClientUri>();
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
    Ok(Request::from_parts(parts, crate::body::empty_request()))
}
