//! Thin entry point: parse the CLI, load the config, set up logging, bind
//! (or take systemd's sockets), drop privileges, hand over to
//! `server::serve` (SIGINT/SIGTERM: drain and stop; SIGHUP: reload the
//! configuration; SIGUSR1: reopen the access log file); print one error
//! line and exit 0, 1 or 2.

#![deny(clippy::undocumented_unsafe_blocks)]

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use cgihost::app::{App, Live};
use cgihost::cli::Cli;
use cgihost::config::Config;
use cgihost::notify;
use cgihost::privileges::{self, User};
use cgihost::server::Listener;
use tokio_rustls::TlsAcceptor;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings: a background thread returns freed pages to the
/// system (after `dirty_decay_ms`), so a burst does not leave the process
/// at its high-water mark.
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: &[u8] = b"background_thread:true,dirty_decay_ms:2000,muzzy_decay_ms:0\0";

/// Exit status for bad flags or configuration (like `nginx -t`).
const CONFIG_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(shell) = cli.completions {
        return cgihost::cli::docs::print_completions(shell);
    }
    if cli.man {
        return cgihost::cli::docs::print_man();
    }
    let _log = cgihost::log::init(cli.verbose as i8 - cli.quiet as i8);
    let config = match cli.load_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cgihost: {e}");
            return ExitCode::from(CONFIG_ERROR);
        }
    };
    if cli.check_config {
        return check_config(&config);
    }
    // Before any thread exists: this reads and clears LISTEN_* variables.
    let systemd = match privileges::systemd_listeners() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cgihost: {e}");
            return ExitCode::from(CONFIG_ERROR);
        }
    };
    // Threads may start now: diagnostics get their writer thread.
    cgihost::log::diagnostics::start();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = config.threads {
        runtime.worker_threads(n);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cgihost: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let served = runtime.block_on(serve(cli, config, systemd));
    // Bodies dropped as the runtime winds down still log their lines.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    cgihost::log::flush_access_log();
    cgihost::log::diagnostics::flush();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(e)) => {
            eprintln!("cgihost: {e}");
            ExitCode::from(CONFIG_ERROR)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("cgihost: {e}");
            ExitCode::from(1)
        }
    }
}

/// `--check-config`: everything `Cli::load_config` checks, plus the TLS files
/// and the user; print the routes.
fn check_config(config: &Config) -> ExitCode {
    if let Err(e) = outside_files(config) {
        eprintln!("cgihost: {e}");
        return ExitCode::from(CONFIG_ERROR);
    }
    for line in config.route_lines() {
        println!("{line}");
    }
    println!("configuration ok");
    ExitCode::SUCCESS
}

/// What the configuration names outside itself: the TLS files, loaded
/// (while still root: a key may be readable by root only), and the user,
/// looked up.
fn outside_files(config: &Config) -> Result<(Option<TlsAcceptor>, Option<User>), String> {
    let tls = config
        .tls
        .as_ref()
        .map(|t| cgihost::tls::acceptor(t).map_err(|e| e.0))
        .transpose()?;
    let user = config
        .user
        .as_deref()
        .map(privileges::lookup_user)
        .transpose()?;
    // Every site's rules: the regexes again, and the htpasswd files.
    let site_rules = std::iter::once(("", &config.rules))
        .chain(config.sites.iter().map(|s| ("[[site]] ", &s.rules)));
    for (which, rules) in site_rules {
        cgihost::rules::Rules::new(rules).map_err(|e| format!("{which}{e}"))?;
    }
    Ok((tls, user))
}

enum Failure {
    Config(String),
    Runtime(String),
}

async fn serve(
    cli: Cli,
    config: Config,
    systemd: Option<Vec<std::net::TcpListener>>,
) -> Result<(), Failure> {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = Failure::Runtime;
    let (tls, user) = outside_files(&config).map_err(Failure::Config)?;
    let fd_limit = privileges::raise_fd_limit();
    if (fd_limit as usize) < config.max_connections * 2 {
        tracing::warn!(
            "open-file limit {fd_limit} is low for max_connections {}; raise it (ulimit -n, LimitNOFILE=)",
            config.max_connections
        );
    }
    let listeners = bind_all(&config, systemd)?;
    // While still root: the ACME dir, owned by the user who renews into it.
    cgihost::acme::prepare_dir(&config, user.as_ref().map(|u| (u.uid, u.gid)))
        .map_err(Failure::Config)?;
    match &user {
        Some(u) => {
            privileges::drop_to(u).map_err(runtime)?;
            tracing::info!("running as user {} (uid {}, gid {})", u.name, u.uid, u.gid);
        }
        None if privileges::running_as_root() => tracing::warn!(
            "running as root: CGI programs and FastCGI workers will run as root too; set --user"
        ),
        None => {}
    }
    // As the user that will reopen it on SIGUSR1.
    if let Some(path) = &config.access_log_path {
        cgihost::log::set_access_log_file(Some(path))
            .map_err(|e| Failure::Config(format!("access_log {e}")))?;
    }
    let app = App::new(config).map_err(|e| Failure::Config(e.0))?;
    let tls = tls.or_else(|| app.acme.as_ref().map(|a| a.acceptor()));
    let live = Live::new(app.clone(), tls);
    // Install the handlers before announcing readiness: a signal that
    // arrives right after "listening on" must drain, not kill.
    let sig = |kind, name: &str| {
        signal(kind).map_err(|e| Failure::Runtime(format!("{name} handler: {e}")))
    };
    let term = sig(SignalKind::terminate(), "SIGTERM")?;
    let int = sig(SignalKind::interrupt(), "SIGINT")?;
    let hup = sig(SignalKind::hangup(), "SIGHUP")?;
    let usr1 = sig(SignalKind::user_defined1(), "SIGUSR1")?;
    for line in app.config.route_lines() {
        tracing::info!("route: {line}");
    }
    drop(app);
    for l in &listeners {
        let scheme = if l.tls { "https" } else { "http" };
        let addr = l.tcp.local_addr().map_err(|e| runtime(e.to_string()))?;
        if l.proxy_protocol {
            tracing::info!("connections to {addr} start with a PROXY protocol header");
        }
        tracing::info!("listening on {scheme}://{addr}");
    }
    tokio::spawn(reload_on_sighup(live.clone(), hup, cli));
    tokio::spawn(reopen_on_sigusr1(usr1));
    if let Some(acme) = &live.current().acme {
        acme.start();
    }
    notify::ready();
    notify::spawn_watchdog();
    let shutdown = async {
        shutdown_signal(term, int).await;
        notify::stopping();
    };
    cgihost::server::serve(listeners, live, shutdown)
        .await
        .map_err(|e| runtime(e.to_string()))
}

/// The configured listeners, or the sockets systemd passed us.
fn bind_all(
    config: &Config,
    systemd: Option<Vec<std::net::TcpListener>>,
) -> Result<Vec<Listener>, Failure> {
    if let Some(sockets) = systemd {
        tracing::info!(
            "using {} socket(s) from systemd (LISTEN_FDS)",
            sockets.len()
        );
        // Socket N takes [[listen]] N's tls and proxy_protocol (else the
        // first's).
        return sockets
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let tcp = tokio::net::TcpListener::from_std(s)
                    .map_err(|e| Failure::Runtime(format!("LISTEN_FDS: {e}")))?;
                let listen = config.listen.get(i).unwrap_or(&config.listen[0]);
                // As configured for that listener: a certificate file, or
                // ACME's, makes the [[listen]] entries TLS (tls = true).
                Ok(Listener {
                    tcp,
                    tls: listen.tls,
                    proxy_protocol: listen.proxy_protocol,
                })
            })
            .collect();
    }
    let mut listeners = Vec::new();
    for l in &config.listen {
        let listener = Listener::bind(l, &config.listen)
            .map_err(|e| Failure::Runtime(format!("cannot listen on {}: {e}", l.addr)))?;
        listeners.push(listener);
    }
    Ok(listeners)
}

async fn reload_on_sighup(live: Arc<Live>, mut hup: tokio::signal::unix::Signal, cli: Cli) {
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP received: reloading the configuration");
        notify::reloading();
        if let Err(e) = cgihost::reload::reload(&live, &cli) {
            tracing::error!("reload failed, keeping the running configuration: {e}");
        }
        // Done either way: the old or the new configuration serves.
        notify::ready();
    }
}

/// SIGUSR1 (logrotate's convention, after it renamed the file): open the
/// access log file again by its name.
async fn reopen_on_sigusr1(mut usr1: tokio::signal::unix::Signal) {
    while usr1.recv().await.is_some() {
        let reopened = tokio::task::spawn_blocking(cgihost::log::reopen_access_log).await;
        match reopened {
            Ok(Ok(Some(path))) => {
                tracing::info!("SIGUSR1: reopened the access log {}", path.display())
            }
            Ok(Ok(None)) => tracing::info!("SIGUSR1: the access log is stdout; nothing to reopen"),
            Ok(Err(e)) => tracing::error!(
                "SIGUSR1: cannot reopen the access log ({e}); writing to the old file"
            ),
            Err(e) => tracing::error!("SIGUSR1: reopening the access log failed: {e}"),
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal(
    mut term: tokio::signal::unix::Signal,
    mut int: tokio::signal::unix::Signal,
) {
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
