//! The counters as Prometheus text (format 0.0.4), written by
//! prometheus-client: a registry built per scrape around a collector that
//! reads the atomics, so counting never goes through the registry.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::{RouteKind, Stats};

/// Every family of `stats`, then those of `extra` (the application's
/// pools and backends), as the text a Prometheus scrape expects.
pub fn prometheus_text(stats: &Arc<Stats>, extra: Box<dyn Collector>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(StatsCollector(stats.clone())));
    registry.register_collector(extra);
    let mut out = String::with_capacity(8192);
    // Writing into a String cannot fail; a collector's error would leave
    // the text cut short, which a scraper reports.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
        tracing::warn!("metrics: encoding failed: {e}");
    }
    out
}

/// One unlabelled counter family.
pub fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    ConstCounter::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// One unlabelled gauge family.
pub fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    ConstGauge::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

struct StatsCollector(Arc<Stats>);

impl std::fmt::Debug for StatsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatsCollector")
    }
}

impl Collector for StatsCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let s = &*self.0;
        server(&mut enc, s)?;
        routes(&mut enc, s)?;
        histograms(&mut enc, s)?;
        upstreams(&mut enc, s)
    }
}

/// Uptime, connections, bytes in and out.
fn server(enc: &mut DescriptorEncoder, s: &Stats) -> std::fmt::Result {
    let secs = i64::try_from(s.started.elapsed().as_secs()).unwrap_or(i64::MAX);
    let open = i64::try_from(s.connections_open.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
    let generation = s.config_generation.load(Ordering::Relaxed);
    let sent: u64 = s.routes().iter().map(|r| r.bytes_out).sum();
    gauge(
        enc,
        "cgihost_uptime_seconds",
        "Seconds since cgihost started.",
        secs,
    )?;
    gauge(
        enc,
        "cgihost_connections_open",
        "Client connections open now.",
        open,
    )?;
    let total = s.connections_total.load(Ordering::Relaxed);
    counter(
        enc,
        "cgihost_connections",
        "Client connections accepted.",
        total,
    )?;
    let help = "Configuration generation: 1 at start, +1 per reload.";
    gauge(enc, "cgihost_config_generation", help, generation as i64)?;
    let help = "Request body bytes read from clients.";
    counter(enc, "cgihost_bytes_received", help, s.bytes_in.get())?;
    let help = "Request body bytes moved from the socket to a CGI program's stdin by splice(2).";
    counter(enc, "cgihost_bytes_spliced", help, s.bytes_spliced.get())?;
    let help = "Response body bytes sent to clients.";
    counter(enc, "cgihost_bytes_sent", help, sent)
}

/// Requests and bytes per route and status class.
fn routes(enc: &mut DescriptorEncoder, s: &Stats) -> std::fmt::Result {
    let routes = s.routes();
    let help = "Requests answered, by route and status class.";
    let mut family = enc.encode_descriptor("cgihost_requests", help, None, MetricType::Counter)?;
    for r in &routes {
        for (class, n) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().zip(r.by_class) {
            let labels = [("route", &*r.route), ("code", class)];
            ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
        }
    }
    let help = "Response body bytes sent, by route.";
    let name = "cgihost_response_bytes";
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for r in &routes {
        let labels = [("route", &*r.route)];
        ConstCounter::new(r.bytes_out).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Request and upstream latency, by kind of route.
fn histograms(enc: &mut DescriptorEncoder, s: &Stats) -> std::fmt::Result {
    let help = "Time from request to the end of the response body, by kind of route.";
    let name = "cgihost_request_duration_seconds";
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for kind in RouteKind::ALL {
        let labels = [("kind", kind.name())];
        s.times(kind)
            .request
            .encode(family.encode_family(&labels)?)?;
    }
    let help = "Time until the CGI program or FastCGI backend sent its response head.";
    let name = "cgihost_upstream_duration_seconds";
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for kind in RouteKind::ALL.into_iter().filter(|k| k.has_upstream()) {
        let labels = [("kind", kind.name())];
        s.times(kind)
            .upstream
            .encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// CGI spawns and queueing, FastCGI connections.
fn upstreams(enc: &mut DescriptorEncoder, s: &Stats) -> std::fmt::Result {
    let (cgi, fcgi) = (&s.cgi, &s.fastcgi);
    let help = "CGI programs started.";
    counter(enc, "cgihost_cgi_spawns", help, cgi.spawns.get())?;
    let help = "CGI programs that could not be started (answered 502).";
    counter(
        enc,
        "cgihost_cgi_spawn_failures",
        help,
        cgi.spawn_failures.get(),
    )?;
    let help = "CGI requests that found every process slot busy and queued.";
    counter(enc, "cgihost_cgi_queue_waits", help, cgi.queue_waits.get())?;
    let help = "Queued CGI requests that got no slot within queue_timeout (answered 503).";
    let n = cgi.queue_rejections.get();
    counter(enc, "cgihost_cgi_queue_rejections", help, n)?;
    let help = "New connections to FastCGI backends.";
    counter(enc, "cgihost_fastcgi_connects", help, fcgi.connects.get())?;
    let help = "Requests sent on an idle FastCGI connection used again.";
    let n = fcgi.reuses.get();
    counter(enc, "cgihost_fastcgi_connection_reuses", help, n)?;
    let help = "FastCGI requests that got no connection within queue_timeout (answered 503).";
    let n = fcgi.queue_rejections.get();
    counter(enc, "cgihost_fastcgi_queue_rejections", help, n)
}
