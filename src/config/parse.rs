//! Parsing and checking single values of the configuration (flags and
//! file alike): addresses, sizes, route matches, `[[fastcgi]]` routes and
//! the small checks `Config::validate` makes. Every error names its key.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use super::file::FileRoute;
use super::{err, site_file, BackendAddr, ConfigError, FastCgiRoute, LogFormat, RouteMatch};

pub(crate) fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

pub(super) fn parse_socket_addr(key: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| {
        ConfigError(format!(
            "{key}: '{s}' is not an address like 127.0.0.1:8080 or [::1]:8080"
        ))
    })
}

/// `/status` (a clean absolute path, trailing slash dropped).
pub(crate) fn status_path(key: &str, p: &str) -> Result<String, ConfigError> {
    check_prefix(key, p)?;
    let p = p.trim_end_matches('/');
    if p.is_empty() {
        return err(format!("{key}: the status page cannot take over /"));
    }
    Ok(p.to_string())
}

pub(crate) fn parse_ip(key: &str, s: &str) -> Result<IpAddr, ConfigError> {
    s.trim_matches(|c| c == '[' || c == ']')
        .parse()
        .map_err(|_| ConfigError(format!("{key}: '{s}' is not an IP address")))
}

pub(crate) fn parse_log_format(key: &str, s: &str) -> Result<LogFormat, ConfigError> {
    match s {
        "combined" => Ok(LogFormat::Combined),
        "json" => Ok(LogFormat::Json),
        _ => err(format!("{key}: '{s}' is not one of combined, json")),
    }
}

pub(super) fn dir_exists(key: &str, p: &Path) -> Result<(), ConfigError> {
    if !p.is_dir() {
        return err(format!("{key}: {} is not a directory", p.display()));
    }
    Ok(())
}

pub(super) fn check_prefix(key: &str, p: &str) -> Result<(), ConfigError> {
    if !p.starts_with('/') || p.contains("..") || p.contains("//") {
        return err(format!(
            "{key}: '{p}' must be an absolute URL path like /cgi-bin"
        ));
    }
    Ok(())
}

pub(super) fn check_header_value(key: &str, v: Option<&str>) -> Result<(), ConfigError> {
    match v {
        Some(v) if v.trim().is_empty() || http::HeaderValue::from_str(v).is_err() => err(format!(
            "{key}: '{}' is not a valid header value",
            v.escape_debug()
        )),
        _ => Ok(()),
    }
}

/// `10G`, `512M`, `64K` or plain bytes; powers of 1024.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("'{s}': unknown size suffix (use K, M or G)")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 512K, 10M, 2G)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))
}

pub(crate) fn parse_pair<'a>(key: &str, v: &'a str) -> Result<(&'a str, &'a str), ConfigError> {
    match v.split_once('=') {
        Some((a, b)) if !a.is_empty() && !b.trim().is_empty() => Ok((a, b.trim())),
        _ => err(format!("{key}: '{v}' must look like MATCH=VALUE")),
    }
}

pub(crate) fn parse_match(key: &str, m: &str) -> Result<RouteMatch, ConfigError> {
    if let Some(ext) = m.strip_prefix("*.") {
        if ext.is_empty() || !ext.chars().all(|c| c.is_ascii_alphanumeric()) {
            return err(format!(
                "{key}: '{m}' is not a valid extension match like *.php"
            ));
        }
        return Ok(RouteMatch::Extension(ext.to_string()));
    }
    check_prefix(key, m)?;
    let trimmed = m.trim_end_matches('/');
    Ok(RouteMatch::Prefix(if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.into()
    }))
}

fn parse_addr(key: &str, a: &str) -> Result<BackendAddr, ConfigError> {
    let a = a.trim();
    if let Some(path) = a.strip_prefix("unix:") {
        if path.is_empty() {
            return err(format!("{key}: '{a}' needs a socket path after unix:"));
        }
        return Ok(BackendAddr::Unix(PathBuf::from(path)));
    }
    match a.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(BackendAddr::Tcp(a.to_string()))
        }
        _ => err(format!("{key}: '{a}' is not HOST:PORT or unix:/path")),
    }
}

/// `[[fastcgi]]` tables (`key`: the site's key prefix, or empty).
pub(super) fn file_routes(
    key: &str,
    routes: Vec<FileRoute>,
) -> Result<Vec<FastCgiRoute>, ConfigError> {
    let mut out = Vec::new();
    for (i, r) in routes.into_iter().enumerate() {
        let key = format!("{key}fastcgi[{i}]");
        let mut route = parse_fastcgi(&key, &format!("{}={}", r.matcher, r.addr))?;
        route.timeout = r.timeout.map(Into::into);
        route.max_body = r.max_body.map(Into::into);
        if let Some(fallback) = r.fallback {
            let RouteMatch::Extension(ext) = &route.matcher else {
                return err(format!(
                    "{key}.fallback: only a *.EXT route has a fallback script"
                ));
            };
            let clean = fallback.starts_with('/')
                && !fallback.contains("//")
                && !fallback
                    .split('/')
                    .any(|s| s == ".." || s.starts_with('.') && !s.is_empty());
            if !clean || !fallback.ends_with(&format!(".{ext}")) {
                return err(format!(
                    "{key}.fallback: '{fallback}' must be a clean URL path of a *.{ext} script"
                ));
            }
            route.fallback = Some(fallback);
        }
        route.params = site_file::env_pairs(&format!("{key}.params"), r.params)?;
        for dir in r.x_sendfile {
            let canonical = std::fs::canonicalize(&dir)
                .map_err(|e| ConfigError(format!("{key}.x_sendfile: {}: {e}", dir.display())))?;
            if !canonical.is_dir() {
                return err(format!(
                    "{key}.x_sendfile: {} is not a directory",
                    dir.display()
                ));
            }
            route.x_sendfile.push(canonical);
        }
        out.push(route);
    }
    Ok(out)
}

/// `--fastcgi MATCH=ADDR[,ADDR…]`
pub fn parse_fastcgi(key: &str, v: &str) -> Result<FastCgiRoute, ConfigError> {
    let (m, addrs) = parse_pair(key, v)?;
    let addrs = addrs
        .split(',')
        .map(|a| parse_addr(key, a))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(FastCgiRoute {
        matcher: parse_match(key, m)?,
        addrs,
        timeout: None,
        max_body: None,
        fallback: None,
        params: Vec::new(),
        x_sendfile: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_spawn;

    #[test]
    fn sizes_use_powers_of_1024() {
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("512k").unwrap(), 512 << 10);
        assert_eq!(parse_size("7").unwrap(), 7);
        assert!(parse_size("10X").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }

    #[test]
    fn routes_parse_into_structs() {
        let r = parse_fastcgi("--fastcgi", "*.php=unix:/run/php.sock,127.0.0.1:9000").unwrap();
        assert_eq!(r.matcher, RouteMatch::Extension("php".into()));
        assert_eq!(r.addrs[0], BackendAddr::Unix("/run/php.sock".into()));
        assert_eq!(r.addrs[1], BackendAddr::Tcp("127.0.0.1:9000".into()));
        let s = parse_spawn("--spawn", "/app/=perl 'cgi-bin/my app.fcgi'").unwrap();
        assert_eq!(s.matcher, RouteMatch::Prefix("/app".into()));
        assert_eq!(s.argv, vec!["perl", "cgi-bin/my app.fcgi"]);
        assert!(parse_fastcgi("--fastcgi", "*.php").is_err());
        assert!(parse_fastcgi("--fastcgi", "app=1.2.3.4:9").is_err());
        assert!(parse_fastcgi("--fastcgi", "/app=nohost").is_err());
    }
}
