//! The request body on its way to a script's stdin pipe.
//!
//! - A body with a known length is pumped into the stdin pipe by its own
//!   task (`gateway::request_body::pump`), concurrently with the response
//!   side reading stdout, so a script that writes before it has read
//!   everything cannot deadlock. (A body of unknown length was spooled by
//!   `gateway::request_body::prepare`; the file is the script's stdin.)
//! - A body the front end read without hyper comes with a
//!   [`Spliceable`] view: [`splice`] moves it from the socket into the
//!   pipe with splice(2), never through user space.
//! - If the script stops reading (closes stdin or exits), the rest of the
//!   body is drained up to [`DRAIN_LIMIT`] so the connection stays in sync;
//!   beyond that the body is dropped and the connection closed (by hyper,
//!   or, for a spliced body, by the front end, which drains too).

use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;

use crate::body::{ReqBody, SpliceError, Spliceable};
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

/// Start feeding `body` into `stdin` in a task of its own: by splice(2)
/// when the front end offers it (`spliceable`, from the request's
/// extensions; a client that waits for `100 Continue` gets it first),
/// else frame by frame.
pub async fn feed(
    stdin: ChildStdin,
    body: ReqBody,
    spliceable: Option<Spliceable>,
    idle: Duration,
) {
    // A consumer that read the body as frames (an upload offload) has
    // replaced it: feed what it put in its place.
    match spliceable.filter(Spliceable::untouched) {
        Some(spliceable) => {
            drop(body);
            // Here, before the program's head is read: the 100 goes out
            // before any response can.
            if let Err(e) = spliceable.send_continue(idle).await {
                tracing::debug!("100 Continue not sent: {e}");
            }
            tokio::spawn(splice(spliceable, stdin, idle));
        }
        None => {
            tokio::spawn(pump(body, stdin, idle));
        }
    }
}

/// Feed `body` into `stdin`, then close it. Runs as its own task. Each wait
/// for the client is bounded by `idle`.
async fn pump(mut body: ReqBody, stdin: ChildStdin, idle: Duration) {
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

/// Move a body the front end read without hyper into `stdin` with
/// splice(2), then close it. Runs as its own task. Each wait, for the
/// client or the script, is bounded by `idle`. What the script leaves
/// unread stays on the socket: the front end drains it, or closes.
async fn splice(body: Spliceable, stdin: ChildStdin, idle: Duration) {
    let pipe = stdin
        .into_owned_fd()
        .and_then(tokio::net::unix::pipe::Sender::from_owned_fd);
    let mut pipe = match pipe {
        Ok(pipe) => pipe,
        Err(e) => {
            tracing::warn!("request body not sent: stdin pipe unusable: {e}");
            return;
        }
    };
    match body.splice_into(&mut pipe, idle).await {
        Ok(_) | Err(SpliceError::PipeClosed) => {}
        Err(SpliceError::Client(e)) => tracing::debug!("request body ended early: {e}"),
        Err(SpliceError::Stalled(idle)) => tracing::info!(
            "request body stalled (client or script) for {}s; giving up",
            idle.as_secs()
        ),
        Err(SpliceError::Pipe(e)) => tracing::warn!("splicing request body into stdin: {e}"),
    }
}
