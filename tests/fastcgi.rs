//! FastCGI routes against a real php-fpm (started per test in a temp dir
//! with its own pool) and a real Perl FCGI application.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_variables_reach_php_one_by_one() {
    let fpm = PhpFpm::start(2);
    let srv = TestServer::start(php_config(&fpm.sock)).await;
    let raw = "GET /env.php/extra/p%20q?a=1&b=%20 HTTP/1.1\r\nHost: php.example:81\r\n\
               Proxy: http://evil:3128\r\nX_Forged: 1\r\nX-Custom: v\r\nConnection: close\r\n\r\n";
    let resp = Conn::open(srv.addr).await.request(raw.as_bytes()).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let env = resp.env();
    let root = std::fs::canonicalize(fixtures().join("php")).unwrap();
    let root = root.to_str().unwrap();
    let expect = [
        ("GATEWAY_INTERFACE", "CGI/1.1".to_string()),
        (
            "SERVER_SOFTWARE",
            format!("cgihost/{}", env!("CARGO_PKG_VERSION")),
        ),
        ("SERVER_NAME", "php.example".into()),
        ("SERVER_PORT", srv.addr.port().to_string()),
        ("SERVER_PROTOCOL", "HTTP/1.1".into()),
        ("REQUEST_METHOD", "GET".into()),
        ("SCRIPT_NAME", "/env.php".into()),
        ("SCRIPT_FILENAME", format!("{root}/env.php")),
        ("PATH_INFO", "/extra/p q".into()),
        ("PATH_TRANSLATED", format!("{root}/extra/p q")),
        ("DOCUMENT_ROOT", root.to_string()),
        ("REQUEST_URI", "/env.php/extra/p%20q?a=1&b=%20".into()),
        ("QUERY_STRING", "a=1&b=%20".into()),
        ("REMOTE_ADDR", "127.0.0.1".into()),
        ("REDIRECT_STATUS", "200".into()),
        ("HTTP_HOST", "php.example:81".into()),
        ("HTTP_X_CUSTOM", "v".into()),
    ];
    for (k, v) in &expect {
        assert_eq!(env.get(*k), Some(v), "{k}");
    }
    assert!(!env.contains_key("HTTP_PROXY"), "httpoxy");
    assert!(!env.contains_key("HTTP_X_FORGED"));
    assert!(!env.contains_key("HTTPS"));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_post_headers_index_and_refusals() {
    let fpm = PhpFpm::start(2);
    let srv = TestServer::start(php_config(&fpm.sock)).await;
    let resp = request(
        srv.addr,
        "POST",
        "/post.php?x=1",
        "Content-Type: application/x-www-form-urlencoded\r\n",
        b"name=ada&lang=en%20gb",
    )
    .await;
    assert_eq!(
        resp.text(),
        "method=POST\nget.x=1\npost.name=ada\npost.lang=en gb\n"
    );

    let resp = get(srv.addr, "/headers.php").await;
    assert_eq!(resp.status, 201);
    assert_eq!(resp.header("x-php"), Some("yes"));
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.text(), "{\"created\":true}");

    assert_eq!(get(srv.addr, "/dir/").await.text(), "index of dir\n");
    assert_eq!(get(srv.addr, "/dir").await.status, 301);
    assert_eq!(get(srv.addr, "/uploads/x.jpg/y.php").await.status, 404);
    assert_eq!(get(srv.addr, "/missing.php").await.status, 404);
    assert_eq!(get(srv.addr, "/hello.txt").await.text(), "plain text\n");
    srv.stop().await;
}

fn multipart(boundary: &str, file: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello there\r\n"
        )
        .as_bytes(),
    );
    b.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"doc\"; filename=\"report.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n")
            .as_bytes(),
    );
    b.extend_from_slice(file);
    b.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    b
}

fn md5_hex(data: &[u8]) -> String {
    let out = std::process::Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(data)?;
            c.wait_with_output()
        })
        .expect("md5sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_upload_reaches_files() {
    let fpm = PhpFpm::start(2);
    let srv = TestServer::start(php_config(&fpm.sock)).await;
    let file = random_bytes(3 << 20, 21);
    let body = multipart("XyZbOuNdArY", &file);
    let resp = request(
        srv.addr,
        "POST",
        "/files.php",
        "Content-Type: multipart/form-data; boundary=XyZbOuNdArY\r\n",
        &body,
    )
    .await;
    let text = resp.text();
    assert!(text.contains("post.note=hello there\n"), "{text}");
    assert!(text.contains("doc.name=report.bin\n"), "{text}");
    assert!(
        text.contains(&format!("doc.size={}\n", file.len())),
        "{text}"
    );
    assert!(text.contains("doc.error=0\n"), "{text}");
    assert!(
        text.contains(&format!("doc.md5={}\n", md5_hex(&file))),
        "{text}"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_gets_exact_content_length() {
    let fpm = PhpFpm::start(2);
    let srv = TestServer::start(php_config(&fpm.sock)).await;
    let body = random_bytes(2_500_003, 4);
    let mut raw = b"POST /input.php HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n".to_vec();
    for c in body.chunks(100_000) {
        raw.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        raw.extend_from_slice(c);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let resp = Conn::open(srv.addr).await.request(&raw).await;
    let text = resp.text();
    assert!(
        text.contains("length=2500003\ncontent_length=2500003\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("sha256={}", sha256_hex(&body))),
        "{text}"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_fatal_error_is_phps_500_and_stderr_is_logged() {
    let fpm = PhpFpm::start(2);
    let srv = BinServer::start_in(
        &fixtures().join("php"),
        &["--fastcgi", &format!("*.php=unix:{}", fpm.sock.display())],
    );
    let resp = get(srv.addr, "/fatal.php").await;
    assert_eq!(resp.status, 500);
    let logged = eventually(Duration::from_secs(3), || {
        let e = srv.stderr_text();
        e.contains("about to fail on purpose") && e.contains("/fatal.php#")
    })
    .await;
    assert!(logged, "PHP stderr not in the log:\n{}", srv.stderr_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_response_header_is_502() {
    let fpm = PhpFpm::start(2);
    let srv = TestServer::start(php_config(&fpm.sock)).await;
    let resp = get(srv.addr, "/big_header.php").await;
    assert_eq!(resp.status, 502);
    // The connection is not reused after that; the next request is fine.
    assert_eq!(get(srv.addr, "/hello.php").await.text(), "hello from php\n");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_backend_is_502_fast_and_restart_resumes_service() {
    let fpm = PhpFpm::start(2);
    let sock = fpm.sock.clone();
    let srv = TestServer::start(php_config(&sock)).await;
    assert_eq!(get(srv.addr, "/hello.php").await.text(), "hello from php\n");
    let (dir, sock) = fpm.stop();
    let started = Instant::now();
    let resp = get(srv.addr, "/hello.php").await;
    assert_eq!(resp.status, 502);
    // Refused at once, not after the 5 s connect timeout (a margin that
    // holds on a loaded machine).
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "502 took {:?}",
        started.elapsed()
    );
    let resp = get(srv.addr, "/hello.php").await;
    assert_eq!(resp.status, 502);

    let _fpm = PhpFpm::restart(dir, sock, 2);
    let mut ok = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let resp = get(srv.addr, "/hello.php").await;
        if resp.status == 200 {
            assert_eq!(resp.text(), "hello from php\n");
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ok, "service did not resume after php-fpm came back");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_backend_in_a_pair_is_skipped() {
    let fpm = PhpFpm::start(2);
    let mut cfg = php_config(&fpm.sock);
    cfg.fastcgi = vec![cgihost::config::parse_fastcgi(
        "--fastcgi",
        &format!(
            "*.php=unix:/nonexistent/cgihost-dead.sock,unix:{}",
            fpm.sock.display()
        ),
    )
    .unwrap()];
    let srv = TestServer::start(cfg).await;
    for i in 0..20 {
        let resp = get(srv.addr, "/hello.php").await;
        assert_eq!(resp.status, 200, "request {i}");
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_requests_with_fewer_php_children() {
    // 4 children behind a cap of 8 connections: the pool's safety valve
    // must keep every request moving.
    let fpm = PhpFpm::start(4);
    let srv = TestServer::start(php_config(&fpm.sock)).await;
    let tasks: Vec<_> = (0..100)
        .map(|i| tokio::spawn(get(srv.addr, format!("/post.php?i={i}"))))
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let resp = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("stalled")
            .unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.text(), format!("method=GET\nget.i={i}\n"));
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_kept_alive_and_reused() {
    let fpm = PhpFpm::start(2);
    let srv = TestServer::start(php_config(&fpm.sock)).await;
    for _ in 0..30 {
        assert_eq!(get(srv.addr, "/hello.php").await.text(), "hello from php\n");
    }
    let connects: u64 = srv
        .app
        .fastcgi
        .backends
        .iter()
        .map(|b| b.stats.connects.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    assert!(
        connects <= 2,
        "{connects} connections for 30 sequential requests"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_aborts_the_php_request() {
    let fpm = PhpFpm::start(2);
    let srv = TestServer::start(php_config(&fpm.sock)).await;
    let tok = token("abort");
    let marker = format!("/tmp/cgihost-test-{tok}.progress");
    let mut conn = Conn::open(srv.addr).await;
    conn.send(format!("GET /slow.php?marker={tok} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await;
    let progress = || {
        std::fs::read_to_string(&marker)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(0)
    };
    assert!(
        eventually(Duration::from_secs(5), || progress() >= 3).await,
        "slow.php never ran"
    );
    drop(conn);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after_abort = progress();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        progress(),
        after_abort,
        "PHP kept running after the client left"
    );
    assert!(after_abort < 60);
    let _ = std::fs::remove_file(&marker);
    srv.stop().await;
}

/// `Content-Length: 0` reaches a FastCGI application as CONTENT_LENGTH=0
/// (PHP's `$_SERVER['CONTENT_LENGTH']`), as it does for CGI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_declared_body_is_content_length_zero() {
    let app = PerlFcgi::start();
    let mut cfg = fixture_config();
    cfg.fastcgi = vec![cgihost::config::parse_fastcgi(
        "--fastcgi",
        &format!("/app=unix:{}", app.sock.display()),
    )
    .unwrap()];
    let srv = TestServer::start(cfg).await;
    let resp = request(srv.addr, "POST", "/app/x", "Content-Length: 0\r\n", b"").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let env = resp.env();
    assert_eq!(env.get("CONTENT_LENGTH").map(String::as_str), Some("0"));
    assert_eq!(env["BODY_LENGTH"], "0");
    let env = request(srv.addr, "POST", "/app/x", "", b"").await.env();
    assert!(!env.contains_key("CONTENT_LENGTH"), "{env:?}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_route_split_and_local_redirect() {
    let app = PerlFcgi::start();
    let mut cfg = fixture_config();
    cfg.fastcgi = vec![cgihost::config::parse_fastcgi(
        "--fastcgi",
        &format!("/app=unix:{}", app.sock.display()),
    )
    .unwrap()];
    let srv = TestServer::start(cfg).await;

    let resp = request(
        srv.addr,
        "POST",
        "/app/x/y%20z?q=1",
        "Proxy: evil\r\n",
        b"12345",
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let env = resp.env();
    assert_eq!(env["SCRIPT_NAME"], "/app");
    assert_eq!(env["PATH_INFO"], "/x/y z");
    assert_eq!(env["QUERY_STRING"], "q=1");
    assert_eq!(env["CONTENT_LENGTH"], "5");
    assert_eq!(env["BODY_LENGTH"], "5");
    assert!(!env.contains_key("HTTP_PROXY"));
    assert_eq!(get(srv.addr, "/app").await.env()["PATH_INFO"], "");

    // Segment boundary: /application is not /app.
    assert_eq!(get(srv.addr, "/application").await.status, 404);

    // A bare `Location: /path` is a local redirect, as for CGI.
    let resp = get(srv.addr, "/app/redirect").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("location"), None);
    assert_eq!(resp.text(), "plain text\n");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_256_mib_to_php_input_in_bounded_memory() {
    let fpm = PhpFpm::start(2);
    let srv = BinServer::start_in(
        &fixtures().join("php"),
        &["--fastcgi", &format!("*.php=unix:{}", fpm.sock.display())],
    );
    let total: u64 = 256 << 20;
    let mut conn = Conn::open(srv.addr).await;
    let head = format!("POST /input.php HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n");
    let hash = stream_upload(&mut conn, &head, total, false).await;
    let resp = conn.read_response(false).await.expect("response");
    let text = resp.text();
    assert!(text.contains(&format!("length={total}\n")), "{text}");
    assert!(text.contains(&format!("sha256={hash}")), "{text}");
    let hwm = srv.status_kib("VmHWM");
    assert!(hwm < 64 * 1024, "cgihost peak RSS {hwm} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_has_its_own_timeout_and_body_limit() {
    let fpm = PhpFpm::start(2);
    let mut cfg = php_config(&fpm.sock);
    cfg.cgi.timeout = Duration::from_secs(30);
    cfg.fastcgi[0].timeout = Some(Duration::from_secs(1));
    cfg.fastcgi[0].max_body = Some(1000);
    let srv = TestServer::start(cfg).await;
    // Silent for 4 s: the route's 1 s idle timeout answers, not the global 30 s.
    let started = Instant::now();
    let resp = get(srv.addr, "/sleep.php?s=4").await;
    assert_eq!(resp.status, 504, "{}", resp.text());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    let resp = request(srv.addr, "POST", "/post.php", "", &[b'a'; 1001]).await;
    assert_eq!(resp.status, 413);
    let resp = request(srv.addr, "POST", "/post.php", "", &[b'a'; 1000]).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    srv.stop().await;
}

async fn status_json(addr: std::net::SocketAddr) -> serde_json::Value {
    let resp = get(addr, "/status?json").await;
    assert_eq!(resp.status, 200);
    serde_json::from_slice(&resp.body).expect("status JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_response_is_complete_and_its_connection_is_reused() {
    // hyper drops a body once Content-Length bytes are out, before the
    // backend's END_REQUEST: the response is complete all the same, and the
    // connection goes back to the pool once END_REQUEST comes.
    let fpm = PhpFpm::start(2);
    let srv = BinServer::start_in(
        &fixtures().join("php"),
        &[
            "--fastcgi",
            &format!("*.php=unix:{}", fpm.sock.display()),
            "--status-path",
            "/status",
        ],
    );
    let tok = token("after-reply");
    let marker = format!("/tmp/cgihost-test-{tok}.done");
    let mut conn = Conn::open(srv.addr).await;
    let resp = conn
        .request(
            format!("GET /length_then_work.php?marker={tok} HTTP/1.1\r\nHost: t\r\n\r\n")
                .as_bytes(),
        )
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header_all("content-length"), vec!["3"]);
    assert_eq!(resp.text(), "ok\n");
    assert!(
        eventually(Duration::from_secs(5), || std::path::Path::new(&marker)
            .exists())
        .await,
        "PHP never did its work after the reply"
    );
    let _ = std::fs::remove_file(&marker);
    let line = srv
        .access_line(&format!(
            "\"GET /length_then_work.php?marker={tok} HTTP/1.1\" 200 3 "
        ))
        .await;
    assert!(!line.ends_with(" aborted"), "{line}");
    // END_REQUEST has come: the connection is idle in the pool...
    let mut backend = serde_json::Value::Null;
    for _ in 0..100 {
        backend = status_json(srv.addr).await["fastcgi_backends"][0].clone();
        if backend["in_flight"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(backend["in_flight"], 0, "{backend:#}");
    // ...and the next request takes it, answered with its own response.
    let resp = conn
        .request(b"GET /hello.php HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    assert_eq!(resp.text(), "hello from php\n");
    let backend = &status_json(srv.addr).await["fastcgi_backends"][0];
    assert_eq!(backend["requests"], 2, "{backend:#}");
    assert_eq!(backend["connects"], 1, "{backend:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_content_length_is_502_and_a_204_loses_it() {
    let fpm = PhpFpm::start(2);
    let srv = BinServer::start_in(
        &fixtures().join("php"),
        &["--fastcgi", &format!("*.php=unix:{}", fpm.sock.display())],
    );
    // Pipelined on one connection: the requests behind a bad response
    // are answered, a 204 leaves no bytes behind.
    let paths = [
        "/bad_length.php",
        "/hello.php",
        "/bad_length.php?two",
        "/no_content.php",
        "/hello.php",
    ];
    let mut conn = Conn::open(srv.addr).await;
    let got = conn.pipelined_gets(&paths).await;
    assert_eq!((got[0].status, got[2].status), (502, 502));
    assert_eq!(got[1].text(), "hello from php\n");
    assert_eq!(got[3].status, 204);
    assert_eq!(got[3].header("content-length"), None);
    assert_eq!(got[4].text(), "hello from php\n");
    // A log line names the script (`/bad_length.php#<request>`).
    for why in [
        "Content-Length \"abc\"",
        "conflicting Content-Length values 3 and 4",
    ] {
        let logged = eventually(Duration::from_secs(3), || {
            srv.stderr_text().lines().any(|l| {
                l.contains("/bad_length.php#")
                    && l.contains("invalid response from FastCGI")
                    && l.contains(why)
            })
        })
        .await;
        assert!(logged, "no log line for {why}:\n{}", srv.stderr_text());
    }
    srv.access_line("\"GET /bad_length.php?two HTTP/1.1\" 502 ")
        .await;
}

/// One FastCGI record as a backend writes it.
fn fcgi_record(kind: u8, id: u16, content: &[u8]) -> Vec<u8> {
    let mut r = vec![1, kind];
    r.extend_from_slice(&id.to_be_bytes());
    r.extend_from_slice(&(content.len() as u16).to_be_bytes());
    r.extend_from_slice(&[0, 0]);
    r.extend_from_slice(content);
    r
}

/// Read records until the empty STDIN that ends one request; false when
/// the connection ends first.
async fn read_request(conn: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> bool {
    use tokio::io::AsyncReadExt;
    loop {
        while buf.len() >= 8 {
            let len = u16::from_be_bytes([buf[4], buf[5]]) as usize + buf[6] as usize;
            if buf.len() < 8 + len {
                break;
            }
            let end = buf[1] == 5 && len == 0;
            buf.drain(..8 + len);
            if end {
                return true;
            }
        }
        let mut chunk = [0u8; 4096];
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A hand-written FastCGI backend on 127.0.0.1: for the Nth request it
/// receives (on any connection) it writes `answers[N]` verbatim, then keeps
/// the connection for more.
async fn scripted_backend(answers: Vec<Vec<u8>>) -> std::net::SocketAddr {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answers = Arc::new(answers);
    let next = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let (answers, next) = (answers.clone(), next.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    if !read_request(&mut conn, &mut buf).await {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(answer) = answers.get(i) else { return };
                    if conn.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_for_another_request_id_is_a_protocol_error_never_the_next_answer() {
    let end = |id| fcgi_record(3, id, &[0; 8]);
    let head = |text: &str| format!("Content-Type: text/plain\r\n\r\n{text}").into_bytes();
    let answers = vec![
        // 1: the answer comes under another id → 502.
        [fcgi_record(6, 2, &head("wrong id")), end(2)].concat(),
        // 2: an END_REQUEST for another id mid-response, then more output
        // meant to end up in front of the next client.
        [
            fcgi_record(6, 1, &head("for A")),
            end(2),
            fcgi_record(6, 1, &head("STALE for A")),
            end(1),
        ]
        .concat(),
        // 3: a short END_REQUEST body before the head ends → 502.
        [
            fcgi_record(6, 1, b"Content-Type: text/plain\r\n"),
            fcgi_record(3, 1, &[0; 3]),
        ]
        .concat(),
        // 4, 5: honest answers.
        [
            fcgi_record(6, 1, &head("for C")),
            fcgi_record(6, 1, b""),
            end(1),
        ]
        .concat(),
        [
            fcgi_record(6, 1, &head("for D")),
            fcgi_record(6, 1, b""),
            end(1),
        ]
        .concat(),
    ];
    let backend = scripted_backend(answers).await;
    let mut config = fixture_config();
    config.fastcgi =
        vec![cgihost::config::parse_fastcgi("--fastcgi", &format!("/raw={backend}")).unwrap()];
    let srv = TestServer::start(config).await;
    let first = get(srv.addr, "/raw/1").await;
    assert_eq!(first.status, 502, "{}", first.text());
    // The client gets an aborted or short answer, never "STALE".
    let mut conn = Conn::open(srv.addr).await;
    conn.send(b"GET /raw/2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await;
    if let Some(second) = conn.read_response(false).await {
        assert!(!second.text().contains("STALE"), "{}", second.text());
    }
    let third = get(srv.addr, "/raw/3").await;
    assert_eq!(third.status, 502, "{}", third.text());
    for want in ["for C", "for D"] {
        let r = get(srv.addr, "/raw/x").await;
        assert_eq!((r.status, r.text().as_str()), (200, want));
    }
    srv.stop().await;
}

/// A FastCGI backend on 127.0.0.1 that answers every request after
/// `delay` and counts the connections open to it.
async fn counting_backend(
    delay: Duration,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    let counted = open.clone();
    let answer = [
        fcgi_record(6, 1, b"Content-Type: text/plain\r\n\r\nok"),
        fcgi_record(6, 1, b""),
        fcgi_record(3, 1, &[0; 8]),
    ]
    .concat();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let (open, answer) = (counted.clone(), answer.clone());
            open.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    if !read_request(&mut conn, &mut buf).await {
                        break;
                    }
                    tokio::time::sleep(delay).await;
                    if conn.write_all(&answer).await.is_err() {
                        break;
                    }
                }
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, open)
}

/// A GET of each of `paths`, all at once; their answers, in order.
async fn burst(addr: std::net::SocketAddr, paths: impl IntoIterator<Item = String>) -> Vec<Resp> {
    let sent: Vec<_> = paths
        .into_iter()
        .map(|p| tokio::spawn(get(addr, p)))
        .collect();
    let mut answers = Vec::new();
    for r in sent {
        answers.push(r.await.expect("a request task"));
    }
    answers
}

/// After a burst, kept-alive connections left idle are closed once
/// `fastcgi_idle_timeout` passes, not kept until the next request (each
/// one pins a backend process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_backend_connections_close_after_the_idle_timeout() {
    use std::sync::atomic::Ordering;
    let (backend, open) = counting_backend(Duration::from_millis(20)).await;
    let mut config = fixture_config();
    config.fastcgi_idle_timeout = Duration::from_secs(1);
    config.fastcgi =
        vec![cgihost::config::parse_fastcgi("--fastcgi", &format!("/app={backend}")).unwrap()];
    let srv = TestServer::start(config).await;
    let started = Instant::now();
    for r in burst(srv.addr, (0..4).map(|i| format!("/app/{i}"))).await {
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    }
    // Four at once took several connections; at least one stays idle
    // (the stall valve may close some that finished while others waited).
    let kept = open.load(Ordering::SeqCst);
    assert!(
        kept >= 1,
        "{kept} connection(s) kept after {:?}",
        started.elapsed()
    );
    let closed = eventually(Duration::from_secs(10), || open.load(Ordering::SeqCst) == 0).await;
    assert!(
        closed,
        "{} connection(s) still open",
        open.load(Ordering::SeqCst)
    );
    // A new request is served on a new connection.
    let r = get(srv.addr, "/app/again").await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    srv.stop().await;
}

/// Two cgihost instances share one php-fpm pool of four children: after
/// the first one's burst its idle connections go, so the second is
/// served instead of waiting behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_a_small_php_fpm_pool_without_starving() {
    let fpm = PhpFpm::start(4);
    let config = || {
        let mut c = php_config(&fpm.sock);
        c.fastcgi_max_conns = 4;
        c.fastcgi_idle_timeout = Duration::from_secs(1);
        c
    };
    let a = TestServer::start(config()).await;
    let b = TestServer::start(config()).await;
    for r in burst(a.addr, vec!["/usleep.php".to_string(); 4]).await {
        assert_eq!(r.status, 200);
    }
    // A holds four idle connections: every child waits on one of them.
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(15), get(b.addr, "/hello.php"))
        .await
        .expect("the second server is answered");
    assert_eq!((r.status, r.text().as_str()), (200, "hello from php\n"));
    assert!(started.elapsed() < Duration::from_secs(15));
    a.stop().await;
    b.stop().await;
}

/// php-fpm's `pm = ondemand` reaps a child once it has been idle for
/// `process_idle_timeout`; a kept-alive connection keeps its child from
/// ever being idle. After a burst, cgihost closes its idle connections
/// (`fastcgi_idle_timeout`), and the children go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_fpm_ondemand_children_are_reaped_once_cgihost_goes_idle() {
    let fpm = PhpFpm::start_ondemand(4, 1);
    let mut config = php_config(&fpm.sock);
    config.fastcgi_max_conns = 4;
    config.fastcgi_idle_timeout = Duration::from_secs(2);
    let srv = TestServer::start(config).await;
    for r in burst(srv.addr, vec!["/usleep.php?us=200000".to_string(); 4]).await {
        assert_eq!(r.status, 200);
    }
    let busy = fpm.children();
    assert!(busy >= 1, "the burst started {busy} child(ren)");
    // Reaped once cgihost's idle connections close (2 s) and php-fpm's
    // idle timeout (1 s) passes; with connections kept they never would.
    let reaped = eventually(Duration::from_secs(15), || fpm.children() == 0).await;
    assert!(reaped, "{} child(ren) still running", fpm.children());
    // And the pool starts one again for the next request.
    let r = get(srv.addr, "/hello.php").await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello from php\n"));
    srv.stop().await;
}

/// A script found once is looked up from the open-file cache after that
/// (no system call), and the cache is never stale for scripts either: a
/// script removed, replaced by a symlink out of the root, or put back is
/// seen by the very next request, both with the watch and with the
/// `statx` check that stands in when watches are not available.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_script_lookups_follow_every_change() {
    let fpm = PhpFpm::start(2);
    for watch in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap().join("root");
        std::fs::create_dir_all(root.join("blog")).unwrap();
        let script = root.join("blog/hi.php");
        std::fs::write(&script, "<?php echo 'one';").unwrap();
        std::fs::write(tmp.path().join("outside.php"), "<?php echo 'out';").unwrap();
        let mut config = php_config(&fpm.sock);
        config.root = root.clone();
        config.open_file_cache_watch = watch;
        let srv = TestServer::start(config).await;
        let body = |r: Resp| (r.status, r.text());
        assert_eq!(
            body(get(srv.addr, "/blog/hi.php").await),
            (200, "one".into())
        );
        assert_eq!(
            body(get(srv.addr, "/blog/hi.php").await),
            (200, "one".into())
        );
        std::fs::remove_file(&script).unwrap();
        assert_eq!(
            get(srv.addr, "/blog/hi.php").await.status,
            404,
            "watch {watch}"
        );
        std::os::unix::fs::symlink(tmp.path().join("outside.php"), &script).unwrap();
        let r = get(srv.addr, "/blog/hi.php").await;
        assert_ne!(r.status, 200, "a symlink out of the root ran: {}", r.text());
        std::fs::remove_file(&script).unwrap();
        std::fs::write(&script, "<?php echo 'two';").unwrap();
        assert_eq!(
            body(get(srv.addr, "/blog/hi.php").await),
            (200, "two".into())
        );
        // PATH_INFO still goes through the walk.
        let r = get(srv.addr, "/blog/hi.php/extra").await;
        assert_eq!(body(r), (200, "two".into()));
        srv.stop().await;
    }
}

/// A hand-written FastCGI backend that answers every request with
/// `prefix`, then empty STDOUT records — a batch every few milliseconds
/// for up to 30 s — and never anything else: no output, no END_REQUEST.
async fn empty_record_backend(prefix: Vec<u8>) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let prefix = prefix.clone();
            tokio::spawn(async move {
                // Read records until the empty STDIN that ends the request.
                let mut buf = Vec::new();
                let mut ended = false;
                while !ended {
                    while buf.len() >= 8 {
                        let len = u16::from_be_bytes([buf[4], buf[5]]) as usize + buf[6] as usize;
                        if buf.len() < 8 + len {
                            break;
                        }
                        ended |= buf[1] == 5 && len == 0;
                        buf.drain(..8 + len);
                    }
                    if !ended {
                        let mut chunk = [0u8; 4096];
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                }
                if conn.write_all(&prefix).await.is_err() {
                    return;
                }
                let batch = fcgi_record(6, 1, b"").repeat(100);
                let until = Instant::now() + Duration::from_secs(30);
                while Instant::now() < until {
                    if conn.write_all(&batch).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        }
    });
    addr
}

/// Issue 15 item 10: empty STDOUT records are no output. A backend that
/// sends nothing but empties, before its header block ends and after,
/// gets the idle timeout (1 s here) — a 504, or an aborted body — instead
/// of being kept alive by them for as long as it sends them (30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_stdout_records_do_not_keep_a_silent_backend_alive() {
    let in_head = empty_record_backend(fcgi_record(6, 1, b"Content-Type: text/plain\r\n")).await;
    let in_body =
        empty_record_backend(fcgi_record(6, 1, b"Content-Type: text/plain\r\n\r\nstart")).await;
    let mut config = fixture_config();
    config.fastcgi = vec![
        cgihost::config::parse_fastcgi("--fastcgi", &format!("/head={in_head}")).unwrap(),
        cgihost::config::parse_fastcgi("--fastcgi", &format!("/body={in_body}")).unwrap(),
    ];
    for route in &mut config.fastcgi {
        route.timeout = Some(Duration::from_secs(1));
    }
    let srv = TestServer::start(config).await;
    // Well under the 30 s of empties, with room for a loaded machine.
    let limit = Duration::from_secs(15);
    let resp = tokio::time::timeout(limit, get(srv.addr, "/head/x"))
        .await
        .expect("the empties kept the request alive");
    assert_eq!(resp.status, 504, "{}", resp.text());

    let mut conn = Conn::open(srv.addr).await;
    conn.send(b"GET /body/x HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let resp = tokio::time::timeout(limit, conn.read_response(false))
        .await
        .expect("the empties kept the response alive");
    // An aborted chunked body: no complete response.
    assert!(resp.is_none(), "the body was not cut off");
    srv.stop().await;
}

/// A lone backend that was down for a while is tried again by the next
/// request once it is back, not only when its back-off (doubled by each
/// failed request) runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_backend_serves_again_the_moment_it_is_back() {
    let fpm = PhpFpm::start(2);
    let sock = fpm.sock.clone();
    let srv = TestServer::start(php_config(&sock)).await;
    assert_eq!(get(srv.addr, "/hello.php").await.status, 200);
    let (dir, sock) = fpm.stop();
    // Six failed tries: a back-off of 30 s by the old rule.
    for _ in 0..6 {
        assert_eq!(get(srv.addr, "/hello.php").await.status, 502);
    }
    let _fpm = PhpFpm::restart(dir, sock, 2);
    let back = Instant::now();
    let resp = get(srv.addr, "/hello.php").await;
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (200, "hello from php\n"),
        "{:?} after php-fpm came back",
        back.elapsed()
    );
    srv.stop().await;
}
