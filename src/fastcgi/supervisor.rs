//! Supervised FastCGI pools (`--spawn`): cgihost starts N workers on a
//! unix socket of its own, restarts them, recycles and reloads them, and
//! stops them — one supervisor task per pool, owning every process.
//!
//! Generations: a pool serves from one *generation* at a time — a socket
//! in the private runtime dir, the workers accepting on it, and the
//! [`Backend`] (keep-alive connection pool, `max_conns = workers`) that
//! routes check out from. A reload (script changed, SIGHUP) or a recycle
//! (`max_requests`) starts a *candidate* generation on a new socket, probes
//! it (FCGI_GET_VALUES), switches the route to it in one pointer swap, and
//! *retires* the old one: once no request uses it (or `drain_limit`
//! passes) its kept-alive connections close and its workers get SIGTERM,
//! SIGKILL after [`TERM_GRACE`]. Workers share a socket, so cgihost cannot
//! tell which one holds a connection; retiring only idle generations is
//! what lets any application — even one that dies on SIGTERM mid-request —
//! be replaced without failing a request. A candidate whose workers all
//! exit before answering is abandoned and the old generation keeps
//! serving (a syntax error in an edited script does not take a site down).
//!
//! Worker states (`slot::Slot`), transitions all in the supervisor task's
//! `reap` and `tend_current` (`supervisor/task.rs`):
//! - `Starting` → `Running` after [`MIN_UPTIME`] (resets the failure count);
//! - `Starting` exits → a fast failure → `Backoff` for 250 ms doubling per
//!   consecutive fast failure, capped at 30 s; `Running` exits → restart
//!   at once; after [`FAIL_AFTER`] fast failures with nothing running, the
//!   route answers 503 (`Retry-After` = next try) and the log says why;
//! - `Stopping` (SIGTERM sent) → `Exited`, SIGKILL at its deadline.
//!
//! Every worker is reaped by the supervisor; dropping one kills its group.

mod slot;
mod task;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, Notify};

use super::pool::{Backend, Balancer};
use crate::config::SpawnRoute;
use crate::error::Error;

/// A worker alive this long has started successfully.
pub const MIN_UPTIME: Duration = Duration::from_secs(1);
/// Consecutive fast failures (with no worker running) before 503s.
pub const FAIL_AFTER: u32 = 3;
/// SIGTERM → SIGKILL for workers being retired or stopped.
pub const TERM_GRACE: Duration = Duration::from_secs(5);

/// What routes see of one generation.
pub struct Generation {
    pub balancer: Balancer,
    /// Requests between `PoolHandle::current` and their checkout.
    users: AtomicUsize,
}

impl Generation {
    fn backend(&self) -> &Backend {
        &self.balancer.backends()[0]
    }

    /// Not used by any request (nor about to be).
    fn idle(&self) -> bool {
        self.users.load(Ordering::SeqCst) == 0
            && self.backend().in_flight.load(Ordering::SeqCst) == 0
    }
}

/// A generation held by a request until it has checked out a connection.
pub struct GenGuard(Arc<Generation>);

impl std::ops::Deref for GenGuard {
    type Target = Generation;
    fn deref(&self) -> &Generation {
        &self.0
    }
}

impl Drop for GenGuard {
    fn drop(&mut self) {
        self.0.users.fetch_sub(1, Ordering::SeqCst);
    }
}

/// State shared by the routes and the supervisor.
pub(super) struct Shared {
    label: String,
    current: RwLock<Option<Arc<Generation>>>,
    failing: AtomicBool,
    /// Why the pool is failing and when the next start is due.
    failure: Mutex<(String, Instant)>,
    /// Wakes requests queued on a socket no worker may ever accept from.
    failed: Notify,
    /// What the status page shows; the supervisor refreshes it every step.
    status: Mutex<PoolStatus>,
}

/// A pool as the status page shows it.
#[derive(Debug, Clone, Default)]
pub struct PoolStatus {
    pub label: String,
    /// The serving generation (0 before the first one).
    pub generation: u32,
    pub workers: Vec<WorkerStatus>,
    /// Workers of the serving generation started again after exiting.
    pub restarts: u64,
    /// Requests the pool has answered, over all its generations (the
    /// serving one counted live). Workers share one socket, so cgihost
    /// cannot count per worker.
    pub requests: u64,
    /// Workers keep failing at start; the route answers 503.
    pub failing: bool,
}

/// One worker position.
#[derive(Debug, Clone)]
pub struct WorkerStatus {
    pub pid: Option<u32>,
    /// starting, running, stopping, backoff or exited.
    pub state: &'static str,
    pub generation: u32,
    pub uptime_secs: u64,
}

enum Control {
    Reload(&'static str),
    Stop {
        grace: Duration,
        done: oneshot::Sender<()>,
    },
}

/// A route's handle on its pool. Dropping it stops the pool (SIGTERM,
/// SIGKILL after the grace).
pub struct PoolHandle {
    shared: Arc<Shared>,
    control: mpsc::Sender<Control>,
}

impl PoolHandle {
    /// Create the first generation's socket under `runtime_dir`, start the
    /// workers and the supervisor task. Needs a running tokio runtime.
    pub fn start(
        spec: SpawnRoute,
        runtime_dir: &Path,
        drain_limit: Duration,
    ) -> io::Result<PoolHandle> {
        let label = format!("spawn {}", spec.label());
        let shared = Arc::new(Shared {
            label,
            current: RwLock::new(None),
            failing: AtomicBool::new(false),
            failure: Mutex::new((String::new(), Instant::now())),
            failed: Notify::new(),
            status: Mutex::new(PoolStatus::default()),
        });
        // Unique for the process's life: pools of a reloaded configuration
        // share the runtime directory with the ones they replace.
        static NEXT_POOL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let index = NEXT_POOL.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(8);
        task::Supervisor::start(spec, shared.clone(), rx, runtime_dir, index, drain_limit)?;
        Ok(PoolHandle {
            shared,
            control: tx,
        })
    }

    /// The generation to send a request to, or 503 when the pool cannot
    /// serve (workers keep failing, or it is stopping).
    pub fn current(&self) -> Result<GenGuard, Error> {
        if self.shared.failing.load(Ordering::Relaxed) {
            return Err(self.failure());
        }
        let current = self
            .shared
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner());
        match &*current {
            Some(gen) => {
                // Counted under the read lock: once the supervisor has
                // swapped (write lock), an old generation's count only falls.
                gen.users.fetch_add(1, Ordering::SeqCst);
                Ok(GenGuard(gen.clone()))
            }
            None => Err(Error::ServiceUnavailable {
                retry_after_secs: 5,
                why: format!("{} is stopping", self.shared.label),
            }),
        }
    }

    /// The 503 for a failing pool, with `Retry-After` = the next start.
    fn failure(&self) -> Error {
        let (why, retry_at) = self
            .shared
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let secs = retry_at.saturating_duration_since(Instant::now()).as_secs() + 1;
        Error::ServiceUnavailable {
            retry_after_secs: secs,
            why: format!("{}: {why}", self.shared.label),
        }
    }

    /// Resolves (with the 503) once the pool is failing: a request waiting
    /// for its first answer should not wait for `idle_timeout` on a socket
    /// whose workers keep dying before they accept.
    pub async fn failed(&self) -> Error {
        loop {
            let notified = self.shared.failed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.shared.failing.load(Ordering::Relaxed) {
                return self.failure();
            }
            notified.await;
        }
    }

    /// The latest snapshot of the pool's workers.
    pub fn status(&self) -> PoolStatus {
        let mut s = self
            .shared
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        s.label.clone_from(&self.shared.label);
        s.failing = self.shared.failing.load(Ordering::Relaxed);
        let current = self
            .shared
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(gen) = &*current {
            s.requests += gen.backend().stats.requests.load(Ordering::Relaxed);
        }
        s
    }

    /// Start a fresh generation (SIGHUP).
    pub fn reload(&self, why: &'static str) {
        use mpsc::error::TrySendError;
        let label = &self.shared.label;
        match self.control.try_send(Control::Reload(why)) {
            Ok(()) => {}
            // The supervisor takes the queued reloads as one: a full queue
            // means one is already due, which this one joins.
            Err(TrySendError::Full(_)) => {
                tracing::info!("{label}: a reload is already queued; {why} joins it")
            }
            Err(TrySendError::Closed(_)) => {
                tracing::warn!("{label}: the pool's supervisor has stopped; not reloading ({why})")
            }
        }
    }

    /// SIGTERM every worker, SIGKILL after `grace`, reap; bounded.
    pub async fn stop(&self, grace: Duration) {
        let (done, wait) = oneshot::channel();
        if self
            .control
            .send(Control::Stop { grace, done })
            .await
            .is_ok()
        {
            let _ = tokio::time::timeout(grace + Duration::from_secs(5), wait).await;
        }
    }
}

impl Shared {
    fn write_current(&self) -> std::sync::RwLockWriteGuard<'_, Option<Arc<Generation>>> {
        self.current.write().unwrap_or_else(|p| p.into_inner())
    }

    fn set_failing(&self, why: Option<(String, Instant)>) {
        match why {
            Some(f) => {
                *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = f;
                if !self.failing.swap(true, Ordering::Relaxed) {
                    self.failed.notify_waiters();
                }
            }
            None => self.failing.store(false, Ordering::Relaxed),
        }
    }
}
