//! The access log's writer: lines queue in memory and one thread writes
//! whatever has gathered in one `write` — at once when the server is
//! quiet, in batches when it is busy — instead of every request thread
//! making its own syscall and contending for stdout. A write that fails
//! is said once on stderr and the lost bytes counted.

use std::io::Write;
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
    let batch = std::mem::take(&mut *PENDING.lock().unwrap_or_else(|p| p.into_inner()));
    if batch.is_empty() {
        return;
    }
    let written = std::io::stdout()
        .lock()
        .write_all(&batch)
        .and_then(|()| std::io::stdout().lock().flush());
    if let Err(e) = written {
        note_write_error(&e, batch.len());
    }
}

/// Lines lost to a failed write; said once in the log (a full disk or a
/// closed pipe would otherwise repeat it for every request), then counted.
static LOST_LINES_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn note_write_error(e: &std::io::Error, bytes: usize) {
    let before = LOST_LINES_BYTES.fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
    if before == 0 {
        tracing::error!("access log: writing to stdout failed ({e}); lines are being lost");
    }
}

/// Bytes of access-log lines lost to write errors so far.
pub fn access_log_bytes_lost() -> u64 {
    LOST_LINES_BYTES.load(std::sync::atomic::Ordering::Relaxed)
}
