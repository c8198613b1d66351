//! The metrics at `PATH/metrics`: the server's counters and histograms
//! (see `stats::export`), and, from the application's state, its CGI
//! processes, spawned pools, FastCGI backends and ACME certificates — all
//! written by prometheus-client as Prometheus text (format 0.0.4).

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use serde_json::Value;

use crate::stats::export::gauge;
use crate::stats::{prometheus_text, Stats};

/// The text of a scrape: `stats`, then what `app_state` (the status
/// snapshot) says about processes, pools and backends.
pub fn metrics(stats: &Arc<Stats>, app_state: Value) -> String {
    prometheus_text(stats, Box::new(AppState(app_state)))
}

/// Gauges of the application's state, read from the status snapshot.
#[derive(Debug)]
struct AppState(Value);

impl Collector for AppState {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.0;
        let n = |v: &Value| v.as_i64().unwrap_or(0);
        let help = "CGI process groups running now.";
        gauge(
            &mut enc,
            "cgihost_cgi_processes_running",
            help,
            n(&s["cgi"]["running"]),
        )?;
        let help = "CGI processes allowed at once.";
        let max = n(&s["cgi"]["max_processes"]);
        gauge(&mut enc, "cgihost_cgi_processes_max", help, max)?;
        pools(&mut enc, s)?;
        backends(&mut enc, s)?;
        certificates(&mut enc, s)
    }
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], |a| a.as_slice())
}

/// Spawned pools: workers by state, restarts, requests.
fn pools(enc: &mut DescriptorEncoder, s: &Value) -> std::fmt::Result {
    let pools = list(&s["fastcgi_pools"]);
    let name = "cgihost_fastcgi_pool_workers";
    let help = "Spawned FastCGI workers, by pool and state.";
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for p in pools {
        let pool = p["pool"].as_str().unwrap_or_default();
        for state in ["starting", "running", "stopping", "backoff"] {
            let workers = list(&p["workers"]);
            let n = workers.iter().filter(|w| w["state"] == state).count();
            let labels = [("pool", pool), ("state", state)];
            ConstGauge::new(n as i64).encode(family.encode_family(&labels)?)?;
        }
    }
    for (name, key, help) in [
        (
            "cgihost_fastcgi_pool_restarts",
            "restarts",
            "Workers started again after exiting.",
        ),
        (
            "cgihost_fastcgi_pool_requests",
            "requests",
            "Requests a spawned pool answered.",
        ),
    ] {
        let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
        for p in pools {
            let labels = [("pool", p["pool"].as_str().unwrap_or_default())];
            let v = p[key].as_u64().unwrap_or(0);
            ConstCounter::new(v).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// FastCGI backends up or down.
fn backends(enc: &mut DescriptorEncoder, s: &Value) -> std::fmt::Result {
    let name = "cgihost_fastcgi_backend_up";
    let help = "1 when the last connection to the backend succeeded.";
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for b in list(&s["fastcgi_backends"]) {
        let labels = [("backend", b["addr"].as_str().unwrap_or_default())];
        let up = i64::from(b["up"] == true);
        ConstGauge::new(up).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Seconds until each ACME certificate expires (none: no `acme`).
fn certificates(enc: &mut DescriptorEncoder, s: &Value) -> std::fmt::Result {
    let certs = list(&s["acme"]);
    if certs.is_empty() {
        return Ok(());
    }
    let name = "cgihost_acme_certificate_expiry_seconds";
    let help = "Seconds until the ACME certificate for these names expires.";
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for c in certs {
        let Some(left) = c["expires_in_secs"].as_i64() else {
            continue;
        };
        let names: Vec<&str> = list(&c["names"]).iter().filter_map(Value::as_str).collect();
        let labels = [("names", names.join(","))];
        ConstGauge::new(left).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}
