//! Sites and rules (SPEC.md "Sites and rules"): the keys real applications
//! need — directory index names, symlink policy, encoded slashes,
//! `[[alias]]`, `[[redirect]]`, `[[rewrite]]`, `[[access]]`, `[[auth]]`,
//! `[errors]` — for the default site (top-level keys) and for each
//! `[[site]]` (a virtual host), parsed into typed values: every regex
//! compiled, every network parsed, every status checked, so a mistake
//! fails at start or `--check-config` with the file, line and key.
//!
//! A `[[site]]` starts from the top-level `root`, `index`,
//! `follow_symlinks`, `encoded_slashes`, `[[fastcgi]]`, `[cgi] env` and
//! `[errors]`, and replaces those it sets. Rule lists (`[[alias]]`,
//! `[[redirect]]`, `[[rewrite]]`, `[[access]]`, `[[auth]]`) belong to
//! the one site that names them.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use regex::Regex;

use super::{err, ConfigError};

/// Which paths a rule takes: a URL-path prefix on a segment boundary, or
/// a regex (`~REGEX`).
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// Without its trailing slash: `/vendor` takes `/vendor` and `/vendor/…`.
    Prefix(String),
    Regex(Regex),
}

impl PathMatch {
    pub(super) fn parse(key: &str, at: &str, text: &str) -> Result<PathMatch, ConfigError> {
        if let Some(pattern) = text.strip_prefix('~') {
            return Regex::new(pattern).map(PathMatch::Regex).map_err(|e| {
                let why = e.to_string().replace('\n', " ");
                ConfigError(format!("{at}: {key}: bad regex: {why}"))
            });
        }
        if !text.starts_with('/') || text.contains("//") || text.split('/').any(|s| s == "..") {
            return err(format!(
                "{at}: {key}: '{text}' is neither a clean URL prefix (/dir/) nor ~REGEX"
            ));
        }
        Ok(PathMatch::Prefix(text.trim_end_matches('/').to_string()))
    }

    /// Whether `path` (a decoded path, `/`-rooted) is taken by the prefix;
    /// a regex is matched by the caller (in one set per rule kind).
    pub fn prefix_takes(prefix: &str, path: &str) -> bool {
        prefix.is_empty()
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

impl std::fmt::Display for PathMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathMatch::Prefix(p) => write!(f, "{p}/"),
            PathMatch::Regex(r) => write!(f, "~{}", r.as_str()),
        }
    }
}

/// `follow_symlinks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FollowSymlinks {
    /// Never out of the root or alias dir (the default).
    #[default]
    No,
    /// Anywhere (nginx, lighttpd, Caddy).
    Yes,
    /// Only where the link and its target have one owner (Apache's
    /// SymLinksIfOwnerMatch).
    Owner,
}

/// `encoded_slashes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncodedSlashes {
    #[default]
    Reject,
    /// `%2F` stays encoded in PATH_INFO and REQUEST_URI; never a separator.
    Keep,
}

#[derive(Debug, Clone)]
pub struct Alias {
    /// A clean URL prefix without trailing slash, e.g. `/phpmyadmin`.
    pub prefix: String,
    pub dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Redirect {
    pub matcher: PathMatch,
    pub to: String,
    pub status: u16,
    /// `file:line`, for logs.
    pub origin: String,
}

#[derive(Debug, Clone)]
pub struct Rewrite {
    pub matcher: PathMatch,
    pub to: String,
    pub origin: String,
}

#[derive(Debug, Clone)]
pub struct Access {
    pub matcher: PathMatch,
    pub deny: bool,
    pub allow: Vec<IpNet>,
    /// false: nothing under `matcher` runs as CGI/FastCGI (403).
    pub scripts: bool,
    pub origin: String,
}

#[derive(Debug, Clone)]
pub struct Auth {
    pub matcher: PathMatch,
    pub realm: String,
    pub htpasswd: PathBuf,
    /// Only these methods need a user; empty: all.
    pub methods: Vec<http::Method>,
    pub origin: String,
}

/// What one site serves with, beyond the routes.
#[derive(Debug, Clone)]
pub struct SiteRules {
    pub index: Vec<String>,
    pub follow_symlinks: FollowSymlinks,
    pub encoded_slashes: EncodedSlashes,
    pub aliases: Vec<Alias>,
    /// Extra CGI variables (`[cgi] env`).
    pub cgi_env: Vec<(String, String)>,
    pub redirects: Vec<Redirect>,
    pub rewrites: Vec<Rewrite>,
    pub access: Vec<Access>,
    pub auth: Vec<Auth>,
    /// `[errors]`: status → a URL path served for it.
    pub errors: Vec<(u16, String)>,
}

impl Default for SiteRules {
    fn default() -> Self {
        SiteRules {
            index: vec!["index.html".into(), "index.php".into()],
            follow_symlinks: FollowSymlinks::No,
            encoded_slashes: EncodedSlashes::Reject,
            aliases: Vec::new(),
            cgi_env: Vec::new(),
            redirects: Vec::new(),
            rewrites: Vec::new(),
            access: Vec::new(),
            auth: Vec::new(),
            errors: Vec::new(),
        }
    }
}

impl SiteRules {
    /// Any rule that needs evaluating per request (the fast path skips
    /// the rules when there is none).
    pub fn has_rules(&self) -> bool {
        !(self.redirects.is_empty()
            && self.rewrites.is_empty()
            && self.access.is_empty()
            && self.auth.is_empty())
    }
}

/// `10.0.0.0/8`, `::1`, `127.0.0.1`: an address is a network of one.
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("'{text}' is not an address or CIDR network"))
}

/// A `[[site]]` `hosts` entry: `example.org` or `*.example.org`, lower
/// case, no port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.org`: stored as `.example.org`; any subdomain, not the
    /// name itself.
    Suffix(String),
}

impl HostPattern {
    pub(super) fn parse(key: &str, text: &str) -> Result<HostPattern, ConfigError> {
        let lower = text.trim().to_ascii_lowercase();
        let name = lower.strip_prefix("*.").unwrap_or(&lower);
        let ok = !name.is_empty()
            && name.chars().all(|c| {
                c.is_ascii_alphanumeric()
                    || c == '-'
                    || c == '.'
                    || c == ':'
                    || c == '['
                    || c == ']'
            });
        if !ok || name.starts_with('.') || name.ends_with('.') {
            return err(format!(
                "{key}: '{text}' is not a host name (a port is not part of it)"
            ));
        }
        Ok(match lower.strip_prefix('*') {
            Some(suffix) => HostPattern::Suffix(suffix.to_string()),
            None => HostPattern::Exact(lower),
        })
    }

    /// `host`: lower case, without port.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }
}

/// One `[[site]]`: its names, root, routes and rules.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    pub hosts: Vec<HostPattern>,
    pub root: PathBuf,
    pub rules: SiteRules,
    /// Its own `[[fastcgi]]` routes; `None`: the top-level ones.
    pub fastcgi: Option<Vec<super::FastCgiRoute>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_take_whole_segments() {
        let p = |m: &str, path: &str| PathMatch::prefix_takes(m, path);
        assert!(p("/vendor", "/vendor"));
        assert!(p("/vendor", "/vendor/a.php"));
        assert!(!p("/vendor", "/vendors"));
        assert!(p("", "/anything"));
    }

    #[test]
    fn networks_and_hosts_parse() {
        assert_eq!(
            parse_network("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(parse_network("::1").unwrap().to_string(), "::1/128");
        assert!(parse_network("10.0.0.0/33").is_err());
        assert!(parse_network("localhost").is_err());
        let wild = HostPattern::parse("k", "*.Wiki.example.org").unwrap();
        assert!(wild.matches("a.wiki.example.org"));
        assert!(!wild.matches("wiki.example.org"));
        assert!(!wild.matches("xwiki.example.org"));
        assert!(HostPattern::parse("k", "example.org")
            .unwrap()
            .matches("example.org"));
        assert!(HostPattern::parse("k", "bad host").is_err());
    }
}
