//! The access log's writer: lines queue in memory and one thread writes
//! whatever has gathered in one `write` — at once when the server is
//! quiet, in batches when it is busy — instead of every request thread
//! making its own syscall and contending for stdout. A write that fails
//! is said once on stderr (once per file opened) and the lost bytes
//! counted.
//!
//! The lines go to stdout, or to the `access_log` file: opened with
//! `O_APPEND|O_CREAT`, mode 0640, and opened again by name on SIGUSR1
//! (logrotate renames the file, then signals; the next lines go to a new
//! file, the renamed one keeps the older lines).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

/// The writer thread started (else every line is written inline).
static WRITER_RUNNING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Access lines waiting for the writer thread.
static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static WAKE: Condvar = Condvar::new();
/// Held while a batch is written, so batches reach stdout in order.
static WRITING: Mutex<()> = Mutex::new(());
/// Above this many pending bytes the request thread writes them itself
/// (the writer thread is behind, e.g. stdout is a slow pipe).
const PENDING_MAX: usize = 256 * 1024;
/// How long the writer lets lines gather after the first one arrives.
const BATCH_DELAY: std::time::Duration = std::time::Duration::from_millis(2);

/// Queue one access line. A single writer thread, started on first use,
/// writes whatever has queued up in one `write`: lines go out at once when
/// the server is quiet and in batches when it is busy, instead of every
/// request thread making its own syscall and contending for stdout.
pub(super) fn access_line(line: &str) {
    static WRITER: std::sync::Once = std::sync::Once::new();
    WRITER.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(write_access_lines);
        match spawned {
            Ok(_) => WRITER_RUNNING.store(true, std::sync::atomic::Ordering::Relaxed),
            Err(e) => tracing::warn!("no access-log thread ({e}); writing lines inline"),
        }
    });
    let mut pending = PENDING.lock().unwrap_or_else(|p| p.into_inner());
    // Only the first line of a batch wakes the writer: it takes the whole
    // queue, and a notify costs a syscall.
    let first = pending.is_empty();
    pending.extend_from_slice(line.as_bytes());
    let overflowing = pending.len() > PENDING_MAX;
    drop(pending);
    if overflowing || !WRITER_RUNNING.load(std::sync::atomic::Ordering::Relaxed) {
        flush_access_log();
    } else if first {
        WAKE.notify_one();
    }
}

fn write_access_lines() {
    loop {
        let mut pending = PENDING.lock().unwrap_or_else(|p| p.into_inner());
        while pending.is_empty() {
            pending = WAKE.wait(pending).unwrap_or_else(|p| p.into_inner());
        }
        drop(pending);
        // Let a busy server's lines gather into one write.
        std::thread::sleep(BATCH_DELAY);
        flush_access_log();
    }
}

/// Write every queued access line now. Called at shutdown so the last
/// lines are not lost, and when the queue grows too long.
pub fn flush_access_log() {
    let _order = WRITING.lock().unwrap_or_else(|p| p.into_inner());
    write_pending();
}

/// Write the queue to the sink; the caller holds `WRITING`.
fn write_pending() {
    let batch = std::mem::take(&mut *PENDING.lock().unwrap_or_else(|p| p.into_inner()));
    if batch.is_empty() {
        return;
    }
    let mut sink = SINK.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = sink.write(&batch) {
        note_write_error(&e, batch.len(), &sink.name());
    }
}

/// Where the lines go.
static SINK: Mutex<Sink> = Mutex::new(Sink::stdout());

/// Send the access log to the file at `path` (None: stdout), from now on:
/// the lines queued so far go where they were meant to. On error nothing
/// changes.
pub fn set_access_log_file(path: Option<&Path>) -> io::Result<()> {
    let new = match path {
        Some(p) => Sink::open(p)?,
        None => Sink::stdout(),
    };
    let _order = WRITING.lock().unwrap_or_else(|p| p.into_inner());
    switch_to(new);
    Ok(())
}

/// With `WRITING` held: the lines queued so far to the old sink, then
/// `new` in its place, whose first write error will be said again.
fn switch_to(new: Sink) {
    write_pending();
    *SINK.lock().unwrap_or_else(|p| p.into_inner()) = new;
    ERROR_SAID.store(false, Ordering::Relaxed);
}

/// The access log file, if the lines go to one.
pub fn access_log_file() -> Option<PathBuf> {
    SINK.lock().unwrap_or_else(|p| p.into_inner()).path.clone()
}

/// Open the access log file again by its name (SIGUSR1, after logrotate
/// renamed it): the lines queued so far still go to the old file. The
/// file now written, or None for stdout; on error the old file stays.
pub fn reopen_access_log() -> io::Result<Option<PathBuf>> {
    // The name is read and the file swapped under one lock: a reload that
    // switches to another path meanwhile is not undone by this reopen.
    let _order = WRITING.lock().unwrap_or_else(|p| p.into_inner());
    let Some(path) = access_log_file() else {
        return Ok(None);
    };
    switch_to(Sink::open(&path)?);
    Ok(Some(path))
}

/// stdout, or an append-only file and its name.
#[derive(Debug)]
struct Sink {
    path: Option<PathBuf>,
    file: Option<File>,
}

impl Sink {
    const fn stdout() -> Sink {
        Sink {
            path: None,
            file: None,
        }
    }

    /// `O_APPEND|O_CREAT|O_CLOEXEC`, mode 0640 for a new file: lines
    /// from this and any other writer land whole at the end.
    fn open(path: &Path) -> io::Result<Sink> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok(Sink {
            path: Some(path.to_path_buf()),
            file: Some(file),
        })
    }

    fn write(&mut self, batch: &[u8]) -> io::Result<()> {
        match &mut self.file {
            Some(file) => file.write_all(batch),
            None => {
                let mut out = std::io::stdout().lock();
                out.write_all(batch).and_then(|()| out.flush())
            }
        }
    }

    fn name(&self) -> String {
        self.path
            .as_ref()
            .map_or_else(|| "stdout".into(), |p| p.display().to_string())
    }
}

/// Lines lost to a failed write; said once in the log per sink (a full
/// disk or a closed pipe would otherwise repeat it for every request),
/// then counted.
static LOST_LINES_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static ERROR_SAID: AtomicBool = AtomicBool::new(false);

fn note_write_error(e: &std::io::Error, bytes: usize, sink: &str) {
    LOST_LINES_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
    if !ERROR_SAID.swap(true, Ordering::Relaxed) {
        tracing::error!("access log: writing to {sink} failed ({e}); lines are being lost");
    }
}

/// Bytes of access-log lines lost to write errors so far.
pub fn access_log_bytes_lost() -> u64 {
    LOST_LINES_BYTES.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_reopened_sink_writes_to_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let mut sink = Sink::open(&path).unwrap();
        sink.write(b"one\n").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640 & !umask());
        // logrotate: rename, then signal.
        let rotated = dir.path().join("access.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        sink.write(b"two\n").unwrap();
        let mut sink = Sink::open(&path).unwrap();
        sink.write(b"three\n").unwrap();
        assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "one\ntwo\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        // Appends to what is there.
        let mut again = Sink::open(&path).unwrap();
        again.write(b"four\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\nfour\n");
        assert_eq!(again.name(), path.display().to_string());
        assert_eq!(Sink::stdout().name(), "stdout");
        let missing = Sink::open(&dir.path().join("no/such/dir.log")).unwrap_err();
        assert!(missing.to_string().contains("no/such/dir.log"), "{missing}");
    }

    fn umask() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .map_or(0o022, |v| u32::from_str_radix(v.trim(), 8).unwrap())
    }
}
