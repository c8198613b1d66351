//! The command line, exactly as SPEC.md "Command line" lists it.
//!
//! Parsing only: clap turns argv into [`Cli`]; `config.rs` validates the
//! values and merges them over the config file.

use std::path::PathBuf;

use clap::Parser;

/// cgihost: static files, CGI/1.1 programs and FastCGI pools from one binary.
#[derive(Debug, Default, Parser)]
#[command(name = "cgihost", version, about, long_about = None)]
#[command(
    after_help = "MATCH is `*.EXT` (a script under --root with that extension) or `/prefix`.\n\
ADDR is HOST:PORT or unix:/path; join several with `,` for round-robin with failover.\n\
Sizes take K, M, G suffixes (powers of 1024).\n\n\
Example: cgihost --port 8992 --cgi-dir cgi-bin"
)]
pub struct Cli {
    /// TCP port to listen on [default: 8992]
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,

    /// Address to bind; IPv6 addresses are accepted [default: 0.0.0.0]
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,

    /// Static document root served at / [default: static]
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Directory of CGI programs, served at --cgi-prefix [default: cgi-bin]
    #[arg(long, value_name = "DIR")]
    pub cgi_dir: Option<PathBuf>,

    /// URL prefix of the CGI programs [default: /cgi-bin]
    #[arg(long, value_name = "PATH")]
    pub cgi_prefix: Option<String>,

    /// Send MATCH to a running FastCGI server (repeatable)
    #[arg(long, value_name = "MATCH=ADDR")]
    pub fastcgi: Vec<String>,

    /// Start and supervise a FastCGI pool running CMD (repeatable)
    #[arg(long, value_name = "MATCH=CMD")]
    pub spawn: Vec<String>,

    /// Processes per --spawn pool [default: 4]
    #[arg(long, value_name = "N")]
    pub workers: Option<u32>,

    /// TOML config file; command-line flags override it
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Kill a CGI program silent for this many seconds (504) [default: 60]
    #[arg(long, value_name = "SECS")]
    pub cgi_timeout: Option<u64>,

    /// Largest request body accepted, e.g. 10G; larger bodies get 413 [default: unlimited]
    #[arg(long, value_name = "BYTES")]
    pub max_body: Option<String>,

    /// Offload multipart uploads under PREFIX into DIR (repeatable)
    #[arg(long, value_name = "PREFIX=DIR")]
    pub upload_dir: Vec<String>,

    /// PEM certificate chain; makes the listener HTTPS-only (with --tls-key)
    #[arg(long, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert
    #[arg(long, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,

    /// Serve a status page at PATH (HTML, ?json, PATH/metrics) [default: off]
    #[arg(long, value_name = "PATH")]
    pub status_path: Option<String>,

    /// Run handlers (and, after binding, cgihost itself) as this user
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// Access log format: combined or json [default: combined]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,

    /// Validate flags and config file, print the routes, exit 0 (ok) or 2
    #[arg(long)]
    pub check_config: bool,

    /// More logging (repeat for more); RUST_LOG is honoured too
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Less logging (repeat for less)
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub quiet: u8,
}
