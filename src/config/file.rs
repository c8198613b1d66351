//! The config file as a person writes it: the serde model (every key
//! optional, unknown keys refused) and reading it with errors that name
//! the file, line and column. `config.rs` turns it into typed values.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use std::collections::BTreeMap;

use toml::Spanned;

use super::site_file::{
    FileAccess, FileAlias, FileAuth, FileFollow, FileRedirect, FileRewrite, FileSite,
};
use super::spawn::FileSpawn;
use super::units::{Seconds, Size};
use super::ConfigError;

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
    pub(super) cgi_timeout: Option<Seconds>,
    pub(super) max_body: Option<Size>,
    pub(super) workers: Option<u32>,
    pub(super) log_format: Option<String>,
    /// `false`: no access log lines (like nginx `access_log off`); a path:
    /// lines go to that file instead of stdout.
    pub(super) access_log: Option<FileAccessLog>,
    pub(super) status_path: Option<String>,
    pub(super) user: Option<String>,
    pub(super) tls_cert: Option<PathBuf>,
    pub(super) tls_key: Option<PathBuf>,
    pub(super) shutdown_grace: Option<Seconds>,
    pub(super) header_read_timeout: Option<Seconds>,
    pub(super) keepalive_timeout: Option<Seconds>,
    pub(super) send_timeout: Option<Seconds>,
    pub(super) max_connections: Option<usize>,
    pub(super) threads: Option<usize>,
    /// Serve the status page to loopback clients only (default true).
    pub(super) status_local_only: Option<bool>,
    /// Behind a load balancer (`config/balancer.rs`).
    pub(super) trusted_proxies: Option<Vec<String>>,
    pub(super) health_path: Option<String>,
    pub(super) shutdown_delay: Option<u64>,
    pub(super) max_header_size: Option<Size>,
    pub(super) spool_dir: Option<PathBuf>,
    pub(super) fastcgi_max_conns: Option<usize>,
    pub(super) fastcgi_connect_timeout: Option<Seconds>,
    pub(super) fastcgi_idle_timeout: Option<Seconds>,
    pub(super) cgi: FileCgi,
    pub(super) fastcgi: Vec<FileRoute>,
    pub(super) spawn: Vec<FileSpawn>,
    /// `Cache-Control` value for static file responses.
    pub(super) cache_control: Option<String>,
    /// The static files' open-file cache: on/off, its bounds, and whether
    /// it watches directories (else checks each hit with `statx`).
    pub(super) open_file_cache: Option<bool>,
    pub(super) open_file_cache_entries: Option<usize>,
    pub(super) open_file_cache_bytes: Option<Size>,
    pub(super) open_file_cache_watch: Option<bool>,
    pub(super) upload: Vec<FileUpload>,
    // Sites and rules (config/site.rs): the default site's own keys…
    pub(super) index: Option<Vec<String>>,
    pub(super) follow_symlinks: Option<FileFollow>,
    pub(super) encoded_slashes: Option<String>,
    pub(super) alias: Vec<Spanned<FileAlias>>,
    pub(super) redirect: Vec<Spanned<FileRedirect>>,
    pub(super) rewrite: Vec<Spanned<FileRewrite>>,
    pub(super) access: Vec<Spanned<FileAccess>>,
    pub(super) auth: Vec<Spanned<FileAuth>>,
    pub(super) errors: Option<Spanned<BTreeMap<String, String>>>,
    /// …and the virtual hosts.
    pub(super) site: Vec<FileSite>,
    // Automatic HTTPS (config/acme.rs).
    pub(super) acme_domains: Vec<String>,
    pub(super) acme_email: Option<String>,
    pub(super) acme_directory: Option<String>,
    pub(super) acme_ca_root: Option<PathBuf>,
    pub(super) acme_dir: Option<PathBuf>,
    pub(super) acme_challenge: Option<String>,
    pub(super) https_redirect: Option<bool>,
}

impl FileConfig {
    /// The top-level site keys, as the default site.
    pub(super) fn take_default_site(&mut self) -> FileSite {
        FileSite {
            hosts: Vec::new(),
            root: None,
            index: self.index.take(),
            follow_symlinks: self.follow_symlinks.take(),
            encoded_slashes: self.encoded_slashes.take(),
            alias: std::mem::take(&mut self.alias),
            fastcgi: Vec::new(),
            cgi: None,
            redirect: std::mem::take(&mut self.redirect),
            rewrite: std::mem::take(&mut self.rewrite),
            access: std::mem::take(&mut self.access),
            auth: std::mem::take(&mut self.auth),
            errors: self.errors.take(),
            acme: None,
        }
    }
}

/// `[[listen]]`: one more address to serve.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileListen {
    pub(super) addr: String,
    /// Default: TLS when `tls_cert` is set.
    pub(super) tls: Option<bool>,
    /// Every connection starts with a PROXY protocol header (v1 or v2).
    #[serde(default)]
    pub(super) proxy_protocol: bool,
}

/// `access_log = true | false | "/path/to/access.log"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum FileAccessLog {
    On(bool),
    File(PathBuf),
}

impl<'de> Deserialize<'de> for FileAccessLog {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = FileAccessLog;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false or the path of a log file")
            }
            fn visit_bool<E: serde::de::Error>(self, on: bool) -> Result<FileAccessLog, E> {
                Ok(FileAccessLog::On(on))
            }
            fn visit_str<E: serde::de::Error>(self, path: &str) -> Result<FileAccessLog, E> {
                if path.is_empty() {
                    return Err(E::custom("an empty path (true: stdout; false: off)"));
                }
                Ok(FileAccessLog::File(PathBuf::from(path)))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `[[upload]]`: offload multipart uploads under `prefix` into `dir`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileUpload {
    pub(super) prefix: String,
    pub(super) dir: PathBuf,
    pub(super) max_file_size: Option<Size>,
    pub(super) max_request_size: Option<Size>,
    pub(super) max_parts: Option<usize>,
    /// Bytes before the first boundary.
    pub(super) max_preamble: Option<Size>,
    /// Bytes of one part's header block.
    pub(super) max_part_header: Option<Size>,
    #[serde(default)]
    pub(super) keep: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct FileCgi {
    pub(super) max_processes: Option<usize>,
    pub(super) queue_timeout: Option<Seconds>,
    pub(super) max_response_header: Option<Size>,
    pub(super) pass_authorization: Option<bool>,
    /// Extra CGI variables (Apache `SetEnv`).
    pub(super) env: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRoute {
    #[serde(rename = "match")]
    pub(super) matcher: String,
    pub(super) addr: String,
    /// Per-route idle timeout (default: `cgi_timeout`).
    pub(super) timeout: Option<Seconds>,
    /// Per-route body limit (default: `max_body`).
    pub(super) max_body: Option<Size>,
    /// Front controller: run this script when nothing matched a file.
    pub(super) fallback: Option<String>,
    /// Extra params (nginx `fastcgi_param`).
    #[serde(default)]
    pub(super) params: BTreeMap<String, String>,
    /// Directories `X-Sendfile` / `X-Accel-Redirect` may name.
    #[serde(default)]
    pub(super) x_sendfile: Vec<PathBuf>,
}

pub(super) fn read_file(path: &Path) -> Result<(FileConfig, String), ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("--config {}: {e}", path.display())))?;
    let parsed = toml::from_str(&text).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start);
        let (line, col) = line_col(&text, at);
        let msg = e.message().replace('\n', " ");
        let key = key_on_line(&text, at)
            .filter(|k| !msg.contains(&format!("`{k}`")))
            .map(|k| format!("{k}: "))
            .unwrap_or_default();
        ConfigError(format!("{}:{line}:{col}: {key}{msg}", path.display()))
    })?;
    Ok((parsed, text))
}

/// The key of a `key = value` line at `offset`, to name it in an error
/// about its value.
fn key_on_line(text: &str, offset: usize) -> Option<&str> {
    let start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    plain.then_some(key)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, col)
}
