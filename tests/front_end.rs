//! The HTTP front end: TLS and HTTP/2 (ALPN and cleartext prior
//! knowledge) through to CGI programs, with curl as the client; and the
//! limits that must hold under abuse (431, slow clients, idle keep-alive,
//! the connection cap).

mod common;

use std::time::{Duration, Instant};

use cgihost::config::TlsFiles;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn tls_config(cert: &std::path::Path, key: &std::path::Path) -> cgihost::config::Config {
    let mut cfg = fixture_config();
    cfg.tls = Some(TlsFiles {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
    });
    cfg
}

fn env_of(body: &[u8]) -> std::collections::BTreeMap<String, String> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.into(), v.into())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_negotiates_http2_and_cgi_sees_https() {
    let (_dir, cert, key) = self_signed_cert();
    let srv = TestServer::start(tls_config(&cert, &key)).await;
    let url = format!("https://127.0.0.1:{}/cgi-bin/env.pl?x=1", srv.addr.port());
    let cacert = cert.to_str().unwrap();

    let h2 = curl(&["--cacert", cacert, "--http2", &url]).await;
    assert!(h2.ok, "{}", h2.stderr);
    assert_eq!(h2.info, "2 200");
    let env = env_of(&h2.body);
    assert_eq!(env.get("HTTPS").map(String::as_str), Some("on"));
    assert_eq!(env.get("REQUEST_SCHEME").map(String::as_str), Some("https"));
    assert_eq!(
        env.get("SERVER_PROTOCOL").map(String::as_str),
        Some("HTTP/2.0")
    );
    let host = format!("127.0.0.1:{}", srv.addr.port());
    assert_eq!(env.get("HTTP_HOST"), Some(&host));
    assert_eq!(env.get("QUERY_STRING").map(String::as_str), Some("x=1"));

    let h1 = curl(&["--cacert", cacert, "--http1.1", &url]).await;
    assert_eq!(h1.info, "1.1 200");
    let env = env_of(&h1.body);
    assert_eq!(
        env.get("SERVER_PROTOCOL").map(String::as_str),
        Some("HTTP/1.1")
    );
    assert_eq!(env.get("HTTPS").map(String::as_str), Some("on"));

    // The listener is TLS-only: plain HTTP gets no HTTP response.
    let mut plain = TcpStream::connect(srv.addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf)).await;
    assert!(!buf.starts_with(b"HTTP/1.1 200"), "plain HTTP was served");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleartext_http2_with_prior_knowledge() {
    let srv = TestServer::start(fixture_config()).await;
    let base = format!("http://127.0.0.1:{}", srv.addr.port());
    let out = curl(&["--http2-prior-knowledge", &format!("{base}/cgi-bin/env.pl")]).await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.info, "2 200");
    let env = env_of(&out.body);
    assert_eq!(
        env.get("SERVER_PROTOCOL").map(String::as_str),
        Some("HTTP/2.0")
    );
    assert_eq!(env.get("HTTPS"), None);
    // Static files too, byte for byte.
    let page = curl(&["--http2-prior-knowledge", &format!("{base}/index.html")]).await;
    assert_eq!(page.info, "2 200");
    let want = std::fs::read(fixtures().join("static/index.html")).unwrap();
    assert_eq!(page.body, want);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_large_cgi_output() {
    let srv = TestServer::start(fixture_config()).await;
    let url = format!("http://127.0.0.1:{}/cgi-bin/zeros.sh?64", srv.addr.port());
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--http2-prior-knowledge", "-o", "/dev/null"])
        .args(["-w", "%{http_version} %{http_code} %{size_download}", &url])
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200 67108864");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_clients_are_answered_in_kind() {
    let srv = TestServer::start(fixture_config()).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("HTTP/1.0 response ends with the connection")
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.0 200 OK\r\n"), "{text}");
    let want = std::fs::read(fixtures().join("static/index.html")).unwrap();
    assert!(buf.ends_with(&want));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_upload_over_http2_is_hashed_exactly() {
    let (dir, cert, key) = self_signed_cert();
    let srv = TestServer::start(tls_config(&cert, &key)).await;
    let file = dir.path().join("upload.bin");
    let data = random_bytes(100 << 20, 7);
    let want = sha256_hex(&data);
    std::fs::write(&file, &data).unwrap();
    drop(data);
    let url = format!("https://127.0.0.1:{}/cgi-bin/sha256.sh", srv.addr.port());
    let cacert = cert.to_str().unwrap();
    let upload = format!("@{}", file.display());
    // With a length (Content-Length on the HEADERS frame)...
    let out = curl(&[
        "--cacert",
        cacert,
        "--http2",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &upload,
        &url,
    ])
    .await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.info, "2 200");
    assert_eq!(String::from_utf8_lossy(&out.body).trim(), want);
    // ...and streamed from a pipe with no length (spooled, then exact).
    let piped = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c 8388608 '{}' | curl -sS --http2 --cacert '{cacert}' -T - '{url}'",
            file.display()
        ))
        .output()
        .await
        .unwrap();
    let head = std::fs::read(&file).unwrap()[..8 << 20].to_vec();
    assert_eq!(
        String::from_utf8_lossy(&piped.stdout).trim(),
        sha256_hex(&head)
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_head_is_431() {
    let mut cfg = fixture_config();
    cfg.max_header_size = 16 * 1024;
    let srv = TestServer::start(cfg).await;
    let big = "a".repeat(20 * 1024);
    let raw = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n");
    let resp = Conn::open(srv.addr).await.request(raw.as_bytes()).await;
    assert_eq!(resp.status, 431);
    // Under the limit is fine.
    let ok = "a".repeat(8 * 1024);
    let raw = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {ok}\r\nConnection: close\r\n\r\n");
    let resp = Conn::open(srv.addr).await.request(raw.as_bytes()).await;
    assert_eq!(resp.status, 200);
    srv.stop().await;
}

/// Read until EOF or error; true if the peer closed within `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_slow_clients_do_not_stop_a_normal_one() {
    cgihost::privileges::raise_fd_limit();
    let conf = ConfFile::new("header_read_timeout = 2\n");
    let mut srv = BinServer::start(&["--config", conf.arg()]);
    let mut slow = Vec::new();
    for i in 0..500 {
        let mut s = TcpStream::connect(srv.addr).await.expect("connect");
        // Half send a partial head, half send nothing at all.
        if i % 2 == 0 {
            s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
                .await
                .unwrap();
        }
        slow.push(s);
    }
    let started = Instant::now();
    let resp = get(srv.addr, "/index.html").await;
    assert_eq!(resp.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a normal client waited {:?} behind slow ones",
        started.elapsed()
    );
    // And the slow ones are cut off once the header timeout passes.
    let mut closed = 0;
    for s in &mut slow {
        if closed_within(s, Duration::from_secs(6)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 500, "every slow connection should be closed");
    assert!(alive(srv.pid()));
    srv.signal(libc::SIGTERM);
    assert_eq!(srv.wait_exit(Duration::from_secs(10)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keepalive_connections_close() {
    let mut cfg = fixture_config();
    cfg.keepalive_timeout = Duration::from_secs(1);
    let srv = TestServer::start(cfg).await;
    let mut conn = Conn::open(srv.addr).await;
    let resp = conn
        .request(b"GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    assert_eq!(resp.status, 200);
    // Within the timeout the connection is reused...
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = conn
        .request(b"GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    assert_eq!(resp.status, 200);
    // ...after it, the server closes it.
    let started = Instant::now();
    let mut stream = conn.stream.into_inner();
    assert!(closed_within(&mut stream, Duration::from_secs(5)).await);
    let waited = started.elapsed();
    // The server's clock started before ours (when it sent the response):
    // a loaded machine may show us less than the 1 s, never "at once".
    assert!(
        waited >= Duration::from_millis(500),
        "closed too early: {waited:?}"
    );
    // A slow response is not idle: a CGI silent for 2 s still answers.
    let resp = get(srv.addr, "/cgi-bin/slow.sh?2").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_wait_for_a_free_slot() {
    let mut cfg = fixture_config();
    cfg.max_connections = 2;
    let srv = TestServer::start(cfg).await;
    let mut a = Conn::open(srv.addr).await;
    let mut b = Conn::open(srv.addr).await;
    for c in [&mut a, &mut b] {
        let r = c
            .request(b"GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n")
            .await;
        assert_eq!(r.status, 200);
    }
    // A third client connects (the kernel queues it) but is not served...
    let mut third = Conn::open(srv.addr).await;
    third
        .send(b"GET /index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await;
    let early = tokio::time::timeout(Duration::from_millis(800), third.read_response(false)).await;
    assert!(early.is_err(), "served over the connection cap");
    // ...until a slot frees up.
    drop(a);
    let resp = tokio::time::timeout(Duration::from_secs(5), third.read_response(false))
        .await
        .expect("served once a connection closed")
        .expect("a response");
    assert_eq!(resp.status, 200);
    drop(b);
    srv.stop().await;
}

/// The one CGI script running is killed when its client has taken nothing
/// for `send_timeout` (2 s), not before.
async fn script_ends_after_send_timeout(srv: &TestServer, client: &str) {
    assert!(
        eventually(Duration::from_secs(5), || srv.app.cgi.groups.len() == 1).await,
        "the script should be running"
    );
    let started = Instant::now();
    assert!(
        eventually(Duration::from_secs(15), || srv.app.cgi.groups.is_empty()).await,
        "the script behind {client} still runs"
    );
    let waited = started.elapsed();
    // The stall began before we saw the script running: on a loaded
    // machine we may see less than the 2 s, never "at once".
    assert!(
        waited >= Duration::from_millis(1000),
        "dropped too early: {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_and_its_cgi_ends() {
    let mut cfg = fixture_config();
    cfg.send_timeout = Duration::from_secs(2);
    cfg.keepalive_timeout = Duration::from_secs(1);
    let srv = TestServer::start(cfg).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    // 512 MiB of output, and we read none of it after the first bytes.
    s.write_all(b"GET /cgi-bin/zeros.sh?512 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 64];
    s.read_exact(&mut first).await.unwrap();
    assert!(first.starts_with(b"HTTP/1.1 200"));
    script_ends_after_send_timeout(&srv, "a client that stopped reading").await;
    // The connection is gone too: reading drains what was buffered, then EOF.
    assert!(closed_within(&mut s, Duration::from_secs(10)).await);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_grants_no_window_is_dropped_and_its_cgi_ends() {
    let mut cfg = fixture_config();
    cfg.send_timeout = Duration::from_secs(2);
    cfg.keepalive_timeout = Duration::from_secs(1);
    let srv = TestServer::start(cfg).await;
    // A script silent for longer than send_timeout is not a starved
    // client: over HTTP/2 it still answers.
    let slow = format!("http://127.0.0.1:{}/cgi-bin/slow.sh?3", srv.addr.port());
    let out = curl(&["--http2-prior-knowledge", &slow]).await;
    assert_eq!(out.info, "2 200", "{}", out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.body), "slept 3\n");
    let tcp = TcpStream::connect(srv.addr).await.unwrap();
    let (mut client, connection) = h2::client::Builder::new()
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .expect("HTTP/2 handshake");
    // The connection task answers pings and reads frames, like a client
    // that is alive but does not want the data.
    let driver = tokio::spawn(connection);
    let url = format!("http://127.0.0.1:{}/cgi-bin/zeros.sh?512", srv.addr.port());
    let req = http::Request::get(url).body(()).unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    let resp = resp.await.expect("response head");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    // One frame, and the window is never given back.
    let first = body.data().await.expect("a frame").expect("data");
    assert!(!first.is_empty());
    script_ends_after_send_timeout(&srv, "a starved HTTP/2 stream").await;
    // The server closed the connection.
    assert!(tokio::time::timeout(Duration::from_secs(10), driver)
        .await
        .is_ok());
    drop(body);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_head_handed_to_hyper_gets_the_header_timeout_once() {
    // More header lines than the static path takes: hyper reads this
    // head, which never ends. It must close at the header timeout (plus
    // the second a graceful close may take), not at twice it.
    let mut cfg = fixture_config();
    cfg.header_read_timeout = Duration::from_secs(3);
    let srv = TestServer::start(cfg).await;
    let started = Instant::now();
    let s = TcpStream::connect(srv.addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let many: String = (0..70).map(|i| format!("X-{i}: v\r\n")).collect();
    wr.write_all(format!("GET /index.html HTTP/1.1\r\nHost: t\r\n{many}").as_bytes())
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if wr.write_all(b"Y: z\r\n").await.is_err() {
                break;
            }
        }
    });
    let mut buf = [0u8; 1024];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    let waited = started.elapsed();
    trickle.abort();
    assert!(ended.is_ok(), "still open after 10 s");
    // 3 s + up to 1 s of graceful close; twice the timeout would be 7 s.
    assert!(
        waited >= Duration::from_millis(2800) && waited < Duration::from_millis(6000),
        "closed after {waited:?}"
    );
    srv.stop().await;
}

/// Silent connections cost little memory: no buffer before the first
/// byte, and the state for TLS, hyper and writing a response boxed away
/// until needed. 2,000 connections that send nothing add under 3 KiB
/// each to the server's RSS (eager 4 KiB buffers and inline futures cost
/// about 17 KiB), and it goes back to the system once they close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_silent_connections_cost_little_memory() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    const N: usize = 2000;
    let lim = getrlimit(Resource::Nofile);
    let want = Rlimit {
        current: lim.maximum,
        maximum: lim.maximum,
    };
    setrlimit(Resource::Nofile, want).expect("raise the open-file limit");
    let conf = ConfFile::new("header_read_timeout = 60\naccess_log = false\n");
    let srv = BinServer::start(&["--config", conf.arg()]);
    // Open sockets (the file cache keeps files open too).
    let fds = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                    .filter(|target| target.to_string_lossy().starts_with("socket:"))
                    .count()
            })
            .unwrap_or(0)
    };
    // One request first: what the first request sets up is not per
    // connection. Then wait for its connection to close on the server too.
    let base_fds = fds(srv.pid());
    assert_eq!(get(srv.addr, "/hello.txt").await.status, 200);
    let closed = eventually(Duration::from_secs(10), || fds(srv.pid()) == base_fds).await;
    assert!(closed, "the first request's connection stays open");
    let base = srv.status_kib("VmRSS");
    let mut conns = Vec::with_capacity(N);
    for _ in 0..N {
        conns.push(std::net::TcpStream::connect(srv.addr).expect("connect"));
    }
    let accepted = eventually(Duration::from_secs(20), || fds(srv.pid()) >= base_fds + N).await;
    assert!(accepted, "accepted {} of {N}", fds(srv.pid()) - base_fds);
    // Let every connection task reach its first wait.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = srv.status_kib("VmRSS");
    let per_conn = (after.saturating_sub(base)) * 1024 / N as u64;
    eprintln!("{N} silent connections: RSS {base} -> {after} KiB, {per_conn} B each");
    // No buffer before a byte arrives (an eager 4 KiB read buffer alone
    // would break this), and a small task: about 1.4 KiB in a release
    // build, 1.6 KiB in this debug one.
    assert!(
        per_conn < 3 * 1024,
        "{per_conn} bytes per silent connection"
    );
    // They are still served once they speak.
    assert_eq!(get(srv.addr, "/hello.txt").await.status, 200);
    // Once they have gone, the memory goes back to the system (a trim on
    // the next tick after a burst, every 5 s).
    drop(conns);
    let grown = after - base;
    let back = eventually(Duration::from_secs(15), || {
        srv.status_kib("VmRSS") < base + grown / 4
    })
    .await;
    let now = srv.status_kib("VmRSS");
    assert!(
        back,
        "RSS {base} -> {after} KiB with them open, {now} KiB after they closed"
    );
}

/// A keep-alive connection whose requests were answered by the router
/// (here the status page; CGI and FastCGI the same way) stays on the plain
/// HTTP/1 path, not hyper's: idle, it holds no buffers (about 1.4 KiB, as a
/// silent one, where a hyper connection holds about 22 KiB), and a static
/// request after it is served there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_stay_small_after_a_routed_request() {
    const N: usize = 1000;
    let conf =
        ConfFile::new("status_path = \"/status\"\naccess_log = false\nkeepalive_timeout = 60\n");
    let srv = BinServer::start(&["--config", conf.arg()]);
    let mut warm = Conn::open(srv.addr).await;
    let status = b"GET /status?json HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(warm.request(status).await.status, 200);
    let base = srv.status_kib("VmRSS");
    let mut conns = Vec::with_capacity(N);
    for _ in 0..N {
        let mut conn = Conn::open(srv.addr).await;
        let resp = conn.request(status).await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("content-type"), Some("application/json"));
        conns.push(conn);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = srv.status_kib("VmRSS");
    let per_conn = after.saturating_sub(base) * 1024 / N as u64;
    eprintln!(
        "{N} connections after a routed request: RSS {base} -> {after} KiB, {per_conn} B each"
    );
    assert!(per_conn < 4 * 1024, "{per_conn} bytes per idle connection");
    // The same connections take a static file, then the router again.
    for conn in conns.iter_mut().take(20) {
        let resp = conn
            .request(b"GET /hello.txt HTTP/1.1\r\nHost: a\r\n\r\n")
            .await;
        assert_eq!(resp.status, 200);
        assert_eq!(conn.request(status).await.status, 200);
    }
}
