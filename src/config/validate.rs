//! The checks a merged configuration (defaults, file, flags) must pass
//! before anything is bound or started: each names its key.

use super::parse::{check_header_value, check_prefix, dir_exists};
use super::{err, Config, ConfigError, MAX_TIMEOUT};

/// Check the merged settings.
pub(super) fn check(config: &Config) -> Result<(), ConfigError> {
    check_prefix("cgi_prefix", &config.cgi_prefix)?;
    for u in &config.uploads {
        check_prefix("upload prefix", &u.prefix)?;
        dir_exists("upload dir", &u.dir)?;
        if u.max_parts == 0 {
            return err("upload.max_parts: must be at least 1");
        }
    }
    if config.cgi.max_processes == 0 {
        return err("cgi.max_processes: must be at least 1");
    }
    if config.cgi.timeout.is_zero() {
        return err("cgi_timeout: must be at least 1 second");
    }
    // Deadlines are `now + timeout`: keep them far from overflow (the
    // per-route ones are checked by `spawn::seconds`).
    let connection_timeouts = [
        ("header_read_timeout", config.header_read_timeout),
        ("keepalive_timeout", config.keepalive_timeout),
        ("send_timeout", config.send_timeout),
        ("shutdown_grace", config.shutdown_grace),
        ("cgi_timeout", config.cgi.timeout),
        ("cgi.queue_timeout", config.cgi.queue_timeout),
        ("fastcgi_connect_timeout", config.fastcgi_connect_timeout),
    ];
    for (key, value) in connection_timeouts {
        if value > MAX_TIMEOUT {
            return err(format!(
                "{key}: at most {} seconds (a year)",
                MAX_TIMEOUT.as_secs()
            ));
        }
    }
    dir_exists("root", &config.root)?;
    // A missing cgi-bin is not fatal: a static-only site is fine.
    if config.cgi_dir.exists() && !config.cgi_dir.is_dir() {
        return err(format!(
            "cgi_dir: {} is not a directory",
            config.cgi_dir.display()
        ));
    }
    if config.fastcgi_max_conns == 0 {
        return err("fastcgi_max_conns: must be at least 1");
    }
    check_header_value("cache_control", config.cache_control.as_deref())?;
    check_counts(config)?;
    if config.open_file_cache && config.open_file_cache_entries == 0 {
        return err("open_file_cache_entries: must be at least 1 (or open_file_cache = false)");
    }
    if config.max_connections == 0 {
        return err("max_connections: must be at least 1");
    }
    if config.keepalive_timeout.is_zero()
        || config.header_read_timeout.is_zero()
        || config.send_timeout.is_zero()
    {
        return err(
            "keepalive_timeout, header_read_timeout, send_timeout: must be at least 1 second",
        );
    }
    if let Some(acme) = &config.acme {
        super::acme::check(acme, &config.listen, config.tls.is_some())?;
    } else if config.listen.iter().any(|l| l.tls) && config.tls.is_none() {
        return err("listen: a TLS listener needs tls_cert and tls_key (or acme)");
    }
    config
        .balancer
        .check(config.status.as_ref().map(|s| s.path.as_str()))?;
    check_access_log(config.access_log_path.as_deref())?;
    if let Some(user) = &config.user {
        if user.is_empty() {
            return err("user: must name a user");
        }
    }
    Ok(())
}

/// Process and thread counts.
fn check_counts(config: &Config) -> Result<(), ConfigError> {
    if config.workers == 0 {
        return err("--workers: must be at least 1");
    }
    if config.threads.is_some_and(|n| !(1..=1024).contains(&n)) {
        return err("threads: must be from 1 to 1024");
    }
    Ok(())
}

/// The access log file, when it names one, must not be a directory.
fn check_access_log(path: Option<&std::path::Path>) -> Result<(), ConfigError> {
    match path {
        Some(p) if p.is_dir() => err(format!("access_log: {} is a directory", p.display())),
        _ => Ok(()),
    }
}
