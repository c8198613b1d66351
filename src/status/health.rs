//! The health endpoint a load balancer checks (`health_path`, off by
//! default): 200 `ok` while cgihost serves, 503 `draining` from SIGTERM or
//! SIGINT on (during `shutdown_delay` and the drain after it), so the
//! balancer takes the instance out before its listeners close. It answers
//! any method (HAProxy's `option httpchk` sends OPTIONS) from any client,
//! before sites, rules, authentication and routes, and writes no access
//! log line (a balancer checks every few seconds).

use http::{header, HeaderValue, Method, Response, StatusCode};

use crate::body::{self, Body};
use crate::config::Config;

/// `path` is the health endpoint (or it with a trailing slash).
pub fn is_health_path(config: &Config, path: &str) -> bool {
    let Some(health) = config.balancer.health_path.as_deref() else {
        return false;
    };
    path.strip_prefix(health)
        .is_some_and(|rest| rest.is_empty() || rest == "/")
}

/// A path the server answers itself, before any site: the status page
/// or the health endpoint.
pub fn is_server_path(config: &Config, path: &str) -> bool {
    let status = config
        .status
        .as_ref()
        .is_some_and(|s| super::is_status_path(&s.path, path));
    status || is_health_path(config, path)
}

/// The answer: 200 `ok`, or 503 `draining` once shutdown has begun.
pub fn answer(method: &Method, draining: bool) -> Response<Body> {
    let (status, text) = if draining {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::OK, "ok\n")
    };
    let mut resp = Response::new(if method == Method::HEAD {
        body::empty()
    } else {
        body::full(text)
    });
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_health_path_matches_exactly() {
        let mut config = Config::default();
        assert!(!is_health_path(&config, "/healthz"));
        config.balancer.health_path = Some("/healthz".into());
        assert!(is_health_path(&config, "/healthz"));
        assert!(is_health_path(&config, "/healthz/"));
        assert!(!is_health_path(&config, "/healthzz"));
        assert!(!is_health_path(&config, "/healthz/x"));
        assert!(is_server_path(&config, "/healthz"));
        assert!(!is_server_path(&config, "/index.html"));
    }

    #[test]
    fn draining_is_a_503() {
        let ok = answer(&Method::GET, false);
        assert_eq!(ok.status(), StatusCode::OK);
        let draining = answer(&Method::OPTIONS, true);
        assert_eq!(draining.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(draining.headers()[header::CONTENT_LENGTH], "9");
    }
}
