//! Configuration: defaults in code, the TOML file (`config/file.rs`: its
//! serde model) and then the command line merged over them (`cli.rs`),
//! and everything validated into typed values before
//! anything is bound or spawned (`config/spawn.rs`: spawned pools).
//!
//! Precedence: built-in defaults < `--config` file < command-line flags.
//! Unknown keys in the file are an error that names the key and its line.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod file;
mod site;
mod spawn;
pub(crate) use file::SizeValue;
use file::{read_file, FileConfig, FileRoute};
pub use site::{
    parse_network, Access, Alias, Auth, EncodedSlashes, FollowSymlinks, HostPattern, PathMatch,
    Redirect, Rewrite, SiteConfig, SiteRules,
};
use site::{FileSite, Source};
use spawn::seconds;
pub use spawn::{parse_spawn, SpawnRoute};

/// The longest timeout the configuration accepts.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// A configuration problem: the message names the flag or key and what is wrong.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

pub(crate) fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// Access log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Combined,
    Json,
}

/// Which requests a FastCGI or spawned route takes (SPEC.md "MATCH").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMatch {
    /// `*.php`: a script file under root with this extension (stored without the dot).
    Extension(String),
    /// `/app`: every URL at or under this prefix (segment boundary).
    Prefix(String),
}

/// The route's label in logs, the status page and `--check-config`:
/// `*.php` or `/app/*`.
impl fmt::Display for RouteMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteMatch::Prefix(p) => write!(f, "{p}/*"),
            RouteMatch::Extension(e) => write!(f, "*.{e}"),
        }
    }
}

/// One FastCGI backend address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BackendAddr {
    Tcp(String),
    Unix(PathBuf),
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendAddr::Tcp(a) => f.write_str(a),
            BackendAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// `--fastcgi MATCH=ADDR[,ADDR…]`
#[derive(Debug, Clone)]
pub struct FastCgiRoute {
    pub matcher: RouteMatch,
    pub addrs: Vec<BackendAddr>,
    /// Idle timeout for this route (default: `cgi_timeout`).
    pub timeout: Option<Duration>,
    /// Body limit for this route (default: `max_body`).
    pub max_body: Option<u64>,
    /// `*.EXT` routes: the front controller run when nothing matched a
    /// file (a clean URL path such as `/index.php`).
    pub fallback: Option<String>,
    /// Extra params, after (and over) the CGI meta-variables.
    pub params: Vec<(String, String)>,
    /// Canonical directories an `X-Sendfile` / `X-Accel-Redirect` may name.
    pub x_sendfile: Vec<PathBuf>,
}

/// One address to accept connections on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    pub addr: SocketAddr,
    pub tls: bool,
}

/// PEM files for HTTPS listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The status page (`--status-path`).
#[derive(Debug, Clone)]
pub struct StatusConfig {
    /// Clean URL path, no trailing slash, e.g. `/status`.
    pub path: String,
    /// Answer loopback clients only (others get 404).
    pub local_only: bool,
}

/// CGI engine limits.
#[derive(Debug, Clone)]
pub struct CgiConfig {
    /// Idle time after which a silent script is killed (504 if nothing sent).
    pub timeout: Duration,
    /// Concurrent CGI processes; more requests wait in a queue.
    pub max_processes: usize,
    /// How long a request waits for a process slot before 503.
    pub queue_timeout: Duration,
    /// Largest response header block a script may send (else 502).
    pub max_response_header: usize,
    /// Pass `Authorization` as `HTTP_AUTHORIZATION`.
    pub pass_authorization: bool,
}

/// The validated, typed configuration. Read-only once the server starts.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to accept connections; the first is `--bind`/`--port`.
    pub listen: Vec<Listen>,
    pub tls: Option<TlsFiles>,
    /// Run CGI programs, workers and (after binding) cgihost as this user.
    pub user: Option<String>,
    pub status: Option<StatusConfig>,
    /// `status_local_only` from the file (default true).
    pub status_local_only: bool,
    /// Close a connection with nothing in flight after this long.
    pub keepalive_timeout: Duration,
    /// Drop a connection whose client has taken no data for this long
    /// while a response waits to be sent (it stopped reading).
    pub send_timeout: Duration,
    /// Open client connections at most; further clients wait in the
    /// kernel's accept queue.
    pub max_connections: usize,
    pub root: PathBuf,
    pub cgi_dir: PathBuf,
    pub cgi_prefix: String,
    pub cgi: CgiConfig,
    pub max_body: Option<u64>,
    pub fastcgi: Vec<FastCgiRoute>,
    pub spawn: Vec<SpawnRoute>,
    /// Workers per spawned pool that does not set its own (`--workers`).
    pub workers: u32,
    pub log_format: LogFormat,
    /// Write access log lines (stdout).
    pub access_log: bool,
    pub shutdown_grace: Duration,
    pub header_read_timeout: Duration,
    pub max_header_size: usize,
    /// Where chunked request bodies are spooled (default: the system temp dir).
    pub spool_dir: Option<PathBuf>,
    /// Connections per FastCGI backend (in use + idle); best set to the
    /// backend's process count (php-fpm `pm.max_children`).
    pub fastcgi_max_conns: usize,
    pub fastcgi_connect_timeout: Duration,
    /// `Cache-Control` on static file responses (default: none).
    pub cache_control: Option<String>,
    /// Upload offloading rules.
    pub uploads: Vec<UploadConfig>,
    /// The default site's rules (top-level keys).
    pub rules: SiteRules,
    /// Virtual hosts, in file order (the first whose hosts match wins).
    pub sites: Vec<SiteConfig>,
}

/// Upload offloading for one URL prefix (see `upload.rs`).
#[derive(Debug, Clone)]
pub struct UploadConfig {
    pub prefix: String,
    pub dir: PathBuf,
    /// Per file; default: `max_body`, else unlimited.
    pub max_file: Option<u64>,
    /// Whole request; default: `max_body`, else unlimited.
    pub max_request: Option<u64>,
    pub max_parts: usize,
    /// Bytes before the first boundary (400 beyond).
    pub max_preamble: u64,
    /// Bytes of one part's header block (400 beyond).
    pub max_part_header: u64,
    pub keep: bool,
}

/// Parts per offloaded multipart request unless configured.
pub const DEFAULT_MAX_PARTS: usize = 100;
/// Preamble of an offloaded multipart body unless configured.
pub const DEFAULT_MAX_PREAMBLE: u64 = 4 * 1024;
/// One part's header block unless configured.
pub const DEFAULT_MAX_PART_HEADER: u64 = 8 * 1024;

impl UploadConfig {
    /// A rule with the default limits.
    pub fn new(prefix: impl Into<String>, dir: impl Into<PathBuf>) -> UploadConfig {
        UploadConfig {
            prefix: prefix.into(),
            dir: dir.into(),
            max_file: None,
            max_request: None,
            max_parts: DEFAULT_MAX_PARTS,
            max_preamble: DEFAULT_MAX_PREAMBLE,
            max_part_header: DEFAULT_MAX_PART_HEADER,
            keep: false,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![Listen {
                addr: SocketAddr::from(([0, 0, 0, 0], 8992)),
                tls: false,
            }],
            tls: None,
            user: None,
            status: None,
            status_local_only: true,
            keepalive_timeout: Duration::from_secs(5),
            send_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            root: PathBuf::from("static"),
            cgi_dir: PathBuf::from("cgi-bin"),
            cgi_prefix: "/cgi-bin".into(),
            cgi: CgiConfig {
                timeout: Duration::from_secs(60),
                max_processes: 128,
                queue_timeout: Duration::from_secs(10),
                max_response_header: 64 * 1024,
                pass_authorization: true,
            },
            max_body: None,
            fastcgi: Vec::new(),
            spawn: Vec::new(),
            workers: 4,
            log_format: LogFormat::Combined,
            access_log: true,
            shutdown_grace: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            max_header_size: 64 * 1024,
            spool_dir: None,
            fastcgi_max_conns: 8,
            fastcgi_connect_timeout: Duration::from_secs(5),
            cache_control: None,
            uploads: Vec::new(),
            rules: SiteRules::default(),
            sites: Vec::new(),
        }
    }
}

impl Config {
    /// Defaults, then the config file at `path` if any; not yet
    /// validated (command-line overrides come next, then [`Config::finish`]).
    pub fn from_file(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        if let Some(path) = path {
            let (file, text) = read_file(path)?;
            let name = path.display().to_string();
            config.apply_file(
                file,
                &Source {
                    name: &name,
                    text: &text,
                },
            )?;
        }
        Ok(config)
    }

    /// Validate the merged settings into their final form.
    pub fn finish(mut self) -> Result<Config, ConfigError> {
        self.validate()?;
        let default_workers = self.workers;
        for s in &mut self.spawn {
            s.resolve(default_workers)?;
        }
        Ok(self)
    }

    fn apply_file(&mut self, mut f: FileConfig, src: &Source) -> Result<(), ConfigError> {
        let mut default_site = f.take_default_site();
        let file_sites = std::mem::take(&mut f.site);
        let cgi_env = std::mem::take(&mut f.cgi.env);
        let bind = f.bind.as_deref().map(|b| parse_ip("bind", b)).transpose()?;
        let tls = f.tls_cert.is_some();
        self.listen = vec![Listen {
            addr: SocketAddr::new(
                bind.unwrap_or(self.listen[0].addr.ip()),
                f.port.unwrap_or(self.listen[0].addr.port()),
            ),
            tls,
        }];
        if !f.listen.is_empty() {
            if f.port.is_some() || f.bind.is_some() {
                return err("listen: use either [[listen]] tables or port/bind, not both");
            }
            self.listen = f
                .listen
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let addr = parse_socket_addr(&format!("listen[{i}].addr"), &l.addr)?;
                    Ok(Listen {
                        addr,
                        tls: l.tls.unwrap_or(tls),
                    })
                })
                .collect::<Result<_, ConfigError>>()?;
        }
        match (f.tls_cert, f.tls_key) {
            (Some(cert), Some(key)) => self.tls = Some(TlsFiles { cert, key }),
            (None, None) => {}
            _ => return err("tls_cert and tls_key: set both or neither"),
        }
        self.user = f.user.or(self.user.take());
        // The file may open the page to everyone while `--status-path`
        // names it.
        self.status_local_only = f.status_local_only.unwrap_or(true);
        if let Some(path) = f.status_path {
            self.status = Some(StatusConfig {
                path: status_path("status_path", &path)?,
                local_only: self.status_local_only,
            });
        }
        set(
            &mut self.keepalive_timeout,
            f.keepalive_timeout.map(Duration::from_secs),
        );
        set(&mut self.max_connections, f.max_connections);
        set(
            &mut self.send_timeout,
            f.send_timeout.map(Duration::from_secs),
        );
        set(&mut self.root, f.root);
        set(&mut self.cgi_dir, f.cgi_dir);
        set(&mut self.cgi_prefix, f.cgi_prefix);
        set(
            &mut self.cgi.timeout,
            f.cgi_timeout.map(Duration::from_secs),
        );
        if let Some(v) = f.max_body {
            self.max_body = Some(v.bytes("max_body")?);
        }
        set(
            &mut self.shutdown_grace,
            f.shutdown_grace.map(Duration::from_secs),
        );
        set(
            &mut self.header_read_timeout,
            f.header_read_timeout.map(Duration::from_secs),
        );
        if let Some(v) = f.max_header_size {
            self.max_header_size = v.bytes("max_header_size")? as usize;
        }
        self.spool_dir = f.spool_dir.or(self.spool_dir.take());
        set(&mut self.fastcgi_max_conns, f.fastcgi_max_conns);
        set(
            &mut self.fastcgi_connect_timeout,
            f.fastcgi_connect_timeout.map(Duration::from_secs),
        );
        if let Some(fmt) = f.log_format {
            self.log_format = parse_log_format("log_format", &fmt)?;
        }
        set(&mut self.access_log, f.access_log);
        set(&mut self.cgi.max_processes, f.cgi.max_processes);
        set(
            &mut self.cgi.queue_timeout,
            f.cgi.queue_timeout.map(Duration::from_secs),
        );
        set(&mut self.cgi.pass_authorization, f.cgi.pass_authorization);
        if let Some(v) = f.cgi.max_response_header {
            self.cgi.max_response_header = v.bytes("cgi.max_response_header")? as usize;
        }
        set(&mut self.workers, f.workers);
        self.fastcgi = file_routes("", f.fastcgi)?;
        self.rules.cgi_env = site::env_pairs("cgi.env", cgi_env)?;
        self.rules.apply("", &mut default_site, src)?;
        for (i, mut fs) in file_sites.into_iter().enumerate() {
            let site = self.site(&format!("site[{i}]."), &mut fs, src)?;
            self.sites.push(site);
        }
        for (i, r) in f.spawn.into_iter().enumerate() {
            self.spawn.push(r.into_route(&format!("spawn[{i}]"))?);
        }
        self.cache_control = f.cache_control.or(self.cache_control.take());
        for u in f.upload {
            let size = |v: Option<SizeValue>, key: &str| v.map(|v| v.bytes(key)).transpose();
            self.uploads.push(UploadConfig {
                max_file: size(u.max_file_size, "upload.max_file_size")?,
                max_request: size(u.max_request_size, "upload.max_request_size")?,
                max_parts: u.max_parts.unwrap_or(DEFAULT_MAX_PARTS),
                max_preamble: size(u.max_preamble, "upload.max_preamble")?
                    .unwrap_or(DEFAULT_MAX_PREAMBLE),
                max_part_header: size(u.max_part_header, "upload.max_part_header")?
                    .unwrap_or(DEFAULT_MAX_PART_HEADER),
                keep: u.keep,
                prefix: u.prefix,
                dir: u.dir,
            });
        }
        Ok(())
    }

    /// One `[[site]]`, inheriting the top-level settings it does not set.
    fn site(&self, key: &str, f: &mut FileSite, src: &Source) -> Result<SiteConfig, ConfigError> {
        if f.hosts.is_empty() {
            return err(format!("{key}hosts: a site needs at least one host name"));
        }
        let hosts = f
            .hosts
            .iter()
            .map(|h| HostPattern::parse(&format!("{key}hosts"), h))
            .collect::<Result<_, _>>()?;
        let mut rules = SiteRules {
            aliases: Vec::new(),
            redirects: Vec::new(),
            rewrites: Vec::new(),
            access: Vec::new(),
            auth: Vec::new(),
            ..self.rules.clone()
        };
        rules.apply(key, f, src)?;
        let fastcgi = if f.fastcgi.is_empty() {
            None
        } else {
            Some(file_routes(key, std::mem::take(&mut f.fastcgi))?)
        };
        Ok(SiteConfig {
            hosts,
            root: f.root.take().unwrap_or_else(|| self.root.clone()),
            rules,
            fastcgi,
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        check_prefix("cgi_prefix", &self.cgi_prefix)?;
        for u in &self.uploads {
            check_prefix("upload prefix", &u.prefix)?;
            dir_exists("upload dir", &u.dir)?;
            if u.max_parts == 0 {
                return err("upload.max_parts: must be at least 1");
            }
            if u.max_part_header < 64 {
                return err("upload.max_part_header: must be at least 64 bytes");
            }
        }
        if self.cgi.max_processes == 0 {
            return err("cgi.max_processes: must be at least 1");
        }
        if self.cgi.timeout.is_zero() {
            return err("cgi_timeout: must be at least 1 second");
        }
        // Deadlines are `now + timeout`: keep them far from overflow (the
        // per-route ones are checked by `spawn::seconds`).
        let connection_timeouts = [
            ("header_read_timeout", self.header_read_timeout),
            ("keepalive_timeout", self.keepalive_timeout),
            ("send_timeout", self.send_timeout),
            ("shutdown_grace", self.shutdown_grace),
            ("cgi_timeout", self.cgi.timeout),
            ("cgi.queue_timeout", self.cgi.queue_timeout),
            ("fastcgi_connect_timeout", self.fastcgi_connect_timeout),
        ];
        for (key, value) in connection_timeouts {
            if value > MAX_TIMEOUT {
                return err(format!(
                    "{key}: at most {} seconds (a year)",
                    MAX_TIMEOUT.as_secs()
                ));
            }
        }
        dir_exists("root", &self.root)?;
        // A missing cgi-bin is not fatal: a static-only site is fine.
        if self.cgi_dir.exists() && !self.cgi_dir.is_dir() {
            return err(format!(
                "cgi_dir: {} is not a directory",
                self.cgi_dir.display()
            ));
        }
        if self.fastcgi_max_conns == 0 {
            return err("fastcgi_max_conns: must be at least 1");
        }
        check_header_value("cache_control", self.cache_control.as_deref())?;
        if self.workers == 0 {
            return err("--workers: must be at least 1");
        }
        if self.max_connections == 0 {
            return err("max_connections: must be at least 1");
        }
        if self.keepalive_timeout.is_zero()
            || self.header_read_timeout.is_zero()
            || self.send_timeout.is_zero()
        {
            return err(
                "keepalive_timeout, header_read_timeout, send_timeout: must be at least 1 second",
            );
        }
        if self.listen.iter().any(|l| l.tls) && self.tls.is_none() {
            return err("listen: a TLS listener needs tls_cert and tls_key");
        }
        if let Some(user) = &self.user {
            if user.is_empty() {
                return err("user: must name a user");
            }
        }
        Ok(())
    }

    /// One human line per route, for the startup log and `--check-config`.
    pub fn route_lines(&self) -> Vec<String> {
        let spawned = self.spawn.iter().map(|r| {
            let mut extras = vec![format!("{} workers", r.workers)];
            if r.max_requests > 0 {
                extras.push(format!("max_requests {}", r.max_requests));
            }
            if r.reload {
                extras.push("reload".into());
            }
            format!(
                "spawn    {} -> {} ({})",
                r.matcher,
                r.argv.join(" "),
                extras.join(", ")
            )
        });
        let mut lines: Vec<String> = self
            .fastcgi
            .iter()
            .map(|r| {
                let addrs: Vec<String> = r.addrs.iter().map(|a| a.to_string()).collect();
                format!("FastCGI  {} -> {}", r.matcher, addrs.join(", "))
            })
            .chain(spawned)
            .collect();
        lines.extend([
            format!(
                "CGI      {}/* -> programs in {}",
                self.cgi_prefix.trim_end_matches('/'),
                self.cgi_dir.display()
            ),
            format!("static   /* -> files in {}", self.root.display()),
        ]);
        lines
    }
}

pub(crate) fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

fn parse_socket_addr(key: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| {
        ConfigError(format!(
            "{key}: '{s}' is not an address like 127.0.0.1:8080 or [::1]:8080"
        ))
    })
}

/// `/status` (a clean absolute path, trailing slash dropped).
pub(crate) fn status_path(key: &str, p: &str) -> Result<String, ConfigError> {
    check_prefix(key, p)?;
    let p = p.trim_end_matches('/');
    if p.is_empty() {
        return err(format!("{key}: the status page cannot take over /"));
    }
    Ok(p.to_string())
}

pub(crate) fn parse_ip(key: &str, s: &str) -> Result<IpAddr, ConfigError> {
    s.trim_matches(|c| c == '[' || c == ']')
        .parse()
        .map_err(|_| ConfigError(format!("{key}: '{s}' is not an IP address")))
}

pub(crate) fn parse_log_format(key: &str, s: &str) -> Result<LogFormat, ConfigError> {
    match s {
        "combined" => Ok(LogFormat::Combined),
        "json" => Ok(LogFormat::Json),
        _ => err(format!("{key}: '{s}' is not one of combined, json")),
    }
}

fn dir_exists(key: &str, p: &Path) -> Result<(), ConfigError> {
    if !p.is_dir() {
        return err(format!("{key}: {} is not a directory", p.display()));
    }
    Ok(())
}

fn check_prefix(key: &str, p: &str) -> Result<(), ConfigError> {
    if !p.starts_with('/') || p.contains("..") || p.contains("//") {
        return err(format!(
            "{key}: '{p}' must be an absolute URL path like /cgi-bin"
        ));
    }
    Ok(())
}

fn check_header_value(key: &str, v: Option<&str>) -> Result<(), ConfigError> {
    match v {
        Some(v) if v.trim().is_empty() || http::HeaderValue::from_str(v).is_err() => err(format!(
            "{key}: '{}' is not a valid header value",
            v.escape_debug()
        )),
        _ => Ok(()),
    }
}

/// `10G`, `512M`, `64K` or plain bytes; powers of 1024.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("'{s}': unknown size suffix (use K, M or G)")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 512K, 10M, 2G)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))
}

pub(crate) fn parse_pair<'a>(key: &str, v: &'a str) -> Result<(&'a str, &'a str), ConfigError> {
    match v.split_once('=') {
        Some((a, b)) if !a.is_empty() && !b.trim().is_empty() => Ok((a, b.trim())),
        _ => err(format!("{key}: '{v}' must look like MATCH=VALUE")),
    }
}

pub(crate) fn parse_match(key: &str, m: &str) -> Result<RouteMatch, ConfigError> {
    if let Some(ext) = m.strip_prefix("*.") {
        if ext.is_empty() || !ext.chars().all(|c| c.is_ascii_alphanumeric()) {
            return err(format!(
                "{key}: '{m}' is not a valid extension match like *.php"
            ));
        }
        return Ok(RouteMatch::Extension(ext.to_string()));
    }
    check_prefix(key, m)?;
    let trimmed = m.trim_end_matches('/');
    Ok(RouteMatch::Prefix(if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.into()
    }))
}

fn parse_addr(key: &str, a: &str) -> Result<BackendAddr, ConfigError> {
    let a = a.trim();
    if let Some(path) = a.strip_prefix("unix:") {
        if path.is_empty() {
            return err(format!("{key}: '{a}' needs a socket path after unix:"));
        }
        return Ok(BackendAddr::Unix(PathBuf::from(path)));
    }
    match a.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(BackendAddr::Tcp(a.to_string()))
        }
        _ => err(format!("{key}: '{a}' is not HOST:PORT or unix:/path")),
    }
}

/// `[[fastcgi]]` tables (`key`: the site's key prefix, or empty).
fn file_routes(key: &str, routes: Vec<FileRoute>) -> Result<Vec<FastCgiRoute>, ConfigError> {
    let mut out = Vec::new();
    for (i, r) in routes.into_iter().enumerate() {
        let key = format!("{key}fastcgi[{i}]");
        let mut route = parse_fastcgi(&key, &format!("{}={}", r.matcher, r.addr))?;
        route.timeout = seconds(&key, "timeout", r.timeout)?;
        route.max_body = r
            .max_body
            .map(|v| v.bytes(&format!("{key}.max_body")))
            .transpose()?;
        if let Some(fallback) = r.fallback {
            let RouteMatch::Extension(ext) = &route.matcher else {
                return err(format!(
                    "{key}.fallback: only a *.EXT route has a fallback script"
                ));
            };
            let clean = fallback.starts_with('/')
                && !fallback.contains("//")
                && !fallback
                    .split('/')
                    .any(|s| s == ".." || s.starts_with('.') && !s.is_empty());
            if !clean || !fallback.ends_with(&format!(".{ext}")) {
                return err(format!(
                    "{key}.fallback: '{fallback}' must be a clean URL path of a *.{ext} script"
                ));
            }
            route.fallback = Some(fallback);
        }
        route.params = site::env_pairs(&format!("{key}.params"), r.params)?;
        for dir in r.x_sendfile {
            let canonical = std::fs::canonicalize(&dir)
                .map_err(|e| ConfigError(format!("{key}.x_sendfile: {}: {e}", dir.display())))?;
            if !canonical.is_dir() {
                return err(format!(
                    "{key}.x_sendfile: {} is not a directory",
                    dir.display()
                ));
            }
            route.x_sendfile.push(canonical);
        }
        out.push(route);
    }
    Ok(out)
}

/// `--fastcgi MATCH=ADDR[,ADDR…]`
pub fn parse_fastcgi(key: &str, v: &str) -> Result<FastCgiRoute, ConfigError> {
    let (m, addrs) = parse_pair(key, v)?;
    let addrs = addrs
        .split(',')
        .map(|a| parse_addr(key, a))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(FastCgiRoute {
        matcher: parse_match(key, m)?,
        addrs,
        timeout: None,
        max_body: None,
        fallback: None,
        params: Vec::new(),
        x_sendfile: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_powers_of_1024() {
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("512k").unwrap(), 512 << 10);
        assert_eq!(parse_size("7").unwrap(), 7);
        assert!(parse_size("10X").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }

    #[test]
    fn routes_parse_into_structs() {
        let r = parse_fastcgi("--fastcgi", "*.php=unix:/run/php.sock,127.0.0.1:9000").unwrap();
        assert_eq!(r.matcher, RouteMatch::Extension("php".into()));
        assert_eq!(r.addrs[0], BackendAddr::Unix("/run/php.sock".into()));
        assert_eq!(r.addrs[1], BackendAddr::Tcp("127.0.0.1:9000".into()));
        let s = parse_spawn("--spawn", "/app/=perl 'cgi-bin/my app.fcgi'").unwrap();
        assert_eq!(s.matcher, RouteMatch::Prefix("/app".into()));
        assert_eq!(s.argv, vec!["perl", "cgi-bin/my app.fcgi"]);
        assert!(parse_fastcgi("--fastcgi", "*.php").is_err());
        assert!(parse_fastcgi("--fastcgi", "app=1.2.3.4:9").is_err());
        assert!(parse_fastcgi("--fastcgi", "/app=nohost").is_err());
    }
}
