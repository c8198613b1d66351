//! The gateway layer: what CGI (`cgi`) and FastCGI (`fastcgi`) do the
//! same way around a script, whatever carries its bytes (a pipe, or
//! FastCGI records).
//!
//! - [`head`]: reading the response header block — the cap, the idle
//!   timeout, the incremental scan for its end, the one `HeadError` and
//!   its one mapping to a status;
//! - [`timed`]: the idle timeout and the deadline on a response body;
//! - [`stderr`]: a script's stderr as log lines (split right, capped per
//!   request);
//! - [`request_body`]: `--max-body`, spooling, and the one loop that
//!   pumps a request body into a pipe, STDIN records or the spool file;
//! - [`script`]: the script lookup, through the static resolver's
//!   `openat2` (one path-safety model for every file a request names).

pub mod head;
pub mod request_body;
pub mod script;
pub mod stderr;
pub mod timed;
