//! cgihost: one binary that serves a site's static files, runs CGI/1.1
//! programs in any language and forwards to FastCGI servers — streaming
//! request and response bodies in bounded memory.
//!
//! # Layout
//! - [`cli`]: the command line (clap derive).
//! - [`config`]: defaults, CLI overrides, validation (`config/file.rs`:
//!   the TOML model; `config/spawn.rs`: `--spawn` / `[[spawn]]` pools).
//! - [`log`]: tracing setup and the access log line (stdout, or a file
//!   reopened on SIGUSR1: `log/access_writer.rs`).
//! - [`server`]: listeners (plain, TLS), HTTP/1.1 and HTTP/2, connection
//!   limits, graceful drain (`server/connection.rs`: one connection's
//!   timers; `server/static_h1.rs` + `send_file.rs`: cleartext requests
//!   served without hyper (files sent with sendfile, uploads to CGI
//!   programs spliced into their stdin: `body/socket.rs`), until the
//!   first other request hands the connection to hyper;
//!   `server/proxy_protocol.rs`: PROXY v1/v2 headers on listeners that take
//!   them); [`tls`]: rustls from PEM files.
//! - [`app`]: the [`app::App`] one configuration builds (handlers,
//!   counters, the status snapshot) and [`app::Live`], the swap cell
//!   holding the one serving new requests.
//! - [`reload`]: SIGHUP's procedure (re-read, rebuild, swap);
//!   [`notify`]: systemd's READY/RELOADING/STOPPING/WATCHDOG messages.
//! - [`privileges`]: `--user` (drop root after binding) and systemd
//!   socket activation (`LISTEN_FDS`).
//! - [`stats`], [`status`]: counters and the status page (HTML, JSON,
//!   Prometheus); `status/health.rs`: the load balancer's health endpoint.
//! - [`router`]: the routing order (SPEC.md "Routing").
//! - [`uri_path`]: percent-decoding and path safety, shared by every handler.
//! - [`static_files`]: files under the document root — `resolve` (path →
//!   open file, never outside the root), `conditional` (ETag, If-*),
//!   `range`, `compression` (Accept-Encoding, siblings, streaming gzip),
//!   `file_body` (chunked reads).
//! - [`cgi`]: the CGI engine — `target` (script lookup), `env`
//!   (meta-variables), `process` (spawn, supervise, kill, reap), `stdin`
//!   (the stdin pipe, fed frame by frame or by splice, and its drain), `output` (stdout as a head source
//!   and a streaming body), `response` (the header-block parser FastCGI
//!   shares).
//! - [`fastcgi`]: FastCGI routes — `proto` (records), `pool` (backends,
//!   keep-alive connections, balancing), `exchange` (one request on a
//!   connection, streaming both ways), `target` (`*.EXT` script lookup),
//!   `supervisor` (spawned pools: generations, worker states, back-off,
//!   recycle, reload) and `worker` (one worker process, the readiness probe).
//! - [`gateway`]: what CGI and FastCGI share around a script — the
//!   header-block reader, the idle-timeout body, the stderr line logger,
//!   the request-body pump.
//! - [`upload`]: multipart uploads parsed as they stream, files written to
//!   disk, handlers given a small urlencoded description.
//! - [`acme`]: automatic HTTPS — certificates from an ACME CA (`order`),
//!   kept on disk (`store`), served and swapped by a rustls resolver that
//!   also answers TLS-ALPN-01 (`resolver`), renewed in the background.
//! - [`body`], [`error`]: the body types and the one error-to-status map;
//!   [`conn`]: facts about a client connection that handlers may see
//!   (`conn/forwarded.rs`: the client a trusted proxy names).
//!
//! Request flow: accept → `router::dispatch` picks FastCGI, CGI or static → the
//! handler returns `Result<Response<Body>, Error>` → `error.rs` turns errors
//! into pages → `log::LoggedBody` writes the access line when the body ends.
//! (On the static sendfile path: `router::static_path` → `serve_static` →
//! the response written by `static_h1.rs`, which ends the access record;
//! a repeat of a small cached file's request is answered from its memo,
//! `static_h1/hot.rs`, while the open-file cache holds the same file.)

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod acme;
pub mod app;
pub mod body;
pub mod cgi;
pub mod cli;
pub mod config;
pub mod conn;
pub mod error;
pub mod fastcgi;
pub mod gateway;
pub mod log;
pub mod meta;
pub mod notify;
pub mod privileges;
pub mod reload;
pub mod router;
pub mod rules;
pub mod server;
pub mod site;
pub mod static_files;
pub mod stats;
pub mod status;
pub mod tls;
pub mod upload;
pub mod uri_path;
