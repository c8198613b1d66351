//! SIGHUP: re-read the flags and the config file, build a new
//! [`App`](crate::app::App) and swap it in atomically ([`Live::replace`]).
//!
//! A file that does not parse or validate is rejected with a log line and
//! the old configuration keeps serving. Unchanged spawned pools are carried
//! over (and get a fresh generation, so edited code is picked up); pools
//! that disappeared or changed stop once the old application is no longer
//! used. Counters, request ids and the CGI process registry carry over, so
//! the status page and shutdown see one server.
//!
//! TLS certificates are read again too (a renewed certificate needs no
//! restart); if the new files do not load, the old certificate stays. Run
//! with `--user`, the key must then be readable by that user. Listeners,
//! `user` and the connection limits are fixed when cgihost starts; a
//! reload that changes them says so in the log and keeps the running
//! values.

use std::sync::atomic::Ordering;

use tokio_rustls::TlsAcceptor;

use crate::app::{App, Live};
use crate::cli::Cli;
use crate::config::{Config, ConfigError};

/// Load the configuration again and swap it in; on error nothing changes.
pub fn reload(live: &Live, cli: &Cli) -> Result<(), ConfigError> {
    let new = live.replace(|old| {
        let config = cli.load_config()?;
        warn_fixed_settings(&old.config, &config);
        let tls = reload_tls(&old.config, &config);
        Ok::<_, ConfigError>((App::reloaded(config, old)?, tls))
    })?;
    for line in new.config.route_lines() {
        tracing::info!("route: {line}");
    }
    switch_access_log(new.config.access_log_path.as_deref());
    let generation = new.stats.config_generation.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::info!("configuration reloaded (generation {generation})");
    Ok(())
}

/// A changed `access_log` path takes effect now (the lines of requests
/// still running go to the new file); if it cannot be opened, the old one
/// stays.
fn switch_access_log(path: Option<&std::path::Path>) {
    if crate::log::access_log_file().as_deref() == path {
        return;
    }
    let to = path.map_or_else(|| "stdout".into(), |p| p.display().to_string());
    match crate::log::set_access_log_file(path) {
        Ok(()) => tracing::info!("reload: the access log goes to {to}"),
        Err(e) => tracing::error!("reload: keeping the running access log: {e}"),
    }
}

/// The new files' acceptor, when TLS is on and they load.
fn reload_tls(old: &Config, new: &Config) -> Option<TlsAcceptor> {
    let files = match (&old.tls, &new.tls) {
        (Some(_), Some(files)) => files,
        (None, None) => return None,
        _ => {
            tracing::warn!(
                "reload: turning TLS on or off takes a restart; keeping the running listeners"
            );
            return None;
        }
    };
    match crate::tls::acceptor(files) {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!("reload: keeping the running TLS certificate: {e}");
            None
        }
    }
}

/// Settings bound at start that a reload cannot change.
fn warn_fixed_settings(old: &Config, new: &Config) {
    let changed = [
        ("listeners", old.listen != new.listen),
        ("user", old.user != new.user),
        ("acme settings", old.acme != new.acme),
        (
            "max_connections",
            old.max_connections != new.max_connections,
        ),
        (
            "header_read_timeout/keepalive_timeout/max_header_size",
            old.header_read_timeout != new.header_read_timeout
                || old.keepalive_timeout != new.keepalive_timeout
                || old.max_header_size != new.max_header_size,
        ),
    ];
    for (what, differs) in changed {
        if differs {
            tracing::warn!(
                "reload: {what} changed; that takes a restart, keeping the running value"
            );
        }
    }
}
