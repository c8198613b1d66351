//! The request body on its way to a script's stdin.
//!
//! - A body with a known length is pumped into the stdin pipe by its own
//!   task, concurrently with the response side reading stdout, so a script
//!   that writes before it has read everything cannot deadlock.
//! - A body of unknown length (chunked, HTTP/2 without content-length) is
//!   first spooled to an anonymous temporary file (O_TMPFILE: it has no name,
//!   so it disappears when closed, even if cgihost is killed) to learn its
//!   exact length; the file itself then becomes the script's stdin.
//! - If the script stops reading (closes stdin or exits), the rest of the
//!   body is drained up to [`DRAIN_LIMIT`] so the connection stays in sync;
//!   beyond that the body is dropped and hyper closes the connection.

use std::io;
use std::path::Path;
use std::time::Duration;

use bytes::Buf;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;

use crate::body::ReqBody;
use crate::error::Error;

/// The most of an unread request body cgihost will read and discard to keep
/// a keep-alive connection usable.
pub const DRAIN_LIMIT: u64 = 1 << 20;

/// Feed `body` into `stdin`, then close it. Runs as its own task. Each wait
/// for the client is bounded by `idle`.
pub async fn pump(mut body: ReqBody, mut stdin: ChildStdin, idle: Duration) {
    let mut writing = true;
    let mut drained: u64 = 0;
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Ok(Some(Ok(f))) => f,
            Ok(Some(Err(e))) => {
                tracing::debug!("request body ended early: {e}");
                return;
            }
            Ok(None) => break,
            Err(_) => {
                tracing::info!(
                    "client sent no request body data for {}s; giving up",
                    idle.as_secs()
                );
                return;
            }
        };
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        if writing {
            while data.has_remaining() {
                if stdin.write_buf(&mut data).await.is_err() {
                    // The script closed stdin or exited; not an error.
                    writing = false;
                    break;
                }
            }
        } else {
            drained += data.len() as u64;
            if drained > DRAIN_LIMIT {
                tracing::debug!("unread request body over {DRAIN_LIMIT} bytes: closing connection");
                return;
            }
        }
    }
    let _ = stdin.shutdown().await;
}

/// A request body, ready to hand to a handler with an exact length.
pub enum RequestBody {
    None,
    /// Known length: stream it as it arrives.
    Streamed(ReqBody, u64),
    /// Unknown length (chunked): spooled to an anonymous temp file.
    Spooled(std::fs::File, u64),
}

impl RequestBody {
    /// CONTENT_LENGTH, when there is a body.
    pub fn content_length(&self) -> Option<u64> {
        match self {
            RequestBody::None => None,
            RequestBody::Streamed(_, n) | RequestBody::Spooled(_, n) => Some(*n),
        }
    }
}

/// Enforce `--max-body` (before any handler runs when the length is
/// known) and spool bodies of unknown length.
pub async fn prepare(
    body: ReqBody,
    max_body: Option<u64>,
    spool_dir: &Path,
    idle: Duration,
) -> Result<RequestBody, Error> {
    use http_body::Body as _;
    if body.is_end_stream() {
        return Ok(RequestBody::None);
    }
    match body.size_hint().exact() {
        Some(n) if max_body.is_some_and(|m| n > m) => Err(Error::PayloadTooLarge(format!(
            "request body of {n} bytes over --max-body"
        ))),
        Some(n) => Ok(RequestBody::Streamed(body, n)),
        None => {
            let (file, len) = spool(body, spool_dir, max_body, idle).await?;
            Ok(RequestBody::Spooled(file, len))
        }
    }
}

/// Spool a body of unknown length into an anonymous temp file, enforcing
/// `max_body`. Returns the file positioned at its start, and its length.
pub async fn spool(
    mut body: ReqBody,
    dir: &Path,
    max_body: Option<u64>,
    idle: Duration,
) -> Result<(std::fs::File, u64), Error> {
    let file = tempfile::tempfile_in(dir).map_err(|e| {
        Error::Internal(format!(
            "cannot create spool file in {}: {e}",
            dir.display()
        ))
    })?;
    let mut out = tokio::fs::File::from_std(file);
    let mut len: u64 = 0;
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Ok(Some(Ok(f))) => f,
            Ok(Some(Err(e))) => return Err(Error::BadRequest(format!("request body: {e}"))),
            Ok(None) => break,
            Err(_) => {
                return Err(Error::BadRequest(format!(
                    "request body stalled for {}s",
                    idle.as_secs()
                )))
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        len += data.len() as u64;
        if max_body.is_some_and(|m| len > m) {
            return Err(Error::PayloadTooLarge(format!(
                "chunked request body over --max-body ({} bytes)",
                max_body.unwrap_or(0)
            )));
        }
        out.write_all(&data).await.map_err(spool_err)?;
    }
    out.flush().await.map_err(spool_err)?;
    let mut file = out.into_std().await;
    use std::io::Seek;
    file.seek(io::SeekFrom::Start(0)).map_err(spool_err)?;
    Ok((file, len))
}

fn spool_err(e: io::Error) -> Error {
    Error::Internal(format!("writing request body spool file: {e}"))
}
