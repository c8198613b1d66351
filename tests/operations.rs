//! Running cgihost in production: the status page (JSON, Prometheus, and
//! the HTML rendered in headless Chromium), SIGHUP configuration reload,
//! several listeners, `--user`, systemd socket activation and
//! `--check-config`. Everything against the built binary.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

async fn status_json(addr: std::net::SocketAddr) -> Value {
    let resp = get(addr, "/status?json").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    serde_json::from_slice(&resp.body).expect("status JSON parses")
}

fn route<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["routes"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["route"] == name))
        .unwrap_or(&Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_known_traffic_in_json_and_metrics() {
    let app = repo("cgi-bin/app.fcgi");
    let spawn = format!("/app=perl {}", app.display());
    let srv = PoolServer::start(&[
        "--status-path",
        "/status",
        "--spawn",
        &spawn,
        "--workers",
        "2",
    ]);
    for _ in 0..3 {
        assert_eq!(get(srv.addr, "/index.html").await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(srv.addr, "/missing.html").await.status, 404);
    }
    assert_eq!(get(srv.addr, "/cgi-bin/hello.sh").await.status, 200);
    for _ in 0..4 {
        assert_eq!(get(srv.addr, "/app/x").await.status, 200);
    }
    // Requests are counted when their body is done; poll briefly.
    let mut s = Value::Null;
    for _ in 0..50 {
        s = status_json(srv.addr).await;
        if route(&s, "spawn /app/*")["requests"] == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let statics = route(&s, "static");
    assert_eq!(statics["requests"], 5, "{s:#}");
    assert_eq!(statics["status"]["2xx"], 3);
    assert_eq!(statics["status"]["4xx"], 2);
    let index_len = std::fs::metadata(fixtures().join("static/index.html"))
        .unwrap()
        .len();
    assert!(statics["bytes_out"].as_u64().unwrap() >= 3 * index_len);
    let cgi = route(&s, "cgi");
    assert_eq!(cgi["requests"], 1);
    assert!(cgi["upstream_avg_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(route(&s, "spawn /app/*")["status"]["2xx"], 4);
    assert_eq!(s["pid"], srv.pid());
    assert_eq!(s["config_generation"], 1);
    assert_eq!(s["cgi"]["max_processes"], 128);
    assert!(s["connections"]["total"].as_u64().unwrap() >= 10);
    let pool = &s["fastcgi_pools"][0];
    assert_eq!(pool["pool"], "spawn /app/*");
    assert_eq!(pool["healthy"], true);
    assert_eq!(pool["requests"], 4);
    let workers = pool["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    for w in workers {
        let pid = w["pid"].as_u64().unwrap() as u32;
        assert!(alive(pid), "worker {pid} listed but not running");
        assert!(matches!(w["state"].as_str(), Some("running" | "starting")));
    }
    // `Accept: application/json` works as well as `?json`.
    let by_accept = request(
        srv.addr,
        "GET",
        "/status",
        "Accept: application/json\r\n",
        b"",
    )
    .await;
    assert_eq!(by_accept.header("content-type"), Some("application/json"));

    let metrics = get(srv.addr, "/status/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = metrics.text();
    for line in [
        "cgihost_requests_total{route=\"static\",code=\"4xx\"} 2",
        "cgihost_requests_total{route=\"cgi\",code=\"2xx\"} 1",
        "cgihost_fastcgi_pool_workers{pool=\"spawn /app/*\",state=\"running\"}",
        "# TYPE cgihost_requests_total counter",
    ] {
        assert!(text.contains(line), "metrics lack {line:?}:\n{text}");
    }
    // The access log line of the CGI request carries its upstream time.
    // (Lines are written by the log's own thread: wait for it.)
    let line = srv
        .access_line("\"GET /cgi-bin/hello.sh HTTP/1.1\" 200")
        .await;
    let fields: Vec<&str> = line.rsplitn(3, ' ').collect();
    let (upstream, total): (f64, f64) = (fields[0].parse().unwrap(), fields[1].parse().unwrap());
    assert!((0.0..=total).contains(&upstream), "{line}");
    let static_line = srv.access_line("GET /index.html").await;
    assert!(
        static_line.ends_with(" -"),
        "no upstream for static files: {static_line}"
    );
    // Not a status path: an ordinary 404 from the static handler.
    assert_eq!(get(srv.addr, "/status/other").await.status, 404);
    assert_eq!(
        request(srv.addr, "POST", "/status", "", b"x").await.status,
        405
    );
}

/// Headless Chromium, as the workplace probe runs it.
fn chromium(args: &[&str], url: &str) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // Containers often have a tiny /dev/shm.
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .expect("run chromium (Debian package chromium)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_renders_and_updates_live_in_chromium() {
    let app = repo("cgi-bin/app.fcgi");
    let spawn = format!("/app=perl {}", app.display());
    let srv = PoolServer::start(&[
        "--status-path",
        "/status/",
        "--spawn",
        &spawn,
        "--workers",
        "2",
    ]);
    for path in ["/index.html", "/cgi-bin/hello.sh", "/app/", "/nope"] {
        get(srv.addr, path).await;
    }
    // Workers count as running after a second up.
    let mut running = false;
    for _ in 0..100 {
        let s = status_json(srv.addr).await;
        let workers = s["fastcgi_pools"][0]["workers"].as_array().cloned();
        if workers.is_some_and(|w| w.len() == 2 && w.iter().all(|w| w["state"] == "running")) {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(running, "workers never reached running");
    let url = format!("http://127.0.0.1:{}/status", srv.addr.port());
    let dom = tokio::task::spawn_blocking({
        let url = url.clone();
        move || chromium(&["--virtual-time-budget=5000", "--dump-dom"], &url)
    })
    .await
    .unwrap();
    let html = String::from_utf8_lossy(&dom.stdout);
    assert!(
        html.contains("data-live=\"1\""),
        "the page's script did not refresh it: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    for want in [
        "Requests per route",
        "spawn /app/*",
        ">static<",
        ">cgi<",
        "class=\"ok\">running<",
        "CGI processes running / max",
    ] {
        assert!(html.contains(want), "rendered page lacks {want:?}:\n{html}");
    }
    // A screenshot for people to look at (target/status-page.png).
    let png = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let shot = tokio::task::spawn_blocking({
        let arg = format!("--screenshot={}", png.display());
        move || chromium(&["--virtual-time-budget=3000", &arg], &url)
    })
    .await
    .unwrap();
    assert!(shot.status.success());
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_routes_and_keeps_them_on_a_bad_file() {
    let app = repo("cgi-bin/app.fcgi");
    let with_pool = format!(
        "status_path = \"/status\"\ncgi_prefix = \"/cgi-bin\"\n\
         [[spawn]]\nmatch = \"/app\"\ncmd = \"perl {}\"\nworkers = 1\n",
        app.display()
    );
    let conf = ConfFile::new(&with_pool);
    let srv = PoolServer::start(&["--config", conf.arg()]);
    assert_eq!(get(srv.addr, "/cgi-bin/hello.sh").await.status, 200);
    assert_eq!(get(srv.addr, "/app/x").await.status, 200);
    let s = status_json(srv.addr).await;
    let worker = s["fastcgi_pools"][0]["workers"][0]["pid"].as_u64().unwrap() as u32;

    // A good file: the CGI prefix moves, the pool goes away.
    conf.rewrite("status_path = \"/status\"\ncgi_prefix = \"/scripts\"\n");
    srv.signal(libc::SIGHUP);
    await_reload(&srv, 2).await;
    assert_eq!(get(srv.addr, "/scripts/hello.sh").await.status, 200);
    assert_eq!(get(srv.addr, "/cgi-bin/hello.sh").await.status, 404);
    assert_eq!(get(srv.addr, "/app/x").await.status, 404);
    assert!(
        eventually(Duration::from_secs(10), || !alive(worker)).await,
        "the removed pool's worker {worker} still runs"
    );
    assert_eq!(status_json(srv.addr).await["config_generation"], 2);

    // A bad file: rejected with a line naming the problem; nothing changes.
    conf.rewrite("status_path = \"/status\"\ncgi_prefix = \"/other\"\nbogus_key = 1\n");
    srv.signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(10), || srv
            .stderr_text()
            .contains("reload failed"))
        .await
    );
    let log = srv.stderr_text();
    let line = log.lines().find(|l| l.contains("reload failed")).unwrap();
    assert!(
        line.contains("bogus_key") && line.contains(":3:"),
        "reload error should name the key and line: {line}"
    );
    assert_eq!(get(srv.addr, "/scripts/hello.sh").await.status, 200);
    assert_eq!(get(srv.addr, "/other/hello.sh").await.status, 404);
    assert_eq!(status_json(srv.addr).await["config_generation"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_listeners_plain_and_tls_from_the_config_file() {
    let (_certs, cert, key) = self_signed_cert();
    let conf = ConfFile::new(&format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n\
         [[listen]]\naddr = \"127.0.0.1:0\"\ntls = false\n\
         [[listen]]\naddr = \"127.0.0.1:0\"\n",
        cert.display(),
        key.display()
    ));
    let srv = start_with_listeners(&conf);
    assert!(
        eventually(Duration::from_secs(5), || srv
            .stderr_text()
            .contains("listening on https://"))
        .await
    );
    let log = srv.stderr_text();
    let https: std::net::SocketAddr = log
        .split("listening on https://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .expect("https listener address");
    assert_eq!(get(srv.addr, "/index.html").await.status, 200);
    let out = curl(&[
        "--cacert",
        cert.to_str().unwrap(),
        &format!("https://127.0.0.1:{}/index.html", https.port()),
    ])
    .await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.info, "2 200");
}

/// A world-readable copy of the CGI fixtures and the Perl pool, for a
/// user that cannot read the checkout (it may live under /root).
fn public_site() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cgi = dir.path().join("cgi-bin");
    std::fs::create_dir(&cgi).unwrap();
    std::fs::write(
        cgi.join("id.sh"),
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nuid=%s gid=%s\\n' \"$(id -u)\" \"$(id -g)\"\n",
    )
    .unwrap();
    std::fs::copy(repo("cgi-bin/app.fcgi"), cgi.join("app.fcgi")).unwrap();
    let stat = dir.path().join("static");
    std::fs::create_dir(&stat).unwrap();
    std::fs::write(stat.join("index.html"), "<p>hi</p>\n").unwrap();
    for p in [cgi.join("id.sh"), cgi.join("app.fcgi")] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for p in [&cgi, &stat] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

fn uid_line(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_runs_cgi_workers_and_cgihost_itself_unprivileged() {
    // SAFETY: plain syscall.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root, as CI runs it"
    );
    let site = public_site();
    let run = tempfile::tempdir().unwrap();
    std::fs::set_permissions(run.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let app = site.path().join("cgi-bin/app.fcgi");
    let mut cmd = Command::new(bin_path());
    cmd.args(["--bind", "127.0.0.1", "--port", "0", "--user", "nobody"])
        .arg("--root")
        .arg(site.path().join("static"))
        .arg("--cgi-dir")
        .arg(site.path().join("cgi-bin"))
        .args(["--status-path", "/status", "--workers", "1", "--spawn"])
        .arg(format!("/app=perl {}", app.display()))
        .env("XDG_RUNTIME_DIR", run.path());
    let srv = BinServer::start_cmd(cmd);
    let nobody = "\t65534\t65534\t65534\t65534";
    assert!(
        uid_line(srv.pid()).ends_with(nobody),
        "{}",
        uid_line(srv.pid())
    );
    let resp = get(srv.addr, "/cgi-bin/id.sh").await;
    assert_eq!(resp.text(), "uid=65534 gid=65534\n");
    assert_eq!(get(srv.addr, "/app/x").await.status, 200);
    let s = status_json(srv.addr).await;
    let worker = s["fastcgi_pools"][0]["workers"][0]["pid"].as_u64().unwrap() as u32;
    assert!(uid_line(worker).ends_with(nobody), "{}", uid_line(worker));
    assert!(srv.stderr_text().contains("running as user nobody"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_user_root_is_warned_about() {
    let srv = PoolServer::start(&[]);
    let root = unsafe { libc::geteuid() } == 0;
    assert_eq!(
        srv.stderr_text().contains("running as root"),
        root,
        "{}",
        srv.stderr_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_socket_activation_serves_the_passed_socket() {
    // A stand-in for systemd: bind, put the socket on fd 3, set
    // LISTEN_PID to the pid that will exec cgihost, exec it.
    let launcher = r#"
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(64)
print("port", s.getsockname()[1], file=sys.stderr, flush=True)
os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[1], sys.argv[1:])
"#;
    let f = fixtures();
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(launcher)
        .arg(bin_path())
        .arg("--root")
        .arg(f.join("static"))
        .arg("--cgi-dir")
        .arg(f.join("cgi-bin"));
    let srv = BinServer::start_cmd(cmd);
    let log = srv.stderr_text();
    let port: u16 = log
        .lines()
        .find_map(|l| l.strip_prefix("port "))
        .and_then(|p| p.trim().parse().ok())
        .expect("launcher printed its port");
    assert_eq!(srv.addr.port(), port, "{log}");
    assert!(log.contains("using 1 socket(s) from systemd"), "{log}");
    let resp = get(srv.addr, "/cgi-bin/env.pl").await;
    assert_eq!(resp.status, 200);
    let env = resp.env();
    assert!(!env.contains_key("LISTEN_FDS") && !env.contains_key("LISTEN_PID"));
}

#[test]
fn check_config_catches_tls_and_user_problems() {
    let check = |args: &[&str]| {
        let out = Command::new(bin_path())
            .args(["--check-config", "--root"])
            .arg(fixtures().join("static"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (_certs, cert, key) = self_signed_cert();
    let (code, err) = check(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        cert.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("tls_key"), "{err}");
    let (code, err) = check(&["--tls-cert", cert.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--tls-key"), "{err}");
    let (code, err) = check(&["--user", "no-such-user-here"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no such user"), "{err}");
    let (code, _) = check(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--user",
        "nobody",
        "--status-path",
        "/status",
    ]);
    assert_eq!(code, Some(0));
    let (code, err) = check(&["--status-path", "/"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("status"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_loads_a_renewed_certificate() {
    let (dir, cert, key) = self_signed_cert();
    let (_next_dir, next_cert, next_key) = self_signed_cert();
    let live_cert = dir.path().join("live-cert.pem");
    let live_key = dir.path().join("live-key.pem");
    std::fs::copy(&cert, &live_cert).unwrap();
    std::fs::copy(&key, &live_key).unwrap();
    let srv = PoolServer::start(&[
        "--tls-cert",
        live_cert.to_str().unwrap(),
        "--tls-key",
        live_key.to_str().unwrap(),
    ]);
    let url = format!("https://127.0.0.1:{}/index.html", srv.addr.port());
    let trusting = |ca: &Path| {
        let ca = ca.to_str().unwrap().to_string();
        let url = url.clone();
        async move { curl(&["--cacert", &ca, &url]).await }
    };
    assert_eq!(trusting(&cert).await.info, "2 200");
    assert!(!trusting(&next_cert).await.ok);
    // Renew: new files in place, then SIGHUP.
    std::fs::copy(&next_cert, &live_cert).unwrap();
    std::fs::copy(&next_key, &live_key).unwrap();
    srv.signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(10), || srv
            .stderr_text()
            .contains("TLS certificate reloaded"))
        .await
    );
    assert_eq!(trusting(&next_cert).await.info, "2 200");
    assert!(!trusting(&cert).await.ok);
    // A broken renewal keeps the working certificate.
    std::fs::write(&live_key, "not a key\n").unwrap();
    srv.signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(10), || srv
            .stderr_text()
            .contains("keeping the running TLS certificate"))
        .await
    );
    assert_eq!(trusting(&next_cert).await.info, "2 200");
}

/// The binary serving the fixtures' static files on the listeners `conf`
/// names (so without `--bind`/`--port`).
fn start_with_listeners(conf: &ConfFile) -> BinServer {
    let mut cmd = Command::new(bin_path());
    cmd.arg("--config").arg(conf.arg());
    cmd.arg("--root").arg(fixtures().join("static"));
    BinServer::start_cmd(cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_spans_every_listener() {
    let conf = ConfFile::new(
        "max_connections = 1\n[[listen]]\naddr = \"127.0.0.1:0\"\n[[listen]]\naddr = \"127.0.0.1:0\"\n",
    );
    let srv = start_with_listeners(&conf);
    assert!(
        eventually(Duration::from_secs(5), || srv
            .stderr_text()
            .matches("listening on http://")
            .count()
            == 2)
        .await
    );
    let log = srv.stderr_text();
    let addrs: Vec<std::net::SocketAddr> = log
        .split("listening on http://")
        .skip(1)
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(addrs.len(), 2);
    // Both listeners serve.
    for a in &addrs {
        assert_eq!(get(*a, "/index.html").await.status, 200);
    }
    // One open connection on the first uses the only slot...
    let mut first = Conn::open(addrs[0]).await;
    let r = first
        .request(b"GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    assert_eq!(r.status, 200);
    // ...so the second listener's client waits...
    let mut second = Conn::open(addrs[1]).await;
    second
        .send(b"GET /index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await;
    let early = tokio::time::timeout(Duration::from_millis(800), second.read_response(false)).await;
    assert!(early.is_err(), "served over the cap on the second listener");
    // ...until the first closes.
    drop(first);
    let resp = tokio::time::timeout(Duration::from_secs(5), second.read_response(false))
        .await
        .expect("served once the slot was free")
        .expect("a response");
    assert_eq!(resp.status, 200);
}

/// An access log that cannot be written (stdout is /dev/full) is said
/// once on stderr, not dropped in silence, and serving goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_write_errors_are_logged_once() {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let cmd = BinServer::command_in(&fixtures().join("static"), &[]);
    let srv = BinServer::start_cmd_stdout(cmd, full.into());
    for _ in 0..5 {
        assert_eq!(get(srv.addr, "/hello.txt").await.status, 200);
    }
    let said = eventually(Duration::from_secs(10), || {
        srv.stderr_text()
            .contains("access log: writing to stdout failed")
    })
    .await;
    assert!(said, "{}", srv.stderr_text());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(srv.addr, "/hello.txt").await.status, 200);
    let count = srv
        .stderr_text()
        .matches("access log: writing to stdout failed")
        .count();
    assert_eq!(count, 1, "{}", srv.stderr_text());
}

/// systemd's notify protocol, with a unix datagram socket standing in for
/// systemd: READY=1 once listening, RELOADING=1 (+ MONOTONIC_USEC) then
/// READY=1 around a SIGHUP, WATCHDOG=1 pings, STOPPING=1 at SIGTERM, in
/// that order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_notify_messages_arrive_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut cmd = BinServer::command_in(&fixtures().join("static"), &[]);
    cmd.env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "400000");
    let mut srv = BinServer::start_cmd(cmd);
    let next = move |socket: &std::os::unix::net::UnixDatagram, watchdogs: &mut usize| loop {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notify message within 10 s");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.trim() == "WATCHDOG=1" {
            *watchdogs += 1;
            continue;
        }
        return text;
    };
    let mut watchdogs = 0;
    let first = next(&socket, &mut watchdogs);
    assert!(first.lines().any(|l| l == "READY=1"), "{first:?}");
    // The server answers once it said it is ready.
    assert_eq!(get(srv.addr, "/hello.txt").await.status, 200);
    srv.signal(libc::SIGHUP);
    let reloading = next(&socket, &mut watchdogs);
    assert!(
        reloading.lines().any(|l| l == "RELOADING=1"),
        "{reloading:?}"
    );
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading:?}"
    );
    let again = next(&socket, &mut watchdogs);
    assert!(again.lines().any(|l| l == "READY=1"), "{again:?}");
    // A few watchdog periods pass.
    let wait_for_pings = Instant::now();
    while watchdogs < 3 && wait_for_pings.elapsed() < Duration::from_secs(10) {
        let mut buf = [0u8; 64];
        if let Ok(n) = socket.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n]).trim() == "WATCHDOG=1" {
                watchdogs += 1;
            }
        }
    }
    assert!(watchdogs >= 3, "{watchdogs} watchdog pings");
    srv.signal(libc::SIGTERM);
    let stopping = next(&socket, &mut watchdogs);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    assert_eq!(srv.wait_exit(Duration::from_secs(20)), Some(0));
}

/// `threads` sets how many threads serve connections (tokio's workers),
/// as the status page reports; without it, one per CPU; 0 is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_sets_the_serving_threads() {
    let cpus = std::thread::available_parallelism().unwrap().get();
    for (line, want) in [("threads = 1\n", 1), ("threads = 3\n", 3), ("", cpus)] {
        let conf = ConfFile::new(&format!("status_path = \"/status\"\n{line}"));
        let srv = BinServer::start(&["--config", conf.arg()]);
        let s = status_json(srv.addr).await;
        assert_eq!(s["threads"], want, "{line:?}: {s:#}");
        assert_eq!(get(srv.addr, "/index.html").await.status, 200);
    }
    let conf = ConfFile::new("threads = 0\n");
    let out = Command::new(bin_path())
        .args(["--check-config", "--config", conf.arg()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("threads: must be from 1 to 1024"), "{err}");
}
