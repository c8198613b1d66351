//! The command line, exactly as SPEC.md "Command line" lists it.
//!
//! clap turns argv into [`Cli`]; [`Cli::load_config`] merges the flags
//! over the config file (precedence: defaults < file < flags), using
//! `config.rs`'s parsers, so every value is checked the same way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

pub mod docs;

use crate::config::{
    err, parse_fastcgi, parse_ip, parse_log_format, parse_pair, parse_size, parse_spawn, set,
    status_path, Config, ConfigError, Listen, StatusConfig, TlsFiles, UploadConfig,
};

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

    /// Get (and renew) a certificate for NAME from the ACME CA (repeatable;
    /// adds an HTTPS listener on port 443 when none is configured)
    #[arg(long, value_name = "NAME")]
    pub acme_domain: Vec<String>,

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

    /// Print the completion script for SHELL to stdout and exit
    #[arg(long, value_name = "SHELL")]
    pub completions: Option<docs::Shell>,

    /// Print the manual page (roff) to stdout and exit
    #[arg(long, hide = true)]
    pub man: bool,
}

impl Cli {
    /// Defaults, then the `--config` file if any, then the flags; validated.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let mut config = Config::from_file(self.config.as_deref())?;
        self.apply(&mut config)?;
        config.finish()
    }

    /// The flags, over `config`.
    fn apply(&self, config: &mut Config) -> Result<(), ConfigError> {
        let cli = self;
        // --bind/--port name the one listener, replacing any [[listen]].
        if cli.bind.is_some() || cli.port.is_some() {
            let first = config.listen[0];
            let ip = match &cli.bind {
                Some(b) => parse_ip("--bind", b)?,
                None => first.addr.ip(),
            };
            let addr = SocketAddr::new(ip, cli.port.unwrap_or(first.addr.port()));
            config.listen = vec![Listen { addr, ..first }];
        }
        match (&cli.tls_cert, &cli.tls_key) {
            (Some(cert), Some(key)) => {
                config.tls = Some(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                });
                for l in &mut config.listen {
                    l.tls = true;
                }
            }
            (None, None) => {}
            _ => return err("--tls-cert and --tls-key: give both or neither"),
        }
        crate::config::acme::AcmeConfig::add_flag_names(&mut config.acme, &cli.acme_domain)?;
        if !cli.acme_domain.is_empty() && !config.listen.iter().any(|l| l.tls) {
            let addr = SocketAddr::new(config.listen[0].addr.ip(), 443);
            config.listen.push(Listen {
                addr,
                tls: true,
                proxy_protocol: false,
            });
        }
        if cli.user.is_some() {
            config.user = cli.user.clone();
        }
        if let Some(path) = &cli.status_path {
            config.status = Some(StatusConfig {
                path: status_path("--status-path", path)?,
                local_only: config.status_local_only,
            });
        }
        set(&mut config.root, cli.root.clone());
        set(&mut config.cgi_dir, cli.cgi_dir.clone());
        set(&mut config.cgi_prefix, cli.cgi_prefix.clone());
        set(
            &mut config.cgi.timeout,
            cli.cgi_timeout.map(Duration::from_secs),
        );
        if let Some(s) = &cli.max_body {
            config.max_body =
                Some(parse_size(s).map_err(|e| ConfigError(format!("--max-body: {e}")))?);
        }
        if let Some(fmt) = &cli.log_format {
            config.log_format = parse_log_format("--log-format", fmt)?;
        }
        set(&mut config.workers, cli.workers);
        for v in &cli.fastcgi {
            config.fastcgi.push(parse_fastcgi("--fastcgi", v)?);
        }
        for v in &cli.spawn {
            config.spawn.push(parse_spawn("--spawn", v)?);
        }
        for v in &cli.upload_dir {
            let (prefix, dir) = parse_pair("--upload-dir", v)?;
            config.uploads.push(UploadConfig::new(prefix, dir));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_end_keys_merge_with_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        let load = |toml: &str, cli: Cli| {
            std::fs::write(&file, toml).unwrap();
            (Cli {
                config: Some(file.clone()),
                root: Some(std::env::temp_dir()),
                ..cli
            })
            .load_config()
        };
        let c = load(
            "status_local_only = false\nkeepalive_timeout = 7\n",
            Cli {
                status_path: Some("/st/".into()),
                ..Cli::default()
            },
        )
        .unwrap();
        let status = c.status.unwrap();
        assert_eq!(status.path, "/st");
        assert!(!status.local_only);
        assert_eq!(c.keepalive_timeout, Duration::from_secs(7));

        let two =
            "[[listen]]\naddr = \"127.0.0.1:1\"\n[[listen]]\naddr = \"[::1]:2\"\ntls = false\n";
        let c = load(two, Cli::default()).unwrap();
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.listen[1].addr, "[::1]:2".parse().unwrap());
        // --port replaces the file's listeners.
        let c = load(
            two,
            Cli {
                port: Some(9),
                ..Cli::default()
            },
        )
        .unwrap();
        assert_eq!(c.listen.len(), 1);
        assert_eq!(c.listen[0].addr.port(), 9);

        let bad = load(
            "port = 1\n[[listen]]\naddr = \"127.0.0.1:1\"\n",
            Cli::default(),
        );
        assert!(bad.unwrap_err().0.contains("either [[listen]]"));
        let bad = load("[[listen]]\naddr = \"localhost\"\n", Cli::default());
        assert!(bad.unwrap_err().0.contains("listen[0].addr"));
        let bad = load(
            "[[listen]]\naddr = \"127.0.0.1:1\"\ntls = true\n",
            Cli::default(),
        );
        assert!(bad.unwrap_err().0.contains("needs tls_cert"));
        let bad = load("tls_cert = \"x.pem\"\n", Cli::default());
        assert!(bad.unwrap_err().0.contains("set both"));
        let bad = load(
            "[[fastcgi]]\nmatch = \"*.php\"\naddr = \"127.0.0.1:9000\"\ntimeout = 0\n",
            Cli::default(),
        );
        let why = bad.unwrap_err().0;
        assert!(
            why.contains(":4:") && why.contains("timeout: must be at least 1 second"),
            "{why}"
        );
        let c = load("[[fastcgi]]\nmatch = \"*.php\"\naddr = \"127.0.0.1:9000\"\ntimeout = 90\nmax_body = \"1M\"\n", Cli::default()).unwrap();
        assert_eq!(c.fastcgi[0].timeout, Some(Duration::from_secs(90)));
        assert_eq!(c.fastcgi[0].max_body, Some(1 << 20));
        let bad = load("send_timeout = 99999999999\n", Cli::default());
        assert!(bad.unwrap_err().0.contains("send_timeout: at most"));
        let bad = load(
            "[[fastcgi]]\nmatch = \"*.php\"\naddr = \"127.0.0.1:9000\"\ntimeout = 9223372036854775807\n",
            Cli::default(),
        );
        let why = bad.unwrap_err().0;
        assert!(
            why.contains(":4:") && why.contains("timeout: at most"),
            "{why}"
        );
    }

    #[test]
    fn acme_keys_and_flags_are_checked() {
        use crate::config::acme::{Challenge, LETS_ENCRYPT};
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        let load = |toml: &str, cli: Cli| {
            std::fs::write(&file, toml).unwrap();
            let root = Some(std::env::temp_dir());
            let config = Some(file.clone());
            (Cli {
                config,
                root,
                ..cli
            })
            .load_config()
        };
        // The one-line case: an HTTPS listener on 443 is added.
        let flags = Cli {
            port: Some(80),
            acme_domain: vec!["Example.org".into()],
            ..Cli::default()
        };
        let c = load("", flags).unwrap();
        let tls: Vec<_> = c.listen.iter().map(|l| (l.addr.port(), l.tls)).collect();
        assert_eq!(tls, [(80, false), (443, true)]);
        let acme = c.acme.unwrap();
        assert_eq!(acme.certs, [vec!["example.org".to_string()]]);
        assert_eq!(acme.directory, LETS_ENCRYPT);
        assert_eq!(acme.challenge_for(&c.listen), Challenge::Http01);
        assert!(acme.https_redirect && acme.covers("EXAMPLE.org"));
        let https = "[[listen]]\naddr = \"127.0.0.1:1\"\ntls = true\n";
        let bad = [
            ("acme_email = \"a@b\"\n", "no names"),
            ("acme_domains = [\"a.org\"]\n", "needs a TLS listener"),
            (
                "acme_domains = [\"a.org\"]\ntls_cert = \"c\"\ntls_key = \"k\"\n",
                "one or the other",
            ),
            (
                "[[site]]\nhosts = [\"*.a.org\"]\nacme = true\n",
                "no wildcard",
            ),
        ];
        for (toml, why) in bad {
            let toml = format!(
                "{toml}{}",
                if why == "needs a TLS listener" {
                    ""
                } else {
                    https
                }
            );
            let e = load(&toml, Cli::default()).unwrap_err().0;
            assert!(e.contains(why), "{toml}: {e}");
        }
        let c = load(
            &format!("acme_domains = [\"a.org\"]\n{https}"),
            Cli::default(),
        )
        .unwrap();
        assert_eq!(
            c.acme.unwrap().challenge_for(&c.listen),
            Challenge::TlsAlpn01
        );
    }
}
