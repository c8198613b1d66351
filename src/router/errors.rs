//! `[errors]` (SPEC.md "Routing", step 6): when cgihost itself answers
//! with an error status the site has a page for, the client gets that
//! page instead of the built-in one — with the original status and the
//! original's protocol headers (`WWW-Authenticate`, `Allow`,
//! `Retry-After`, `Content-Range`). The page is a static file or a
//! script; a script runs as a GET and sees `REDIRECT_STATUS`,
//! `REDIRECT_URL` and `REDIRECT_QUERY_STRING`. Responses a script made
//! itself (PHP's own 404) pass untouched, as nginx does without
//! `fastcgi_intercept_errors`. A page that fails falls back to the
//! built-in one: no loop.

use http::{header, HeaderMap, Method, Request, Response, Uri};

use super::{plan, serve_route, Planned};
use crate::app::App;
use crate::body::Body;
use crate::cgi::Outcome;
use crate::conn::ConnInfo;
use crate::error::Error;
use crate::log::RequestNote;
use crate::meta::{ErrorRedirect, RemoteUser};
use crate::site::Site;

/// What the page needs of the request that failed (taken before it is
/// consumed).
pub struct FailedRequest {
    uri: Uri,
    headers: HeaderMap,
    user: Option<RemoteUser>,
}

impl FailedRequest {
    pub fn of<B>(req: &Request<B>) -> FailedRequest {
        FailedRequest {
            uri: req.uri().clone(),
            headers: req.headers().clone(),
            user: req.extensions().get::<RemoteUser>().cloned(),
        }
    }
}

/// The site has a page for `e`'s status.
pub fn has_page(site: &Site, e: &Error) -> bool {
    let code = e.status().as_u16();
    site.settings.errors.iter().any(|(c, _)| *c == code)
}

/// The response for `e`: the site's page for its status if it has one
/// that serves, else the built-in page.
pub async fn page(
    app: &App,
    site: &Site,
    e: Error,
    failed: FailedRequest,
    conn: &ConnInfo,
    request_id: u64,
) -> Result<Response<Body>, Error> {
    let code = e.status().as_u16();
    let Some((_, page_path)) = site.settings.errors.iter().find(|(c, _)| *c == code) else {
        return Err(e);
    };
    let original = e.into_response();
    let Ok(page_uri) = page_path.parse::<Uri>() else {
        return Ok(original);
    };
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(page_uri)
        .body(crate::body::empty_request())
        .map_err(|e| Error::Internal(format!("error page request: {e}")))?;
    // The client's headers, less those that would make the page partial
    // or conditional.
    *req.headers_mut() = failed.headers;
    for h in [
        header::RANGE,
        header::IF_RANGE,
        header::IF_MATCH,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_UNMODIFIED_SINCE,
        header::CONTENT_LENGTH,
        header::CONTENT_TYPE,
        header::TRANSFER_ENCODING,
    ] {
        req.headers_mut().remove(h);
    }
    req.extensions_mut().insert(ErrorRedirect {
        status: code,
        url: failed.uri.path().to_string(),
        query: failed.uri.query().map(str::to_string),
    });
    if let Some(user) = failed.user {
        req.extensions_mut().insert(user);
    }
    let Ok(path) = plan::parse_path(site, req.uri()) else {
        return Ok(original);
    };
    let planned = Planned {
        path,
        rewritten: None,
        scripts: true,
        scripts_rule: None,
        auth: None,
        rule: None,
    };
    let mut note = RequestNote::default();
    let served = serve_route(app, site, req, conn, &planned, request_id, &mut note).await;
    match served {
        Ok(Outcome::Response(page)) if page.status().is_success() => Ok(merge(original, page)),
        Ok(_) | Err(_) => {
            tracing::warn!(
                "error page {page_path} for {code} did not serve; sending the built-in page"
            );
            Ok(original)
        }
    }
}

/// The page's body and content headers under the original status and
/// protocol headers.
fn merge(original: Response<Body>, page: Response<Body>) -> Response<Body> {
    let (mut parts, _) = original.into_parts();
    let (page_parts, body) = page.into_parts();
    for h in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::CACHE_CONTROL,
    ] {
        parts.headers.remove(&h);
    }
    for (name, value) in page_parts.headers.iter() {
        // The original's protocol headers stay; the page's validators
        // would describe the page file, not this response.
        let skip = matches!(
            *name,
            header::WWW_AUTHENTICATE
                | header::ALLOW
                | header::RETRY_AFTER
                | header::CONTENT_RANGE
                | header::ETAG
                | header::LAST_MODIFIED
                | header::ACCEPT_RANGES
        );
        if !skip {
            parts.headers.append(name, value.clone());
        }
    }
    Response::from_parts(parts, body)
}
