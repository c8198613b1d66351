//! One CGI process group from spawn to reap.
//!
//! 1. [`spawn`] starts the program in a new process group with an empty
//!    environment plus the meta-variables, its directory as cwd, stdout and
//!    stderr piped (every other fd of ours is close-on-exec, so nothing else
//!    is inherited).
//! 2. A supervisor task owns the child: it logs stderr line by line, watches
//!    for the main process's exit through a pidfd (without reaping it, so its
//!    pid cannot be reused while we still signal its group), and kills the
//!    whole group with SIGKILL when the main process exits (leftover
//!    background children must not hold stdout open), when told to, or when
//!    the [`ProcessHandle`] is dropped (client went away, timeout).
//! 3. Only then is the child reaped, its pid forgotten and its concurrency
//!    slot released: no zombie, no stray group member.

use std::collections::HashSet;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use super::env::EnvVar;
use crate::gateway::stderr::StderrLog;

/// After the main process exits, how long stderr may stay open (a process
/// that escaped the group with setsid) before we stop reading it.
const STDERR_LINGER: Duration = Duration::from_secs(2);

/// Pids of live CGI process groups, so shutdown can kill what remains.
#[derive(Debug, Default)]
pub struct GroupRegistry {
    pids: Mutex<HashSet<u32>>,
}

impl GroupRegistry {
    fn insert(&self, pid: u32) {
        self.pids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pid);
    }

    fn remove(&self, pid: u32) {
        self.pids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid);
    }

    /// Number of CGI process groups alive now.
    pub fn len(&self) -> usize {
        self.pids.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// SIGKILL every live group (shutdown grace expired). Holding the lock
    /// while signalling means no group is reaped in between.
    pub fn kill_all(&self) -> usize {
        self.signal_all(libc::SIGKILL)
    }

    /// Send `sig` to every live group; returns how many there are.
    pub fn signal_all(&self, sig: libc::c_int) -> usize {
        let pids = self.pids.lock().unwrap_or_else(|p| p.into_inner());
        for &pid in pids.iter() {
            signal_group(pid, sig);
        }
        pids.len()
    }
}

fn kill_group(pid: u32) {
    signal_group(pid, libc::SIGKILL);
}

fn signal_group(pid: u32, sig: libc::c_int) {
    // SAFETY: plain syscall; the pid is a group leader we have not reaped.
    unsafe {
        libc::kill(-(pid as libc::pid_t), sig);
    }
}

/// How the response side finished with the process.
#[derive(Debug)]
enum Finish {
    /// Stdout reached EOF (or the output is no longer wanted but the script
    /// may finish on its own): give the main process `grace` to exit.
    Done { grace: Duration },
    /// Kill the group now.
    Kill,
}

/// The response side's handle on a running process. Dropping it without
/// calling [`ProcessHandle::finish`] kills the process group.
#[derive(Debug)]
pub struct ProcessHandle {
    tx: Option<oneshot::Sender<Finish>>,
    /// Fires (or closes) once the main process has exited.
    exited: Option<oneshot::Receiver<()>>,
    pub pid: u32,
}

impl ProcessHandle {
    /// Resolves once the main process has exited (its group is killed
    /// then, so whatever still holds stdout escaped the group).
    pub fn take_exit_signal(&mut self) -> Option<oneshot::Receiver<()>> {
        self.exited.take()
    }

    /// Output is complete; let the script exit by itself within `grace`,
    /// then kill whatever is left of its group.
    pub fn finish(mut self, grace: Duration) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Finish::Done { grace });
        }
    }
}

impl Drop for ProcessHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Finish::Kill);
        }
    }
}

/// What [`spawn`] needs.
pub struct SpawnSpec<'a> {
    pub program: &'a Path,
    pub env: Vec<EnvVar>,
    /// Request body source: none, a pipe we will feed, or a spooled file.
    pub stdin: StdinSource,
    /// Used to tag stderr lines in the log.
    pub request_id: u64,
    pub script_name: &'a str,
}

/// Where the script's stdin comes from.
pub enum StdinSource {
    Null,
    Pipe,
    File(std::fs::File),
}

/// A running CGI program.
pub struct Spawned {
    pub stdin: Option<ChildStdin>,
    pub stdout: ChildStdout,
    pub handle: ProcessHandle,
}

/// Start the program and its supervisor. The permit (a concurrency slot)
/// is held until the group is gone.
pub fn spawn(
    spec: SpawnSpec,
    registry: Arc<GroupRegistry>,
    permit: OwnedSemaphorePermit,
) -> io::Result<Spawned> {
    let mut cmd = Command::new(spec.program);
    cmd.env_clear();
    for (k, v) in spec.env {
        use std::os::unix::ffi::OsStringExt;
        cmd.env(k, std::ffi::OsString::from_vec(v));
    }
    if let Some(dir) = spec.program.parent() {
        cmd.current_dir(dir);
    }
    // A new process group (posix_spawn keeps this on the fast path, unlike a
    // pre_exec hook, which would force fork).
    cmd.process_group(0);
    cmd.stdin(match spec.stdin {
        StdinSource::Null => Stdio::null(),
        StdinSource::Pipe => Stdio::piped(),
        StdinSource::File(f) => Stdio::from(f),
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("child exited before its pid was read"))?;
    registry.insert(pid);
    let stdin = child.stdin.take();
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no stdout pipe"))?;
    let stderr = child.stderr.take();
    let (tx, rx) = oneshot::channel();
    let (exit_tx, exit_rx) = oneshot::channel();
    let tag = format!("{}#{}", spec.script_name, spec.request_id);
    let watch = Watch {
        control: rx,
        exited: exit_tx,
    };
    tokio::spawn(supervise(child, pid, stderr, watch, registry, permit, tag));
    Ok(Spawned {
        stdin,
        stdout,
        handle: ProcessHandle {
            tx: Some(tx),
            exited: Some(exit_rx),
            pid,
        },
    })
}

/// Exit notification without reaping: a pidfd becomes readable when the
/// process exits (Linux ≥ 5.3).
pub(crate) struct PidFd(AsyncFd<OwnedFd>);

impl PidFd {
    pub(crate) fn open(pid: u32) -> Option<PidFd> {
        // SAFETY: pidfd_open returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: fd is a fresh descriptor we own.
        let owned = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: we own the fd exclusively and keep it open for as long as
        // it is registered (it lives inside the AsyncFd).
        unsafe { AsyncFd::register(owned) }.ok().map(PidFd)
    }

    pub(crate) async fn exited(&self) {
        let _ = self.0.readable().await;
    }
}

/// The supervisor's links to the response side.
struct Watch {
    control: oneshot::Receiver<Finish>,
    /// Told when the main process exits (dropped with the supervisor).
    exited: oneshot::Sender<()>,
}

async fn supervise(
    child: Child,
    pid: u32,
    stderr: Option<ChildStderr>,
    watch: Watch,
    registry: Arc<GroupRegistry>,
    permit: OwnedSemaphorePermit,
    tag: String,
) {
    let Watch {
        mut control,
        exited: exit_tx,
    } = watch;
    let mut exit_tx = Some(exit_tx);
    let pidfd = PidFd::open(pid);
    let mut stderr_log = stderr.map(|s| StderrLog::new(s, tag.clone()));
    let mut exited = false;
    let mut control_open = true;
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            more = async {
                match stderr_log.as_mut() {
                    Some(log) => log.read_some().await,
                    None => std::future::pending().await,
                }
            }, if stderr_log.is_some() => {
                if !more { stderr_log = None; }
            }
            _ = async { match &pidfd { Some(p) => p.exited().await, None => std::future::pending().await } }, if !exited => {
                exited = true;
                kill_group(pid); // leftovers of an exited script die with it
                if let Some(tx) = exit_tx.take() {
                    let _ = tx.send(());
                }
                deadline = Some(tokio::time::Instant::now() + STDERR_LINGER);
            }
            msg = &mut control, if control_open => {
                control_open = false;
                match msg {
                    Ok(Finish::Done { grace }) => {
                        let at = tokio::time::Instant::now() + grace;
                        deadline = Some(deadline.map_or(at, |d| d.min(at)));
                    }
                    Ok(Finish::Kill) | Err(_) => {
                        kill_group(pid);
                        exited = exited || pidfd.is_none();
                        if !exited { deadline = Some(tokio::time::Instant::now() + STDERR_LINGER); }
                    }
                }
            }
            _ = sleep_until_opt(deadline) => {
                // Grace over: kill the group and stop waiting on stderr.
                kill_group(pid);
                break;
            }
        }
        if exited && stderr_log.is_none() {
            break;
        }
        if pidfd.is_none() && !control_open && stderr_log.is_none() {
            // No pidfd: fall back to reaping after the response is done.
            break;
        }
    }
    if let Some(mut log) = stderr_log {
        log.flush();
    }
    registry.remove(pid);
    reap(child, pid, pidfd.is_none(), &tag).await;
    drop(permit);
}

/// Reap the main process (after SIGKILL this returns at once) and log
/// how it ended. Without a pidfd its exit was not watched: kill the group
/// first.
async fn reap(mut child: Child, pid: u32, unwatched: bool, tag: &str) {
    let status = match child.try_wait() {
        Ok(Some(s)) => Ok(s),
        _ => {
            if unwatched {
                kill_group(pid);
            }
            child.wait().await
        }
    };
    log_exit(tag, status);
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn log_exit(tag: &str, status: io::Result<ExitStatus>) {
    match status {
        Ok(s) if s.success() => tracing::debug!(script = tag, "exited 0"),
        Ok(s) => tracing::debug!(script = tag, "exited: {s}"),
        Err(e) => tracing::warn!(script = tag, "cannot reap CGI process: {e}"),
    }
}
