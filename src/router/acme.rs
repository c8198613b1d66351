//! What automatic HTTPS takes before the site's rules: the HTTP-01 path
//! (`/.well-known/acme-challenge/TOKEN`, never subject to rules, auth or
//! routes, on any listener and host), and the 308 from plain HTTP to
//! HTTPS for a name with a certificate (`https_redirect`).

use http::{header, Request, Response, StatusCode};

use crate::app::App;
use crate::body::{self, Body};
use crate::error::Error;
use crate::uri_path::without_port;

const CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

/// The answer ACME gives `req`, if it owns it.
pub(super) fn answer<B>(
    app: &App,
    req: &Request<B>,
    tls: bool,
) -> Option<Result<Response<Body>, Error>> {
    let acme = app.acme.as_ref()?;
    if let Some(token) = req.uri().path().strip_prefix(CHALLENGE_PATH) {
        let Some(key_auth) = acme.http01(token) else {
            return Some(Err(Error::NotFound));
        };
        let resp = Response::builder()
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(body::full(key_auth))
            .map_err(|e| Error::Internal(e.to_string()));
        return Some(resp);
    }
    if tls {
        return None;
    }
    let host = without_port(super::host_of(req)?).to_ascii_lowercase();
    let port = acme.https_redirect_port(&host)?;
    let port = if port == 443 {
        String::new()
    } else {
        format!(":{port}")
    };
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{host}{port}{target}");
    let resp = Response::builder()
        .status(StatusCode::PERMANENT_REDIRECT)
        .header(header::LOCATION, location)
        .body(body::empty())
        .map_err(|_| Error::BadRequest("no redirect for this host".into()));
    Some(resp)
}

/// Whether [`answer`] may take a request on the plain static path (which
/// then leaves it to `dispatch`).
pub(super) fn owns<B>(app: &App, req: &Request<B>) -> bool {
    let Some(acme) = app.acme.as_ref() else {
        return false;
    };
    req.uri().path().starts_with(CHALLENGE_PATH)
        || super::host_of(req).is_some_and(|h| {
            acme.https_redirect_port(&without_port(h).to_ascii_lowercase())
                .is_some()
        })
}
