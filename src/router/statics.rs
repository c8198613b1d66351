//! What the front end's sendfile path (`server/static_h1.rs`) may answer
//! without hyper: static files and rules' redirects, decided as `dispatch`
//! would; and memos of those answers the front end may replay while the
//! open-file cache still holds the same file (see `static_files::memo`).

use std::net::IpAddr;

use bytes::Bytes;
use http::{Request, Response};

use super::{acme, errors, host_of, is_script_file, plan, route, Plan, Route};
use crate::app::App;
use crate::body::Body;
use crate::error::Error;
use crate::log::RequestNote;
use crate::static_files::{FileRange, Memo, Sending};
use crate::status;
use crate::upload;
use crate::uri_path::SafePath;

/// A response, the file bytes the front end sends behind its head, and a
/// memo when it may give the same answer again.
pub struct StaticResponse {
    pub resp: Response<Body>,
    pub file: Option<FileRange>,
    pub memo: Option<StaticMemo>,
}

/// What the front end's sendfile path may answer itself: a file (the
/// site, and the path relative to the dir it lies in) or a rule's
/// answer. Anything else (`None`) is for hyper.
pub enum StaticAnswer {
    File { site: usize, path: SafePath },
    Rule(Response<Body>, String),
}

/// For a bodiless GET or HEAD: what `dispatch` would do when that is to
/// serve a static file or a rule's redirect, or None when another route
/// or a password check owns it (status page, health endpoint, upload
/// rule, CGI, FastCGI, auth). An unusable path or a denied client (at
/// `client`) is `Some(Err)`: its page is the same whoever answers.
pub fn static_path<B>(
    app: &App,
    req: &Request<B>,
    client: IpAddr,
) -> Option<Result<StaticAnswer, Error>> {
    if acme::owns(app, req) {
        return None;
    }
    if status::health::is_server_path(&app.config, req.uri().path()) {
        return None;
    }
    let (position, site) = app.sites.pick_position(host_of(req));
    let planned = match plan::plan(site, req.method(), req.uri(), client, &mut 0) {
        Ok(Plan::Route(p)) => p,
        Ok(Plan::Answer(resp, rule)) => return Some(Ok(StaticAnswer::Rule(resp, rule))),
        Err(e) if errors::has_page(site, &e) => return None,
        Err(e) => return Some(Err(e)),
    };
    if planned.auth.is_some() || upload::rule_for(&app.uploads, &planned.path).is_some() {
        return None;
    }
    if planned.rewritten.is_some() {
        // Rewritten requests keep the meta-variables straight on hyper.
        return None;
    }
    if !planned.scripts && is_script_file(app, site, &planned.path) {
        return None;
    }
    matches!(route(app, site, &planned.path), Route::Static(..)).then_some(Ok(StaticAnswer::File {
        site: position,
        path: planned.path,
    }))
}

/// For a request whose body the front end reads itself: whether
/// `dispatch` would run a CGI program for it, as sent (no rule answers,
/// rewrites it or asks for a password, and no upload rule takes its
/// body), so that the body may go to the program's stdin by splice(2).
pub fn body_goes_to_cgi<B>(app: &App, req: &Request<B>, client: IpAddr) -> bool {
    if acme::owns(app, req) || status::health::is_server_path(&app.config, req.uri().path()) {
        return false;
    }
    let site = app.sites.pick(host_of(req));
    let Ok(Plan::Route(planned)) = plan::plan(site, req.method(), req.uri(), client, &mut 0) else {
        return false;
    };
    planned.auth.is_none()
        && planned.rewritten.is_none()
        && upload::rule_for(&app.uploads, &planned.path).is_none()
        && matches!(route(app, site, &planned.path), Route::Cgi(_))
}

/// Answer a request [`static_path`] accepted, for a front end that sends
/// the file bytes itself (a `FileRange` instead of a body). `None`: an
/// answer only hyper can give (the site's fallback script or error page).
pub fn serve_static(
    app: &App,
    req: &Request<()>,
    answer: StaticAnswer,
    note: &mut RequestNote,
) -> Option<Result<StaticResponse, Error>> {
    let (site, path) = match answer {
        StaticAnswer::Rule(resp, rule) => {
            let site = app.sites.pick(host_of(req));
            note.route = site.counters.rules.clone();
            note.rule = Some(rule);
            return Some(Ok(StaticResponse {
                resp,
                file: None,
                memo: None,
            }));
        }
        StaticAnswer::File { site, path } => (site, path),
    };
    let position = site;
    let site = app.sites.at(position);
    if site.index.is_some() {
        note.site = Some(site.name.clone());
    }
    note.route = Some(site.counters.statics.clone());
    let (dir, rel) = site.file_dir(&path);
    let served = dir
        .statics
        .serve_sending_files(req.method(), &rel, req.uri(), req.headers());
    // A memo only where the answer depends on nothing but the host, method,
    // target and the headers the file pipeline reads: no rules (they may
    // look at the client's address, or redirect), no ACME (its redirect to
    // HTTPS starts when a certificate arrives).
    let pure = site.rules.is_empty() && app.acme.is_none();
    let served = served.map(|Sending { resp, file, memo }| StaticResponse {
        resp,
        file,
        memo: memo.filter(|_| pure).map(|memo| StaticMemo {
            site: position,
            alias: site.alias_of(&path),
            memo,
        }),
    });
    let hyper_answers = match &served {
        Err(e @ (Error::NotFound | Error::NoIndex(_))) => {
            app.fastcgi.fallback(site.fastcgi_group).is_some() || errors::has_page(site, e)
        }
        Err(e) => errors::has_page(site, e),
        Ok(_) => false,
    };
    (!hyper_answers).then_some(served)
}

/// A [`Memo`] of a static answer, and the dir whose cache holds it. Valid
/// only with the application it was made with (site and alias are
/// positions in its configuration).
pub struct StaticMemo {
    site: usize,
    alias: Option<usize>,
    memo: Memo,
}

/// The body `memo` stands for, if its file is still the one cached.
pub fn replay_static(app: &App, memo: &StaticMemo) -> Option<Bytes> {
    let dir = app.sites.at(memo.site).dir(memo.alias)?;
    dir.statics.replay(&memo.memo)
}
