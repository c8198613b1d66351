//! Diagnostics: tracing's set-up ([`init`]) and its output on the way to
//! stderr without ever making a request wait: each event is formatted by
//! the thread that logs it and queued; one writer thread writes what has
//! queued up.
//!
//! The queue is bounded ([`QUEUE_MAX`] bytes). When stderr does not keep up
//! (a slow pipe, a stuck terminal) and the queue is full, events are
//! dropped and counted, and the count is written as a line of its own
//! ahead of the next batch. A script's stderr is capped per request
//! before it gets here (`gateway::stderr`).

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Set up tracing on stderr: written where it happens until [`start`],
/// then through the writer thread (logging never blocks on stderr). `verbosity` is `-v`
/// count minus `-q` count; RUST_LOG, when set, wins. Keep the returned
/// guard until exit.
pub fn init(verbosity: i8) -> FlushOnExit {
    let level = match verbosity {
        i8::MIN..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    let _ = fmt.with_writer(Queued).try_init();
    FlushOnExit
}

/// Dropped at the end of `main`: writes the diagnostics still queued.
#[must_use]
pub struct FlushOnExit;

impl Drop for FlushOnExit {
    fn drop(&mut self) {
        flush();
    }
}

/// Most bytes of log lines waiting for the writer thread.
pub const QUEUE_MAX: usize = 1 << 20;

/// Lines waiting to be written, and how many were dropped.
pub struct LineQueue {
    pending: Mutex<Vec<u8>>,
    wake: Condvar,
    dropped: AtomicU64,
    max: usize,
}

impl LineQueue {
    pub const fn new(max: usize) -> LineQueue {
        LineQueue {
            pending: Mutex::new(Vec::new()),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
            max,
        }
    }

    /// Queue one event's text; false (and counted) when the queue is full.
    pub fn push(&self, line: &[u8]) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() + line.len() > self.max {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let first = pending.is_empty();
        pending.extend_from_slice(line);
        drop(pending);
        if first {
            self.wake.notify_one();
        }
        true
    }

    /// Everything queued, preceded by a line counting the dropped ones.
    pub fn take(&self) -> Vec<u8> {
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        self.with_dropped(batch)
    }

    /// Wait until something is queued (or was dropped).
    fn wait_ready(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        while pending.is_empty() && self.dropped.load(Ordering::Relaxed) == 0 {
            pending = self.wake.wait(pending).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn with_dropped(&self, batch: Vec<u8>) -> Vec<u8> {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped == 0 {
            return batch;
        }
        let mut out = format!(
            "cgihost: {dropped} log lines dropped: stderr was not keeping up (a slow log reader)\n"
        )
        .into_bytes();
        out.extend_from_slice(&batch);
        out
    }
}

static QUEUE: LineQueue = LineQueue::new(QUEUE_MAX);
/// The writer thread runs (else each event is written where it happens).
static RUNNING: AtomicBool = AtomicBool::new(false);
/// Held while a batch is written, so batches reach stderr in order.
static WRITING: Mutex<()> = Mutex::new(());

/// Start the writer thread (`main` does, once it may have threads: after
/// it took systemd's sockets out of the environment). False when it could
/// not start: events are then written where they happen.
pub fn start() -> bool {
    if RUNNING.load(Ordering::Relaxed) {
        return true;
    }
    let spawned = std::thread::Builder::new()
        .name("log-stderr".into())
        .spawn(|| loop {
            QUEUE.wait_ready();
            flush();
        });
    let running = spawned.is_ok();
    RUNNING.store(running, Ordering::Relaxed);
    running
}

/// Write whatever is queued now (also at exit, so the last lines are not
/// lost). Taken and written under one lock: batches stay in order.
pub fn flush() {
    let _order = WRITING.lock().unwrap_or_else(|p| p.into_inner());
    let batch = QUEUE.take();
    if !batch.is_empty() {
        let _ = std::io::stderr().lock().write_all(&batch);
    }
}

/// tracing's writer: one buffer per event, queued when the event is done.
pub struct Queued;

impl<'a> MakeWriter<'a> for Queued {
    type Writer = EventText;

    fn make_writer(&'a self) -> EventText {
        EventText(Vec::new())
    }
}

/// One event's formatted text.
pub struct EventText(Vec<u8>);

impl Write for EventText {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventText {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            QUEUE.push(&self.0);
            if !RUNNING.load(Ordering::Relaxed) {
                flush();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_then_says_so() {
        let q = LineQueue::new(10);
        assert!(q.push(b"abcd\n"));
        assert!(q.push(b"efgh\n"));
        assert!(!q.push(b"x\n"));
        assert!(!q.push(b"y\n"));
        let batch = String::from_utf8(q.take()).unwrap();
        assert!(batch.starts_with("cgihost: 2 log lines dropped"), "{batch}");
        assert!(batch.ends_with("abcd\nefgh\n"), "{batch}");
        assert!(q.push(b"z\n"));
        assert_eq!(q.take(), b"z\n", "the count was reported once");
    }
}
