//! Counters for the status page: per-route requests by status class,
//! bytes and time, and the open connections. Shared by every generation
//! of the application (a SIGHUP reload keeps them).
//!
//! A request is counted once, when its response body is done (the same
//! moment its access-log line is written), so bytes and durations are real.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Server-wide counters.
pub struct Stats {
    pub started: Instant,
    pub started_at: SystemTime,
    pub connections_open: AtomicUsize,
    pub connections_total: AtomicU64,
    /// Configuration generation: 1 at start, +1 per successful reload.
    pub config_generation: AtomicU64,
    routes: Mutex<Vec<RouteCounters>>,
}

/// One route's totals.
#[derive(Debug, Clone)]
pub struct RouteCounters {
    pub route: Arc<str>,
    pub requests: u64,
    /// Responses by class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub by_class: [u64; 5],
    pub bytes_out: u64,
    pub seconds: f64,
    /// Time until the CGI program or FastCGI backend sent its header block.
    pub upstream_seconds: f64,
    pub upstream_requests: u64,
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
        }
    }
}

impl Stats {
    pub fn record(
        &self,
        route: &Arc<str>,
        status: u16,
        bytes: u64,
        took: Duration,
        upstream: Option<Duration>,
    ) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        // A handful of routes: a linear scan beats hashing.
        let i = match routes.iter().position(|r| *r.route == **route) {
            Some(i) => i,
            None => {
                routes.push(RouteCounters {
                    route: route.clone(),
                    requests: 0,
                    by_class: [0; 5],
                    bytes_out: 0,
                    seconds: 0.0,
                    upstream_seconds: 0.0,
                    upstream_requests: 0,
                });
                routes.len() - 1
            }
        };
        let r = &mut routes[i];
        r.requests += 1;
        let class = (status / 100).clamp(1, 5) as usize - 1;
        r.by_class[class] += 1;
        r.bytes_out += bytes;
        r.seconds += took.as_secs_f64();
        if let Some(u) = upstream {
            r.upstream_seconds += u.as_secs_f64();
            r.upstream_requests += 1;
        }
    }

    /// Every route seen so far, in order of first request.
    pub fn routes(&self) -> Vec<RouteCounters> {
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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
        let cgi: Arc<str> = "cgi".into();
        let stat: Arc<str> = "static".into();
        s.record(
            &cgi,
            200,
            10,
            Duration::from_millis(5),
            Some(Duration::from_millis(3)),
        );
        s.record(&cgi, 504, 0, Duration::from_millis(5), None);
        s.record(&stat, 304, 0, Duration::ZERO, None);
        let r = s.routes();
        assert_eq!(r.len(), 2);
        assert_eq!(&*r[0].route, "cgi");
        assert_eq!(r[0].requests, 2);
        assert_eq!(r[0].by_class, [0, 1, 0, 0, 1]);
        assert_eq!(r[0].bytes_out, 10);
        assert_eq!(r[0].upstream_requests, 1);
        assert_eq!(r[1].by_class, [0, 0, 1, 0, 0]);
    }
}
