//! Configuration: defaults in code, the TOML file (`config/file.rs`: its
//! serde model) and then the command line merged over them (`cli.rs`),
//! and everything validated into typed values before
//! anything is bound or spawned (`config/spawn.rs`: spawned pools).
//!
//! Precedence: built-in defaults < `--config` file < command-line flags.
//! Unknown keys in the file are an error that names the key and its line.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod acme;
mod balancer;
mod file;
mod parse;
mod route_lines;
mod site;
mod site_file;
mod spawn;
mod units;
mod validate;
pub use balancer::Balancer;
use file::{read_file, FileAccessLog, FileConfig};
use parse::{file_routes, parse_socket_addr};
pub use parse::{parse_fastcgi, parse_size};
pub(crate) use parse::{parse_ip, parse_log_format, parse_match, parse_pair, set, status_path};
pub use site::{
    parse_network, Access, Alias, Auth, EncodedSlashes, FollowSymlinks, HostPattern, PathMatch,
    Redirect, Rewrite, SiteConfig, SiteRules,
};
use site_file::{FileSite, Source};
pub use spawn::{parse_spawn, SpawnRoute};

/// `overlay!(dst <- src: a, b)`: each field `src` sets (`Some`) replaces
/// `dst`'s, converted (`Seconds` → `Duration`, `Size` → bytes).
macro_rules! overlay {
    ($dst:expr => $src:expr; $($field:ident),+ $(,)?) => {
        $( if let Some(v) = $src.$field { $dst.$field = v.into(); } )+
    };
}

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
    /// Connections start with a PROXY protocol header naming the client.
    pub proxy_protocol: bool,
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
    pub acme: Option<acme::AcmeConfig>,
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
    /// Threads serving connections (tokio's workers); None: one per CPU.
    /// Read at start only.
    pub threads: Option<usize>,
    pub log_format: LogFormat,
    /// Write access log lines: to stdout, or to `access_log_path`.
    pub access_log: bool,
    /// The access log file (reopened on SIGUSR1); None: stdout.
    pub access_log_path: Option<PathBuf>,
    /// Behind a load balancer: trusted proxies, health path, drain delay.
    pub balancer: Balancer,
    pub shutdown_grace: Duration,
    pub header_read_timeout: Duration,
    pub max_header_size: usize,
    /// Where chunked request bodies are spooled (default: the system temp dir).
    pub spool_dir: Option<PathBuf>,
    /// Connections per FastCGI backend (in use + idle); best set to the
    /// backend's process count (php-fpm `pm.max_children`).
    pub fastcgi_max_conns: usize,
    pub fastcgi_connect_timeout: Duration,
    /// A kept-alive FastCGI connection idle this long is closed.
    pub fastcgi_idle_timeout: Duration,
    /// `Cache-Control` on static file responses (default: none).
    pub cache_control: Option<String>,
    /// Keep static files open, with their metadata and (small ones) bytes
    /// (`static_files/cache.rs`).
    pub open_file_cache: bool,
    /// Open descriptors the cache may hold, per root or alias directory.
    pub open_file_cache_entries: usize,
    /// Bytes of small files' contents the cache may hold, per directory.
    pub open_file_cache_bytes: u64,
    /// Notice changes with inotify; false: one `statx` per hit instead.
    pub open_file_cache_watch: bool,
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
                proxy_protocol: false,
            }],
            tls: None,
            acme: None,
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
            threads: None,
            log_format: LogFormat::Combined,
            access_log: true,
            access_log_path: None,
            balancer: Balancer::default(),
            shutdown_grace: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            max_header_size: 64 * 1024,
            spool_dir: None,
            fastcgi_max_conns: 8,
            fastcgi_connect_timeout: Duration::from_secs(5),
            fastcgi_idle_timeout: Duration::from_secs(60),
            cache_control: None,
            open_file_cache: true,
            open_file_cache_entries: 10_000,
            open_file_cache_bytes: 64 << 20,
            open_file_cache_watch: true,
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
        validate::check(&self)?;
        let default_workers = self.workers;
        for s in &mut self.spawn {
            s.resolve(default_workers)?;
        }
        Ok(self)
    }

    fn apply_file(&mut self, mut f: FileConfig, src: &Source) -> Result<(), ConfigError> {
        let mut default_site = f.take_default_site();
        let file_sites = std::mem::take(&mut f.site);
        self.acme = acme::from_file(&f, &file_sites)?;
        let cgi_env = std::mem::take(&mut f.cgi.env);
        self.apply_listeners(&f)?;
        self.balancer.apply(&mut f)?;
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
        // Plain values: the file's, where it sets them.
        overlay!(self => f;
            keepalive_timeout, send_timeout, shutdown_grace, header_read_timeout,
            fastcgi_connect_timeout, fastcgi_idle_timeout, max_connections, root, cgi_dir, cgi_prefix,
            fastcgi_max_conns, max_header_size, workers, threads, open_file_cache,
            open_file_cache_entries, open_file_cache_bytes, open_file_cache_watch);
        overlay!(self.cgi => f.cgi;
            max_processes, queue_timeout, pass_authorization, max_response_header);
        set(&mut self.cgi.timeout, f.cgi_timeout.map(Into::into));
        self.max_body = f.max_body.map(Into::into).or(self.max_body);
        self.spool_dir = f.spool_dir.or(self.spool_dir.take());
        match f.access_log.take() {
            Some(FileAccessLog::On(on)) => self.access_log = on,
            Some(FileAccessLog::File(path)) => {
                (self.access_log, self.access_log_path) = (true, Some(path))
            }
            None => {}
        }
        if let Some(fmt) = f.log_format {
            self.log_format = parse_log_format("log_format", &fmt)?;
        }
        self.fastcgi = file_routes("", f.fastcgi)?;
        self.rules.cgi_env = site_file::env_pairs("cgi.env", cgi_env)?;
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
            self.uploads.push(UploadConfig {
                max_file: u.max_file_size.map(Into::into),
                max_request: u.max_request_size.map(Into::into),
                max_parts: u.max_parts.unwrap_or(DEFAULT_MAX_PARTS),
                max_preamble: u.max_preamble.map_or(DEFAULT_MAX_PREAMBLE, Into::into),
                max_part_header: u
                    .max_part_header
                    .map_or(DEFAULT_MAX_PART_HEADER, Into::into),
                keep: u.keep,
                prefix: u.prefix,
                dir: u.dir,
            });
        }
        Ok(())
    }

    /// `port`/`bind`, or `[[listen]]` tables (not both); TLS by default
    /// when `tls_cert` is set.
    fn apply_listeners(&mut self, f: &FileConfig) -> Result<(), ConfigError> {
        let bind = f.bind.as_deref().map(|b| parse_ip("bind", b)).transpose()?;
        let tls = f.tls_cert.is_some();
        self.listen = vec![Listen {
            addr: SocketAddr::new(
                bind.unwrap_or(self.listen[0].addr.ip()),
                f.port.unwrap_or(self.listen[0].addr.port()),
            ),
            tls,
            proxy_protocol: false,
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
                        proxy_protocol: l.proxy_protocol,
                    })
                })
                .collect::<Result<_, ConfigError>>()?;
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
}
