//! The status snapshot as Prometheus text (exposition format 0.0.4):
//! one family per measure, rendered from the same JSON document the HTML
//! and JSON views use, so the three never disagree.

use std::fmt::Write as _;

use serde_json::Value;

/// The text being built, one family at a time.
struct Families(String);

impl Families {
    fn family(&mut self, name: &str, kind: &str, help: &str, samples: Vec<(String, Value)>) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(self.0, "{name}{labels} {}", number(&v));
        }
    }
}

/// One unlabelled sample.
fn one(v: &Value) -> Vec<(String, Value)> {
    vec![(String::new(), v.clone())]
}

/// Every family of the snapshot `s`.
pub fn metrics(s: &Value) -> String {
    let mut out = Families(String::with_capacity(2048));
    server(&mut out, s);
    routes(&mut out, s);
    pools(&mut out, s);
    backends(&mut out, s);
    certificates(&mut out, s);
    out.0
}

/// Uptime, connections, CGI processes.
fn server(out: &mut Families, s: &Value) {
    out.family(
        "cgihost_uptime_seconds",
        "gauge",
        "Seconds since cgihost started.",
        one(&s["uptime_secs"]),
    );
    out.family(
        "cgihost_connections_open",
        "gauge",
        "Client connections open now.",
        one(&s["connections"]["open"]),
    );
    out.family(
        "cgihost_connections_total",
        "counter",
        "Client connections accepted.",
        one(&s["connections"]["total"]),
    );
    out.family(
        "cgihost_cgi_processes_running",
        "gauge",
        "CGI process groups running now.",
        one(&s["cgi"]["running"]),
    );
    out.family(
        "cgihost_cgi_processes_max",
        "gauge",
        "CGI processes allowed at once.",
        one(&s["cgi"]["max_processes"]),
    );
}

/// Requests and bytes per route and status class.
fn routes(out: &mut Families, s: &Value) {
    let routes = s["routes"].as_array().cloned().unwrap_or_default();
    let mut by_code = Vec::new();
    let mut bytes = Vec::new();
    for r in &routes {
        let route = label_value(&r["route"]);
        for class in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
            by_code.push((
                format!("{{route=\"{route}\",code=\"{class}\"}}"),
                r["status"][class].clone(),
            ));
        }
        bytes.push((format!("{{route=\"{route}\"}}"), r["bytes_out"].clone()));
    }
    out.family(
        "cgihost_requests_total",
        "counter",
        "Requests answered, by route and status class.",
        by_code,
    );
    out.family(
        "cgihost_response_bytes_total",
        "counter",
        "Response body bytes sent, by route.",
        bytes,
    );
}

/// Spawned pools: workers by state, restarts, requests.
fn pools(out: &mut Families, s: &Value) {
    let pools = s["fastcgi_pools"].as_array().cloned().unwrap_or_default();
    let mut workers = Vec::new();
    let mut restarts = Vec::new();
    let mut served = Vec::new();
    for p in &pools {
        let pool = label_value(&p["pool"]);
        let list = p["workers"].as_array().cloned().unwrap_or_default();
        for state in ["starting", "running", "stopping", "backoff"] {
            let n = list.iter().filter(|w| w["state"] == state).count();
            workers.push((
                format!("{{pool=\"{pool}\",state=\"{state}\"}}"),
                Value::from(n),
            ));
        }
        restarts.push((format!("{{pool=\"{pool}\"}}"), p["restarts"].clone()));
        served.push((format!("{{pool=\"{pool}\"}}"), p["requests"].clone()));
    }
    out.family(
        "cgihost_fastcgi_pool_workers",
        "gauge",
        "Spawned FastCGI workers, by pool and state.",
        workers,
    );
    out.family(
        "cgihost_fastcgi_pool_restarts_total",
        "counter",
        "Workers started again after exiting.",
        restarts,
    );
    out.family(
        "cgihost_fastcgi_pool_requests_total",
        "counter",
        "Requests a spawned pool answered.",
        served,
    );
}

/// FastCGI backends up or down.
fn backends(out: &mut Families, s: &Value) {
    let backends = s["fastcgi_backends"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let up = backends
        .iter()
        .map(|b| {
            (
                format!("{{backend=\"{}\"}}", label_value(&b["addr"])),
                Value::from(u8::from(b["up"] == true)),
            )
        })
        .collect();
    out.family(
        "cgihost_fastcgi_backend_up",
        "gauge",
        "1 when the last connection to the backend succeeded.",
        up,
    );
}

/// Automatic HTTPS: each certificate's time left (absent without ACME).
fn certificates(out: &mut Families, s: &Value) {
    let Some(certs) = s["acme"].as_array() else {
        return;
    };
    let samples = certs
        .iter()
        .filter(|c| c["expires_in_secs"].is_number())
        .map(|c| {
            let names = c["names"].as_array().map(|n| {
                n.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            });
            let names = Value::from(names.unwrap_or_default());
            (
                format!("{{names=\"{}\"}}", label_value(&names)),
                c["expires_in_secs"].clone(),
            )
        })
        .collect();
    out.family(
        "cgihost_acme_certificate_expiry_seconds",
        "gauge",
        "Seconds until the ACME certificate for these names expires.",
        samples,
    );
}

pub(super) fn number(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => u8::from(*b).to_string(),
        _ => "0".into(),
    }
}

/// A Prometheus label value: backslash, quote and newline escaped.
pub(super) fn label_value(v: &Value) -> String {
    let s = v.as_str().unwrap_or_default();
    s.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}
