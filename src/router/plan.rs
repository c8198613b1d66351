//! The rules stage of routing (SPEC.md "Routing", step 0, inside a site):
//! `[[redirect]]`, then `[[rewrite]]` (routing restarts with the new
//! path), then `[[access]]` and `[[auth]]`. Synchronous, so the static
//! sendfile path and the hyper path share it; checking a password is
//! left to the caller (it hashes: off the async workers).
//!
//! Access and auth rules are checked against the path the client sent
//! and against the path a rewrite made of it: a rewrite can neither lead
//! around a deny nor out of a password.

use std::net::IpAddr;

use http::{header, HeaderValue, Method, Response, StatusCode, Uri};

use super::MAX_HOPS;
use crate::body::{self, Body};
use crate::config::EncodedSlashes;
use crate::error::Error;
use crate::rules::AuthCheck;
use crate::site::Site;
use crate::uri_path::SafePath;

/// What the rules say about a request.
pub enum Plan {
    /// A redirect: answered without a handler.
    Answer(Response<Body>, String),
    /// Route this path.
    Route(Planned),
}

/// A request that passed the rules.
pub struct Planned {
    pub path: SafePath,
    /// The rewritten path-and-query, when a rewrite applied.
    pub rewritten: Option<Uri>,
    /// false: a script must not run for this path (`scripts = false`).
    pub scripts: bool,
    /// The `[[access]]` rule that turned scripts off, for the log.
    pub scripts_rule: Option<String>,
    /// The password check this request must pass.
    pub auth: Option<AuthCheck>,
    /// The last rule that applied (`file:line (key)`), for the log.
    pub rule: Option<String>,
}

/// Parse `uri`'s path under the site's `encoded_slashes`.
pub fn parse_path(site: &Site, uri: &Uri) -> Result<SafePath, Error> {
    let keep = site.settings.encoded_slashes == EncodedSlashes::Keep;
    Ok(SafePath::parse_with(uri.path(), keep)?)
}

/// Apply the site's rules to a request for `uri`; `hops` counts rewrites
/// and local redirects together (more than [`MAX_HOPS`] → 500).
pub fn plan(
    site: &Site,
    method: &Method,
    uri: &Uri,
    peer: IpAddr,
    hops: &mut usize,
) -> Result<Plan, Error> {
    let first = parse_path(site, uri)?;
    let rules = &site.rules;
    if rules.is_empty() {
        return Ok(Plan::Route(Planned {
            path: first,
            rewritten: None,
            scripts: true,
            scripts_rule: None,
            auth: None,
            rule: None,
        }));
    }
    let first_subject = rule_subject(&first, uri.path());
    let mut path = first;
    // The current subject: the first one until a rewrite makes another.
    let mut subject: Option<String> = None;
    let mut rewritten: Option<Uri> = None;
    let mut rule = None;
    loop {
        let query = rewritten.as_ref().unwrap_or(uri).query();
        let current = subject.as_deref().unwrap_or(&first_subject);
        if let Some((status, location, origin)) = rules.redirect(current, query) {
            return Ok(Plan::Answer(
                redirect(status, &location)?,
                origin.to_string(),
            ));
        }
        let Some((to, origin)) = rules.rewrite(current, query) else {
            break;
        };
        *hops += 1;
        if *hops > MAX_HOPS {
            return Err(Error::Internal(format!(
                "more than {MAX_HOPS} rewrites and redirects; the last rule was {origin}"
            )));
        }
        let new: Uri = to
            .parse()
            .map_err(|_| Error::Internal(format!("{origin}: rewrote to an invalid URI {to:?}")))?;
        path = parse_path(site, &new)?;
        subject = Some(path.to_rule_subject());
        rewritten = Some(new);
        rule = Some(origin.to_string());
    }
    let targets = [
        Some((first_subject.as_ref(), uri.query())),
        rewritten
            .as_ref()
            .zip(subject.as_deref())
            .map(|(new, subject)| (subject, new.query())),
    ];
    let checked = check_access_and_auth(site, method, peer, targets)?;
    Ok(Plan::Route(Planned {
        path,
        rewritten,
        scripts: checked.scripts,
        scripts_rule: checked.scripts_rule,
        auth: checked.auth,
        rule,
    }))
}

/// What `[[access]]` and `[[auth]]` said about a request's paths.
struct Checked {
    scripts: bool,
    scripts_rule: Option<String>,
    auth: Option<AuthCheck>,
}

/// `[[access]]` and `[[auth]]` for each path (the client's, the rewritten
/// one): a deny on either refuses; the first auth rule applies; the path
/// that runs decides whether a script may.
fn check_access_and_auth(
    site: &Site,
    method: &Method,
    peer: IpAddr,
    targets: [Option<(&str, Option<&str>)>; 2],
) -> Result<Checked, Error> {
    let rules = &site.rules;
    let mut scripts = (true, None);
    let mut auth = None;
    for (subject_path, query) in targets.into_iter().flatten() {
        // The path that runs (the last target) decides whether a script
        // may; any of its subjects can turn scripts off.
        scripts = (true, None);
        // A kept encoded slash (`encoded_slashes = "keep"`) is still a
        // slash to the application behind: `/admin%2Fx` must meet the
        // rules for `/admin/x` too.
        let slashed = subject_path
            .contains("%2F")
            .then(|| subject_path.replace("%2F", "/"));
        for path in std::iter::once(subject_path).chain(slashed.as_deref()) {
            // The raw query, and its decoded form when that differs: a
            // rule that names `service=x` must not be dodged by
            // `service=%78`.
            for full in subjects(path, query) {
                let verdict = rules.access(&full, path, peer);
                if let Some(denied) = verdict.denied_by {
                    return Err(Error::Forbidden(format!(
                        "access ({}): {peer} refused for {subject_path}",
                        denied.origin
                    )));
                }
                if auth.is_none() {
                    auth = rules.auth_rule(&full, path, method);
                }
                if !verdict.scripts && scripts.0 {
                    scripts = (false, verdict.rule.map(|r| r.origin.clone()));
                }
            }
        }
    }
    Ok(Checked {
        scripts: scripts.0,
        scripts_rule: scripts.1,
        auth,
    })
}

/// The decoded path as rules see it; the raw path itself (no copy) when
/// decoding and normalising cannot change it.
fn rule_subject<'a>(path: &SafePath, raw: &'a str) -> std::borrow::Cow<'a, str> {
    let plain = !raw.contains('%')
        && !raw.contains("//")
        && !raw.contains("/./")
        && !raw.ends_with("/.")
        && raw.starts_with('/');
    if plain {
        std::borrow::Cow::Borrowed(raw)
    } else {
        std::borrow::Cow::Owned(path.to_rule_subject())
    }
}

/// What access and auth regexes see: `path?query` (or `path`), and
/// `path?decoded-query` too when decoding changes the query.
fn subjects<'a>(path: &'a str, query: Option<&str>) -> Vec<std::borrow::Cow<'a, str>> {
    let Some(q) = query else {
        return vec![std::borrow::Cow::Borrowed(path)];
    };
    let mut out = vec![std::borrow::Cow::Owned(format!("{path}?{q}"))];
    if let Some(decoded) = crate::uri_path::percent_decode_lenient(q) {
        out.push(std::borrow::Cow::Owned(format!("{path}?{decoded}")));
    }
    out
}

/// A `[[redirect]]` answer: status, Location, a one-line body.
fn redirect(status: u16, location: &str) -> Result<Response<Body>, Error> {
    let status = StatusCode::from_u16(status)
        .map_err(|_| Error::Internal(format!("redirect status {status}")))?;
    let value = HeaderValue::from_str(location)
        .map_err(|_| Error::Internal(format!("redirect to an invalid Location {location:?}")))?;
    let mut resp = Response::new(body::full(format!(
        "<!DOCTYPE html>\n<html><body><a href=\"{}\">moved</a></body></html>\n",
        location.replace('"', "%22").replace('<', "%3C")
    )));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::LOCATION, value);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    Ok(resp)
}
