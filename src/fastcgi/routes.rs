//! Building the FastCGI routes of one configuration: the backends (one
//! per address, shared by the routes that name it), the route groups
//! (the top level's, and each `[[site]]`'s own), the spawned pools and
//! their private runtime directory, carried over on a reload when their
//! definition is unchanged.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::pool::{Backend, Balancer};
use super::supervisor::PoolHandle;
use super::{env, sendfile, FastCgi, Route, Upstream};
use crate::config::{BackendAddr, Config, ConfigError, FastCgiRoute, RouteMatch, SpawnRoute};
use crate::stats::{RouteCounters, RouteKind, Stats};
use crate::uri_path::SafePath;

impl FastCgi {
    /// Build the routes; spawned pools start their workers now (inside
    /// the runtime), in a private runtime directory.
    ///
    /// `previous` (on a reload): pools whose definition is unchanged are
    /// carried over, running (`reload_carried` gives them a fresh
    /// generation once the new configuration serves); only new or changed
    /// pools start from nothing.
    pub fn new(
        config: &Config,
        previous: Option<&FastCgi>,
        stats: &Stats,
    ) -> Result<FastCgi, ConfigError> {
        let mut backends = Backends::default();
        let mut groups = vec![RouteGroup::default()];
        for r in &config.fastcgi {
            let route = fixed_route(config, r, &mut backends, stats, "")?;
            groups[0].push(&r.matcher, Arc::new(route));
        }
        let mut site_groups = Vec::new();
        for site in &config.sites {
            let Some(routes) = &site.fastcgi else {
                site_groups.push(0);
                continue;
            };
            let mut group = RouteGroup::default();
            let name = site
                .hosts
                .first()
                .map(|h| format!("{h:?} "))
                .unwrap_or_default();
            for r in routes {
                let route = fixed_route(config, r, &mut backends, stats, &name)?;
                group.push(&r.matcher, Arc::new(route));
            }
            site_groups.push(groups.len());
            groups.push(group);
        }
        let runtime_dir = pools_runtime_dir(config, previous)?;
        let mut spawned = Vec::new();
        let mut carried_pools = Vec::new();
        for r in &config.spawn {
            let dir = runtime_dir
                .as_ref()
                .map_or(std::path::Path::new("/"), |d| d.path());
            let carried = previous
                .and_then(|p| p.spawned.iter().find(|(old, _)| old.same_pool(r)))
                .map(|(_, pool)| pool.clone());
            let pool = match carried {
                Some(pool) => {
                    carried_pools.push(spawned.len());
                    pool
                }
                None => Arc::new(
                    PoolHandle::start(r.clone(), dir, config.shutdown_grace).map_err(|e| {
                        ConfigError(format!("{}: cannot start the pool: {e}", r.key))
                    })?,
                ),
            };
            spawned.push((r.clone(), pool.clone()));
            let tag = stats.route(RouteKind::Spawn, &format!("spawn {}", r.label()));
            let route = Arc::new(spawn_route(config, r, pool, tag));
            // Spawned pools serve every site.
            for group in &mut groups {
                group.push(&r.matcher, route.clone());
            }
        }
        Ok(FastCgi {
            groups,
            site_groups,
            backends: backends.list,
            runtime_dir: Mutex::new(runtime_dir),
            spawned,
            carried: carried_pools,
            server: env::ServerFacts::new(config.cgi.pass_authorization),
            max_header: config.cgi.max_response_header,
            spool_dir: config.spool_dir.clone().unwrap_or_else(std::env::temp_dir),
            connect_timeout: config.fastcgi_connect_timeout,
            queue_timeout: config.cgi.queue_timeout,
            shutdown_grace: config.shutdown_grace,
            counters: stats.fastcgi.clone(),
        })
    }

    /// The route group of `[[site]]` number `site` (`None`: the default site).
    pub fn group_of_site(&self, site: Option<usize>) -> usize {
        site.and_then(|i| self.site_groups.get(i).copied())
            .unwrap_or(0)
    }
}

/// The routes one site sees: the top-level `[[fastcgi]]` (group 0) or a
/// `[[site]]`'s own, plus every spawned pool's.
#[derive(Default)]
pub(super) struct RouteGroup {
    /// `/prefix` routes, longest prefix first: (prefix segments, route).
    pub(super) prefix_routes: Vec<(Vec<String>, Arc<Route>)>,
    /// `*.EXT` routes in configuration order, and their extensions.
    pub(super) ext_routes: Vec<Arc<Route>>,
    pub(super) extensions: Vec<String>,
}

impl RouteGroup {
    fn push(&mut self, matcher: &RouteMatch, route: Arc<Route>) {
        match matcher {
            RouteMatch::Prefix(p) => {
                let segs = SafePath::parse(p).map(|s| s.segments).unwrap_or_default();
                self.prefix_routes.push((segs, route));
                self.prefix_routes
                    .sort_by_key(|(segs, _)| std::cmp::Reverse(segs.len()));
            }
            RouteMatch::Extension(ext) => {
                self.ext_routes.push(route);
                self.extensions.push(ext.clone());
            }
        }
    }
}

/// A spawned pool's route.
fn spawn_route(
    config: &Config,
    r: &SpawnRoute,
    pool: Arc<PoolHandle>,
    tag: Arc<RouteCounters>,
) -> Route {
    Route {
        label: r.label(),
        tag,
        upstream: Upstream::Spawned(pool),
        idle: r.idle_timeout.unwrap_or(config.cgi.timeout),
        request_timeout: r.request_timeout,
        max_body: r.max_body.or(config.max_body),
        fallback: None,
        params: Default::default(),
        x_sendfile: None,
    }
}

/// The `--fastcgi` backends, one per address, shared by the routes that
/// name it.
#[derive(Default)]
struct Backends {
    by_addr: HashMap<BackendAddr, Arc<Backend>>,
    list: Vec<Arc<Backend>>,
}

impl Backends {
    fn balancer(&mut self, addrs: &[BackendAddr], max_conns: usize, idle: Duration) -> Balancer {
        let list = addrs
            .iter()
            .map(|a| {
                self.by_addr
                    .entry(a.clone())
                    .or_insert_with(|| {
                        let b = Backend::new(a.clone(), max_conns, idle);
                        self.list.push(b.clone());
                        b
                    })
                    .clone()
            })
            .collect();
        Balancer::new(list)
    }
}

/// A `[[fastcgi]]` route to fixed addresses (`site`: its label prefix).
fn fixed_route(
    config: &Config,
    r: &FastCgiRoute,
    backends: &mut Backends,
    stats: &Stats,
    site: &str,
) -> Result<Route, ConfigError> {
    Ok(Route {
        label: r.matcher.to_string(),
        tag: stats.route(RouteKind::FastCgi, &format!("{site}fastcgi {}", r.matcher)),
        upstream: Upstream::Fixed(backends.balancer(
            &r.addrs,
            config.fastcgi_max_conns,
            config.fastcgi_idle_timeout,
        )),
        idle: r.timeout.unwrap_or(config.cgi.timeout),
        request_timeout: None,
        max_body: r.max_body.or(config.max_body),
        fallback: r.fallback.clone(),
        params: crate::meta::ExtraVars(r.params.clone().into()),
        x_sendfile: if r.x_sendfile.is_empty() {
            None
        } else {
            Some(sendfile::SendFileDirs::new(
                &r.x_sendfile,
                config.cache_control.as_deref(),
            )?)
        },
    })
}

/// The private runtime directory of the spawned pools' sockets: the
/// previous configuration's, or a new one (none without pools).
fn pools_runtime_dir(
    config: &Config,
    previous: Option<&FastCgi>,
) -> Result<Option<Arc<tempfile::TempDir>>, ConfigError> {
    if config.spawn.is_empty() {
        return Ok(None);
    }
    let inherited = previous.and_then(|p| {
        p.runtime_dir
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    });
    if inherited.is_some() {
        return Ok(inherited);
    }
    let dir = runtime_dir().map_err(|e| {
        ConfigError(format!(
            "--spawn: cannot create a private runtime directory: {e}"
        ))
    })?;
    tracing::info!(
        "spawned pools listen on sockets in {}",
        dir.path().display()
    );
    Ok(Some(Arc::new(dir)))
}

/// Runtime dirs of cgihost processes that are gone (killed with SIGKILL,
/// they could not clean up): ours (same owner) whose pid no longer exists.
/// `remove_dir_all` does not follow a symlink planted under that name.
fn remove_stale_runtime_dirs(base: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: plain syscall without arguments.
    let uid = unsafe { libc::geteuid() };
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("cgihost-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let ours = e
            .path()
            .symlink_metadata()
            .is_ok_and(|m| m.is_dir() && m.uid() == uid);
        if ours && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// `$XDG_RUNTIME_DIR` (else the temp dir) `/cgihost-PID-XXXXXX`, mode 0700:
/// only our user can reach the pools' sockets (a FastCGI socket runs
/// whatever SCRIPT_FILENAME it is told to).
fn runtime_dir() -> std::io::Result<tempfile::TempDir> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    remove_stale_runtime_dirs(&base);
    let dir = tempfile::Builder::new()
        .prefix(&format!("cgihost-{}-", std::process::id()))
        .tempdir_in(base)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}
