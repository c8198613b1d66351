//! The supervisor's view of a generation: its worker [`Slot`]s (one state
//! enum per worker position) and the [`GenerationState`] that owns them, with the two
//! stop paths (retire, shutdown) and the restart back-off.

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::worker::Worker;
use super::Generation;

const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Restart delay after `failures` consecutive fast failures.
pub(super) fn backoff(failures: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(BACKOFF_MAX)
}

/// One worker position of a generation.
pub(super) enum Slot {
    /// Spawned less than [`MIN_UPTIME`] ago.
    Starting(Worker),
    Running(Worker),
    /// SIGTERM sent; SIGKILL at the deadline.
    Stopping(Worker, Instant),
    /// Exited; started again at the deadline (serving generation only).
    Backoff(Instant),
    /// Exited; not to be restarted.
    Exited,
}

impl Slot {
    pub(super) fn worker_mut(&mut self) -> Option<&mut Worker> {
        match self {
            Slot::Starting(w) | Slot::Running(w) | Slot::Stopping(w, _) => Some(w),
            Slot::Backoff(_) | Slot::Exited => None,
        }
    }

    /// For the status page: (pid, state name, uptime).
    pub(super) fn describe(&self) -> (Option<u32>, &'static str, u64) {
        let info = |w: &Worker| (Some(w.pid), w.uptime().as_secs());
        let ((pid, up), state) = match self {
            Slot::Starting(w) => (info(w), "starting"),
            Slot::Running(w) => (info(w), "running"),
            Slot::Stopping(w, _) => (info(w), "stopping"),
            Slot::Backoff(_) => ((None, 0), "backoff"),
            Slot::Exited => ((None, 0), "exited"),
        };
        (pid, state, up)
    }

    pub(super) fn live(&self) -> bool {
        matches!(
            self,
            Slot::Starting(_) | Slot::Running(_) | Slot::Stopping(..)
        )
    }

    /// SIGTERM now (if alive), SIGKILL at `kill_at`.
    pub(super) fn stop(&mut self, kill_at: Instant) {
        *self = match std::mem::replace(self, Slot::Exited) {
            Slot::Starting(w) | Slot::Running(w) => {
                w.signal(libc::SIGTERM);
                Slot::Stopping(w, kill_at)
            }
            Slot::Stopping(w, at) => Slot::Stopping(w, at.min(kill_at)),
            Slot::Backoff(_) | Slot::Exited => Slot::Exited,
        }
    }
}

/// A generation as the supervisor holds it.
pub(super) struct GenerationState {
    pub(super) id: u32,
    /// Dropped when the generation retires: that closes its kept-alive
    /// connections (their workers go back to accept, then get SIGTERM).
    pub(super) shared: Option<Arc<Generation>>,
    /// Our copy of the listening socket, to start more workers on.
    pub(super) listener: Option<UnixListener>,
    pub(super) socket: PathBuf,
    pub(super) slots: Vec<Slot>,
    pub(super) retiring_since: Option<Instant>,
}

impl GenerationState {
    pub(super) fn live(&self) -> usize {
        self.slots.iter().filter(|s| s.live()).count()
    }

    pub(super) fn requests(&self) -> u64 {
        self.shared
            .as_ref()
            .map_or(0, |g| g.backend().stats.requests.load(Ordering::Relaxed))
    }

    /// Close its connections, SIGTERM its workers, forget its socket.
    pub(super) fn stop(&mut self, kill_at: Instant) {
        self.shared = None;
        self.listener = None;
        let _ = std::fs::remove_file(&self.socket);
        for slot in &mut self.slots {
            slot.stop(kill_at);
        }
    }
}

#[cfg(test)]
mod backoff_tests;
