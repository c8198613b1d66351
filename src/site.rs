//! Sites: the default one (top-level keys) and each `[[site]]` (a
//! virtual host), each with its own root, `[[alias]]` dirs, compiled
//! rules and counters. [`Sites::pick`] chooses one by the request's host:
//! `Host`, or `:authority` over HTTP/2, port stripped, case-insensitive;
//! an unknown host gets the default site.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{Config, ConfigError, HostPattern, SiteRules};
use crate::meta::ExtraVars;
use crate::rules::Rules;
use crate::static_files::{CacheLimits, StaticFiles};
use crate::stats::{RouteCounters, RouteKind, Stats};
use crate::uri_path::{without_port, SafePath};

/// A directory files and `*.EXT` scripts are looked up in: the root, or
/// an `[[alias]]` dir at its URL prefix.
pub struct FileDir {
    /// Prefix segments (empty for the root).
    pub prefix: Vec<String>,
    /// `/phpmyadmin`, or `""` for the root.
    pub url_prefix: String,
    /// Canonical directory.
    pub dir: PathBuf,
    pub statics: StaticFiles,
}

/// One site.
pub struct Site {
    /// `default`, or the first host name: for logs and the status page.
    pub name: Arc<str>,
    hosts: Vec<HostPattern>,
    /// `None`: the default site; else the `[[site]]` index.
    pub index: Option<usize>,
    pub settings: SiteRules,
    pub rules: Rules,
    /// The root (canonical) and its static files.
    pub root: FileDir,
    /// `[[alias]]` dirs, longest prefix first.
    pub aliases: Vec<FileDir>,
    /// Which FastCGI route group the site uses.
    pub fastcgi_group: usize,
    /// `[cgi] env`.
    pub cgi_env: Option<ExtraVars>,
    pub counters: SiteCounters,
}

/// Where a site's requests are counted on the status page.
pub struct SiteCounters {
    pub cgi: Arc<RouteCounters>,
    pub statics: Arc<RouteCounters>,
    /// Requests a rule answered (redirect, 401, 403); only for a site
    /// with rules.
    pub rules: Option<Arc<RouteCounters>>,
}

impl Site {
    /// The dir a path's files live in (an alias, or the root) and the
    /// path relative to it.
    pub fn file_dir(&self, path: &SafePath) -> (&FileDir, SafePath) {
        let dir = self.dir(self.alias_of(path)).unwrap_or(&self.root);
        let rel = SafePath {
            segments: path.segments[dir.prefix.len()..].to_vec(),
            trailing_slash: path.trailing_slash,
        };
        (dir, rel)
    }

    /// Which alias a path's files live in (None: the root).
    pub fn alias_of(&self, path: &SafePath) -> Option<usize> {
        self.aliases
            .iter()
            .position(|a| path.segments.starts_with(&a.prefix))
    }

    /// The alias at `index` (from [`Site::alias_of`]), or the root.
    pub fn dir(&self, alias: Option<usize>) -> Option<&FileDir> {
        match alias {
            Some(i) => self.aliases.get(i),
            None => Some(&self.root),
        }
    }

    /// The site's root, canonical.
    pub fn document_root(&self) -> &Path {
        &self.root.dir
    }
}

/// Every site of a configuration: index 0 is the default.
pub struct Sites {
    list: Vec<Site>,
    /// Only the default site: skip the host look-up.
    single: bool,
}

impl Sites {
    pub fn new(
        config: &Config,
        hidden: Option<&PathBuf>,
        fastcgi_group: impl Fn(Option<usize>) -> usize,
        stats: &Stats,
    ) -> Result<Sites, ConfigError> {
        let mut list = vec![Site::build(
            config,
            "default",
            Vec::new(),
            None,
            &config.root,
            &config.rules,
            hidden,
            fastcgi_group(None),
            stats,
        )?];
        for (i, s) in config.sites.iter().enumerate() {
            let name = s
                .hosts
                .first()
                .map(|h| match h {
                    HostPattern::Exact(n) => n.clone(),
                    HostPattern::Suffix(n) => format!("*{n}"),
                })
                .unwrap_or_default();
            list.push(Site::build(
                config,
                &name,
                s.hosts.clone(),
                Some(i),
                &s.root,
                &s.rules,
                hidden,
                fastcgi_group(Some(i)),
                stats,
            )?);
        }
        Ok(Sites {
            single: list.len() == 1,
            list,
        })
    }

    /// The site for a request's host (`Host` or `:authority`).
    pub fn pick(&self, host: Option<&str>) -> &Site {
        self.pick_position(host).1
    }

    /// The site for a host, and its position (for [`Sites::at`]).
    pub fn pick_position(&self, host: Option<&str>) -> (usize, &Site) {
        if self.single {
            return (0, &self.list[0]);
        }
        let Some(host) = host.map(host_name) else {
            return (0, &self.list[0]);
        };
        self.list
            .iter()
            .enumerate()
            .skip(1)
            .find(|(_, s)| s.hosts.iter().any(|h| h.matches(&host)))
            .unwrap_or((0, &self.list[0]))
    }

    /// The site at `position` (from [`Sites::pick_position`]); the
    /// default site for anything else.
    pub fn at(&self, position: usize) -> &Site {
        self.list.get(position).unwrap_or(&self.list[0])
    }

    pub fn default_site(&self) -> &Site {
        &self.list[0]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Site> {
        self.list.iter()
    }
}

/// `Example.ORG:8080` → `example.org`; `[::1]:80` → `[::1]`.
fn host_name(host: &str) -> String {
    without_port(host)
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

impl Site {
    #[allow(clippy::too_many_arguments)]
    fn build(
        config: &Config,
        name: &str,
        hosts: Vec<HostPattern>,
        index: Option<usize>,
        root: &Path,
        settings: &SiteRules,
        hidden: Option<&PathBuf>,
        fastcgi_group: usize,
        stats: &Stats,
    ) -> Result<Site, ConfigError> {
        let key = index.map_or(String::new(), |i| format!("site[{i}]."));
        let dir = |url_prefix: &str, dir: &Path| -> Result<FileDir, ConfigError> {
            let canonical = std::fs::canonicalize(dir)
                .map_err(|e| ConfigError(format!("{key}root: {}: {e}", dir.display())))?;
            let statics = StaticFiles::new(
                canonical.clone(),
                hidden.cloned(),
                config.cache_control.as_deref(),
                settings.index.clone(),
                settings.follow_symlinks,
                CacheLimits::from_config(config),
            )
            .map_err(|e| ConfigError(format!("{key}root: {}: {e}", dir.display())))?;
            Ok(FileDir {
                prefix: SafePath::parse(url_prefix)
                    .map(|p| p.segments)
                    .unwrap_or_default(),
                url_prefix: url_prefix.to_string(),
                dir: canonical,
                statics,
            })
        };
        let root = dir("", root)?;
        let aliases = settings
            .aliases
            .iter()
            .map(|a| dir(&a.prefix, &a.dir))
            .collect::<Result<_, _>>()?;
        let rules = Rules::new(settings).map_err(|e| ConfigError(format!("{key}{e}")))?;
        let label = |kind: RouteKind| match index {
            None => stats.route(kind, kind.name()),
            Some(_) => stats.route(kind, &format!("{name} {}", kind.name())),
        };
        Ok(Site {
            name: name.into(),
            hosts,
            index,
            settings: settings.clone(),
            rules,
            root,
            aliases,
            fastcgi_group,
            cgi_env: (!settings.cgi_env.is_empty())
                .then(|| ExtraVars(settings.cgi_env.clone().into())),
            counters: SiteCounters {
                cgi: label(RouteKind::Cgi),
                statics: label(RouteKind::Static),
                rules: settings.has_rules().then(|| label(RouteKind::Rules)),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_lose_port_case_and_trailing_dot() {
        assert_eq!(host_name("Example.ORG:8080"), "example.org");
        assert_eq!(host_name("example.org."), "example.org");
        assert_eq!(host_name("[::1]:80"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
        assert_eq!(host_name("wiki"), "wiki");
    }
}
