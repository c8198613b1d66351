//! systemd's service protocol (`Type=notify`, `Type=notify-reload`):
//! `READY=1` once every listener is bound, `RELOADING=1` (with
//! `MONOTONIC_USEC`) and then `READY=1` around a SIGHUP reload,
//! `STOPPING=1` when shutdown begins, and `WATCHDOG=1` every half
//! `WATCHDOG_USEC` from a task on the runtime, so a wedged event loop stops
//! the pings and systemd restarts the service. Without `NOTIFY_SOCKET`
//! (not under systemd) every call does nothing.
//!
//! The variables stay in cgihost's own environment (later messages need
//! them); CGI programs and FastCGI workers never inherit it (their
//! environments are built from scratch).

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("systemd notify failed: {e}");
    }
}

/// Startup finished: listening.
pub fn ready() {
    send(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

/// A reload begins (systemd ≥ 253 wants the monotonic time with it).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(e) => {
            tracing::warn!("systemd notify: no monotonic clock: {e}");
            send(&[NotifyState::Reloading]);
        }
    }
}

/// Shutdown begins.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// Ping the watchdog at half its interval while the runtime runs, if
/// systemd asked for one (`WATCHDOG_USEC`, for this pid).
pub fn spawn_watchdog() {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = (interval / 2).max(Duration::from_millis(10));
    tracing::info!("systemd watchdog: pinging every {} ms", every.as_millis());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    });
}
