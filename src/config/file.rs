//! The config file as a person writes it: the serde model (every key
//! optional, unknown keys refused) and reading it with errors that name
//! the file, line and column. `config.rs` turns it into typed values.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::spawn::FileSpawn;
use super::{parse_size, ConfigError};

/// The TOML file, as written by a person. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct FileConfig {
    pub(super) port: Option<u16>,
    pub(super) bind: Option<String>,
    /// Several listeners: `[[listen]] addr = "127.0.0.1:8080"`, optional `tls`.
    pub(super) listen: Vec<FileListen>,
    pub(super) root: Option<PathBuf>,
    pub(super) cgi_dir: Option<PathBuf>,
    pub(super) cgi_prefix: Option<String>,
    pub(super) cgi_timeout: Option<u64>,
    pub(super) max_body: Option<SizeValue>,
    pub(super) workers: Option<u32>,
    pub(super) log_format: Option<String>,
    /// `false`: no access log lines (like nginx `access_log off`).
    pub(super) access_log: Option<bool>,
    pub(super) status_path: Option<String>,
    pub(super) user: Option<String>,
    pub(super) tls_cert: Option<PathBuf>,
    pub(super) tls_key: Option<PathBuf>,
    pub(super) shutdown_grace: Option<u64>,
    pub(super) header_read_timeout: Option<u64>,
    pub(super) keepalive_timeout: Option<u64>,
    pub(super) send_timeout: Option<u64>,
    pub(super) max_connections: Option<usize>,
    /// Serve the status page to loopback clients only (default true).
    pub(super) status_local_only: Option<bool>,
    pub(super) max_header_size: Option<SizeValue>,
    pub(super) spool_dir: Option<PathBuf>,
    pub(super) fastcgi_max_conns: Option<usize>,
    pub(super) fastcgi_connect_timeout: Option<u64>,
    pub(super) cgi: FileCgi,
    pub(super) fastcgi: Vec<FileRoute>,
    pub(super) spawn: Vec<FileSpawn>,
    /// `Cache-Control` value for static file responses.
    pub(super) cache_control: Option<String>,
    pub(super) upload: Vec<FileUpload>,
}

/// `[[listen]]`: one more address to serve.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileListen {
    pub(super) addr: String,
    /// Default: TLS when `tls_cert` is set.
    pub(super) tls: Option<bool>,
}

/// `[[upload]]`: offload multipart uploads under `prefix` into `dir`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileUpload {
    pub(super) prefix: String,
    pub(super) dir: PathBuf,
    pub(super) max_file_size: Option<SizeValue>,
    pub(super) max_request_size: Option<SizeValue>,
    pub(super) max_parts: Option<usize>,
    #[serde(default)]
    pub(super) keep: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct FileCgi {
    pub(super) max_processes: Option<usize>,
    pub(super) queue_timeout: Option<u64>,
    pub(super) max_response_header: Option<SizeValue>,
    pub(super) pass_authorization: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRoute {
    #[serde(rename = "match")]
    pub(super) matcher: String,
    pub(super) addr: String,
    /// Per-route idle timeout (default: `cgi_timeout`).
    pub(super) timeout: Option<u64>,
    /// Per-route body limit (default: `max_body`).
    pub(super) max_body: Option<SizeValue>,
}

/// A size written either as a number of bytes or as a string with K/M/G.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum SizeValue {
    Bytes(u64),
    Text(String),
}

impl SizeValue {
    pub(crate) fn bytes(&self, key: &str) -> Result<u64, ConfigError> {
        match self {
            SizeValue::Bytes(n) => Ok(*n),
            SizeValue::Text(s) => parse_size(s).map_err(|e| ConfigError(format!("{key}: {e}"))),
        }
    }
}

pub(super) fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("--config {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        let (line, col) = e.span().map(|s| line_col(&text, s.start)).unwrap_or((0, 0));
        let msg = e.message().replace('\n', " ");
        ConfigError(format!("{}:{line}:{col}: {msg}", path.display()))
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, col)
}
