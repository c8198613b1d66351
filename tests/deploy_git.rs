//! Deploy recipe, end to end: git over HTTP with a password for pushes
//! (SPEC.md "Sites and rules": `[[rewrite]]`, `[[auth]]`, `[cgi] env`).
//!
//! The real `git http-backend` runs as a CGI program behind a rewrite
//! (`/git/repo.git/...` → `/cgi-bin/git-http-backend/repo.git/...`); an
//! `[[auth]]` rule with a bcrypt htpasswd guards `git-receive-pack` only,
//! so clone and fetch stay anonymous. The real git client clones, is
//! refused a push without or with a wrong password (401), pushes with the
//! right one — a small pack (Content-Length) and a large one (chunked) —
//! and the bare repository's `post-receive` hook records `REMOTE_USER`.
//! Everything lives in a temp dir; the server listens on loopback only.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const HTTP_BACKEND: &str = "/usr/lib/git-core/git-http-backend";
/// Any one git command (a clone or push of a few hundred KiB on loopback).
const GIT_LIMIT: Duration = Duration::from_secs(60);

fn write_exec(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Run `cmd` in its own process group; past `limit` the whole group is
/// killed and the test fails.
fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
    let pgid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => {
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            panic!("{what} did not finish within {limit:?}");
        }
    }
}

/// A raw request, bounded.
async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("no answer within 20 s")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The temp dir: a document root, the CGI dir with the git-http-backend
/// wrapper, the project root with a seeded bare repository and its hook,
/// the htpasswd file, a HOME for git and the clients' work trees.
struct GitSite {
    dir: tempfile::TempDir,
}

impl GitSite {
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn bare(&self) -> PathBuf {
        self.path("repos/repo.git")
    }

    fn hook_log(&self) -> PathBuf {
        self.path("hook.log")
    }

    /// The environment of the last `post-receive` run, as a map.
    fn hook_env(&self) -> std::collections::BTreeMap<String, String> {
        std::fs::read_to_string(self.path("hook.env"))
            .expect("hook.env")
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// git with nothing of the host's environment or configuration.
    fn git(&self, cwd: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("git");
        cmd.env_clear()
            .current_dir(cwd)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path("home"))
            .env("LANG", "C")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_NAME", "Test Author")
            .env("GIT_AUTHOR_EMAIL", "author@example.org")
            .env("GIT_COMMITTER_NAME", "Test Committer")
            .env("GIT_COMMITTER_EMAIL", "committer@example.org")
            .args(["-c", "credential.helper=", "-c", "init.defaultBranch=main"])
            .args(args);
        cmd
    }

    /// Run git, bounded, off the async workers.
    async fn run(&self, cwd: &Path, args: &[&str]) -> Output {
        let cmd = self.git(cwd, args);
        tokio::task::spawn_blocking(move || run_bounded(cmd, GIT_LIMIT))
            .await
            .expect("git task")
    }

    /// Run git; it must succeed. Returns stdout, trimmed.
    async fn ok(&self, cwd: &Path, args: &[&str]) -> String {
        let out = self.run(cwd, args).await;
        assert!(
            out.status.success(),
            "git {args:?} failed ({}):\n{}",
            out.status,
            text(&out.stderr)
        );
        text(&out.stdout).trim().to_string()
    }

    async fn rev(&self, repo: &Path, rev: &str) -> String {
        self.ok(repo, &["rev-parse", "--verify", rev]).await
    }

    fn new() -> GitSite {
        assert!(
            Path::new(HTTP_BACKEND).exists(),
            "{HTTP_BACKEND} missing: the Debian git package (scripts/test.sh installs it)"
        );
        let site = GitSite {
            dir: tempfile::tempdir().unwrap(),
        };
        for d in ["root", "cgi", "repos", "home", "work"] {
            std::fs::create_dir_all(site.path(d)).unwrap();
        }
        std::fs::write(site.path("root/index.html"), "home\n").unwrap();
        // A wrapper, not a symlink: a CGI program must resolve inside the
        // CGI dir.
        write_exec(
            &site.path("cgi/git-http-backend"),
            &format!("#!/bin/sh\nexec {HTTP_BACKEND}\n"),
        );
        let out = Command::new("htpasswd")
            .args(["-nbB", "alice", "correct horse"])
            .output()
            .expect("htpasswd (apache2-utils) runs");
        assert!(out.status.success(), "htpasswd -nbB");
        std::fs::write(site.path("htpasswd"), out.stdout).unwrap();
        site
    }

    /// The bare repository, seeded with one commit pushed from a local
    /// repository, receive-pack over HTTP on, and a hook that logs who
    /// pushed what.
    async fn seed(&self) -> String {
        let bare = self.bare();
        self.ok(
            &self.path("repos"),
            &["init", "--bare", "-q", bare.to_str().unwrap()],
        )
        .await;
        self.ok(&bare, &["config", "http.receivepack", "true"])
            .await;
        let seed = self.path("work/seed");
        self.ok(&self.path("work"), &["init", "-q", "seed"]).await;
        std::fs::write(seed.join("README"), "seeded\n").unwrap();
        self.ok(&seed, &["add", "README"]).await;
        self.ok(&seed, &["commit", "-q", "-m", "seed"]).await;
        self.ok(&seed, &["push", "-q", bare.to_str().unwrap(), "main"])
            .await;
        // The hook comes after the seed push, so it logs HTTP pushes only.
        write_exec(
            &bare.join("hooks/post-receive"),
            &format!(
                "#!/bin/sh\nwhile read old new ref; do\n  \
                 printf '%s %s %s %s\\n' \"$REMOTE_USER\" \"$AUTH_TYPE\" \"$ref\" \"$new\" >> '{}'\n\
                 done\nenv > '{}'\n",
                self.hook_log().display(),
                self.path("hook.env").display()
            ),
        );
        self.rev(&bare, "refs/heads/main").await
    }

    fn config(&self) -> cgihost::config::Config {
        let d = self.dir.path().display();
        let toml = format!(
            r#"
root = "{d}/root"
cgi_dir = "{d}/cgi"
access_log = false

[cgi]
pass_authorization = false
env = {{ GIT_PROJECT_ROOT = "{d}/repos", GIT_HTTP_EXPORT_ALL = "1" }}

[[rewrite]]
match = "~^/git/(.*)$"
to = "/cgi-bin/git-http-backend/$1"

[[auth]]
match = '~/git-receive-pack(\?|$)|[?&]service=git-receive-pack'
realm = "git push"
htpasswd = "{d}/htpasswd"
"#
        );
        let file = self.path("cgihost.toml");
        std::fs::write(&file, toml).unwrap();
        load_config_file(file)
    }
}

/// `git push` of main to `url` (after `config`, `-c` pairs), with the
/// request and response headers traced (bodies left out): the trace
/// shows what went over the wire.
async fn push(site: &GitSite, repo: &Path, url: &str, config: &[&str]) -> (Output, String) {
    let mut args = config.to_vec();
    args.extend(["push", "--porcelain", url, "main"]);
    let mut cmd = site.git(repo, &args);
    let trace = site.path(&format!("trace-{}.log", token("push")));
    cmd.env("GIT_TRACE_CURL", &trace)
        .env("GIT_TRACE_CURL_NO_DATA", "1");
    let out = tokio::task::spawn_blocking(move || run_bounded(cmd, GIT_LIMIT))
        .await
        .expect("git task");
    let trace = std::fs::read_to_string(&trace).unwrap_or_default();
    (out, trace)
}

/// The status lines the client received, in order.
fn statuses(trace: &str) -> Vec<u16> {
    trace
        .lines()
        .filter_map(|l| l.split("<= Recv header: HTTP/").nth(1))
        .filter_map(|rest| rest.split_whitespace().nth(1)?.parse().ok())
        .filter(|s| *s != 100)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_push_over_http_with_a_password() {
    let started = Instant::now();
    let site = GitSite::new();
    let seeded = site.seed().await;
    let srv = TestServer::start(site.config()).await;
    let port = srv.addr.port();
    let anon = format!("http://127.0.0.1:{port}/git/repo.git");
    let alice = format!("http://alice:correct%20horse@127.0.0.1:{port}/git/repo.git");
    let wrong = format!("http://alice:wrong@127.0.0.1:{port}/git/repo.git");
    let work = site.path("work");

    // The raw protocol: fetch advertisement anonymous, push advertisement
    // behind the password; the rewrite hands git-http-backend the right
    // PATH_INFO (it finds the repository) and the query.
    let r = bounded(get(
        srv.addr,
        "/git/repo.git/info/refs?service=git-upload-pack",
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/x-git-upload-pack-advertisement")
    );
    assert!(r.text().contains(&seeded), "{}", r.text());
    let r = bounded(get(
        srv.addr,
        "/git/repo.git/info/refs?service=git-receive-pack",
    ))
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Basic realm=\"git push\"")),
        "{:?}",
        r.headers
    );
    let r = bounded(request(
        srv.addr,
        "POST",
        "/git/repo.git/git-receive-pack",
        "Content-Type: application/x-git-receive-pack-request\r\n",
        b"0000",
    ))
    .await;
    assert_eq!(r.status, 401, "a receive-pack POST without credentials");
    // Neither a query behind the path nor an encoded service name dodges
    // the rule (git-http-backend decodes the query; cgihost matches the
    // decoded form too).
    for target in [
        "/git/repo.git/git-receive-pack?x",
        "/git/repo.git/info/refs?service=git-receive-pac%6B",
        "/git/repo.git/info/refs?x=1&service=%67it-receive-pack",
    ] {
        let r = bounded(request(
            srv.addr,
            if target.contains("info/refs") {
                "GET"
            } else {
                "POST"
            },
            target,
            "Content-Type: application/x-git-receive-pack-request\r\n",
            b"0000",
        ))
        .await;
        assert_eq!(r.status, 401, "{target}: {}", r.text());
    }

    // Anonymous clone of the seeded repository.
    let c1 = work.join("c1");
    site.ok(&work, &["clone", "-q", &anon, "c1"]).await;
    assert_eq!(site.rev(&c1, "HEAD").await, seeded);
    assert_eq!(
        std::fs::read_to_string(c1.join("README")).unwrap(),
        "seeded\n"
    );

    // A small commit: its pack goes with a Content-Length.
    std::fs::write(c1.join("README"), "seeded\npushed by alice\n").unwrap();
    site.ok(&c1, &["commit", "-q", "-am", "small change"]).await;
    let small = site.rev(&c1, "HEAD").await;

    // No password: refused with a 401, nothing moves, no hook runs.
    let (out, trace) = push(&site, &c1, &anon, &[]).await;
    assert!(!out.status.success(), "anonymous push succeeded");
    assert_eq!(statuses(&trace), [401], "{trace}");
    assert_eq!(site.rev(&site.bare(), "refs/heads/main").await, seeded);
    // A wrong password: the same.
    let (out, trace) = push(&site, &c1, &wrong, &[]).await;
    assert!(
        !out.status.success(),
        "push with a wrong password succeeded"
    );
    assert!(
        text(&out.stderr).contains("Authentication failed"),
        "{}",
        text(&out.stderr)
    );
    let codes = statuses(&trace);
    assert!(
        !codes.is_empty() && codes.iter().all(|c| *c == 401),
        "{codes:?}\n{trace}"
    );
    assert_eq!(site.rev(&site.bare(), "refs/heads/main").await, seeded);
    assert!(!site.hook_log().exists(), "a hook ran for a refused push");

    // The right password: the push goes through, the ref moves, the hook
    // saw alice.
    let (out, trace) = push(&site, &c1, &alice, &[]).await;
    assert!(
        out.status.success(),
        "push failed: {}\n{trace}",
        text(&out.stderr)
    );
    assert!(
        trace.contains("=> Send header: Content-Length:")
            && !trace.contains("Transfer-Encoding: chunked"),
        "{trace}"
    );
    assert_eq!(site.rev(&site.bare(), "refs/heads/main").await, small);
    assert_eq!(
        std::fs::read_to_string(site.hook_log()).unwrap(),
        format!("alice Basic refs/heads/main {small}\n")
    );
    // What git-http-backend was given (the hook inherits it): the
    // rewritten script and PATH_INFO, the client's REQUEST_URI, the
    // configured variables, and not the password.
    let env = site.hook_env();
    let var = |k: &str| env.get(k).map(String::as_str);
    assert_eq!(var("SCRIPT_NAME"), Some("/cgi-bin/git-http-backend"));
    assert_eq!(var("PATH_INFO"), Some("/repo.git/git-receive-pack"));
    assert_eq!(var("REQUEST_URI"), Some("/git/repo.git/git-receive-pack"));
    assert_eq!(var("REQUEST_METHOD"), Some("POST"));
    assert_eq!(var("REMOTE_USER"), Some("alice"));
    assert_eq!(var("GIT_HTTP_EXPORT_ALL"), Some("1"));
    let root = site.path("repos");
    assert_eq!(var("GIT_PROJECT_ROOT"), root.to_str());
    assert_eq!(
        var("HTTP_AUTHORIZATION"),
        None,
        "pass_authorization = false"
    );

    // A large commit (incompressible, over http.postBuffer): git probes
    // with a small POST, then sends the pack chunked.
    let big = random_bytes(512 * 1024, 7);
    std::fs::write(c1.join("blob.bin"), &big).unwrap();
    site.ok(&c1, &["add", "blob.bin"]).await;
    site.ok(&c1, &["commit", "-q", "-m", "large file"]).await;
    let large = site.rev(&c1, "HEAD").await;
    let (out, trace) = push(&site, &c1, &alice, &["-c", "http.postBuffer=65536"]).await;
    assert!(
        out.status.success(),
        "large push failed: {}\n{trace}",
        text(&out.stderr)
    );
    assert!(
        trace.contains("=> Send header: Transfer-Encoding: chunked"),
        "the large pack was not sent chunked:\n{trace}"
    );
    assert_eq!(site.rev(&site.bare(), "refs/heads/main").await, large);
    // The chunked body reached the backend whole, with an exact length.
    let length: u64 = site.hook_env()["CONTENT_LENGTH"].parse().unwrap();
    assert!(length > big.len() as u64, "CONTENT_LENGTH {length}");
    assert_eq!(
        std::fs::read_to_string(site.hook_log()).unwrap(),
        format!("alice Basic refs/heads/main {small}\nalice Basic refs/heads/main {large}\n")
    );

    // A second anonymous clone sees what alice pushed.
    let c2 = work.join("c2");
    site.ok(&work, &["clone", "-q", &anon, "c2"]).await;
    assert_eq!(site.rev(&c2, "HEAD").await, large);
    assert_eq!(std::fs::read(c2.join("blob.bin")).unwrap(), big);
    assert_eq!(
        std::fs::read_to_string(c2.join("README")).unwrap(),
        "seeded\npushed by alice\n"
    );
    // And an anonymous fetch into the first clone is fine too.
    site.ok(&c1, &["fetch", "-q", &anon]).await;

    bounded(srv.stop()).await;
    eprintln!("git over HTTP: {:?}", started.elapsed());
}
