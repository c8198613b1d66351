//! A script's stderr as log lines — the one logger for a CGI script's
//! stderr pipe, a FastCGI backend's STDERR records and a spawned worker's
//! output.
//!
//! - Lines are split on `\n` wherever the chunks or records happen to
//!   end: a partial line is carried over to the next chunk, and logged
//!   when the stream ends. A line longer than [`LINE_MAX`] is logged in
//!   pieces; a trailing `\r` is dropped, and so are empty lines.
//! - Per request, at most [`REQUEST_CAP`] bytes of lines are logged; then
//!   one line says the rest is truncated, and the rest is read and
//!   dropped (a script flooding stderr cannot flood the log, nor block on
//!   a full pipe).
//! - The lines go through `tracing` to `log`'s queue: logging never waits
//!   for stderr to be written.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest line logged as one line; longer ones are split.
pub const LINE_MAX: usize = 4096;
/// Most stderr logged for one request (CGI run or FastCGI exchange).
pub const REQUEST_CAP: usize = 64 * 1024;

/// Turns stderr bytes, in whatever pieces they come, into log lines.
/// Dropping it logs a last partial line.
pub struct StderrLines {
    /// `SCRIPT#request`, or the worker, for each line.
    tag: String,
    /// The line so far (never [`LINE_MAX`] long or longer).
    partial: Vec<u8>,
    /// Bytes of lines logged so far.
    logged: usize,
    cap: Option<usize>,
    truncated: bool,
}

impl StderrLines {
    /// One request's stderr: capped at [`REQUEST_CAP`].
    pub fn per_request(tag: String) -> StderrLines {
        StderrLines::capped(tag, Some(REQUEST_CAP))
    }

    /// A long-lived process's output (a spawned worker): no cap.
    pub fn uncapped(tag: String) -> StderrLines {
        StderrLines::capped(tag, None)
    }

    pub fn capped(tag: String, cap: Option<usize>) -> StderrLines {
        StderrLines {
            tag,
            partial: Vec::new(),
            logged: 0,
            cap,
            truncated: false,
        }
    }

    /// The tag the lines are logged with.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// More stderr: log the lines it completes, keep the rest.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.truncated {
            match data.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    self.push(&data[..nl]);
                    self.emit();
                    data = &data[nl + 1..];
                }
                None => {
                    self.push(data);
                    return;
                }
            }
        }
    }

    /// The stream ended: log the partial line, if any.
    pub fn finish(&mut self) {
        self.emit();
    }

    fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.truncated {
            let take = bytes.len().min(LINE_MAX - self.partial.len());
            self.partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.partial.len() >= LINE_MAX {
                self.emit();
            }
        }
    }

    fn emit(&mut self) {
        let raw = std::mem::take(&mut self.partial);
        let raw = raw.strip_suffix(b"\r").unwrap_or(&raw);
        if raw.is_empty() || self.truncated {
            return;
        }
        if self.cap.is_some_and(|cap| self.logged + raw.len() > cap) {
            self.truncated = true;
            tracing::warn!(
                target: "cgihost::stderr",
                script = %self.tag,
                "stderr truncated: over {} KiB for this request, the rest is not logged",
                self.cap.unwrap_or(0) / 1024
            );
            return;
        }
        self.logged += raw.len();
        let line = String::from_utf8_lossy(raw);
        tracing::warn!(target: "cgihost::stderr", script = %self.tag, "{line}");
    }
}

impl Drop for StderrLines {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Reads a pipe (a script's stderr, a worker's output) into a
/// [`StderrLines`].
pub struct StderrLog<R> {
    pipe: R,
    lines: StderrLines,
}

impl<R: AsyncRead + Unpin> StderrLog<R> {
    /// A CGI script's stderr: one request, capped.
    pub fn new(pipe: R, tag: String) -> StderrLog<R> {
        StderrLog {
            pipe,
            lines: StderrLines::per_request(tag),
        }
    }

    /// A spawned worker's output, for as long as it runs: not capped.
    pub fn uncapped(pipe: R, tag: String) -> StderrLog<R> {
        StderrLog {
            pipe,
            lines: StderrLines::uncapped(tag),
        }
    }

    /// Read what is available and log complete lines. False at EOF/error.
    pub async fn read_some(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        match self.pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                self.flush();
                false
            }
            Ok(n) => {
                self.lines.feed(&chunk[..n]);
                true
            }
        }
    }

    /// Log the partial line, if any.
    pub fn flush(&mut self) {
        self.lines.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines a `StderrLines` logs, captured through a test subscriber.
    fn logged(feed: impl FnOnce(&mut StderrLines)) -> Vec<String> {
        use std::sync::{Arc, Mutex};
        let out = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || Capture(sink.clone()))
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_level(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let mut lines = StderrLines::capped("s#1".into(), Some(100));
            feed(&mut lines);
        });
        let text =
            String::from_utf8_lossy(&out.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
        text.lines()
            .map(|l| l.trim_end_matches("script=s#1").trim().to_string())
            .collect()
    }

    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_split_across_records_is_one_line() {
        let got = logged(|l| {
            l.feed(b"first li");
            l.feed(b"ne\r\nsec");
            l.feed(b"ond\n\nthi");
            l.feed(b"rd");
        });
        assert_eq!(got, ["first line", "second", "third"]);
    }

    #[test]
    fn long_lines_are_split_and_the_cap_truncates_once() {
        let got = logged(|l| {
            for _ in 0..20 {
                l.feed(b"0123456789\n");
            }
        });
        assert_eq!(got.len(), 11, "{got:?}");
        assert!(got[..10].iter().all(|l| l == "0123456789"));
        assert!(got[10].contains("stderr truncated"), "{got:?}");
        let mut lines = StderrLines::uncapped("w".into());
        lines.feed(&[b'x'; LINE_MAX + 10]);
        assert_eq!(lines.partial.len(), 10, "a full line went out");
    }
}
