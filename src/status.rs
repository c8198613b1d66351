//! The status page at `--status-path` (off by default): one snapshot of
//! the server — uptime, connections, requests and status classes per
//! route, CGI processes running, each spawned FastCGI pool's workers and
//! each FastCGI backend's health — served three ways:
//! - `PATH` (or `PATH/`): an HTML dashboard; a few lines of script re-fetch
//!   it every 2 s and swap the content, so it stays live without a reload;
//! - `PATH?json`, or `Accept: application/json`: the same as JSON;
//! - `PATH/metrics`: Prometheus text format (prometheus-client), with
//!   latency histograms; written from the counters, not the snapshot.
//!
//! By default only loopback clients see it; anyone else gets the same 404
//! as for any missing path (`status_local_only = false` opens it).

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use serde_json::Value;

use crate::body::ReqBody;
pub mod health;
mod html;
mod metrics;

use html::html;
use metrics::metrics;

use crate::body::{self, Body};
use crate::config::StatusConfig;
use crate::conn::ConnInfo;
use crate::error::Error;
use crate::stats::{Stats, PROMETHEUS_CONTENT_TYPE};

/// `path` is the status page, its `/`, or its `/metrics`.
pub fn is_status_path(status_path: &str, path: &str) -> bool {
    matches!(path.strip_prefix(status_path), Some("" | "/" | "/metrics"))
}

/// Answer a request for the status page; `snapshot` gives the document
/// (see `App::status_snapshot`), taken only when the request is allowed;
/// the metrics come from `stats`.
pub fn serve(
    snapshot: impl FnOnce() -> Value,
    stats: &std::sync::Arc<Stats>,
    cfg: &StatusConfig,
    req: &Request<ReqBody>,
    conn: &ConnInfo,
) -> Result<Response<Body>, Error> {
    if cfg.local_only && !conn.client.ip.to_canonical().is_loopback() {
        tracing::debug!("status page refused to non-loopback client {}", conn.client);
        return Err(Error::NotFound);
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(Error::MethodNotAllowed("GET, HEAD"));
    }
    let snapshot = snapshot();
    let (content_type, text) = if req.uri().path().ends_with("/metrics") {
        (PROMETHEUS_CONTENT_TYPE, metrics(stats, snapshot))
    } else if wants_json(req) {
        ("application/json", format!("{snapshot:#}\n"))
    } else {
        ("text/html; charset=utf-8", html(&snapshot))
    };
    let len = text.len();
    let body = if req.method() == Method::HEAD {
        body::empty()
    } else {
        body::full(text)
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    Ok(resp)
}

fn wants_json(req: &Request<ReqBody>) -> bool {
    let query_json = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "json" || p.starts_with("json=")));
    let accept_json = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    query_json || accept_json
}

pub(crate) fn avg_ms(total_secs: f64, n: u64) -> Value {
    if n == 0 {
        return Value::Null;
    }
    Value::from((total_secs * 1000.0 / n as f64 * 100.0).round() / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_paths_match_on_the_boundary() {
        assert!(is_status_path("/status", "/status"));
        assert!(is_status_path("/status", "/status/"));
        assert!(is_status_path("/status", "/status/metrics"));
        assert!(!is_status_path("/status", "/statusx"));
        assert!(!is_status_path("/status", "/status/other"));
    }

    #[test]
    fn html_and_metrics_escape_what_they_show() {
        let stats = std::sync::Arc::new(Stats::default());
        let route = stats.route(crate::stats::RouteKind::FastCgi, "fastcgi <x>\"");
        route.record(200, 2048, std::time::Duration::ZERO, None);
        let s = json!({
            "routes": [{"route": "fastcgi <x>\"", "requests": 1,
                "status": {"1xx":0,"2xx":1,"3xx":0,"4xx":0,"5xx":0},
                "bytes_out": 2048, "avg_ms": 1.5, "upstream_avg_ms": null}],
            "fastcgi_pools": [], "fastcgi_backends": [],
        });
        let page = html(&s);
        assert!(page.contains("fastcgi &lt;x&gt;&quot;"));
        assert!(!page.contains("<x>"));
        assert!(page.contains("2.0 KiB"));
        let m = metrics(&stats, s);
        assert!(m.contains(r#"cgihost_requests_total{route="fastcgi <x>\"",code="2xx"} 1"#));
    }
}
