//! The application: one configuration and the handlers built from it
//! ([`App`], shared read-only by every request), and the cell that holds
//! the one serving new requests ([`Live`], swapped by a reload).
//!
//! Requests already running finish on the application they started with;
//! every new request sees the current one. A replaced application stops
//! the spawned pools only it had once no request holds it any more.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use arc_swap::{ArcSwap, ArcSwapOption};
use serde_json::{json, Value};
use tokio_rustls::TlsAcceptor;

use crate::cgi::CgiEngine;
use crate::config::{Config, ConfigError};
use crate::conn::forwarded::TrustedProxies;
use crate::fastcgi::FastCgi;
use crate::site::Sites;
use crate::stats::{RouteCounters, RouteKind, Stats};
use crate::status;
use crate::upload::{FramingLimits, UploadRule};
use crate::uri_path::SafePath;

/// Everything one configuration serves with: the settings and the handlers
/// built from them. Immutable once built; a reload builds a new one.
pub struct App {
    pub config: Config,
    pub cgi: CgiEngine,
    pub fastcgi: FastCgi,
    pub sites: Sites,
    pub(crate) cgi_prefix: Vec<String>,
    next_id: Arc<AtomicU64>,
    pub started: Instant,
    pub uploads: Vec<UploadRule>,
    pub stats: Arc<Stats>,
    pub(crate) labels: Labels,
    /// `trusted_proxies`: whose `X-Forwarded-*` headers count.
    pub trusted_proxies: TrustedProxies,
    /// Shutdown has begun (the health endpoint answers 503); one flag for
    /// every application a reload builds.
    draining: Arc<AtomicBool>,
    /// Automatic HTTPS; one for the process (a reload keeps it).
    pub acme: Option<Arc<crate::acme::Acme>>,
    /// Unique to this application in the process: what was learnt under
    /// one configuration (the static path's memos) is not used under
    /// another.
    pub generation: u64,
}

/// The built-in routes' counters.
pub(crate) struct Labels {
    pub(crate) status: Arc<RouteCounters>,
}

impl App {
    pub fn new(config: Config) -> Result<Arc<App>, ConfigError> {
        Self::build(config, None)
    }

    /// The application for a reloaded configuration: new routes, the same
    /// counters, request ids and CGI process registry as `previous`.
    pub fn reloaded(config: Config, previous: &App) -> Result<Arc<App>, ConfigError> {
        Self::build(config, Some(previous))
    }

    fn build(config: Config, previous: Option<&App>) -> Result<Arc<App>, ConfigError> {
        let uploads = upload_rules(&config)?;
        let trusted_proxies = TrustedProxies::new(&config.balancer.trusted_proxies);
        let stats: Arc<Stats> = previous.map_or_else(Default::default, |p| p.stats.clone());
        let cgi = CgiEngine::new(&config, previous.map(|p| &p.cgi), &stats.cgi);
        let fastcgi = FastCgi::new(&config, previous.map(|p| &p.fastcgi), &stats)?;
        let sites = Sites::new(&config, cgi.dir(), |s| fastcgi.group_of_site(s), &stats)?;
        let cgi_prefix = SafePath::parse(&config.cgi_prefix)
            .map_err(|_| {
                ConfigError(format!(
                    "cgi_prefix: '{}' is not a clean path",
                    config.cgi_prefix
                ))
            })?
            .segments;
        let acme = match previous {
            Some(p) => p.acme.clone(),
            None => crate::acme::Acme::new(&config),
        };
        Ok(Arc::new(App {
            acme,
            config,
            cgi,
            fastcgi,
            sites,
            cgi_prefix,
            next_id: previous.map_or_else(|| Arc::new(AtomicU64::new(1)), |p| p.next_id.clone()),
            started: previous.map_or_else(Instant::now, |p| p.started),
            uploads,
            labels: Labels {
                status: stats.route(RouteKind::Status, "status"),
            },
            stats,
            trusted_proxies,
            draining: previous.map_or_else(Default::default, |p| p.draining.clone()),
            generation: {
                static GENERATIONS: AtomicU64 = AtomicU64::new(1);
                GENERATIONS.fetch_add(1, Ordering::Relaxed)
            },
        }))
    }

    /// Shutdown has begun: the health endpoint says so.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn next_request_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The default site's canonical document root.
    pub fn root(&self) -> &Path {
        self.sites.default_site().document_root()
    }
}

/// Typed upload rules from the configuration.
fn upload_rules(config: &Config) -> Result<Vec<UploadRule>, ConfigError> {
    config
        .uploads
        .iter()
        .map(|u| {
            let prefix = SafePath::parse(&u.prefix)
                .map_err(|_| {
                    ConfigError(format!("upload prefix: '{}' is not a clean path", u.prefix))
                })?
                .segments;
            let dir = std::fs::canonicalize(&u.dir)
                .map_err(|e| ConfigError(format!("upload dir {}: {e}", u.dir.display())))?;
            let limit = |v: Option<u64>| v.or(config.max_body).unwrap_or(u64::MAX);
            Ok(UploadRule {
                prefix,
                dir,
                max_file: limit(u.max_file),
                max_request: limit(u.max_request),
                max_parts: u.max_parts,
                framing: FramingLimits {
                    preamble: u.max_preamble,
                    part_header: u.max_part_header,
                },
                keep: u.keep,
            })
        })
        .collect()
}

impl App {
    /// Everything the status page shows, as the JSON document (the HTML and the
    /// metrics are rendered from it, so the three never disagree).
    pub fn status_snapshot(&self) -> Value {
        let (app, stats) = (self, &self.stats);
        let counters = stats.routes();
        let routes: Vec<Value> = counters
            .iter()
            .map(|r| {
                json!({
                    "route": &*r.route,
                    "requests": r.requests,
                    "status": {
                        "1xx": r.by_class[0], "2xx": r.by_class[1], "3xx": r.by_class[2],
                        "4xx": r.by_class[3], "5xx": r.by_class[4],
                    },
                    "bytes_out": r.bytes_out,
                    "avg_ms": status::avg_ms(r.seconds, r.requests),
                    "upstream_avg_ms": status::avg_ms(r.upstream_seconds, r.upstream_requests),
                })
            })
            .collect();
        let pools: Vec<Value> = app
            .fastcgi
            .pool_statuses()
            .into_iter()
            .map(|p| {
                let workers: Vec<Value> = p
                    .workers
                    .iter()
                    .map(|w| {
                        json!({
                            "pid": w.pid, "state": w.state,
                            "generation": w.generation, "uptime_secs": w.uptime_secs,
                        })
                    })
                    .collect();
                json!({
                    "pool": p.label, "generation": p.generation, "healthy": !p.failing,
                    "requests": p.requests, "restarts": p.restarts, "workers": workers,
                })
            })
            .collect();
        let backends: Vec<Value> = app
            .fastcgi
            .backends
            .iter()
            .map(|b| {
                json!({
                    "addr": b.name(),
                    "up": b.is_up(),
                    "last_error": if b.is_up() { Value::Null } else { Value::from(b.last_error()) },
                    "in_flight": b.in_flight.load(Ordering::Relaxed),
                    "requests": b.stats.requests.load(Ordering::Relaxed),
                    "connects": b.stats.connects.load(Ordering::Relaxed),
                    "connect_failures": b.stats.connect_failures.load(Ordering::Relaxed),
                })
            })
            .collect();
        let requests: u64 = counters.iter().map(|r| r.requests).sum();
        json!({
            "server": "cgihost",
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "uptime_secs": stats.started.elapsed().as_secs(),
            "started_unix": stats.started_at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs(),
            "config_generation": stats.config_generation.load(Ordering::Relaxed),
            "threads": tokio::runtime::Handle::try_current().map_or(0, |h| h.metrics().num_workers()),
            "connections": {
                "open": stats.connections_open.load(Ordering::Relaxed),
                "total": stats.connections_total.load(Ordering::Relaxed),
            },
            "requests": requests,
            "routes": routes,
            "cgi": {
                "running": app.cgi.groups.len(),
                "max_processes": app.cgi.max_processes(),
            },
            "fastcgi_pools": pools,
            "fastcgi_backends": backends,
            "acme": app.acme.as_ref().map(|a| a.status()),
        })
    }
}

/// The application serving new requests, and the TLS acceptor for new
/// connections; a reload swaps both.
pub struct Live {
    current: ArcSwap<App>,
    tls: ArcSwapOption<TlsAcceptor>,
    /// Replaced applications whose pools are being stopped.
    retiring: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Shutting down: no more reloads.
    closing: AtomicBool,
}

impl Live {
    pub fn new(app: Arc<App>, tls: Option<TlsAcceptor>) -> Arc<Live> {
        Arc::new(Live {
            current: ArcSwap::new(app),
            tls: ArcSwapOption::new(tls.map(Arc::new)),
            retiring: Mutex::new(Vec::new()),
            closing: AtomicBool::new(false),
        })
    }

    pub fn current(&self) -> Arc<App> {
        self.current.load_full()
    }

    /// The acceptor for new TLS connections.
    pub fn tls(&self) -> Option<TlsAcceptor> {
        self.tls.load().as_deref().cloned()
    }

    /// Build a new application from the current one with `build` and swap
    /// it in (with a new TLS acceptor, when `build` gives one). One
    /// replacement at a time, and none once shutdown has begun; on error
    /// nothing changes.
    pub fn replace<E: From<ConfigError>>(
        &self,
        build: impl FnOnce(&Arc<App>) -> Result<(Arc<App>, Option<TlsAcceptor>), E>,
    ) -> Result<Arc<App>, E> {
        // `closing` is set under this same lock.
        let mut retiring = self.retiring.lock().unwrap_or_else(|p| p.into_inner());
        if self.closing.load(Ordering::Relaxed) {
            return Err(ConfigError("shutting down; not reloading".into()).into());
        }
        let old = self.current();
        let (new, tls) = build(&old)?;
        if let Some(acceptor) = tls {
            self.tls.store(Some(Arc::new(acceptor)));
            tracing::info!("TLS certificate reloaded");
        }
        self.current.store(new.clone());
        // Only now that the new configuration serves: the pools it kept
        // start a fresh generation (edited code is picked up).
        new.fastcgi.reload_carried();
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
        Ok(new)
    }

    /// Shutdown has begun: the health endpoint answers 503 from now on
    /// (requests are still served until the listeners close).
    pub fn start_draining(&self) {
        self.current().draining.store(true, Ordering::Relaxed);
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
