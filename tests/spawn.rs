//! Supervised FastCGI pools (`--spawn`), with real worker processes (the
//! Perl and Python examples in cgi-bin/, php-cgi) under the built binary:
//! pids, restarts and back-off, recycling, reload, signals, process hygiene.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// Debian's python3 when present: a version-manager shim in PATH would add
/// its own variables and start-up time.
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("cgi-bin")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// The binary with a config file (written into `dir`) and extra flags.
fn start_with_config(dir: &Path, toml: &str, args: &[&str]) -> PoolServer {
    let conf = dir.join("cgihost.toml");
    std::fs::write(&conf, toml).unwrap();
    let mut all = vec!["--config", conf.to_str().unwrap()];
    all.extend_from_slice(args);
    PoolServer::start(&all)
}

/// `pid N` out of an example app's answer.
fn pid_of(resp: &Resp) -> Option<u32> {
    let text = resp.text();
    let rest = text.split("pid ").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Live (non-zombie) children of the server: its workers.
fn workers(srv: &BinServer) -> BTreeSet<u32> {
    children_of(srv.pid())
        .into_iter()
        .filter(|(_, state)| state != "Z")
        .map(|(pid, _)| pid)
        .collect()
}

async fn wait_workers(srv: &BinServer, n: usize) -> BTreeSet<u32> {
    let ok = eventually(Duration::from_secs(5), || workers(srv).len() == n).await;
    assert!(ok, "expected {n} workers, have {:?}", workers(srv));
    workers(srv)
}

/// `tasks` keep-alive clients GET `path` until `stop` is set; returns
/// (answers, failures, pids seen, texts seen).
struct Load {
    ok: Arc<AtomicUsize>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    pids: Arc<std::sync::Mutex<BTreeSet<u32>>>,
    texts: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(addr: std::net::SocketAddr, path: &str, tasks: usize) -> Load {
        let mut load = Load {
            ok: Arc::default(),
            failed: Arc::default(),
            pids: Arc::default(),
            texts: Arc::default(),
            stop: Arc::default(),
            tasks: Vec::new(),
        };
        for _ in 0..tasks {
            let (ok, failed, pids, texts, stop) = (
                load.ok.clone(),
                load.failed.clone(),
                load.pids.clone(),
                load.texts.clone(),
                load.stop.clone(),
            );
            let raw = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
            load.tasks.push(tokio::spawn(async move {
                let mut conn = Conn::open(addr).await;
                while !stop.load(Ordering::Relaxed) {
                    conn.send(raw.as_bytes()).await;
                    let resp =
                        tokio::time::timeout(Duration::from_secs(10), conn.read_response(false))
                            .await;
                    match resp {
                        Ok(Some(r)) if r.status == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            pids.lock().unwrap().extend(pid_of(&r));
                            texts.lock().unwrap().push(r.text());
                        }
                        other => {
                            failed.lock().unwrap().push(format!(
                                "{:?}",
                                other.map(|r| r.map(|r| (r.status, r.text())))
                            ));
                            conn = Conn::open(addr).await;
                        }
                    }
                }
            }));
        }
        load
    }

    async fn finish(self) -> (usize, Vec<String>, BTreeSet<u32>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
        }
        let take = |m: &std::sync::Mutex<Vec<String>>| std::mem::take(&mut *m.lock().unwrap());
        (
            self.ok.load(Ordering::Relaxed),
            take(&self.failed),
            self.pids.lock().unwrap().clone(),
            take(&self.texts),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perl_pool_answers_from_at_most_n_workers_that_keep_state() {
    let cmd = format!("/app=perl {}", example("app.fcgi"));
    let srv = PoolServer::start(&["--spawn", &cmd, "--workers", "3"]);
    let started = wait_workers(&srv, 3).await;
    let load = Load::start(srv.addr, "/app/x?q=1", 8);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (ok, failed, pids, texts) = load.finish().await;
    assert!(failed.is_empty(), "failed: {failed:?}");
    assert!(ok >= 16, "only {ok} answers");
    assert!(!pids.is_empty() && pids.len() <= 3, "pids {pids:?}");
    assert!(
        pids.is_subset(&started),
        "{pids:?} not among the workers {started:?}"
    );
    assert!(
        texts.iter().any(|t| !t.contains("request 1 in")),
        "no worker served twice: no per-process state?"
    );
    assert!(
        texts[0].contains("GET /app/x?q=1 PATH_INFO='/x'"),
        "{}",
        texts[0]
    );
    let resp = get(srv.addr, "/application").await;
    assert_eq!(resp.status, 404, "/app must not match /application");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_is_replaced_and_service_continues() {
    let cmd = format!("/py={} {}", python(), example("app.py"));
    let srv = PoolServer::start(&["--spawn", &cmd, "--workers", "2"]);
    let before = wait_workers(&srv, 2).await;
    // Let the workers become Running (a death then restarts at once).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(get(srv.addr, "/py/").await.status, 200);
    let victim = *before.iter().next().unwrap();
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    let killed_at = Instant::now();
    let replaced = eventually(Duration::from_secs(4), || {
        let now = workers(&srv);
        now.len() == 2 && !now.contains(&victim)
    })
    .await;
    assert!(replaced, "no replacement within 4 s: {:?}", workers(&srv));
    assert!(killed_at.elapsed() < Duration::from_secs(5));
    for i in 0..10 {
        let resp = get(srv.addr, format!("/py/after?{i}")).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_ne!(pid_of(&resp), Some(victim));
    }
    assert!(
        srv.stderr_text()
            .contains(&format!("worker pid {victim} exited")),
        "{}",
        srv.stderr_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_that_exits_at_start_backs_off_and_the_route_answers_503() {
    let srv = PoolServer::start(&[
        "--spawn",
        "/bad=sh -c 'echo no database here >&2; exit 3'",
        "--workers",
        "2",
    ]);
    let t0 = Instant::now();
    // Sent before the pool gives up: it waits on the socket, then gets
    // the 503 too instead of waiting out --cgi-timeout.
    let early = tokio::spawn(get(srv.addr, "/bad/early"));
    let failing = eventually(Duration::from_secs(5), || {
        srv.stderr_text().contains("answering 503")
    })
    .await;
    assert!(failing, "never declared failing:\n{}", srv.stderr_text());
    let early = tokio::time::timeout(Duration::from_secs(3), early).await;
    assert_eq!(
        early.expect("queued request still waiting").unwrap().status,
        503
    );
    let resp = get(srv.addr, "/bad/x").await;
    assert_eq!(resp.status, 503);
    assert!(resp.header("retry-after").is_some());
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(t0.elapsed())).await;
    let log = srv.stderr_text();
    let starts = log
        .lines()
        .filter(|l| l.contains("spawn /bad/*: worker pid") && l.contains("started"))
        .count();
    // 2 workers, back-off 0.25 s doubling per failure: about 6 starts in 5 s.
    assert!((3..=10).contains(&starts), "{starts} starts in 5 s:\n{log}");
    assert!(
        log.contains("no database here") && log.contains("spawn /bad/* pid"),
        "stderr not logged with its tag:\n{log}"
    );
    assert_eq!(get(srv.addr, "/bad/").await.status, 503);
    assert_eq!(
        get(srv.addr, "/hello.txt").await.status,
        200,
        "the rest of the site still works"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_recycles_workers_without_failing_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[[spawn]]\nmatch = \"/py\"\ncmd = \"{} {}\"\nworkers = 2\nmax_requests = 10\n",
        python(),
        example("app.py")
    );
    let srv = start_with_config(dir.path(), &toml, &[]);
    let first = wait_workers(&srv, 2).await;
    let load = Load::start(srv.addr, "/py/", 20);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (ok, failed, pids, _) = load.finish().await;
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(ok >= 40, "only {ok} answers");
    assert!(
        pids.difference(&first).count() >= 2,
        "not recycled: {pids:?} (first {first:?})"
    );
    // The log writer is a thread of its own: wait for the line.
    let logged = eventually(Duration::from_secs(10), || {
        srv.stderr_text().contains("recycling after")
    })
    .await;
    assert!(logged, "{}", srv.stderr_text());
    let settled = eventually(Duration::from_secs(8), || workers(&srv).len() == 2).await;
    assert!(settled, "old generations left running: {:?}", workers(&srv));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_script_reloads_without_failing_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("app.py");
    let source = std::fs::read_to_string(example("app.py")).unwrap();
    std::fs::write(&script, &source).unwrap();
    let toml = format!(
        "[[spawn]]\nmatch = \"/py\"\ncmd = \"{} {}\"\nworkers = 2\nreload = true\n",
        python(),
        script.display()
    );
    let srv = start_with_config(dir.path(), &toml, &[]);
    let old = wait_workers(&srv, 2).await;
    let load = Load::start(srv.addr, "/py/", 4);
    tokio::time::sleep(Duration::from_millis(800)).await;
    std::fs::write(
        &script,
        source.replace("GREETING = \"hello\"", "GREETING = \"bonjour\""),
    )
    .unwrap();
    let edited = Instant::now();
    let reloaded = eventually(Duration::from_secs(2), || {
        load.texts
            .lock()
            .unwrap()
            .iter()
            .any(|t| t.starts_with("bonjour"))
    })
    .await;
    assert!(
        reloaded,
        "new code not served within 2 s:\n{}",
        srv.stderr_text()
    );
    eprintln!("reload visible after {:?}", edited.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, failed, _, texts) = load.finish().await;
    assert!(failed.is_empty(), "failed during the swap: {failed:?}");
    assert!(ok > 10);
    assert!(
        texts.last().unwrap().starts_with("bonjour"),
        "{:?}",
        texts.last()
    );
    let resp = get(srv.addr, "/py/").await;
    assert!(resp.text().starts_with("bonjour"));
    let retired = eventually(Duration::from_secs(5), || old.iter().all(|p| !alive(*p))).await;
    assert!(retired, "old workers still alive: {old:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_edit_keeps_the_old_workers_serving() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("app.py");
    let source = std::fs::read_to_string(example("app.py")).unwrap();
    std::fs::write(&script, &source).unwrap();
    let toml = format!(
        "[[spawn]]\nmatch = \"/py\"\ncmd = \"{} {}\"\nworkers = 1\nreload = true\n",
        python(),
        script.display()
    );
    let srv = start_with_config(dir.path(), &toml, &[]);
    wait_workers(&srv, 1).await;
    // Served once: the worker has loaded the good code.
    assert!(get(srv.addr, "/py/").await.text().starts_with("hello"));
    std::fs::write(&script, "this is not python (\n").unwrap();
    let kept = eventually(Duration::from_secs(8), || {
        srv.stderr_text().contains("keeps serving")
    })
    .await;
    assert!(kept, "{}", srv.stderr_text());
    let resp = get(srv.addr, "/py/").await;
    assert_eq!(resp.status, 200);
    assert!(resp.text().starts_with("hello"));
    std::fs::write(
        &script,
        source.replace("GREETING = \"hello\"", "GREETING = \"fixed\""),
    )
    .unwrap();
    let fixed = eventually(Duration::from_secs(5), || {
        srv.stderr_text().contains("generation 3 is serving")
    })
    .await;
    assert!(fixed, "{}", srv.stderr_text());
    assert!(get(srv.addr, "/py/").await.text().starts_with("fixed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_starts_fresh_workers() {
    let cmd = format!("/py={} {}", python(), example("app.py"));
    let srv = PoolServer::start(&["--spawn", &cmd, "--workers", "2"]);
    let old = wait_workers(&srv, 2).await;
    assert_eq!(get(srv.addr, "/py/").await.status, 200);
    srv.signal(libc::SIGHUP);
    let swapped = eventually(Duration::from_secs(5), || {
        let now = workers(&srv);
        now.len() == 2 && now.is_disjoint(&old)
    })
    .await;
    assert!(
        swapped,
        "{:?} vs {old:?}\n{}",
        workers(&srv),
        srv.stderr_text()
    );
    let resp = get(srv.addr, "/py/").await;
    assert!(!old.contains(&pid_of(&resp).unwrap()));
}

/// A reload of a pool of the Perl example (libfcgi underneath) switches as
/// soon as the new workers answer the probe; it used to wait out the
/// probe's 10 s limit, because libfcgi ignores an unpadded FCGI_GET_VALUES.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_a_perl_pool_without_waiting_out_the_probe() {
    let cmd = format!("/app=perl {}", example("app.fcgi"));
    let srv = PoolServer::start(&["--spawn", &cmd, "--workers", "2"]);
    let old = wait_workers(&srv, 2).await;
    assert_eq!(get(srv.addr, "/app/").await.status, 200);
    srv.signal(libc::SIGHUP);
    let swapped = eventually(Duration::from_secs(5), || {
        srv.stderr_text()
            .contains("generation 2 is serving; generation 1 retires")
    })
    .await;
    assert!(swapped, "{}", srv.stderr_text());
    assert!(
        !srv.stderr_text().contains("did not answer a probe"),
        "{}",
        srv.stderr_text()
    );
    let resp = get(srv.addr, "/app/").await;
    assert!(!old.contains(&pid_of(&resp).unwrap()), "{}", resp.text());
}

/// The runtime dir named in the startup log.
fn runtime_dir(srv: &BinServer) -> PathBuf {
    let log = srv.stderr_text();
    let line = log
        .lines()
        .find(|l| l.contains("listen on sockets in "))
        .expect("runtime dir line");
    PathBuf::from(line.split("sockets in ").nth(1).unwrap().trim())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_every_worker_and_removes_the_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "shutdown_grace = 3\n";
    let perl = format!("/app=perl {}", example("app.fcgi"));
    let py = format!("/py={} {}", python(), example("app.py"));
    let mut srv = start_with_config(
        dir.path(),
        toml,
        &["--spawn", &perl, "--spawn", &py, "--workers", "2"],
    );
    let pids = wait_workers(&srv, 4).await;
    let rundir = runtime_dir(&srv);
    assert!(rundir.is_dir());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        rundir.metadata().unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(get(srv.addr, "/app/").await.status, 200);
    assert_eq!(get(srv.addr, "/py/").await.status, 200);
    let t0 = Instant::now();
    srv.signal(libc::SIGTERM);
    let code = tokio::task::spawn_blocking(move || (srv.wait_exit(Duration::from_secs(10)), srv))
        .await
        .unwrap();
    assert_eq!(code.0, Some(0), "{}", code.1.stderr_text());
    // Stopped in order (SIGTERM, reaped), not killed at exit.
    assert_eq!(
        code.1.stderr_text().matches("all workers stopped").count(),
        2,
        "{}",
        code.1.stderr_text()
    );
    // Under TERM_GRACE (5 s, when SIGKILL would come).
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "took {:?}",
        t0.elapsed()
    );
    for pid in pids {
        assert!(!alive(pid), "worker {pid} left behind");
    }
    assert!(!rundir.exists(), "{} left behind", rundir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_cgihost_takes_the_workers_along() {
    let cmd = format!("/py={} {}", python(), example("app.py"));
    let srv = PoolServer::start(&["--spawn", &cmd, "--workers", "3"]);
    let pids = wait_workers(&srv, 3).await;
    srv.signal(libc::SIGKILL);
    let gone = eventually(Duration::from_secs(2), || pids.iter().all(|p| !alive(*p))).await;
    assert!(
        gone,
        "workers outlived cgihost: {:?}",
        pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_gets_the_socket_as_fd_0_its_own_group_and_only_the_configured_env() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[[spawn]]\nmatch = \"/py\"\ncmd = \"{} {}\"\nworkers = 1\nenv = [\"APP_MODE=test\", \"HOME\", \"NOT_SET_ANYWHERE_X\"]\ndir = \"{}\"\n",
        python(),
        example("app.py"),
        dir.path().display()
    );
    let srv = start_with_config(dir.path(), &toml, &[]);
    let pid = *wait_workers(&srv, 1).await.iter().next().unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let mut names: Vec<String> = environ
        .split(|&b| b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| {
            String::from_utf8_lossy(v)
                .split('=')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    names.sort();
    let mut want = vec!["APP_MODE", "PATH"];
    if std::env::var_os("HOME").is_some() {
        want.insert(1, "HOME");
    }
    assert_eq!(names, want);
    let fd0 = std::fs::read_link(format!("/proc/{pid}/fd/0")).unwrap();
    assert!(fd0.to_string_lossy().starts_with("socket:"), "{fd0:?}");
    let fd1 = std::fs::read_link(format!("/proc/{pid}/fd/1")).unwrap();
    assert!(fd1.to_string_lossy().starts_with("pipe:"), "{fd1:?}");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let pgrp: u32 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(pgrp, pid, "worker not in its own process group");
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
    assert_eq!(cwd, std::fs::canonicalize(dir.path()).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_cgi_pool_serves_php_pages() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(
        root.path().join("index.php"),
        "<?php header('X-Engine: php'); echo 'php says ', 6 * 7, ' from ', getmypid(), ' max=', getenv('PHP_FCGI_MAX_REQUESTS'), ' ', $_SERVER['SCRIPT_NAME'], '|', $_SERVER['PATH_INFO'] ?? '', \"\\n\";\n",
    )
    .unwrap();
    std::fs::write(root.path().join("plain.txt"), "static\n").unwrap();
    let mut cmd = Command::new(bin_path());
    cmd.args(["--bind", "127.0.0.1", "--port", "0", "--root"])
        .arg(root.path())
        .args([
            "--cgi-dir",
            "/nonexistent",
            "--spawn",
            "*.php=php-cgi",
            "--workers",
            "2",
        ]);
    let srv = PoolServer::start_cmd(cmd);
    wait_workers(&srv, 2).await;
    let resp = get(srv.addr, "/index.php/extra?x=1").await;
    assert_eq!(resp.status, 200, "{}\n{}", resp.text(), srv.stderr_text());
    assert_eq!(resp.header("x-engine"), Some("php"));
    assert!(
        resp.text().starts_with("php says 42 from "),
        "{}",
        resp.text()
    );
    assert!(
        resp.text().contains("max=0 /index.php|/extra"),
        "{}",
        resp.text()
    );
    let dir_index = get(srv.addr, "/").await;
    assert!(
        dir_index.text().starts_with("php says 42"),
        "{}",
        dir_index.text()
    );
    assert_eq!(get(srv.addr, "/missing.php").await.status, 404);
    assert_eq!(get(srv.addr, "/plain.txt").await.text(), "static\n");
}

#[test]
fn spawn_tables_are_checked_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("c.toml");
    let run = |toml: &str| {
        std::fs::write(&conf, toml).unwrap();
        let out = Command::new(bin_path())
            .args(["--check-config", "--config", conf.to_str().unwrap()])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let (code, out) = run("[[spawn]]\nmatch = \"/app\"\ncmd = \"perl cgi-bin/app.fcgi\"\nworkers = 3\nmax_requests = 500\nreload = true\n");
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("spawn    /app/* -> perl /")
            && out.contains("cgi-bin/app.fcgi (3 workers, max_requests 500, reload)"),
        "{out}"
    );
    let (code, out) = run("[[spawn]]\nmatch = \"/app\"\ncmd = \"perl x\"\nworkerz = 3\n");
    assert_eq!(code, Some(2));
    assert!(out.contains("workerz") && out.contains(":4:"), "{out}");
    let (code, out) =
        run("[[spawn]]\nmatch = \"/app\"\ncmd = \"perl x\"\nenv = [\"BAD-NAME=1\"]\n");
    assert_eq!(code, Some(2));
    assert!(out.contains("spawn[0].env"), "{out}");
}

/// Sockets a process holds other than fd 0 (the listening socket).
fn connections_of(pid: u32) -> BTreeSet<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return BTreeSet::new();
    };
    dir.flatten()
        .filter(|e| e.file_name() != "0")
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .filter(|l| l.starts_with("socket:"))
        .collect()
}

/// Regression: hyper stops polling a body once Content-Length bytes are
/// out, so END_REQUEST (buffered right behind) went unseen and every
/// request closed its backend connection and opened a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_connection_is_reused_when_the_response_declares_its_length() {
    let cmd = format!("/py={} {}", python(), example("app.py"));
    let srv = PoolServer::start(&["--spawn", &cmd, "--workers", "1"]);
    let pid = *wait_workers(&srv, 1).await.iter().next().unwrap();
    let mut seen = BTreeSet::new();
    for i in 0..5 {
        let resp = get(srv.addr, format!("/py/{i}")).await;
        assert!(resp.header("content-length").is_some());
        assert!(resp
            .text()
            .contains(&format!("request {} in this process", i + 1)));
        seen.extend(connections_of(pid));
    }
    assert_eq!(
        seen.len(),
        1,
        "the worker saw several connections: {seen:?}"
    );
}

/// A cgihost killed with SIGKILL leaves its runtime dir; the next one
/// removes it (same owner, pid gone), and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_runtime_dirs_of_dead_servers_are_removed() {
    let run = tempfile::tempdir().unwrap();
    let stale = run.path().join("cgihost-999999999-AbCdEf");
    let live = run
        .path()
        .join(format!("cgihost-{}-AbCdEf", std::process::id()));
    let other = run.path().join("cgihost-notapid");
    for d in [&stale, &live, &other] {
        std::fs::create_dir(d).unwrap();
        std::fs::write(d.join("p0.g1.sock"), "").unwrap();
    }
    let mut cmd = Command::new(bin_path());
    cmd.args(["--bind", "127.0.0.1", "--port", "0", "--root"])
        .arg(fixtures().join("static"))
        .args([
            "--spawn",
            &format!("/py={} {}", python(), example("app.py")),
            "--workers",
            "1",
        ])
        .env("XDG_RUNTIME_DIR", run.path());
    let srv = BinServer::start_cmd(cmd);
    assert!(!stale.exists(), "stale runtime dir kept");
    assert!(
        live.exists() && other.exists(),
        "removed a dir that is not stale"
    );
    assert!(runtime_dir(&srv).starts_with(run.path()));
}
