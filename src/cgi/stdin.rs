//! The request body on its way to a script's stdin pipe.
//!
//! - A body with a known length is pumped into the stdin pipe by its own
//!   task (`gateway::request_body::pump`), concurrently with the response
//!   side reading stdout, so a script that writes before it has read
//!   everything cannot deadlock. (A body of unknown length was spooled by
//!   `gateway::request_body::prepare`; the file is the script's stdin.)
//! - If the script stops reading (closes stdin or exits), the rest of the
//!   body is drained up to [`DRAIN_LIMIT`] so the connection stays in sync;
//!   beyond that the body is dropped and hyper closes the connection.

use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;

use crate::body::ReqBody;
use crate::gateway::request_body::{self, BodySink, PumpError};

/// The most of an unread request body cgihost will read and discard to keep
/// a keep-alive connection usable.
pub const DRAIN_LIMIT: u64 = 1 << 20;

/// The stdin pipe as a [`BodySink`]: written while the script reads it,
/// then drained.
struct Pipe {
    stdin: ChildStdin,
    writing: bool,
    drained: u64,
}

/// More than [`DRAIN_LIMIT`] unread.
struct DrainLimit;

impl BodySink for Pipe {
    type Error = DrainLimit;

    async fn put(&mut self, mut data: Bytes) -> Result<(), DrainLimit> {
        if self.writing {
            while data.has_remaining() {
                if self.stdin.write_buf(&mut data).await.is_err() {
                    // The script closed stdin or exited; not an error.
                    self.writing = false;
                    break;
                }
            }
            return Ok(());
        }
        self.drained += data.len() as u64;
        if self.drained > DRAIN_LIMIT {
            return Err(DrainLimit);
        }
        Ok(())
    }
}

/// Feed `body` into `stdin`, then close it. Runs as its own task. Each wait
/// for the client is bounded by `idle`.
pub async fn pump(mut body: ReqBody, stdin: ChildStdin, idle: Duration) {
    let mut pipe = Pipe {
        stdin,
        writing: true,
        drained: 0,
    };
    match request_body::pump(&mut body, idle, &mut pipe).await {
        Ok(_) => {
            let _ = pipe.stdin.shutdown().await;
        }
        Err(PumpError::Client(e)) => tracing::debug!("request body ended early: {e}"),
        Err(PumpError::Stalled(idle)) => tracing::info!(
            "client sent no request body data for {}s; giving up",
            idle.as_secs()
        ),
        Err(PumpError::Sink(DrainLimit)) => {
            tracing::debug!("unread request body over {DRAIN_LIMIT} bytes: closing connection")
        }
    }
}
