//! The CGI/1.1 engine (RFC 3875): one request, one program run.
//!
//! Pipeline of [`CgiEngine::handle`]:
//! 1. `target`: find the program and split SCRIPT_NAME / PATH_INFO;
//! 2. request body (`gateway::request_body::prepare`): known length →
//!    piped; unknown length → spooled
//!    (exact CONTENT_LENGTH); over `--max-body` → 413 before anything runs;
//! 3. take a concurrency slot (queue up to `queue_timeout`, then 503);
//! 4. `env`: the meta-variables; `process::spawn` in a new process group;
//! 5. `stdin::feed` feeds the body (by splice(2) when it can) while
//!    `gateway::head::read_head` reads the header block (capped, idle
//!    timeout → 504);
//! 6. `response`: parse and classify — document, local redirect (returned to
//!    the router to serve as a GET), client redirect; nph- output passes
//!    through; invalid output → 502;
//! 7. the rest of stdout streams as an `output::CgiBody`.

pub mod env;
pub mod output;
pub mod process;
pub mod response;
pub mod stdin;
pub mod target;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::Semaphore;

use crate::body::Body;
use crate::body::ReqBody;
use crate::config::{CgiConfig, Config};
use crate::conn::ConnInfo;
use crate::error::Error;
use crate::gateway::head::{read_head, Origin};
use crate::gateway::request_body::{self, RequestBody};
use crate::gateway::timed::Timed;
use crate::stats::CgiCounters;
use output::CgiBody;
use process::{GroupRegistry, SpawnSpec, StdinSource};
use response::Classified;

/// How long a script that has closed stdout may keep running before its
/// group is killed, after a local redirect.
const REDIRECT_EXIT_GRACE: Duration = Duration::from_secs(5);

/// What running a script produced.
pub enum Outcome {
    Response(Response<Body>),
    /// `Location: /path` with no Status: the router serves this path as a GET
    /// (with the original request's headers, returned in `parts`).
    LocalRedirect {
        location: String,
        parts: http::request::Parts,
    },
}

/// Server-wide CGI state: directories, limits, the concurrency slots and the
/// registry of live process groups.
pub struct CgiEngine {
    pub prefix: String,
    /// Canonical CGI directory; `None` when it does not exist (→ 404s).
    dir: Option<PathBuf>,
    limits: CgiConfig,
    max_body: Option<u64>,
    spool_dir: PathBuf,
    server: env::ServerFacts,
    slots: Arc<Semaphore>,
    pub groups: Arc<GroupRegistry>,
    counters: CgiCounters,
}

impl CgiEngine {
    /// `previous` (on a reload): keep its process registry, so shutdown
    /// still finds every group, and its slots when the limit is unchanged.
    pub fn new(config: &Config, previous: Option<&CgiEngine>, counters: &CgiCounters) -> CgiEngine {
        let slots = match previous {
            Some(p) if p.limits.max_processes == config.cgi.max_processes => p.slots.clone(),
            _ => Arc::new(Semaphore::new(config.cgi.max_processes)),
        };
        CgiEngine {
            prefix: config.cgi_prefix.trim_end_matches('/').to_string(),
            dir: std::fs::canonicalize(&config.cgi_dir).ok(),
            limits: config.cgi.clone(),
            max_body: config.max_body,
            spool_dir: config.spool_dir.clone().unwrap_or_else(std::env::temp_dir),
            server: env::ServerFacts::new(config.cgi.pass_authorization),
            slots,
            groups: previous.map_or_else(Default::default, |p| p.groups.clone()),
            counters: counters.clone(),
        }
    }

    /// Processes allowed to run at once.
    pub fn max_processes(&self) -> usize {
        self.limits.max_processes
    }

    /// The canonical CGI directory, if it exists.
    pub fn dir(&self) -> Option<&PathBuf> {
        self.dir.as_ref()
    }

    /// Run the program for `rest` (decoded segments after the prefix);
    /// `document_root`: the site's root.
    pub async fn handle(
        &self,
        req: Request<ReqBody>,
        conn: &ConnInfo,
        document_root: &std::path::Path,
        rest: &[String],
        trailing_slash: bool,
        request_id: u64,
    ) -> Result<Outcome, Error> {
        let dir = self.dir.as_ref().ok_or(Error::NotFound)?;
        let target = target::resolve(&self.prefix, rest, trailing_slash, dir)?;
        let (parts, body) = req.into_parts();
        let spliceable = parts.extensions.get::<crate::body::Spliceable>().cloned();

        // 2. The request body.
        let declared = request_body::declares_body(&parts.headers);
        let (max, spool, idle) = (self.max_body, &self.spool_dir, self.limits.timeout);
        let body = request_body::prepare(body, declared, max, spool, idle).await?;
        let content_length = body.content_length();
        let (stdin_source, pipe_body) = match body {
            RequestBody::None | RequestBody::Empty => (StdinSource::Null, None),
            RequestBody::Streamed(b, _) => (StdinSource::Pipe, Some(b)),
            RequestBody::Spooled(f, _) => (StdinSource::File(f), None),
        };

        // 3. A slot.
        let permit = self.slot().await?;

        // 4. Environment and process.
        let facts = env::RequestFacts::new(&parts, conn, content_length);
        let script = env::ScriptFacts {
            script_name: &target.script_name,
            path_info: &target.path_info,
            script_filename: &target.program,
            document_root,
        };
        let env = env::build(&facts, &script, &self.server);
        let mut spawned = self.spawn(&target, env, stdin_source, request_id, permit)?;

        // 5. Body in, head out, concurrently.
        if let (Some(stdin), Some(body)) = (spawned.stdin.take(), pipe_body) {
            stdin::feed(stdin, body, spliceable, idle).await;
        }
        let head = self.read_head(&mut spawned.stdout, &target).await?;
        let (first_body, block) = (head.first_body, &head.block[..]);

        // 6. Classify.
        let classified = classify(&target, block)?;
        let (status, reason, headers, length) = match classified {
            Classified::LocalRedirect(location) => {
                spawned.handle.finish(REDIRECT_EXIT_GRACE);
                return Ok(Outcome::LocalRedirect { location, parts });
            }
            Classified::Respond {
                status,
                reason,
                headers,
                length,
            } => (status, reason, headers, length),
        };

        // 7. Stream the rest.
        let tag = format!("{}#{request_id}", target.script_name);
        let body = CgiBody::new(
            spawned.stdout,
            first_body,
            spawned.handle,
            self.limits.timeout,
            length,
            tag.clone(),
        );
        let body = Timed::new(body, self.limits.timeout, None, tag);
        let resp = response::build_response(status, reason, headers, body.boxed());
        Ok(Outcome::Response(resp))
    }
}

impl CgiEngine {
    /// Start the program with its environment and stdin.
    fn spawn(
        &self,
        target: &target::CgiTarget,
        env: Vec<env::EnvVar>,
        stdin: StdinSource,
        request_id: u64,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<process::Spawned, Error> {
        let spec = SpawnSpec {
            program: &target.program,
            env,
            stdin,
            request_id,
            script_name: &target.script_name,
        };
        let spawned = process::spawn(spec, self.groups.clone(), permit).map_err(|e| {
            self.counters.spawn_failures.inc();
            Error::BadGateway(format!("cannot execute {}: {e}", target.program.display()))
        })?;
        self.counters.spawns.inc();
        Ok(spawned)
    }

    /// The script's header block from its stdout (errors: 502/504).
    async fn read_head(
        &self,
        stdout: &mut tokio::process::ChildStdout,
        target: &target::CgiTarget,
    ) -> Result<crate::gateway::head::Head, Error> {
        let mut source = output::Stdout(stdout);
        let limits = &self.limits;
        read_head(&mut source, limits.max_response_header, limits.timeout)
            .await
            .map_err(|e| {
                let from = Origin {
                    tag: &target.script_name,
                    backend: None,
                };
                e.into_error(&from, limits.timeout)
            })
    }

    /// A process slot, waiting up to `queue_timeout` (then 503).
    async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Error> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        self.counters.queue_waits.inc();
        tokio::time::timeout(
            self.limits.queue_timeout,
            self.slots.clone().acquire_owned(),
        )
        .await
        .inspect_err(|_| {
            self.counters.queue_rejections.inc();
        })
        .map_err(|_| Error::ServiceUnavailable {
            retry_after_secs: 5,
            why: format!(
                "all {} CGI slots busy for {}s (raise cgi.max_processes)",
                self.limits.max_processes,
                self.limits.queue_timeout.as_secs()
            ),
        })?
        .map_err(|_| Error::Internal("CGI slots closed".into()))
    }
}

/// The script's header block: an nph program's raw status line and
/// headers, or a CGI response (document, redirect, local redirect).
fn classify(target: &target::CgiTarget, block: &[u8]) -> Result<Classified, Error> {
    let classified = if target.nph {
        parse_nph(block)
    } else {
        response::classify(block)
    };
    classified.map_err(|why: String| bad_output(&target.script_name, &why))
}

fn bad_output(script: &str, why: &str) -> Error {
    Error::BadGateway(format!("{script}: invalid CGI response: {why}"))
}

fn parse_nph(block: &[u8]) -> Result<Classified, String> {
    let line_end = block
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(block.len());
    let line = std::str::from_utf8(&block[..line_end])
        .map_err(|_| "nph status line is not ASCII".to_string())?
        .trim_end_matches('\r');
    let mut parts = line.splitn(3, ' ');
    let proto = parts.next().unwrap_or("");
    if !proto.starts_with("HTTP/") {
        return Err(format!(
            "nph output must start with a status line, got {line:?}"
        ));
    }
    let status = parts
        .next()
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| format!("bad nph status line {line:?}"))?;
    if status.is_informational() {
        return Err(format!("nph status line {line:?} is not a final response"));
    }
    let reason = parts.next().map(|r| r.to_string());
    let head = response::parse_head(block.get(line_end + 1..).unwrap_or(&[]))?;
    Ok(Classified::respond(
        status,
        reason,
        head.headers,
        head.content_length,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nph_statuses_follow_the_body_rules() {
        assert!(parse_nph(b"HTTP/1.1 100 Continue\r\nX-A: 1").is_err());
        assert!(parse_nph(b"HTTP/1.1 200 OK\r\nContent-Length: x").is_err());
        let Ok(Classified::Respond {
            status,
            headers,
            length,
            ..
        }) = parse_nph(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX-A: 1")
        else {
            panic!("a 204 is a response");
        };
        assert_eq!((status, length), (StatusCode::NO_CONTENT, Some(0)));
        assert!(headers.get("content-length").is_none());
        assert_eq!(headers.get("x-a").map(|v| v.as_bytes()), Some(&b"1"[..]));
    }
}
