//! One error type for request handling, and the ONE place where an error
//! becomes a status code, a log line and a short HTML page.
//!
//! Mapping: paths that do not resolve → 404; refused paths → 403; no or
//! wrong credentials → 401; bad clients → 400/405/413; failed preconditions → 412; ranges outside the
//! file → 416 with `Content-Range: bytes */SIZE`; a backend (CGI script) that misbehaves → 502; no
//! capacity → 503 with `Retry-After`; a backend that is too slow → 504.

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{self, Body};

/// Why a request could not be served. The `String`s are for the log, never
/// for the client.
#[derive(Debug)]
pub enum Error {
    BadRequest(String),
    /// No or wrong credentials for an `[[auth]]` rule (401 with
    /// `WWW-Authenticate: Basic realm="…"`).
    Unauthorized {
        realm: String,
        why: String,
    },
    Forbidden(String),
    /// A directory without an index file (403, listings are off; a
    /// front controller may take it instead).
    NoIndex(String),
    NotFound,
    MethodNotAllowed(&'static str),
    /// `If-Match` / `If-Unmodified-Since` failed (412).
    PreconditionFailed,
    /// No byte of a `Range` lies inside a file of `size` bytes (416).
    RangeNotSatisfiable {
        size: u64,
    },
    PayloadTooLarge(String),
    BadGateway(String),
    ServiceUnavailable {
        retry_after_secs: u64,
        why: String,
    },
    GatewayTimeout(String),
    Internal(String),
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) | Error::NoIndex(_) => StatusCode::FORBIDDEN,
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Error::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Error::ServiceUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Log why (server-side problems loudly, client mistakes quietly) and
    /// build the short page the client gets.
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        match &self {
            Error::BadGateway(why)
            | Error::GatewayTimeout(why)
            | Error::Internal(why)
            | Error::ServiceUnavailable { why, .. } => tracing::warn!(%status, "{why}"),
            Error::BadRequest(why)
            | Error::Forbidden(why)
            | Error::NoIndex(why)
            | Error::PayloadTooLarge(why)
            | Error::Unauthorized { why, .. } => {
                tracing::info!(%status, "{why}")
            }
            Error::NotFound
            | Error::MethodNotAllowed(_)
            | Error::PreconditionFailed
            | Error::RangeNotSatisfiable { .. } => {}
        }
        let mut resp = error_page(status);
        let headers = resp.headers_mut();
        match self {
            Error::MethodNotAllowed(allow) => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            Error::RangeNotSatisfiable { size } => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
            }
            Error::ServiceUnavailable {
                retry_after_secs, ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            Error::Unauthorized { realm, .. } => {
                // The realm was checked at load: no quotes or controls.
                let challenge = format!("Basic realm=\"{realm}\", charset=\"UTF-8\"");
                if let Ok(v) = HeaderValue::from_str(&challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            _ => {}
        }
        resp
    }
}

/// A short HTML page for `status`; no details, no stack traces.
pub fn error_page(status: StatusCode) -> Response<Body> {
    let reason = status.canonical_reason().unwrap_or("Error");
    let code = status.as_u16();
    let html = format!(
        "<!DOCTYPE html>\n<html><head><title>{code} {reason}</title></head>\
         <body><h1>{code} {reason}</h1><hr><p>cgihost</p></body></html>\n"
    );
    let mut resp = Response::new(body::full(html));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
