//! The sites-and-rules keys as a person writes them (the serde model of
//! the top-level site keys and of `[[site]]`) and their parsing into the
//! typed values of `site.rs`, every error naming `file:line` and key.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::file::FileRoute;
use super::site::{
    parse_network, Access, Alias, Auth, EncodedSlashes, FollowSymlinks, PathMatch, Redirect,
    Rewrite, SiteRules,
};
use super::{err, ConfigError};

/// Where a key was written, for error messages: `file:line`.
pub(super) struct Source<'a> {
    pub(super) name: &'a str,
    pub(super) text: &'a str,
}

impl Source<'_> {
    pub(super) fn at(&self, span: Range<usize>) -> String {
        let before = &self.text[..span.start.min(self.text.len())];
        format!("{}:{}", self.name, before.matches('\n').count() + 1)
    }
}

/// The keys a site may set, as written (top level, or in `[[site]]`).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct FileSite {
    pub(super) hosts: Vec<String>,
    pub(super) root: Option<PathBuf>,
    pub(super) index: Option<Vec<String>>,
    pub(super) follow_symlinks: Option<FileFollow>,
    pub(super) encoded_slashes: Option<String>,
    pub(super) alias: Vec<Spanned<FileAlias>>,
    pub(super) fastcgi: Vec<FileRoute>,
    pub(super) cgi: Option<FileSiteCgi>,
    pub(super) redirect: Vec<Spanned<FileRedirect>>,
    pub(super) rewrite: Vec<Spanned<FileRewrite>>,
    pub(super) access: Vec<Spanned<FileAccess>>,
    pub(super) auth: Vec<Spanned<FileAuth>>,
    pub(super) errors: Option<Spanned<BTreeMap<String, String>>>,
    /// A certificate for `hosts` from the ACME CA (config/acme.rs).
    pub(super) acme: Option<bool>,
}

/// `follow_symlinks = true | false | "owner"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum FileFollow {
    Flag(bool),
    Word(String),
}

/// `[cgi]` inside a `[[site]]`: only `env`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct FileSiteCgi {
    pub(super) env: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAlias {
    prefix: String,
    dir: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRedirect {
    #[serde(rename = "match")]
    matcher: String,
    to: String,
    #[serde(default = "default_redirect_status")]
    status: u16,
}

fn default_redirect_status() -> u16 {
    302
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRewrite {
    #[serde(rename = "match")]
    matcher: String,
    to: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAccess {
    #[serde(rename = "match")]
    matcher: String,
    deny: Option<bool>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default = "yes")]
    scripts: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAuth {
    #[serde(rename = "match")]
    matcher: String,
    realm: String,
    htpasswd: PathBuf,
    methods: Option<Vec<String>>,
}

impl SiteRules {
    /// The site keys of `f` over `self` (the inherited settings).
    pub(super) fn apply(
        &mut self,
        key: &str,
        f: &mut FileSite,
        src: &Source,
    ) -> Result<(), ConfigError> {
        if let Some(index) = f.index.take() {
            for name in &index {
                if name.is_empty() || name.contains('/') || name.starts_with('.') {
                    return err(format!("{key}index: '{name}' is not a plain file name"));
                }
            }
            self.index = index;
        }
        if let Some(follow) = f.follow_symlinks.take() {
            self.follow_symlinks = match follow {
                FileFollow::Flag(true) => FollowSymlinks::Yes,
                FileFollow::Flag(false) => FollowSymlinks::No,
                FileFollow::Word(w) if w == "owner" => FollowSymlinks::Owner,
                FileFollow::Word(w) => {
                    return err(format!(
                        "{key}follow_symlinks: '{w}' is not true, false or \"owner\""
                    ))
                }
            };
        }
        if let Some(mode) = f.encoded_slashes.take() {
            self.encoded_slashes = match mode.as_str() {
                "reject" => EncodedSlashes::Reject,
                "keep" => EncodedSlashes::Keep,
                _ => {
                    return err(format!(
                        "{key}encoded_slashes: '{mode}' is not \"reject\" or \"keep\""
                    ))
                }
            };
        }
        if let Some(cgi) = f.cgi.take() {
            self.cgi_env = env_pairs(&format!("{key}cgi.env"), cgi.env)?;
        }
        if let Some(errors) = f.errors.take() {
            let at = src.at(errors.span());
            self.errors = errors
                .into_inner()
                .into_iter()
                .map(|(status, path)| error_page(&at, key, &status, path))
                .collect::<Result<_, _>>()?;
        }
        self.aliases = aliases(key, &f.alias, src)?;
        self.redirects = each(key, "redirect", &f.redirect, src, redirect)?;
        self.rewrites = each(key, "rewrite", &f.rewrite, src, rewrite)?;
        self.access = each(key, "access", &f.access, src, access)?;
        self.auth = each(key, "auth", &f.auth, src, auth)?;
        Ok(())
    }
}

/// Parse every rule of one kind, each error naming `file:line` and key.
fn each<F, T>(
    key: &str,
    kind: &str,
    rules: &[Spanned<F>],
    src: &Source,
    parse: impl Fn(&str, &str, &F) -> Result<T, ConfigError>,
) -> Result<Vec<T>, ConfigError> {
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| parse(&src.at(r.span()), &format!("{key}{kind}[{i}]"), r.get_ref()))
        .collect()
}

fn redirect(at: &str, key: &str, r: &FileRedirect) -> Result<Redirect, ConfigError> {
    if ![301, 302, 303, 307, 308].contains(&r.status) {
        return err(format!(
            "{at}: {key}.status: {} is not 301, 302, 303, 307 or 308",
            r.status
        ));
    }
    check_target(at, key, &r.to, true)?;
    Ok(Redirect {
        matcher: PathMatch::parse(&format!("{key}.match"), at, &r.matcher)?,
        to: r.to.clone(),
        status: r.status,
        origin: format!("{at} ({key})"),
    })
}

fn rewrite(at: &str, key: &str, r: &FileRewrite) -> Result<Rewrite, ConfigError> {
    check_target(at, key, &r.to, false)?;
    Ok(Rewrite {
        matcher: PathMatch::parse(&format!("{key}.match"), at, &r.matcher)?,
        to: r.to.clone(),
        origin: format!("{at} ({key})"),
    })
}

/// A rule's `to`: a local path (or, for a redirect, an absolute URL) whose
/// `$N` references stay within what a regex can capture.
fn check_target(at: &str, key: &str, to: &str, may_be_url: bool) -> Result<(), ConfigError> {
    let url = may_be_url && (to.starts_with("http://") || to.starts_with("https://"));
    if !url && !to.starts_with('/') {
        return err(format!(
            "{at}: {key}.to: '{to}' must start with / {}",
            if may_be_url { "or http(s)://" } else { "" }
        ));
    }
    if to.chars().any(|c| c.is_control() || c == ' ' || c == '#') {
        return err(format!(
            "{at}: {key}.to: no spaces, control characters or '#'"
        ));
    }
    Ok(())
}

fn access(at: &str, key: &str, r: &FileAccess) -> Result<Access, ConfigError> {
    let allow = r
        .allow
        .iter()
        .map(|a| parse_network(a).map_err(|e| ConfigError(format!("{at}: {key}.allow: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Access {
        matcher: PathMatch::parse(&format!("{key}.match"), at, &r.matcher)?,
        // `allow` alone means "only these".
        deny: r.deny.unwrap_or(!allow.is_empty()),
        allow,
        scripts: r.scripts,
        origin: format!("{at} ({key})"),
    })
}

fn auth(at: &str, key: &str, r: &FileAuth) -> Result<Auth, ConfigError> {
    if r.realm.is_empty() || r.realm.contains(['"', '\\']) || r.realm.chars().any(char::is_control)
    {
        return err(format!(
            "{at}: {key}.realm: must be non-empty, without quotes, backslashes or control characters"
        ));
    }
    let methods = r
        .methods
        .iter()
        .flatten()
        .map(|m| {
            http::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .map_err(|_| ConfigError(format!("{at}: {key}.methods: '{m}' is not a method")))
        })
        .collect::<Result<_, _>>()?;
    Ok(Auth {
        matcher: PathMatch::parse(&format!("{key}.match"), at, &r.matcher)?,
        realm: r.realm.clone(),
        htpasswd: r.htpasswd.clone(),
        methods,
        origin: format!("{at} ({key})"),
    })
}

fn aliases(
    key: &str,
    list: &[Spanned<FileAlias>],
    src: &Source,
) -> Result<Vec<Alias>, ConfigError> {
    let mut out: Vec<Alias> = Vec::new();
    for (i, a) in list.iter().enumerate() {
        let at = src.at(a.span());
        let a = a.get_ref();
        let prefix = a.prefix.trim_end_matches('/');
        let clean = prefix.starts_with('/')
            && !prefix.contains("//")
            && !prefix.split('/').any(|s| s == ".." || s == ".");
        if !clean {
            return err(format!(
                "{at}: {key}alias[{i}].prefix: '{}' must be a clean URL prefix like /phpmyadmin",
                a.prefix
            ));
        }
        if !a.dir.is_dir() {
            return err(format!(
                "{at}: {key}alias[{i}].dir: {} is not a directory",
                a.dir.display()
            ));
        }
        out.push(Alias {
            prefix: prefix.to_string(),
            dir: a.dir.clone(),
        });
    }
    // Longest prefix first, so /a/b wins over /a.
    out.sort_by_key(|a| std::cmp::Reverse(a.prefix.len()));
    Ok(out)
}

fn error_page(
    at: &str,
    key: &str,
    status: &str,
    path: String,
) -> Result<(u16, String), ConfigError> {
    let code: u16 = status
        .parse()
        .ok()
        .filter(|c| (400..=599).contains(c))
        .ok_or_else(|| {
            ConfigError(format!(
                "{at}: {key}errors: '{status}' is not a 4xx or 5xx status"
            ))
        })?;
    if !path.starts_with('/') || path.contains("..") {
        return err(format!(
            "{at}: {key}errors.{status}: '{path}' must be a local URL path"
        ));
    }
    Ok((code, path))
}

/// `{ NAME = "value" }` → pairs; names must be usable as variables.
pub(super) fn env_pairs(
    key: &str,
    map: BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, ConfigError> {
    map.into_iter()
        .map(|(k, v)| {
            let ok = !k.is_empty()
                && !k.starts_with(|c: char| c.is_ascii_digit())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return err(format!("{key}: '{k}' is not a variable name"));
            }
            if v.contains('\0') {
                return err(format!("{key}.{k}: NUL in the value"));
            }
            Ok((k, v))
        })
        .collect()
}
