//! The CGI engine against real scripts (sh, Python, Perl) through the real
//! server on an ephemeral loopback port, in-process.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_is_exactly_the_meta_variables() {
    let srv = TestServer::start(fixture_config()).await;
    let raw = "GET /cgi-bin/env.pl/a%20b/c?x=1&y=%20z HTTP/1.1\r\n\
               Host: example.org:8080\r\n\
               X-Custom: one\r\n\
               X-Custom: two\r\n\
               X_Forwarded_For: 6.6.6.6\r\n\
               Proxy: http://evil.example:3128\r\n\
               Content_Length: 999\r\n\
               Authorization: Basic dTpw\r\n\
               Cookie: a=1\r\n\
               Connection: close\r\n\r\n";
    let resp = Conn::open(srv.addr).await.request(raw.as_bytes()).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let env = resp.env();
    let root = std::fs::canonicalize(fixtures().join("static")).unwrap();
    let cgi = std::fs::canonicalize(fixtures().join("cgi-bin")).unwrap();
    let root = root.to_str().unwrap();
    let expect = [
        ("GATEWAY_INTERFACE", "CGI/1.1".to_string()),
        (
            "SERVER_SOFTWARE",
            format!("cgihost/{}", env!("CARGO_PKG_VERSION")),
        ),
        ("SERVER_NAME", "example.org".into()),
        ("SERVER_PORT", srv.addr.port().to_string()),
        ("SERVER_ADDR", "127.0.0.1".into()),
        ("SERVER_PROTOCOL", "HTTP/1.1".into()),
        ("REQUEST_METHOD", "GET".into()),
        ("REQUEST_SCHEME", "http".into()),
        ("SCRIPT_NAME", "/cgi-bin/env.pl".into()),
        ("SCRIPT_FILENAME", format!("{}/env.pl", cgi.display())),
        ("PATH_INFO", "/a b/c".into()),
        ("PATH_TRANSLATED", format!("{root}/a b/c")),
        ("QUERY_STRING", "x=1&y=%20z".into()),
        ("REQUEST_URI", "/cgi-bin/env.pl/a%20b/c?x=1&y=%20z".into()),
        ("DOCUMENT_ROOT", root.to_string()),
        ("REMOTE_ADDR", "127.0.0.1".into()),
        ("REMOTE_HOST", "127.0.0.1".into()),
        ("REDIRECT_STATUS", "200".into()),
        ("PATH", std::env::var("PATH").unwrap()),
        ("HTTP_HOST", "example.org:8080".into()),
        ("HTTP_X_CUSTOM", "one, two".into()),
        ("HTTP_AUTHORIZATION", "Basic dTpw".into()),
        ("HTTP_COOKIE", "a=1".into()),
        ("HTTP_CONNECTION", "close".into()),
        ("CWD", cgi.display().to_string()),
    ];
    for (k, v) in &expect {
        assert_eq!(env.get(*k), Some(v), "{k}");
    }
    let port: u16 = env["REMOTE_PORT"].parse().expect("REMOTE_PORT is a port");
    assert!(port > 0);
    // Nothing else: no HTTP_PROXY, no forged names, no server environment.
    let mut want: BTreeSet<&str> = expect.iter().map(|(k, _)| *k).collect();
    want.insert("REMOTE_PORT");
    let got: BTreeSet<&str> = env.keys().map(|k| k.as_str()).collect();
    assert_eq!(got, want, "unexpected or missing variables");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_string_is_never_argv() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("argv.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nargc=%s\\n' \"$#\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cfg = fixture_config();
    cfg.cgi_dir = dir.path().to_path_buf();
    let srv = TestServer::start(cfg).await;
    let resp = get(srv.addr, "/cgi-bin/argv.sh?-s+-d+foo").await;
    assert_eq!(resp.text(), "argc=0\n");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_body_reaches_stdin_intact() {
    let srv = TestServer::start(fixture_config()).await;
    let body = random_bytes(5 << 20, 7);
    let resp = request(
        srv.addr,
        "POST",
        "/cgi-bin/body_sha.py",
        "Content-Type: application/octet-stream\r\n",
        &body,
    )
    .await;
    assert_eq!(resp.status, 200);
    let text = resp.text();
    assert!(text.contains(&format!("length={}\n", body.len())), "{text}");
    assert!(
        text.contains(&format!("content_length={}\n", body.len())),
        "{text}"
    );
    assert!(
        text.contains(&format!("sha256={}\n", sha256_hex(&body))),
        "{text}"
    );
    srv.stop().await;
}

/// `Content-Length: 0` announces a body of no bytes (RFC 9112 §6.3), so the
/// script gets CONTENT_LENGTH=0, as it does for an empty chunked body; a
/// request with neither header has no CONTENT_LENGTH at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_declared_body_is_content_length_zero() {
    let srv = TestServer::start(fixture_config()).await;
    let env = request(
        srv.addr,
        "POST",
        "/cgi-bin/env.pl",
        "Content-Length: 0\r\n",
        b"",
    )
    .await
    .env();
    assert_eq!(env.get("CONTENT_LENGTH").map(String::as_str), Some("0"));
    let env = request(
        srv.addr,
        "POST",
        "/cgi-bin/env.pl",
        "Transfer-Encoding: chunked\r\n",
        b"0\r\n\r\n",
    )
    .await
    .env();
    assert_eq!(env.get("CONTENT_LENGTH").map(String::as_str), Some("0"));
    let env = request(srv.addr, "POST", "/cgi-bin/env.pl", "", b"")
        .await
        .env();
    assert!(!env.contains_key("CONTENT_LENGTH"), "{env:?}");
    srv.stop().await;
}

fn tmp_spool_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .map(|t| {
                    t.to_string_lossy().contains("(deleted)") || t.starts_with(std::env::temp_dir())
                })
                .unwrap_or(false)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_gets_exact_content_length_and_spool_is_removed() {
    let spool = tempfile::tempdir().unwrap();
    let mut cfg = fixture_config();
    cfg.spool_dir = Some(spool.path().to_path_buf());
    let srv = TestServer::start(cfg).await;
    let before = tmp_spool_fds();
    let body = random_bytes(3_000_001, 11);
    let mut raw = b"POST /cgi-bin/body_sha.py HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for chunk in body.chunks(77_777) {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let resp = Conn::open(srv.addr).await.request(&raw).await;
    let text = resp.text();
    assert_eq!(resp.status, 200, "{text}");
    assert!(text.contains("content_length=3000001\n"), "{text}");
    assert!(
        text.contains(&format!("sha256={}\n", sha256_hex(&body))),
        "{text}"
    );
    // Nothing left in the spool directory, and no spool fd left open.
    assert_eq!(std::fs::read_dir(spool.path()).unwrap().count(), 0);
    assert!(
        eventually(Duration::from_secs(2), || tmp_spool_fds() <= before).await,
        "spool file still open"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_writing_before_reading_does_not_deadlock() {
    let srv = TestServer::start(fixture_config()).await;
    let body = random_bytes(4 << 20, 3);
    let resp = tokio::time::timeout(
        Duration::from_secs(20),
        request(srv.addr, "POST", "/cgi-bin/write_first.py", "", &body),
    )
    .await
    .expect("deadlock: no response in 20s");
    assert_eq!(resp.status, 200);
    assert_eq!(&resp.body[..1 << 20], &vec![b'x'; 1 << 20][..]);
    let tail = String::from_utf8_lossy(&resp.body[1 << 20..]).into_owned();
    assert!(
        tail.contains(&format!("sha256={}", sha256_hex(&body))),
        "{tail}"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_redirect_is_served_internally_as_get() {
    let srv = TestServer::start(fixture_config()).await;
    let resp = request(
        srv.addr,
        "POST",
        "/cgi-bin/local_redirect.sh",
        "X-Keep: me\r\n",
        b"a=1",
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("location"), None);
    let env = resp.env();
    assert_eq!(env["REQUEST_METHOD"], "GET");
    assert_eq!(env["SCRIPT_NAME"], "/cgi-bin/env.pl");
    assert_eq!(env["PATH_INFO"], "/after");
    assert_eq!(env["QUERY_STRING"], "redirected=1");
    assert_eq!(env["HTTP_X_KEEP"], "me");
    assert!(!env.contains_key("CONTENT_LENGTH"));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_redirect_status_reason_and_header_forms() {
    let srv = TestServer::start(fixture_config()).await;
    let resp = get(srv.addr, "/cgi-bin/client_redirect.sh").await;
    assert_eq!(resp.status, 302);
    assert_eq!(
        resp.header("location"),
        Some("https://example.org/elsewhere")
    );

    let resp = get(srv.addr, "/cgi-bin/status_reason.sh").await;
    assert_eq!((resp.status, resp.reason.as_str()), (403, "Go Away"));
    assert_eq!(resp.header_all("x-extra"), vec!["one", "two"]);
    assert_eq!(resp.text(), "denied\n");

    let resp = get(srv.addr, "/cgi-bin/lf_only.pl").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-lf"), Some("yes"));
    assert_eq!(resp.text(), "lf body\n");

    let resp = get(srv.addr, "/cgi-bin/hello.py").await;
    assert_eq!(resp.text(), "hello from python\n");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_output_is_502() {
    let srv = TestServer::start(fixture_config()).await;
    for script in [
        "bad_no_type.sh",
        "bad_garbage.sh",
        "bad_no_output.sh",
        "bad_huge_header.py",
    ] {
        let resp = get(srv.addr, format!("/cgi-bin/{script}")).await;
        assert_eq!(resp.status, 502, "{script}");
        assert!(resp.text().contains("502 Bad Gateway"), "{script}");
        for leak in ["content type", "not a header", "X-Filler", "X-Only"] {
            assert!(!resp.text().contains(leak), "{script} leaked its output");
        }
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nph_output_passes_through() {
    let srv = TestServer::start(fixture_config()).await;
    let resp = get(srv.addr, "/cgi-bin/nph-raw.sh").await;
    assert_eq!((resp.status, resp.reason.as_str()), (202, "Accepted Raw"));
    assert_eq!(resp.header("x-nph"), Some("yes"));
    assert_eq!(resp.text(), "raw output\n");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_rules_404_403_nested_and_symlinks() {
    let srv = TestServer::start(fixture_config()).await;
    assert_eq!(get(srv.addr, "/cgi-bin/missing.sh").await.status, 404);
    assert_eq!(
        get(srv.addr, "/cgi-bin/not_executable.sh").await.status,
        403
    );
    assert_eq!(get(srv.addr, "/cgi-bin/sub").await.status, 403);
    assert_eq!(get(srv.addr, "/cgi-bin/").await.status, 403);
    assert_eq!(
        get(srv.addr, "/cgi-bin/%2e%2e/static/index.html")
            .await
            .status,
        403
    );
    assert_eq!(
        get(srv.addr, "/cgi-bin/..%2fstatic/hello.txt").await.status,
        403
    );
    let resp = get(srv.addr, "/cgi-bin/sub/nested/deep.sh/x/y").await;
    assert_eq!(resp.text(), "nested /cgi-bin/sub/nested/deep.sh|/x/y\n");
    srv.stop().await;

    // A symlink leading out of the CGI directory is refused.
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/bin/echo", dir.path().join("echo")).unwrap();
    let mut cfg = fixture_config();
    cfg.cgi_dir = dir.path().to_path_buf();
    let srv = TestServer::start(cfg).await;
    assert_eq!(get(srv.addr, "/cgi-bin/echo").await.status, 403);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn program_source_is_never_served_even_under_root() {
    let mut cfg = fixture_config();
    cfg.root = fixtures();
    cfg.cgi_prefix = "/run".into();
    let srv = TestServer::start(cfg).await;
    let resp = get(srv.addr, "/cgi-bin/env.pl").await;
    assert_eq!(resp.status, 404);
    assert!(!resp.text().contains("perl"));
    assert_eq!(get(srv.addr, "/run/hello.sh?x").await.text(), "hello x\n");
    assert_eq!(
        get(srv.addr, "/static/hello.txt").await.text(),
        "plain text\n"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_script_is_killed_with_504() {
    let mut cfg = fixture_config();
    cfg.cgi.timeout = Duration::from_secs(1);
    let srv = TestServer::start(cfg).await;
    let tok = token("timeout");
    let started = Instant::now();
    let fetch = tokio::spawn(get(srv.addr, format!("/cgi-bin/sleep_pid.sh?{tok}")));
    let pids = read_pids(&tok, Duration::from_secs(5)).await;
    let resp = fetch.await.unwrap();
    assert_eq!(resp.status, 504);
    assert!(started.elapsed() < Duration::from_secs(5));
    for pid in pids {
        assert!(
            eventually(Duration::from_secs(2), || !alive(pid)).await,
            "pid {pid} survived the timeout"
        );
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_kills_the_process_group() {
    let srv = TestServer::start(fixture_config()).await;
    let tok = token("disconnect");
    let mut conn = Conn::open(srv.addr).await;
    conn.send(format!("GET /cgi-bin/sleep_pid.sh?{tok} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await;
    let pids = read_pids(&tok, Duration::from_secs(5)).await;
    assert!(pids.iter().all(|&p| alive(p)));
    drop(conn);
    for pid in pids {
        assert!(
            eventually(Duration::from_secs(2), || !alive(pid)).await,
            "pid {pid} outlived its client"
        );
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_child_neither_hangs_the_response_nor_survives() {
    let srv = TestServer::start(fixture_config()).await;
    let tok = token("bg");
    let started = Instant::now();
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        get(srv.addr, format!("/cgi-bin/bg_child.sh?{tok}")),
    )
    .await
    .expect("response hung on a background child holding stdout");
    assert_eq!(resp.text(), "done\n");
    assert!(started.elapsed() < Duration::from_secs(3));
    let pids = read_pids(&tok, Duration::from_secs(2)).await;
    assert!(
        eventually(Duration::from_secs(2), || !alive(pids[0])).await,
        "background child survived"
    );
    srv.stop().await;
}

/// Kills the escaped daemon when the test ends, pass or fail.
struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setsid_daemon_holding_stdout_does_not_hold_the_response() {
    // The daemon leaves the script's process group and keeps stdout open
    // after the script exits: only a short grace later, the response ends
    // complete (final chunk, not an abort at --cgi-timeout).
    let cgi = script_dir(&[(
        "daemon.sh",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\n\
         t=$(mktemp)\n\
         setsid sh -c \"echo \\$\\$ > $t; exec sleep 60\" &\n\
         while [ ! -s $t ]; do sleep 0.05; done\n\
         echo \"daemon $(cat $t)\"\nrm -f $t\n",
    )]);
    let static_root = fixtures().join("static");
    let srv = BinServer::start_cmd(BinServer::command_with(
        &static_root,
        cgi.path(),
        &["--cgi-timeout", "10"],
    ));
    let started = Instant::now();
    let mut conn = Conn::open(srv.addr).await;
    conn.send(b"GET /cgi-bin/daemon.sh HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    let resp = tokio::time::timeout(Duration::from_secs(20), conn.read_response(false))
        .await
        .expect("no response");
    let took = started.elapsed();
    let resp = resp.expect("the response was aborted, not ended");
    let daemon = resp
        .text()
        .strip_prefix("daemon ")
        .and_then(|p| p.trim().parse::<u32>().ok());
    let _cleanup = KillOnDrop(daemon);
    assert_eq!(resp.status, 200);
    assert!(
        daemon.is_some_and(alive),
        "{:?}: no escaped daemon",
        resp.text()
    );
    assert!(took < Duration::from_secs(6), "response took {took:?}");
    let line = srv.access_line("/cgi-bin/daemon.sh").await;
    assert!(
        line.contains("\" 200 ") && !line.contains("aborted"),
        "{line}"
    );
    // The log writer is a thread of its own: wait for the line.
    let logged = eventually(Duration::from_secs(10), || {
        srv.stderr_text().contains("escaped its group")
    })
    .await;
    assert!(logged, "{}", srv.stderr_text());
    // The connection is still good for the next request.
    let next = conn
        .request(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    assert_eq!(next.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests() {
    let srv = TestServer::start(fixture_config()).await;
    let tasks: Vec<_> = (0..50)
        .map(|i| tokio::spawn(get(srv.addr, format!("/cgi-bin/hello.sh?c{i}"))))
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let resp = t.await.unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.text(), format!("hello c{i}\n"));
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_cap_requests_queue_then_get_503() {
    let mut cfg = fixture_config();
    cfg.cgi.max_processes = 2;
    cfg.cgi.queue_timeout = Duration::from_millis(500);
    let srv = TestServer::start(cfg).await;
    let slow: Vec<_> = (0..2)
        .map(|_| tokio::spawn(get(srv.addr, "/cgi-bin/slow.sh?2")))
        .collect();
    // Both slots taken (not just "probably, after a while").
    let app = srv.app.clone();
    assert!(
        eventually(Duration::from_secs(5), || app.cgi.groups.len() == 2).await,
        "slow scripts never started"
    );
    let started = Instant::now();
    let resp = get(srv.addr, "/cgi-bin/hello.sh").await;
    assert_eq!(resp.status, 503);
    assert!(resp.header("retry-after").is_some());
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "did not queue first"
    );
    for t in slow {
        assert_eq!(t.await.unwrap().text(), "slept 2\n");
    }
    // A slot is free again.
    assert_eq!(
        get(srv.addr, "/cgi-bin/hello.sh?again").await.text(),
        "hello again\n"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_body_does_not_desync_keep_alive() {
    let srv = TestServer::start(fixture_config()).await;
    let mut conn = Conn::open(srv.addr).await;
    let body = random_bytes(200_000, 5);
    let mut raw = format!(
        "POST /cgi-bin/unread_body.sh HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    // A second request pipelined right behind the body.
    raw.extend_from_slice(b"GET /cgi-bin/hello.sh?second HTTP/1.1\r\nHost: t\r\n\r\n");
    conn.send(&raw).await;
    let first = conn.read_response(false).await.expect("first response");
    assert_eq!(first.text(), "ignored your body\n");
    let second = conn.read_response(false).await.expect("second response");
    assert_eq!(second.text(), "hello second\n");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_body_is_413_before_the_script_runs() {
    let mut cfg = fixture_config();
    cfg.max_body = Some(1000);
    let srv = TestServer::start(cfg).await;
    let resp = request(srv.addr, "POST", "/cgi-bin/body_sha.py", "", &[b'a'; 1001]).await;
    assert_eq!(resp.status, 413);
    let resp = request(srv.addr, "POST", "/cgi-bin/body_sha.py", "", &[b'a'; 1000]).await;
    assert!(resp.text().contains("length=1000\n"));
    let mut raw = b"POST /cgi-bin/body_sha.py HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..3 {
        raw.extend_from_slice(b"200\r\n");
        raw.extend_from_slice(&[b'b'; 0x200]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let resp = Conn::open(srv.addr).await.request(&raw).await;
    assert_eq!(resp.status, 413);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_request_runs_script_without_body() {
    let srv = TestServer::start(fixture_config()).await;
    let mut conn = Conn::open(srv.addr).await;
    let resp = conn
        .request(b"HEAD /cgi-bin/hello.sh HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("text/plain"));
    // The connection is still in sync.
    let resp = conn
        .request(b"GET /cgi-bin/hello.sh?after-head HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    assert_eq!(resp.text(), "hello after-head\n");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_response_lets_the_script_finish_its_work_after_the_reply() {
    // hyper drops a body once Content-Length bytes are out: that must end
    // the response as complete and give the script its grace, not kill it.
    let dir = script_dir(&[
        (
            "after_reply.sh",
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\nContent-Length: 3\\r\\n\\r\\nok\\n'\n\
             sleep 0.2\ntouch marker\n",
        ),
        (
            "short.sh",
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\nContent-Length: 10\\r\\n\\r\\nok\\n'\n",
        ),
    ]);
    let srv = BinServer::start_cmd(BinServer::command_with(
        &fixtures().join("static"),
        dir.path(),
        &[],
    ));
    let mut conn = Conn::open(srv.addr).await;
    let resp = conn
        .request(b"GET /cgi-bin/after_reply.sh HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header_all("content-length"), vec!["3"]);
    assert_eq!(resp.text(), "ok\n");
    let marker = dir.path().join("marker");
    assert!(
        eventually(Duration::from_secs(5), || marker.exists()).await,
        "the script was killed before its work after the reply"
    );
    std::fs::remove_file(&marker).unwrap();
    let line = srv
        .access_line("\"GET /cgi-bin/after_reply.sh HTTP/1.1\" 200 3 ")
        .await;
    assert!(!line.ends_with(" aborted"), "{line}");
    // The connection goes on.
    let resp = conn
        .request(b"GET /cgi-bin/after_reply.sh?again HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    assert_eq!(resp.text(), "ok\n");
    assert!(eventually(Duration::from_secs(5), || marker.exists()).await);
    // The same over HTTP/2 (the stream ends with the last declared byte).
    std::fs::remove_file(&marker).unwrap();
    let url = format!(
        "http://127.0.0.1:{}/cgi-bin/after_reply.sh?h2",
        srv.addr.port()
    );
    let out = curl(&["--http2-prior-knowledge", &url]).await;
    assert_eq!(out.info, "2 200", "{}", out.stderr);
    assert_eq!(out.body, b"ok\n");
    assert!(
        eventually(Duration::from_secs(5), || marker.exists()).await,
        "over HTTP/2 the script was killed before its work after the reply"
    );
    let line = srv
        .access_line("\"GET /cgi-bin/after_reply.sh?h2 HTTP/2.0\" 200 3 ")
        .await;
    assert!(!line.ends_with(" aborted"), "{line}");

    // Output that ends short of its Content-Length is a truncated
    // response: the client's connection closes, the log says so.
    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /cgi-bin/short.sh HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all))
        .await
        .expect("the connection closes")
        .unwrap();
    // (hyper may or may not have flushed the head and the 3 bytes.)
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 200 OK\r\n"),
        "{text}"
    );
    let line = srv
        .access_line("\"GET /cgi-bin/short.sh HTTP/1.1\" 200 3 ")
        .await;
    assert!(line.ends_with(" aborted"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_content_length_is_502_and_bodiless_statuses_drop_it() {
    let head = |h: &str| format!("#!/bin/sh\nprintf '{h}\\r\\n\\r\\nok\\n'\n");
    let dir = script_dir(&[
        (
            "length_word.sh",
            &head("Content-Type: text/plain\\r\\nContent-Length: abc"),
        ),
        (
            "length_two.sh",
            &head("Content-Type: text/plain\\r\\nContent-Length: 3\\r\\nContent-Length: 4"),
        ),
        (
            "length_twice.sh",
            &head("Content-Type: text/plain\\r\\nContent-Length: 3\\r\\nContent-Length: 3"),
        ),
        ("no_content.sh", &head("Status: 204\\r\\nContent-Length: 3")),
        (
            "not_modified.sh",
            &head("Status: 304\\r\\nETag: \"v1\"\\r\\nContent-Length: 3"),
        ),
        (
            "hello.sh",
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nhello %s\\n' \"$QUERY_STRING\"\n",
        ),
    ]);
    let srv = BinServer::start_cmd(BinServer::command_with(
        &fixtures().join("static"),
        dir.path(),
        &[],
    ));
    // One connection, every request pipelined: a bad response must not
    // take the ones behind it down, a 204/304 must not leave bytes behind.
    let paths = [
        "/cgi-bin/length_word.sh",
        "/cgi-bin/hello.sh?1",
        "/cgi-bin/length_two.sh",
        "/cgi-bin/length_twice.sh",
        "/cgi-bin/no_content.sh",
        "/cgi-bin/not_modified.sh",
        "/cgi-bin/hello.sh?2",
    ];
    let mut conn = Conn::open(srv.addr).await;
    let got = conn.pipelined_gets(&paths).await;
    for i in [0, 2] {
        assert_eq!(got[i].status, 502, "{}", paths[i]);
        assert!(got[i].text().contains("502 Bad Gateway"), "{}", paths[i]);
    }
    assert_eq!(got[1].text(), "hello 1\n");
    assert_eq!(got[3].status, 200);
    assert_eq!(got[3].header_all("content-length"), vec!["3"]);
    assert_eq!(got[3].text(), "ok\n");
    assert_eq!(got[4].status, 204);
    assert_eq!(got[4].header("content-length"), None);
    assert_eq!(got[5].status, 304);
    assert_eq!(got[5].header("content-length"), None);
    assert_eq!(got[5].header("etag"), Some("\"v1\""));
    assert_eq!(got[6].text(), "hello 2\n");
    // A log line names the script and the problem; the access log has the 502.
    for (script, why) in [
        ("length_word.sh", "Content-Length \"abc\""),
        ("length_two.sh", "conflicting Content-Length values 3 and 4"),
    ] {
        let logged = eventually(Duration::from_secs(3), || {
            srv.stderr_text().lines().any(|l| {
                l.contains(&format!("/cgi-bin/{script}: invalid CGI response")) && l.contains(why)
            })
        })
        .await;
        assert!(logged, "no log line for {script}:\n{}", srv.stderr_text());
        srv.access_line(&format!("\"GET /cgi-bin/{script} HTTP/1.1\" 502 "))
            .await;
    }
    // HTTP/2: the same 502, and the bad header never reaches the client.
    let base = format!("http://127.0.0.1:{}/cgi-bin", srv.addr.port());
    for script in ["length_word.sh", "length_two.sh"] {
        let out = curl(&["--http2-prior-knowledge", &format!("{base}/{script}")]).await;
        assert_eq!(out.info, "2 502", "{script}: {}", out.stderr);
    }
    let out = curl(&[
        "--http2-prior-knowledge",
        "-i",
        &format!("{base}/no_content.sh"),
    ])
    .await;
    assert_eq!(out.info, "2 204", "{}", out.stderr);
    let text = String::from_utf8_lossy(&out.body).to_ascii_lowercase();
    assert!(!text.contains("content-length"), "{text}");
    assert!(text.ends_with("\r\n\r\n"), "a body after a 204: {text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_keep_alive_with_output_without_length_gets_connection_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = script_dir(&[
        (
            "unsized.sh",
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nno length\\n'\n",
        ),
        (
            "sized.sh",
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\nContent-Length: 6\\r\\n\\r\\nsized\\n'\n",
        ),
    ]);
    let mut cfg = fixture_config();
    cfg.cgi_dir = dir.path().to_path_buf();
    let srv = TestServer::start(cfg).await;
    // No length: the body ends with the connection, and the head says so.
    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"GET /cgi-bin/unsized.sh HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all))
        .await
        .expect("the server closes the connection after the body")
        .unwrap();
    let text = String::from_utf8_lossy(&all);
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
    let connection: Vec<&str> = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .map(|(_, v)| v.trim())
        .collect();
    assert_eq!(connection, ["close"], "{head}");
    assert_eq!(body, "no length\n");
    // With a length the connection is kept, as asked.
    let mut conn = Conn::open(srv.addr).await;
    for _ in 0..2 {
        let resp = conn
            .request(b"GET /cgi-bin/sized.sh HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .await;
        assert_eq!(resp.header("connection"), Some("keep-alive"));
        assert_eq!(resp.text(), "sized\n");
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_target_decides_server_name_and_http_host() {
    let srv = TestServer::start(fixture_config()).await;
    let raw = "GET http://a.example:8080/cgi-bin/env.pl?q HTTP/1.1\r\n\
               Host: b.example\r\nConnection: close\r\n\r\n";
    let resp = Conn::open(srv.addr).await.request(raw.as_bytes()).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let env = resp.env();
    assert_eq!(env["SERVER_NAME"], "a.example");
    assert_eq!(env["HTTP_HOST"], "a.example:8080");
    assert_eq!(env["QUERY_STRING"], "q");
    // Origin-form: Host decides, as ever.
    let raw = "GET /cgi-bin/env.pl HTTP/1.1\r\nHost: b.example:81\r\nConnection: close\r\n\r\n";
    let env = Conn::open(srv.addr)
        .await
        .request(raw.as_bytes())
        .await
        .env();
    assert_eq!(
        (&env["SERVER_NAME"][..], &env["HTTP_HOST"][..]),
        ("b.example", "b.example:81")
    );
    srv.stop().await;
}

/// The binary with its stderr read by a thread that stops reading after
/// the startup line until told to go on: a log sink that does not keep up.
struct StalledLog {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    go: std::sync::mpsc::Sender<()>,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl StalledLog {
    fn start(cgi_dir: &std::path::Path) -> StalledLog {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut cmd = BinServer::command_with(&fixtures().join("static"), cgi_dir, &[]);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn cgihost");
        let stderr = child.stderr.take().expect("stderr");
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            let mut reader = std::io::BufReader::new(stderr).lines();
            for line in reader.by_ref() {
                let Ok(line) = line else { return };
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = addr_tx.send(rest.trim().to_string());
                    break;
                }
            }
            let _ = go_rx.recv();
            for line in reader {
                let Ok(line) = line else { return };
                sink.lock().unwrap().push(line);
            }
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("cgihost started")
            .parse()
            .expect("listen address");
        StalledLog {
            child,
            addr,
            go,
            lines,
        }
    }
}

impl Drop for StalledLog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Issue 15 item 11: a script flooding stderr (50 MB) while nobody reads
/// cgihost's stderr. The flood is capped per request (one "truncated"
/// line), and logging never blocks a request: the flooding request and
/// static GETs beside it are answered while the log sink is stalled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stderr_flood_is_capped_and_a_stalled_log_blocks_no_request() {
    let dir = script_dir(&[(
        "flood.sh",
        "#!/bin/sh\nyes 'a line of stderr, flooding the log again and again' | head -c 50000000 >&2\n\
         printf 'Content-Type: text/plain\\r\\n\\r\\nflooded'\n",
    )]);
    let srv = StalledLog::start(dir.path());
    // Generous bounds for a loaded 2-core machine: a blocked log would
    // hold these forever.
    let limit = Duration::from_secs(30);
    let flood = tokio::spawn(get(srv.addr, "/cgi-bin/flood.sh"));
    let started = Instant::now();
    let mut statics = 0;
    while !flood.is_finished() || statics == 0 {
        let resp = tokio::time::timeout(limit, get(srv.addr, "/hello.txt"))
            .await
            .expect("a static GET waited for the log");
        assert_eq!(resp.status, 200);
        statics += 1;
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the flood never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resp = tokio::time::timeout(limit, flood)
        .await
        .expect("the flooding request waited for the log")
        .expect("join");
    assert_eq!((resp.status, resp.text().as_str()), (200, "flooded"));

    // The sink catches up: the flood shows, capped.
    let _ = srv.go.send(());
    let text = || srv.lines.lock().unwrap().join("\n");
    let truncated = eventually(Duration::from_secs(10), || {
        text()
            .lines()
            .any(|l| l.contains("/cgi-bin/flood.sh#") && l.contains("stderr truncated"))
    })
    .await;
    assert!(
        truncated,
        "no truncated line:\n{}",
        text().chars().take(2000).collect::<String>()
    );
    let flood_lines = text()
        .lines()
        .filter(|l| l.contains("flooding the log"))
        .count();
    // 64 KiB of 50-byte lines, and not one more.
    assert_eq!(flood_lines, 64 * 1024 / 50, "{flood_lines} lines logged");
}

/// A program's output reaches the client as it writes it, head first:
/// a streaming page (server-sent events, progress) is not held back until
/// it ends or a buffer fills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_output_reaches_the_client_as_it_is_written() {
    use tokio::io::AsyncReadExt;
    let cgi = script_dir(&[(
        "stream.sh",
        "#!/bin/sh\nprintf 'Content-Type: text/event-stream\\r\\n\\r\\n'\n\
         printf 'data: first\\n\\n'\nsleep 3\nprintf 'data: second\\n\\n'\n",
    )]);
    let srv = BinServer::start_cmd(BinServer::command_with(
        &fixtures().join("static"),
        cgi.path(),
        &[],
    ));
    let started = Instant::now();
    let mut conn = Conn::open(srv.addr).await;
    conn.send(b"GET /cgi-bin/stream.sh HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("data: first") {
        let n = tokio::time::timeout(Duration::from_secs(2), conn.stream.read(&mut chunk))
            .await
            .expect("the first event was held back")
            .unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&chunk[..n]);
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    let text = String::from_utf8_lossy(&seen).to_string();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(!text.contains("second"), "{text}");
}

/// A request pipelined behind a slow program's, then the client's close
/// of its sending side: both answers still come (a close with requests
/// unread is not a client that went).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_before_a_half_close_are_all_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cgi = script_dir(&[(
        "slow.sh",
        "#!/bin/sh\nsleep 1\nprintf 'Content-Type: text/plain\\r\\n\\r\\nslow done\\n'\n",
    )]);
    let srv = BinServer::start_cmd(BinServer::command_with(
        &fixtures().join("static"),
        cgi.path(),
        &[],
    ));
    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(
        b"GET /cgi-bin/slow.sh HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    s.shutdown().await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut all))
        .await
        .expect("the server closes after the last answer")
        .unwrap();
    let text = String::from_utf8_lossy(&all);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    assert!(text.contains("slow done"), "{text}");
}
