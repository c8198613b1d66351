//! Giving memory back to the system after a burst of connections.
//!
//! glibc's malloc keeps what the server frees in its arenas for reuse: after
//! ten thousand connections come and go, the process would stay at its
//! high-water mark for good (only the top of each heap is returned on its
//! own). `malloc_trim(0)` releases every free page of every arena. It runs
//! on a tick, on a blocking thread, once enough connections have closed
//! since the last trim: a keep-alive load never pays for it, a burst pays
//! once, and a churn of short connections at most once a tick (a walk of
//! the arenas, well under a millisecond against five seconds).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::connection::stopped;
use crate::stats::Stats;

/// How often the connection counts are looked at.
const TICK: Duration = Duration::from_secs(5);

/// Connections closed since the last trim that make a burst.
const BURST: u64 = 256;

/// Watch the connection counts until the server stops; trim after bursts.
pub(super) async fn after_bursts(stats: Arc<Stats>, mut stop: watch::Receiver<bool>) {
    let mut trimmed_at = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stopped(&mut stop) => return,
        }
        let open = stats.connections_open.load(Ordering::Relaxed) as u64;
        let total = stats.connections_total.load(Ordering::Relaxed);
        if burst_over(&mut trimmed_at, total.saturating_sub(open)) {
            let _ = tokio::task::spawn_blocking(give_back).await;
        }
    }
}

/// Have `BURST` connections closed since the last trim (when `closed`
/// was `trimmed_at`)? Then this counts as the trim.
fn burst_over(trimmed_at: &mut u64, closed: u64) -> bool {
    let burst = closed.saturating_sub(*trimmed_at) >= BURST;
    if burst {
        *trimmed_at = closed;
    }
    burst
}

/// Return free heap pages to the system.
fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it locks each arena itself and
    // only releases pages no allocation uses.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_after_a_burst_never_under_keep_alive_load() {
        let mut at = 0;
        // 10,000 connections open at the tick: nothing closed yet.
        assert!(!burst_over(&mut at, 0));
        // They have gone: trim once.
        assert!(burst_over(&mut at, 10_000));
        assert!(!burst_over(&mut at, 10_000));
        // Keep-alive load: the same connections serve every request.
        for _ in 0..10 {
            assert!(!burst_over(&mut at, 10_010));
        }
        // A burst that came and went between two ticks.
        assert!(burst_over(&mut at, 10_300));
        // A few connections only: not worth a trim.
        assert!(!burst_over(&mut at, 10_300 + BURST - 1));
    }
}
