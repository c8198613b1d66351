//! The application currently serving, and SIGHUP: re-read the flags and
//! the config file, build a new [`App`] and swap it in atomically.
//!
//! Requests already running finish on the application they started with;
//! every new request sees the new one. A file that does not parse or
//! validate is rejected with a log line and the old configuration keeps
//! serving. Unchanged spawned pools are carried over (and get a fresh
//! generation, so edited code is picked up); pools that disappeared or
//! changed stop once the old application is no longer used. Counters,
//! request ids and the CGI process registry carry over, so the status
//! page and shutdown see one server.
//!
//! TLS certificates are read again too (a renewed certificate needs no
//! restart); if the new files do not load, the old certificate stays. Run
//! with `--user`, the key must then be readable by that user. Listeners,
//! `user` and the connection limits are fixed when cgihost starts; a
//! reload that changes them says so in the log and keeps the running
//! values.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::cli::Cli;
use crate::config::{Config, ConfigError};
use crate::router::App;
use tokio_rustls::TlsAcceptor;

/// The application serving new requests.
pub struct Live {
    current: RwLock<Arc<App>>,
    /// For the TLS listeners; swapped when a reload loads new files.
    tls: RwLock<Option<TlsAcceptor>>,
    /// Replaced applications whose pools are being stopped.
    retiring: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Shutting down: no more reloads.
    closing: AtomicBool,
}

impl Live {
    pub fn new(app: Arc<App>, tls: Option<TlsAcceptor>) -> Arc<Live> {
        Arc::new(Live {
            current: RwLock::new(app),
            tls: RwLock::new(tls),
            retiring: Mutex::new(Vec::new()),
            closing: AtomicBool::new(false),
        })
    }

    pub fn current(&self) -> Arc<App> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The acceptor for new TLS connections.
    pub fn tls(&self) -> Option<TlsAcceptor> {
        self.tls.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Load the configuration again and swap it in; on error nothing changes.
    pub fn reload(&self, cli: &Cli) -> Result<(), ConfigError> {
        // One reload at a time, and none once shutdown has begun: `closing`
        // is set under this same lock.
        let mut retiring = self.retiring.lock().unwrap_or_else(|p| p.into_inner());
        if self.closing.load(Ordering::Relaxed) {
            return Err(ConfigError("shutting down; not reloading".into()));
        }
        let config = Config::load(cli)?;
        let old = self.current();
        warn_fixed_settings(&old.config, &config);
        let tls = self.reload_tls(&old.config, &config);
        let new = App::reloaded(config, &old)?;
        if let Some(acceptor) = tls {
            *self.tls.write().unwrap_or_else(|p| p.into_inner()) = Some(acceptor);
            tracing::info!("TLS certificate reloaded");
        }
        for line in new.config.route_lines() {
            tracing::info!("route: {line}");
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = new.clone();
        // Only now that the new configuration serves: the pools it kept
        // start a fresh generation (edited code is picked up).
        new.fastcgi.reload_carried();
        let generation = new.stats.config_generation.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!("configuration reloaded (generation {generation})");
        let grace = old.config.shutdown_grace;
        let retire = tokio::spawn(async move {
            // Requests hold the application they started with.
            let deadline = tokio::time::Instant::now() + grace;
            while Arc::strong_count(&old) > 1 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            old.fastcgi.stop_pools(false).await;
        });
        retiring.retain(|t| !t.is_finished());
        retiring.push(retire);
        Ok(())
    }

    /// The new files' acceptor, when TLS is on and they load.
    fn reload_tls(&self, old: &Config, new: &Config) -> Option<TlsAcceptor> {
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

    /// Shutdown has begun: refuse further reloads.
    pub fn closing(&self) {
        let _no_reload_under_way = self.retiring.lock().unwrap_or_else(|p| p.into_inner());
        self.closing.store(true, Ordering::Relaxed);
    }

    /// Shutdown: let replaced applications stop the pools only they had,
    /// then stop every pool of the current one (carried-over ones too).
    pub async fn stop_all(&self) {
        self.closing();
        let retiring =
            std::mem::take(&mut *self.retiring.lock().unwrap_or_else(|p| p.into_inner()));
        // They run at once; wait for all of them, within one bound.
        let all_retired = async {
            for task in retiring {
                let _ = task.await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), all_retired).await;
        self.current().fastcgi.stop_pools(true).await;
    }
}

/// Settings bound at start that a reload cannot change.
fn warn_fixed_settings(old: &Config, new: &Config) {
    let changed = [
        ("listeners", old.listen != new.listen),
        ("user", old.user != new.user),
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
