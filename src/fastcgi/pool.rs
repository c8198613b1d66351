//! Connections to FastCGI backends: one [`Backend`] per address (shared by
//! every route that names it), a bounded pool of keep-alive connections per
//! backend, balancing and failover across the addresses of a route.
//!
//! Why the cap matters: a php-fpm child serves one connection at a time and
//! stays with a kept-alive connection until it closes, so a client holding
//! more connections than there are children starves the extra ones in the
//! kernel's accept backlog (the nginx `keepalive` pitfall). So:
//! - each backend has a connection cap (in use + idle, `max_conns`, best set
//!   to php-fpm's `pm.max_children`); requests beyond it wait in cgihost;
//! - a safety valve makes a cap that is too high merely slower, never
//!   stuck: while a fresh connection has waited more than [`STALL_AFTER`]
//!   for its first answer (probably not yet accepted by a busy backend),
//!   connections that finish are closed instead of kept, which frees a
//!   backend process to accept it. (The delay keeps a fresh connection that
//!   *was* accepted from triggering closes that create more fresh ones.) (php-fpm does not report its pool size over
//!   FCGI_GET_VALUES — it answers only FCGI_MPXS_CONNS — so we cannot ask.)
//!   A spawned pool's backend ([`Backend::exact`]) has no valve: its cap
//!   *is* the number of workers, and the valve would only churn
//!   connections (a fresh one is always waiting while workers start).
//!
//! Health: a connect failure marks the backend down with exponential
//! back-off (1 s doubling to 30 s); the balancer skips it until then. A
//! route whose backends are all down answers 502 at once.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::config::BackendAddr;

/// Idle connections are closed after this long unless configured
/// (`fastcgi_idle_timeout`; nginx's upstream `keepalive_timeout` is 60 s).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A fresh connection unanswered for this long is presumed stuck in the
/// backend's accept queue.
pub const STALL_AFTER: Duration = Duration::from_millis(50);

mod balancer;
mod stream;
pub use balancer::Balancer;
pub use stream::Stream;

/// A connection and its read buffer (kept across requests).
pub struct Conn {
    pub io: Stream,
    pub rbuf: BytesMut,
    /// Came from the idle pool (a failure before any answer may be a stale
    /// connection, worth one retry).
    pub reused: bool,
    /// Has answered at least once (so the backend accepted it).
    pub served: bool,
}

/// Counters for logs and the status page.
#[derive(Default)]
pub struct BackendStats {
    pub requests: AtomicU64,
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
}

struct Health {
    failures: u32,
    retry_at: Option<Instant>,
    last_error: String,
}

/// One backend address.
pub struct Backend {
    pub addr: BackendAddr,
    idle: Mutex<Vec<(Conn, OwnedSemaphorePermit, Instant)>>,
    slots: Arc<Semaphore>,
    released: Notify,
    /// When each fresh connection (sent a request, not yet answered) sent it.
    fresh_waiting: Mutex<Vec<Instant>>,
    pub in_flight: AtomicUsize,
    health: Mutex<Health>,
    pub stats: BackendStats,
    /// `max_conns` is exactly the backend's process count: no valve.
    exact_cap: bool,
    /// An idle connection is closed after this long: each one pins a
    /// backend process that other clients of the pool (another server,
    /// cron, php-fpm's `ondemand` reaping) could use.
    idle_timeout: Duration,
    /// A task is closing idle connections as they expire.
    reaping: std::sync::atomic::AtomicBool,
    /// A request is trying this backend while it is in back-off.
    probing: std::sync::atomic::AtomicBool,
}

/// A connection checked out of a backend, with its slot.
pub struct Lease {
    pub conn: Option<Conn>,
    /// Listed in the backend's `fresh_waiting` with this send time.
    waiting: Option<Instant>,
    permit: Option<OwnedSemaphorePermit>,
    pub backend: Arc<Backend>,
}

impl Lease {
    /// Put the connection back for reuse (only after a clean END_REQUEST
    /// with nothing of this request left on the wire).
    pub fn release(mut self) {
        if !self.backend.exact_cap && self.backend.stalled() {
            return; // the safety valve: close, so a backend process frees up
        }
        if let (Some(conn), Some(permit)) = (self.conn.take(), self.permit.take()) {
            let mut idle = self.backend.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.push((conn, permit, Instant::now()));
            drop(idle);
            Backend::reap_idle(&self.backend);
        }
    }
}

impl Lease {
    /// The request is on the wire on a connection that has (`served`) or
    /// has not yet answered before; call [`Lease::answered`] at the first
    /// record.
    pub fn sent(&mut self, served: bool) {
        if !served && self.waiting.is_none() {
            let now = Instant::now();
            self.waiting = Some(now);
            self.backend.fresh().push(now);
        }
    }

    /// The backend answered.
    pub fn answered(&mut self) {
        if let Some(at) = self.waiting.take() {
            let mut fresh = self.backend.fresh();
            if let Some(i) = fresh.iter().position(|t| *t == at) {
                fresh.swap_remove(i);
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.answered();
        self.backend.in_flight.fetch_sub(1, Ordering::Relaxed);
        // A connection not released is closed here; its slot frees.
        self.conn.take();
        self.permit.take();
        self.backend.released.notify_one();
    }
}

impl Backend {
    pub fn new(addr: BackendAddr, max_conns: usize, idle_timeout: Duration) -> Arc<Backend> {
        Self::build(addr, max_conns, false, idle_timeout)
    }

    /// A backend known to run exactly `max_conns` processes, each serving
    /// one connection at a time (a spawned pool).
    pub fn exact(addr: BackendAddr, max_conns: usize) -> Arc<Backend> {
        Self::build(addr, max_conns, true, DEFAULT_IDLE_TIMEOUT)
    }

    fn build(
        addr: BackendAddr,
        max_conns: usize,
        exact_cap: bool,
        idle_timeout: Duration,
    ) -> Arc<Backend> {
        Arc::new(Backend {
            addr,
            idle: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(max_conns)),
            released: Notify::new(),
            fresh_waiting: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            health: Mutex::new(Health {
                failures: 0,
                retry_at: None,
                last_error: String::new(),
            }),
            stats: BackendStats::default(),
            exact_cap,
            idle_timeout,
            reaping: std::sync::atomic::AtomicBool::new(false),
            probing: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Make sure a task closes idle connections as they expire (one per
    /// backend, while it has idle connections; it holds no strong
    /// reference, so a backend a reload dropped goes away).
    fn reap_idle(backend: &Arc<Backend>) {
        if backend.reaping.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(backend);
        tokio::spawn(async move {
            loop {
                let Some(backend) = weak.upgrade() else {
                    return;
                };
                let next = backend.close_expired();
                let Some(at) = next else {
                    backend.reaping.store(false, Ordering::Release);
                    // A connection parked since the last look starts us again.
                    if backend.idle_count() == 0 || backend.reaping.swap(true, Ordering::AcqRel) {
                        return;
                    }
                    continue;
                };
                drop(backend);
                tokio::time::sleep_until(at.into()).await;
            }
        });
    }

    /// Close idle connections past the idle timeout; when the next one
    /// expires (None: none is idle).
    fn close_expired(&self) -> Option<Instant> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let before = idle.len();
        idle.retain(|(_, _, since)| since.elapsed() < self.idle_timeout);
        let closed = before - idle.len();
        let next = idle.iter().map(|(_, _, since)| *since).min();
        drop(idle);
        if closed > 0 {
            tracing::debug!(
                "FastCGI {}: closed {closed} connection(s) idle for {}s",
                self.addr,
                self.idle_timeout.as_secs()
            );
            self.released.notify_waiters();
        }
        next.map(|since| since + self.idle_timeout)
    }

    fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn name(&self) -> String {
        self.addr.to_string()
    }

    fn fresh(&self) -> std::sync::MutexGuard<'_, Vec<Instant>> {
        self.fresh_waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Close every idle connection (each pins a backend process).
    pub fn shed_idle(&self) {
        let shed: Vec<_> =
            std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        if !shed.is_empty() {
            tracing::debug!(
                "FastCGI {}: closing {} idle connection(s) for a stalled one",
                self.addr,
                shed.len()
            );
        }
        drop(shed);
        self.released.notify_waiters();
    }

    /// Some fresh connection has waited too long for its first answer.
    fn stalled(&self) -> bool {
        self.fresh().iter().any(|t| t.elapsed() > STALL_AFTER)
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Up, or its back-off has expired (worth another try).
    pub fn available(&self) -> bool {
        self.health().retry_at.is_none_or(|t| Instant::now() >= t)
    }

    fn mark_failed(&self, err: &io::Error) {
        self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
        let mut h = self.health();
        h.failures = h.failures.saturating_add(1);
        let backoff = Duration::from_secs(1 << (h.failures - 1).min(5)).min(BACKOFF_MAX);
        h.retry_at = Some(Instant::now() + backoff);
        h.last_error = err.to_string();
        // Requests probe a backend that is down (see `Balancer::checkout`):
        // say so on the first failure and then now and then, not per probe.
        if h.failures.is_power_of_two() {
            tracing::warn!(
                "FastCGI backend {} unreachable ({err}; {} failures in a row); \
                 balancing around it for {}s",
                self.addr,
                h.failures,
                backoff.as_secs()
            );
        }
    }

    fn mark_up(&self) {
        let mut h = self.health();
        if h.retry_at.is_some() {
            tracing::info!("FastCGI backend {} is reachable again", self.addr);
        }
        h.failures = 0;
        h.retry_at = None;
    }

    /// The last connect succeeded (or none was tried yet).
    pub fn is_up(&self) -> bool {
        self.health().failures == 0
    }

    pub fn last_error(&self) -> String {
        self.health().last_error.clone()
    }

    /// A live idle connection, if any (stale ones are dropped).
    fn take_idle(&self) -> Option<(Conn, OwnedSemaphorePermit)> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((mut conn, permit, since)) = idle.pop() {
            if since.elapsed() < self.idle_timeout && !conn.io.is_dead() {
                conn.reused = true;
                return Some((conn, permit));
            }
        }
        None
    }

    fn lease(self: &Arc<Self>, conn: Conn, permit: OwnedSemaphorePermit) -> Lease {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        Lease {
            conn: Some(conn),
            waiting: None,
            permit: Some(permit),
            backend: self.clone(),
        }
    }

    /// Without waiting: an idle connection, or a new one if under the cap.
    /// `Ok(None)`: at the cap.
    async fn try_checkout(
        self: &Arc<Self>,
        connect_timeout: Duration,
    ) -> io::Result<Option<Lease>> {
        if let Some((conn, permit)) = self.take_idle() {
            return Ok(Some(self.lease(conn, permit)));
        }
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            return Ok(None);
        };
        let conn = self.connect(connect_timeout).await?;
        Ok(Some(self.lease(conn, permit)))
    }

    /// Wait (until `deadline`) for a connection slot.
    async fn checkout_waiting(
        self: &Arc<Self>,
        connect_timeout: Duration,
        deadline: tokio::time::Instant,
    ) -> io::Result<Option<Lease>> {
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(lease) = self.try_checkout(connect_timeout).await? {
                return Ok(Some(lease));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    async fn connect(&self, timeout: Duration) -> io::Result<Conn> {
        let attempt = async {
            match &self.addr {
                BackendAddr::Tcp(a) => {
                    let s = TcpStream::connect(a.as_str()).await?;
                    let _ = s.set_nodelay(true);
                    Ok(Stream::Tcp(s))
                }
                BackendAddr::Unix(p) => UnixStream::connect(p).await.map(Stream::Unix),
            }
        };
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect timed out after {}s", timeout.as_secs()),
            )),
        };
        match result {
            Ok(io) => {
                self.stats.connects.fetch_add(1, Ordering::Relaxed);
                self.mark_up();
                Ok(Conn {
                    io,
                    rbuf: BytesMut::with_capacity(16 * 1024),
                    reused: false,
                    served: false,
                })
            }
            Err(e) => {
                self.mark_failed(&e);
                Err(e)
            }
        }
    }
}

/// Why no connection could be had.
pub enum CheckoutError {
    /// Every backend refused or is in back-off.
    AllDown(String),
    /// Every reachable backend stayed at its connection cap until the deadline.
    Busy,
}
