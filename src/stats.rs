//! Counters for the status page and the metrics: per-route requests by
//! status class, bytes and time; latency histograms per kind of route;
//! CGI spawns and queueing, FastCGI connections, bytes in, open
//! connections. Shared by every generation of the application (a SIGHUP
//! reload keeps them).
//!
//! A request is counted once, when its response body is done (the same
//! moment its access-log line is written), so bytes and durations are real.
//! Routes register their counters when the application is built; counting
//! is a few relaxed atomic adds, never a lock.

pub mod export;
mod histogram;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::metrics::counter::Counter;

pub use export::prometheus_text;
pub use histogram::Histogram;
pub use prometheus_client::collector::Collector;
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE;

/// What serves a route: the label of its latency histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    Static,
    Cgi,
    FastCgi,
    Spawn,
    Status,
    Rules,
}

impl RouteKind {
    pub const ALL: [RouteKind; 6] = [
        RouteKind::Static,
        RouteKind::Cgi,
        RouteKind::FastCgi,
        RouteKind::Spawn,
        RouteKind::Status,
        RouteKind::Rules,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RouteKind::Static => "static",
            RouteKind::Cgi => "cgi",
            RouteKind::FastCgi => "fastcgi",
            RouteKind::Spawn => "spawn",
            RouteKind::Status => "status",
            RouteKind::Rules => "rules",
        }
    }

    /// Its routes wait for a CGI program or FastCGI backend.
    pub fn has_upstream(self) -> bool {
        matches!(self, RouteKind::Cgi | RouteKind::FastCgi | RouteKind::Spawn)
    }
}

/// One kind's histograms: the whole request, and the wait for the
/// upstream's response head.
#[derive(Debug, Default)]
pub struct KindTimes {
    pub request: Histogram,
    pub upstream: Histogram,
}

/// CGI programs started, and the waits for a process slot.
#[derive(Debug, Clone, Default)]
pub struct CgiCounters {
    pub spawns: Counter,
    pub spawn_failures: Counter,
    /// Requests that found every slot busy and queued.
    pub queue_waits: Counter,
    /// Queued requests that got no slot in time (answered 503).
    pub queue_rejections: Counter,
}

/// FastCGI connections: fresh ones, idle ones used again, none in time.
#[derive(Debug, Clone, Default)]
pub struct FastCgiCounters {
    pub connects: Counter,
    pub reuses: Counter,
    /// Requests that got no connection within `queue_timeout` (503).
    pub queue_rejections: Counter,
}

impl FastCgiCounters {
    /// A connection was checked out for a request.
    pub fn checked_out(&self, reused: bool) {
        if reused {
            self.reuses.inc();
        } else {
            self.connects.inc();
        }
    }
}

/// Server-wide counters.
pub struct Stats {
    pub started: Instant,
    pub started_at: SystemTime,
    pub connections_open: AtomicUsize,
    pub connections_total: AtomicU64,
    /// Configuration generation: 1 at start, +1 per successful reload.
    pub config_generation: AtomicU64,
    /// Every route's counters, in order of registration.
    routes: Mutex<Vec<Arc<RouteCounters>>>,
    /// Latency histograms, one pair per [`RouteKind`] (same order as `ALL`).
    kinds: [Arc<KindTimes>; RouteKind::ALL.len()],
    pub cgi: CgiCounters,
    pub fastcgi: FastCgiCounters,
    /// Request body bytes read from clients.
    pub bytes_in: Counter,
    /// Of those, the bytes moved from the socket to a CGI program's stdin
    /// by splice(2), without a copy through cgihost.
    pub bytes_spliced: Counter,
}

/// One route's totals: atomics, so counting a request takes no lock.
#[derive(Debug)]
pub struct RouteCounters {
    pub route: Arc<str>,
    /// Its kind's histograms (shared by every route of that kind).
    times: Arc<KindTimes>,
    requests: AtomicU64,
    /// Responses by class: 1xx, 2xx, 3xx, 4xx, 5xx.
    by_class: [AtomicU64; 5],
    bytes_out: AtomicU64,
    micros: AtomicU64,
    /// Time until the CGI program or FastCGI backend sent its header block.
    upstream_micros: AtomicU64,
    upstream_requests: AtomicU64,
}

/// A copy of one route's counters.
#[derive(Debug, Clone)]
pub struct RouteSnapshot {
    pub route: Arc<str>,
    pub requests: u64,
    pub by_class: [u64; 5],
    pub bytes_out: u64,
    pub seconds: f64,
    pub upstream_seconds: f64,
    pub upstream_requests: u64,
}

impl RouteCounters {
    fn new(route: &str, times: Arc<KindTimes>) -> RouteCounters {
        RouteCounters {
            route: route.into(),
            times,
            requests: AtomicU64::new(0),
            by_class: Default::default(),
            bytes_out: AtomicU64::new(0),
            micros: AtomicU64::new(0),
            upstream_micros: AtomicU64::new(0),
            upstream_requests: AtomicU64::new(0),
        }
    }

    pub fn record(&self, status: u16, bytes: u64, took: Duration, upstream: Option<Duration>) {
        let add = |c: &AtomicU64, n: u64| {
            c.fetch_add(n, Ordering::Relaxed);
        };
        add(&self.requests, 1);
        add(&self.by_class[(status / 100).clamp(1, 5) as usize - 1], 1);
        add(&self.bytes_out, bytes);
        add(&self.micros, took.as_micros() as u64);
        self.times.request.observe(took);
        if let Some(u) = upstream {
            add(&self.upstream_micros, u.as_micros() as u64);
            add(&self.upstream_requests, 1);
            self.times.upstream.observe(u);
        }
    }

    fn snapshot(&self) -> RouteSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RouteSnapshot {
            route: self.route.clone(),
            requests: get(&self.requests),
            by_class: std::array::from_fn(|i| get(&self.by_class[i])),
            bytes_out: get(&self.bytes_out),
            seconds: get(&self.micros) as f64 / 1e6,
            upstream_seconds: get(&self.upstream_micros) as f64 / 1e6,
            upstream_requests: get(&self.upstream_requests),
        }
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: Instant::now(),
            started_at: SystemTime::now(),
            connections_open: AtomicUsize::new(0),
            connections_total: AtomicU64::new(0),
            config_generation: AtomicU64::new(1),
            routes: Mutex::new(Vec::new()),
            kinds: Default::default(),
            cgi: CgiCounters::default(),
            fastcgi: FastCgiCounters::default(),
            bytes_in: Counter::default(),
            bytes_spliced: Counter::default(),
        }
    }
}

impl Stats {
    /// The counters named `route`, created on first use; a reloaded
    /// configuration gets the same counters for the same route.
    pub fn route(&self, kind: RouteKind, route: &str) -> Arc<RouteCounters> {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = routes.iter().find(|r| &*r.route == route) {
            return r.clone();
        }
        let r = Arc::new(RouteCounters::new(route, self.times(kind).clone()));
        routes.push(r.clone());
        r
    }

    /// Every route with at least one request, in order of registration.
    pub fn routes(&self) -> Vec<RouteSnapshot> {
        let routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes
            .iter()
            .map(|r| r.snapshot())
            .filter(|r| r.requests > 0)
            .collect()
    }

    /// The latency histograms of `kind`.
    pub fn times(&self, kind: RouteKind) -> &Arc<KindTimes> {
        &self.kinds[kind as usize]
    }

    pub fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_route_and_class() {
        let s = Stats::default();
        let cgi = s.route(RouteKind::Cgi, "cgi");
        let stat = s.route(RouteKind::Static, "static");
        let _unused = s.route(RouteKind::FastCgi, "fastcgi *.php");
        assert!(Arc::ptr_eq(&cgi, &s.route(RouteKind::Cgi, "cgi")));
        cgi.record(
            200,
            10,
            Duration::from_millis(5),
            Some(Duration::from_millis(3)),
        );
        cgi.record(504, 0, Duration::from_millis(5), None);
        stat.record(304, 0, Duration::ZERO, None);
        let r = s.routes();
        assert_eq!(r.len(), 2, "routes without requests are left out");
        assert_eq!(&*r[0].route, "cgi");
        assert_eq!(r[0].requests, 2);
        assert_eq!(r[0].by_class, [0, 1, 0, 0, 1]);
        assert_eq!(r[0].bytes_out, 10);
        assert_eq!(r[0].upstream_requests, 1);
        assert!((r[0].upstream_seconds - 0.003).abs() < 1e-9);
        assert_eq!(r[1].by_class, [0, 0, 1, 0, 0]);
        assert_eq!(s.times(RouteKind::Cgi).request.count(), 2);
        assert_eq!(s.times(RouteKind::Cgi).upstream.count(), 1);
        assert_eq!(s.times(RouteKind::Static).upstream.count(), 0);
        let in_order = RouteKind::ALL.iter().enumerate();
        assert!(in_order.into_iter().all(|(i, k)| *k as usize == i));
    }
}
