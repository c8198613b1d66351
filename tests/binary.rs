//! The built `cgihost` binary: command line, logs, signals, process hygiene
//! and memory bounds (read from /proc/PID/status).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn run_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin_path())
        .args(args)
        .current_dir(fixtures())
        .output()
        .expect("run cgihost");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flags_get_one_line_naming_the_flag_and_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["--max-body", "10X"], "--max-body"),
        (&["--bind", "not-an-ip"], "--bind"),
        (&["--log-format", "xml"], "--log-format"),
        (&["--fastcgi", "*.php"], "--fastcgi"),
        (&["--fastcgi", "php=unix:/run/php.sock"], "--fastcgi"),
        (&["--fastcgi", "/app=localhost"], "--fastcgi"),
        (&["--upload-dir", "/up=/definitely/not/here"], "upload dir"),
        (&["--upload-dir", "up"], "--upload-dir"),
        (&["--spawn", "/app=no-such-program-here"], "--spawn"),
        (
            &["--spawn", "/app=perl app.fcgi", "--workers", "0"],
            "--workers",
        ),
        (&["--root", "/definitely/not/here"], "root"),
        (&["--cgi-prefix", "cgi"], "cgi_prefix"),
    ];
    for (args, needle) in cases {
        let (code, _, err) = run_cli(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let (code, _, err) = run_cli(&["--port", "99999"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--port"));
}

#[test]
fn help_check_config_and_config_file_errors() {
    let (code, out, _) = run_cli(&["--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--port",
        "--cgi-dir",
        "--fastcgi",
        "--spawn",
        "--max-body",
        "--check-config",
        "MATCH",
    ] {
        assert!(out.contains(flag), "--help lacks {flag}");
    }
    let (code, out, _) = run_cli(&["--check-config", "--root", "static", "--cgi-dir", "cgi-bin"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("/cgi-bin/*") && out.contains("configuration ok"),
        "{out}"
    );

    // The example config in the repository works as it is.
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/cgihost.toml");
    let out = Command::new(bin_path())
        .args(["--check-config", "--config"])
        .arg(&example)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "port = 8080\n\n[cgi]\nmax_procs = 3\n").unwrap();
    let (code, _, err) = run_cli(&["--check-config", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("max_procs") && err.contains(":4:"), "{err}");

    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "root = \"static\"\ncgi_timeout = 5\nmax_body = \"1G\"\n[cgi]\nmax_processes = 3\n",
    )
    .unwrap();
    let (code, _, err) = run_cli(&["--check-config", "--config", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_lines_access_log_and_stderr_tagging() {
    let srv = BinServer::start(&[]);
    assert!(
        srv.stderr_text().contains("route: CGI"),
        "{}",
        srv.stderr_text()
    );
    assert!(srv.stderr_text().contains("route: static"));
    let resp = get(srv.addr, "/cgi-bin/stderr.sh?q=1").await;
    assert_eq!(resp.text(), "ok\n");
    let logged = eventually(Duration::from_secs(3), || {
        let e = srv.stderr_text();
        e.lines()
            .any(|l| l.contains("/cgi-bin/stderr.sh#") && l.contains("first complaint"))
            && e.lines()
                .any(|l| l.contains("/cgi-bin/stderr.sh#") && l.contains("second complaint"))
    })
    .await;
    assert!(
        logged,
        "stderr not logged with its tag:\n{}",
        srv.stderr_text()
    );
    let access = eventually(Duration::from_secs(3), || {
        srv.stdout_text()
            .contains("\"GET /cgi-bin/stderr.sh?q=1 HTTP/1.1\" 200 3 ")
    })
    .await;
    assert!(access, "no access log line:\n{}", srv.stdout_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_requests_leave_no_zombie() {
    let srv = BinServer::start(&[]);
    let mut conn = Conn::open(srv.addr).await;
    for i in 0..200 {
        let resp = conn
            .request(format!("GET /cgi-bin/hello.sh?{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .await;
        assert_eq!(resp.text(), format!("hello {i}\n"));
    }
    let pid = srv.pid();
    let clean = eventually(Duration::from_secs(3), || children_of(pid).is_empty()).await;
    assert!(clean, "children left behind: {:?}", children_of(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_request_in_flight_finish() {
    let mut srv = BinServer::start(&[]);
    let addr = srv.addr;
    let fetch = tokio::spawn(get(addr, "/cgi-bin/slow.sh?2"));
    // The script is running (the request is in flight) before the signal.
    let pid = srv.pid();
    assert!(
        eventually(Duration::from_secs(5), || !children_of(pid).is_empty()).await,
        "script never started"
    );
    srv.signal(libc::SIGTERM);
    let refused = eventually(Duration::from_secs(3), || {
        std::net::TcpStream::connect(addr).is_err()
    })
    .await;
    assert!(refused, "still accepting after SIGTERM");
    let resp = fetch.await.unwrap();
    assert_eq!((resp.status, resp.text().as_str()), (200, "slept 2\n"));
    let code = tokio::task::spawn_blocking(move || srv.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_grace_expiry_kills_what_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("c.toml");
    std::fs::write(&conf, "shutdown_grace = 1\n").unwrap();
    let mut srv = BinServer::start(&["--config", conf.to_str().unwrap()]);
    let tok = token("grace");
    let mut conn = Conn::open(srv.addr).await;
    conn.send(format!("GET /cgi-bin/sleep_pid.sh?{tok} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await;
    let pids = read_pids(&tok, Duration::from_secs(5)).await;
    let started = Instant::now();
    srv.signal(libc::SIGTERM);
    let code = tokio::task::spawn_blocking(move || {
        let c = srv.wait_exit(Duration::from_secs(10));
        (c, srv)
    })
    .await
    .unwrap();
    assert_eq!(code.0, Some(0));
    assert!(started.elapsed() < Duration::from_secs(6));
    for pid in pids {
        assert!(
            eventually(Duration::from_secs(2), || !alive(pid)).await,
            "pid {pid} left behind"
        );
    }
    drop(conn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_upload_streams_in_bounded_memory() {
    let srv = BinServer::start(&[]);
    let mut conn = Conn::open(srv.addr).await;
    let sent_hash = stream_upload(
        &mut conn,
        &post_head("/cgi-bin/sha256.sh", Some(1 << 30)),
        1 << 30,
        false,
    )
    .await;
    let resp = conn.read_response(false).await.expect("response");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text().trim(), sent_hash);
    let hwm = srv.status_kib("VmHWM");
    assert!(
        hwm < 64 * 1024,
        "cgihost peak RSS {hwm} KiB during a 1 GiB upload"
    );
    eprintln!("1 GiB upload: cgihost VmHWM {hwm} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_of_256_mib_is_spooled_with_exact_length() {
    let srv = BinServer::start(&[]);
    let mut conn = Conn::open(srv.addr).await;
    let sent_hash = stream_upload(
        &mut conn,
        &post_head("/cgi-bin/sha256.sh", None),
        256 << 20,
        true,
    )
    .await;
    let resp = conn.read_response(false).await.expect("response");
    assert_eq!(
        resp.text().trim(),
        sent_hash,
        "CONTENT_LENGTH or body wrong"
    );
    let hwm = srv.status_kib("VmHWM");
    assert!(hwm < 64 * 1024, "cgihost peak RSS {hwm} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_applies_backpressure_to_the_script() {
    use tokio::io::AsyncReadExt;
    let srv = BinServer::start(&[]);
    let mut conn = Conn::open(srv.addr).await;
    conn.send(b"GET /cgi-bin/zeros.sh?300 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await;
    let mut buf = vec![0u8; 64 * 1024];
    conn.stream.read_exact(&mut buf).await.unwrap();
    // Stop reading: socket buffers and the pipe fill, the script blocks.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = srv.status_kib("VmRSS");
    assert!(
        rss < 48 * 1024,
        "cgihost buffered a slow client's output: {rss} KiB"
    );
    let mut total = buf.len() as u64;
    let mut rest = Vec::new();
    conn.stream.read_to_end(&mut rest).await.unwrap();
    total += rest.len() as u64;
    // Headers + chunk framing are counted too; the body is 300 MiB.
    assert!(total > 300 << 20, "only {total} bytes arrived");
    let hwm = srv.status_kib("VmHWM");
    assert!(hwm < 64 * 1024, "peak {hwm} KiB");
}

/// Live (non-zombie) processes whose process group is `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        // state, ppid, pgrp
        if fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid) && alive(pid) {
            out.push(pid);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_kills_cgi_groups_that_answered_but_never_exited() {
    // One answers and closes stdout, then sleeps; one answers with a
    // Content-Length and sleeps inside its post-response grace; one does
    // the first and ignores SIGTERM (SIGKILL follows).
    let cgi = script_dir(&[
        (
            "ignores_term.sh",
            "#!/bin/sh\ntrap '' TERM\nprintf 'Content-Type: text/plain\\r\\n\\r\\n%s\\n' $$\nexec >&-\nsleep 30\n",
        ),
        (
            "closes_stdout.sh",
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n%s\\n' $$\nexec >&-\nsleep 30\n",
        ),
        (
            "lingers.sh",
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\nContent-Length: 8\\r\\n\\r\\n%-7s\\n' $$\nsleep 30\n",
        ),
    ]);
    let static_root = fixtures().join("static");
    let mut srv = BinServer::start_cmd(BinServer::command_with(&static_root, cgi.path(), &[]));
    let mut groups = Vec::new();
    for script in ["closes_stdout.sh", "lingers.sh", "ignores_term.sh"] {
        let resp = get(srv.addr, format!("/cgi-bin/{script}")).await;
        assert_eq!(resp.status, 200, "{script}: {}", resp.text());
        let pgid: u32 = resp.text().trim().parse().expect("the script's pid");
        assert!(
            !group_members(pgid).is_empty(),
            "{script}: its group should still be running"
        );
        groups.push(pgid);
    }
    // Nothing is in flight: the connections are closed.
    srv.signal(libc::SIGTERM);
    let code = tokio::task::spawn_blocking(move || {
        let c = srv.wait_exit(Duration::from_secs(15));
        (c, srv)
    })
    .await
    .unwrap();
    assert_eq!(code.0, Some(0), "{}", code.1.stderr_text());
    for pgid in groups {
        assert!(
            eventually(Duration::from_secs(2), || group_members(pgid).is_empty()).await,
            "group {pgid} outlived cgihost: {:?}\n{}",
            group_members(pgid),
            code.1.stderr_text()
        );
    }
}
