//! Spawned FastCGI pools in the configuration: `--spawn MATCH=CMD` and
//! `[[spawn]]` tables, resolved into a [`SpawnRoute`] the supervisor can
//! start without looking at cgihost's environment or working directory
//! again.
//!
//! Resolution (SPEC.md "Details"): CMD paths resolve against cgihost's
//! working directory, so the program and every argument that names an
//! existing file become absolute (a pool's `dir` cannot change what CMD
//! means); a bare program name is looked up in `PATH` now, so a typo is a
//! startup error rather than a crash loop. The environment is built here
//! too: `PATH` plus the pool's `env` list, nothing else of cgihost's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::units::{Seconds, Size};
use super::{err, parse_match, parse_pair, ConfigError, RouteMatch};

/// Most workers one pool may have (each is a process and a connection).
const MAX_WORKERS: u32 = 256;
/// `PATH` for workers when cgihost itself has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// A `[[spawn]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileSpawn {
    #[serde(rename = "match")]
    matcher: String,
    cmd: String,
    workers: Option<u32>,
    #[serde(default)]
    max_requests: u64,
    #[serde(default)]
    env: Vec<String>,
    dir: Option<PathBuf>,
    #[serde(default)]
    reload: bool,
    idle_timeout: Option<Seconds>,
    request_timeout: Option<Seconds>,
    max_body: Option<Size>,
}

impl FileSpawn {
    pub(super) fn into_route(self, key: &str) -> Result<SpawnRoute, ConfigError> {
        let mut route = parse_spawn(key, &format!("{}={}", self.matcher, self.cmd))?;
        if self.workers == Some(0) {
            return err(format!("{key}.workers: must be at least 1"));
        }
        route.workers = self.workers.unwrap_or(0);
        route.max_requests = self.max_requests;
        route.env_spec = self.env;
        route.dir = self.dir;
        route.reload = self.reload;
        route.idle_timeout = self.idle_timeout.map(Into::into);
        route.request_timeout = self.request_timeout.map(Into::into);
        route.max_body = self.max_body.map(Into::into);
        route.key = key.to_string();
        Ok(route)
    }
}

/// One spawned pool (`--spawn MATCH=CMD` or a `[[spawn]]` table).
#[derive(Debug, Clone)]
pub struct SpawnRoute {
    pub matcher: RouteMatch,
    /// CMD split like a shell would; after [`SpawnRoute::resolve`], file
    /// arguments are absolute.
    pub argv: Vec<String>,
    /// The program to execute (absolute after `resolve`).
    pub program: PathBuf,
    /// Files whose change reloads the pool (`reload = true`).
    pub watch: Vec<PathBuf>,
    /// Processes in the pool (0 until `resolve`: the `--workers` default).
    pub workers: u32,
    /// Replace the pool after about this many requests per worker; 0 = never.
    pub max_requests: u64,
    /// `NAME=VALUE` to set, or `NAME` to pass through from cgihost's env.
    pub env_spec: Vec<String>,
    /// The workers' whole environment (after `resolve`).
    pub env: Vec<(String, String)>,
    /// Working directory (default: cgihost's).
    pub dir: Option<PathBuf>,
    pub reload: bool,
    /// A worker silent this long mid-request → 504 (default `--cgi-timeout`).
    pub idle_timeout: Option<Duration>,
    /// A whole request must finish within this (default: no limit).
    pub request_timeout: Option<Duration>,
    /// Body limit for this pool's route (default: `max_body`).
    pub max_body: Option<u64>,
    /// The flag or table it came from, for error messages.
    pub key: String,
}

/// `--spawn MATCH=CMD`, CMD split like a shell would (not yet resolved).
pub fn parse_spawn(key: &str, v: &str) -> Result<SpawnRoute, ConfigError> {
    let (m, cmd) = parse_pair(key, v)?;
    let argv = shlex::split(cmd)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| ConfigError(format!("{key}: cannot split command '{cmd}'")))?;
    Ok(SpawnRoute {
        matcher: parse_match(key, m)?,
        program: PathBuf::from(&argv[0]),
        argv,
        watch: Vec::new(),
        workers: 0,
        max_requests: 0,
        env_spec: Vec::new(),
        env: Vec::new(),
        dir: None,
        reload: false,
        idle_timeout: None,
        request_timeout: None,
        max_body: None,
        key: key.to_string(),
    })
}

impl SpawnRoute {
    /// Would start the same workers (route limits may differ): a reload
    /// keeps such a pool running.
    pub fn same_pool(&self, other: &SpawnRoute) -> bool {
        self.matcher == other.matcher
            && self.program == other.program
            && self.argv == other.argv
            && self.workers == other.workers
            && self.max_requests == other.max_requests
            && self.env == other.env
            && self.dir == other.dir
            && self.reload == other.reload
            && self.watch == other.watch
    }

    /// Make paths absolute (against the current directory), find the
    /// program, build the environment, apply the `--workers` default.
    pub fn resolve(&mut self, default_workers: u32) -> Result<(), ConfigError> {
        let key = self.key.clone();
        if self.workers == 0 {
            self.workers = default_workers;
        }
        if self.workers > MAX_WORKERS {
            return err(format!("{key}: at most {MAX_WORKERS} workers per pool"));
        }
        let cwd = std::env::current_dir()
            .map_err(|e| ConfigError(format!("{key}: cannot read the working directory: {e}")))?;
        let path_var = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.into());
        self.program = find_program(&key, &self.argv[0], &cwd, &path_var)?;
        self.watch.clear();
        if self.argv[0].contains('/') {
            self.watch.push(self.program.clone());
        }
        for arg in self.argv.iter_mut().skip(1) {
            if let Some(file) = existing_file(&cwd, arg) {
                *arg = file.to_string_lossy().into_owned();
                self.watch.push(file);
            }
        }
        if let Some(dir) = &self.dir {
            let dir = cwd.join(dir);
            if !dir.is_dir() {
                return err(format!("{key}.dir: {} is not a directory", dir.display()));
            }
            self.dir = Some(dir);
        }
        self.env = build_env(&key, &self.env_spec, &path_var, self.is_php_cgi())?;
        Ok(())
    }

    /// php-cgi forks its own children and exits after 500 requests unless
    /// told otherwise; see [`build_env`].
    fn is_php_cgi(&self) -> bool {
        self.program
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("php-cgi"))
    }

    /// `/app/*` or `*.php`, for route lines and logs.
    pub fn label(&self) -> String {
        self.matcher.to_string()
    }
}

/// An argument that names an existing file relative to `cwd` (or an
/// absolute one), made absolute. Options (`-x`) are left alone.
fn existing_file(cwd: &Path, arg: &str) -> Option<PathBuf> {
    if arg.starts_with('-') || arg.is_empty() {
        return None;
    }
    let p = cwd.join(arg);
    p.is_file().then_some(p)
}

fn find_program(key: &str, name: &str, cwd: &Path, path_var: &str) -> Result<PathBuf, ConfigError> {
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = cwd.join(name);
        if executable(&p) {
            return Ok(p);
        }
        return err(format!(
            "{key}: {} is not an executable file (run it with its interpreter, e.g. 'perl {name}')",
            p.display()
        ));
    }
    path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| cwd.join(d).join(name))
        .find(|p| executable(p))
        .ok_or_else(|| ConfigError(format!("{key}: program '{name}' not found in PATH")))
}

/// `PATH`, then the pool's list: `NAME=VALUE` sets, a bare `NAME` passes
/// cgihost's value through (skipped when cgihost has none).
///
/// php-cgi gets `PHP_FCGI_CHILDREN=0` (one process per worker: cgihost is
/// the process manager and counts workers) and `PHP_FCGI_MAX_REQUESTS=0`
/// (never exit on its own: a worker that quits after its Nth request races
/// the kept-alive connection cgihost is about to reuse — the mod_fcgid
/// "random 500s" problem; `max_requests` recycles instead) unless the
/// pool's env sets them.
fn build_env(
    key: &str,
    spec: &[String],
    path_var: &str,
    php_cgi: bool,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut env = vec![("PATH".to_string(), path_var.to_string())];
    let mut put = |name: &str, value: String| {
        env.retain(|(n, _)| n != name);
        env.push((name.to_string(), value));
    };
    if php_cgi {
        put("PHP_FCGI_CHILDREN", "0".into());
        put("PHP_FCGI_MAX_REQUESTS", "0".into());
    }
    for item in spec {
        let (name, value) = match item.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (item.as_str(), std::env::var(item).ok()),
        };
        let valid = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !value.as_deref().unwrap_or("").contains('\0');
        if !valid {
            return err(format!(
                "{key}.env: '{item}' is not NAME=VALUE or NAME (letters, digits, _)"
            ));
        }
        if let Some(v) = value {
            put(name, v);
        }
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_makes_files_absolute_and_finds_programs() {
        let mut r = parse_spawn("--spawn", "/app=sh Cargo.toml -x missing.txt").unwrap();
        r.resolve(3).unwrap();
        assert_eq!(r.workers, 3);
        assert!(r.program.is_absolute() && r.program.ends_with("sh"));
        assert!(r.argv[1].ends_with("/Cargo.toml") && Path::new(&r.argv[1]).is_absolute());
        assert_eq!(&r.argv[2..], ["-x", "missing.txt"]);
        assert_eq!(r.watch, vec![PathBuf::from(&r.argv[1])]);
        let mut bad = parse_spawn("--spawn", "/app=no-such-program-here").unwrap();
        let e = bad.resolve(1).unwrap_err().0;
        assert!(
            e.contains("--spawn") && e.contains("not found in PATH"),
            "{e}"
        );
        let mut not_exec = parse_spawn("--spawn", "*.php=./Cargo.toml").unwrap();
        assert!(not_exec
            .resolve(1)
            .unwrap_err()
            .0
            .contains("not an executable"));
    }

    #[test]
    fn env_is_path_plus_the_list_and_php_defaults() {
        let env = build_env(
            "k",
            &["A=1".into(), "NOPE_UNSET_VAR_X".into()],
            "/bin",
            false,
        )
        .unwrap();
        assert_eq!(
            env,
            vec![("PATH".into(), "/bin".into()), ("A".into(), "1".into())]
        );
        let php = build_env("k", &["PHP_FCGI_MAX_REQUESTS=900".into()], "/bin", true).unwrap();
        assert!(php.contains(&("PHP_FCGI_CHILDREN".into(), "0".into())));
        assert!(php.contains(&("PHP_FCGI_MAX_REQUESTS".into(), "900".into())));
        assert_eq!(php.len(), 3);
        assert!(build_env("k", &["BAD-NAME=1".into()], "/bin", false).is_err());
        assert!(build_env("k", &["=1".into()], "/bin", false).is_err());
    }
}
