//! One process of a spawned FastCGI pool, from spawn to reap, and the
//! readiness probe for a freshly started set of workers.
//!
//! A worker gets exactly: fd 0 = the pool's listening socket
//! (FCGI_LISTENSOCK_FILENO, as spawn-fcgi and mod_fcgid do), fds 1 and 2 =
//! pipes whose lines go to our log tagged with the pool and pid, every
//! other fd of ours being close-on-exec; the environment the config built
//! (`PATH` + the pool's `env`); its own process group, so a stop reaches
//! whatever it forked; and `PR_SET_PDEATHSIG(SIGKILL)`, so it dies with
//! cgihost even when cgihost is killed with SIGKILL and cannot clean up.
//!
//! The supervisor owns the [`Worker`] and is the only one that reaps it
//! (`try_reap`), so a pid we signal can never have been reused. A pidfd
//! watcher only *wakes* the supervisor when the process exits.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

use super::proto;
use crate::cgi::process::PidFd;
use crate::config::SpawnRoute;
use crate::gateway::stderr::StderrLog;

/// Management record types (FastCGI 1.0 §4).
const GET_VALUES: u8 = 9;

/// A running worker process. Dropping it without reaping kills its group.
pub struct Worker {
    child: Child,
    pub pid: u32,
    pub started: Instant,
    reaped: bool,
}

impl Worker {
    /// Start one worker on `listener`; `exited` is notified when it exits.
    ///
    /// Must be called from a runtime worker thread (not `spawn_blocking`):
    /// PR_SET_PDEATHSIG fires when the *thread* that forked exits.
    pub fn spawn(
        route: &SpawnRoute,
        listener: &UnixListener,
        label: &str,
        exited: Arc<Notify>,
    ) -> io::Result<Worker> {
        let socket = listener.as_fd().try_clone_to_owned()?;
        let mut cmd = Command::new(&route.program);
        cmd.arg0(&route.argv[0]).args(&route.argv[1..]);
        cmd.env_clear().envs(route.env.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = &route.dir {
            cmd.current_dir(dir);
        }
        cmd.stdin(Stdio::from(socket))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the hook runs between fork and exec in a threaded
        // process, so it only makes async-signal-safe syscalls (prctl,
        // getppid) and allocates nothing (its errors are plain errnos).
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // cgihost died between fork and prctl: do not outlive it.
                if libc::getppid() != parent {
                    // No allocation after fork (another thread may hold the
                    // malloc lock): a plain errno.
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("worker exited before its pid was read"))?;
        let tag = format!("{label} pid {pid}");
        if let Some(out) = child.stdout.take() {
            tokio::spawn(log_lines(out, tag.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(log_lines(err, tag));
        }
        if let Some(fd) = PidFd::open(pid) {
            tokio::spawn(async move {
                fd.exited().await;
                exited.notify_one();
            });
        } // else: the supervisor's periodic `try_reap` notices the exit.
        Ok(Worker {
            child,
            pid,
            started: Instant::now(),
            reaped: false,
        })
    }

    /// Signal the worker's whole process group (never after it was reaped).
    pub fn signal(&self, sig: libc::c_int) {
        if !self.reaped {
            // SAFETY: plain syscall on a group whose leader we have not reaped.
            unsafe {
                libc::kill(-(self.pid as libc::pid_t), sig);
            }
        }
    }

    /// Reap the worker if it has exited; whatever it forked dies with it.
    pub fn try_reap(&mut self) -> Option<ExitStatus> {
        if self.reaped {
            return None;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => Some(self.reaped_now(status)),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!("cannot wait for worker pid {}: {e}", self.pid);
                None
            }
        }
    }

    fn reaped_now(&mut self, status: ExitStatus) -> ExitStatus {
        // Leftover group members keep the group id reserved, so this
        // cannot reach a stranger; with none left it is a no-op.
        self.signal(libc::SIGKILL);
        self.reaped = true;
        status
    }

    /// SIGKILL the group and reap (bounded: a killed process exits at once,
    /// short of being stuck in the kernel).
    pub async fn kill_and_reap(&mut self) {
        if self.reaped {
            return;
        }
        self.signal(libc::SIGKILL);
        if let Ok(Ok(status)) =
            tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await
        {
            self.reaped_now(status);
        }
    }

    pub fn is_reaped(&self) -> bool {
        self.reaped
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // The supervisor went away without stopping us (runtime shutdown,
        // a test that panicked): never leave a worker behind.
        self.signal(libc::SIGKILL);
    }
}

async fn log_lines(pipe: impl tokio::io::AsyncRead + Unpin, tag: String) {
    let mut log = StderrLog::uncapped(pipe, tag);
    while log.read_some().await {}
}

/// Is a worker on `socket` accepting and speaking FastCGI? Sends
/// FCGI_GET_VALUES and waits (up to `limit`) for any record back, or for
/// the worker to close the connection after reading it (an application
/// that does not answer management records but did accept).
pub async fn probe(socket: &Path, limit: Duration) -> io::Result<()> {
    let attempt = async {
        let mut s = tokio::net::UnixStream::connect(socket).await?;
        let mut pairs = Vec::with_capacity(32);
        proto::put_pair(&mut pairs, b"FCGI_MPXS_CONNS", b"");
        // Padded to a multiple of 8, as the spec recommends: libfcgi (Perl's
        // FCGI module, C apps) never answers this record without padding —
        // it waits for more input — and every reload then took the whole
        // `limit`.
        let padding = (8 - pairs.len() % 8) % 8;
        let mut rec = BytesMut::with_capacity(proto::HEADER_LEN + pairs.len() + padding);
        rec.put_slice(&[1, GET_VALUES, 0, 0]);
        rec.put_u16(pairs.len() as u16);
        rec.put_slice(&[padding as u8, 0]);
        rec.put_slice(&pairs);
        rec.put_bytes(0, padding);
        s.write_all(&rec).await?;
        let mut buf = [0u8; proto::HEADER_LEN];
        s.read(&mut buf).await.map(|_| ())
    };
    tokio::time::timeout(limit, attempt)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer to FCGI_GET_VALUES"))?
}
