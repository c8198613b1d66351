//! Request bodies the front end moves into a CGI program's stdin with
//! splice(2) (`body::socket`, `server/static_h1/upload.rs`): the exact
//! bytes, which bodies take that path (the metrics' spliced byte count),
//! a client that stops mid-body, a program that stops reading, and
//! requests pipelined behind a body.

mod common;

use std::time::Duration;

use cgihost::config::{Config, StatusConfig};
use common::*;

fn config() -> Config {
    let mut c = fixture_config();
    c.status = Some(StatusConfig {
        path: "/status".into(),
        local_only: true,
    });
    c
}

/// `cgihost_bytes_spliced_total` from the metrics.
async fn spliced(addr: std::net::SocketAddr) -> u64 {
    let text = get(addr, "/status/metrics").await.text();
    let line = text
        .lines()
        .find(|l| l.starts_with("cgihost_bytes_spliced_total "))
        .unwrap_or_else(|| panic!("no spliced count in\n{text}"));
    line.rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a number")
}

/// The `length=` and `sha256=` lines `body_sha.py` answers.
fn sha_answer(len: usize, sha: &str) -> String {
    format!("length={len}\ncontent_length={len}\nsha256={sha}\n")
}

/// A raw HTTP/1.1 POST of `body` to `target`.
fn post(target: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = format!(
        "POST {target} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// The next answer is a 404 that says it closes, and the connection
/// then closes.
async fn assert_404_then_close(conn: &mut Conn) {
    let missing = conn.read_response(false).await.expect("the 404");
    assert_eq!(
        (missing.status, missing.header("connection")),
        (404, Some("close"))
    );
    assert!(conn.read_response(false).await.is_none(), "connection kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_body_is_spliced_exactly_and_others_are_not() {
    let srv = TestServer::start(config()).await;
    let total: u64 = 8 << 20;
    let mut conn = Conn::open(srv.addr).await;
    let head = post_head("/cgi-bin/body_sha.py", Some(total));
    let sha = stream_upload(&mut conn, &head, total, false).await;
    let resp = conn.read_response(false).await.expect("response");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), sha_answer(total as usize, &sha));
    // All of it but what came in with the head (at most one read).
    let moved = spliced(srv.addr).await;
    assert!(
        (total - 64 * 1024..=total).contains(&moved),
        "{moved} of {total} bytes spliced"
    );

    // A chunked body is hyper's.
    let mut conn = Conn::open(srv.addr).await;
    let head = post_head("/cgi-bin/body_sha.py", None);
    let sha = stream_upload(&mut conn, &head, 1 << 20, true).await;
    let resp = conn.read_response(false).await.expect("response");
    assert_eq!(resp.text(), sha_answer(1 << 20, &sha));
    assert_eq!(spliced(srv.addr).await, moved);
    srv.stop().await;
}

/// The head of a POST to `target` of `len` bytes that waits for `100
/// Continue`.
fn expecting_head(target: &str, len: usize) -> String {
    format!(
        "POST {target} HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\nExpect: 100-continue\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_expects_100_continue_gets_it_once_the_program_runs() {
    let srv = TestServer::start(config()).await;
    let body = random_bytes(300_000, 7);
    let mut conn = Conn::open(srv.addr).await;
    conn.send(expecting_head("/cgi-bin/body_sha.py", body.len()).as_bytes())
        .await;
    let go_on = conn.read_response(false).await.expect("100 Continue");
    assert_eq!(go_on.status, 100);
    conn.send(&body).await;
    let resp = conn.read_response(false).await.expect("response");
    assert_eq!(resp.text(), sha_answer(body.len(), &sha256_hex(&body)));
    // Sent after the 100, all of it was spliced.
    assert_eq!(spliced(srv.addr).await, body.len() as u64);
    // No program, no 100: the final answer comes at once, and the
    // connection closes, the body never having come.
    let mut conn = Conn::open(srv.addr).await;
    conn.send(expecting_head("/cgi-bin/no-such-program", 5 << 20).as_bytes())
        .await;
    assert_404_then_close(&mut conn).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_pipelined_behind_a_body_are_all_answered() {
    let srv = TestServer::start(config()).await;
    let (a, b) = (random_bytes(100_000, 1), random_bytes(10, 2));
    let sha = "/cgi-bin/body_sha.py";
    // All in one write: body, a GET and a second body behind it.
    let mut raw = post(sha, &a);
    raw.extend_from_slice(b"GET /cgi-bin/hello.sh?between HTTP/1.1\r\nHost: t\r\n\r\n");
    raw.extend_from_slice(&post(sha, &b));
    let mut conn = Conn::open(srv.addr).await;
    conn.send(&raw).await;
    let first = conn.read_response(false).await.expect("first");
    assert_eq!(first.text(), sha_answer(a.len(), &sha256_hex(&a)));
    let second = conn.read_response(false).await.expect("second");
    assert_eq!(second.text(), "hello between\n");
    let third = conn.read_response(false).await.expect("third");
    assert_eq!(third.text(), sha_answer(b.len(), &sha256_hex(&b)));

    // The head with part of the body, the rest later with a GET behind.
    let back = &a[30_000..];
    let mut raw = post(sha, &a);
    raw.truncate(raw.len() - back.len());
    conn.send(&raw).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut raw = back.to_vec();
    raw.extend_from_slice(b"GET /cgi-bin/hello.sh?after HTTP/1.1\r\nHost: t\r\n\r\n");
    conn.send(&raw).await;
    let fourth = conn.read_response(false).await.expect("fourth");
    assert_eq!(fourth.text(), sha_answer(a.len(), &sha256_hex(&a)));
    let fifth = conn.read_response(false).await.expect("fifth");
    assert_eq!(fifth.text(), "hello after\n");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_mid_body_ends_the_program() {
    let tok = token("stopped-body");
    let reader = "#!/bin/sh\n\
        echo $$ > \"/tmp/cgihost-test-$QUERY_STRING.pids.tmp\"\n\
        mv \"/tmp/cgihost-test-$QUERY_STRING.pids.tmp\" \"/tmp/cgihost-test-$QUERY_STRING.pids\"\n\
        cat > /dev/null\n\
        printf 'Content-Type: text/plain\\r\\n\\r\\nread it all\\n'\n";
    let dir = script_dir(&[("reader.sh", reader)]);
    let mut c = config();
    c.cgi_dir = dir.path().to_path_buf();
    let srv = TestServer::start(c).await;
    let mut conn = Conn::open(srv.addr).await;
    let head = format!(
        "POST /cgi-bin/reader.sh?{tok} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        10 << 20
    );
    conn.send(head.as_bytes()).await;
    conn.send(&random_bytes(1 << 20, 3)).await;
    let pids = read_pids(&tok, Duration::from_secs(5)).await;
    assert!(pids.iter().all(|&p| alive(p)));
    drop(conn);
    // Its stdin ends when the client goes; the program then finishes.
    for pid in pids {
        assert!(
            eventually(Duration::from_secs(5), || !alive(pid)).await,
            "pid {pid} outlived its client"
        );
    }
    // The server is none the worse for it.
    assert_eq!(
        get(srv.addr, "/cgi-bin/reader.sh").await.text(),
        "read it all\n"
    );
    srv.stop().await;
}

/// A body of `len` bytes for a program that reads none of it, with a GET
/// for `hello.sh?QUERY` pipelined behind.
fn unread_body_then_get(len: usize, query: &str) -> Vec<u8> {
    let mut raw = post("/cgi-bin/unread_body.sh", &random_bytes(len, 4));
    raw.extend_from_slice(
        format!("GET /cgi-bin/hello.sh?{query} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
    );
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_reads_nothing_of_a_large_body_closes_the_connection() {
    let srv = TestServer::start(config()).await;
    // Over the 1 MiB the server drains to keep a connection (and over
    // what the stdin pipe holds): after the answer it closes (reading
    // what still comes, so the answer arrives).
    let mut conn = Conn::open(srv.addr).await;
    conn.send(&unread_body_then_get(16 << 20, "never")).await;
    let first = conn.read_response(false).await.expect("the answer");
    assert_eq!(first.text(), "ignored your body\n");
    assert!(conn.read_response(false).await.is_none(), "connection kept");
    // Under the limit it is drained and the connection kept.
    let mut conn = Conn::open(srv.addr).await;
    conn.send(&unread_body_then_get(500_000, "kept")).await;
    let first = conn.read_response(false).await.expect("the answer");
    assert_eq!(first.text(), "ignored your body\n");
    let second = conn.read_response(false).await.expect("kept");
    assert_eq!(second.text(), "hello kept\n");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_answers_first_still_gets_all_of_its_body() {
    // It sends a whole response (with a length) and then reads its stdin;
    // the client sends the rest of the body after reading that response,
    // and asked to close: the close waits for the body.
    let tok = token("answers-first");
    let script = "#!/bin/sh\n\
        printf 'Content-Type: text/plain\\r\\nContent-Length: 3\\r\\n\\r\\nok\\n'\n\
        sha256sum | cut -d' ' -f1 > \"/tmp/cgihost-test-$QUERY_STRING.sha.tmp\"\n\
        mv \"/tmp/cgihost-test-$QUERY_STRING.sha.tmp\" \"/tmp/cgihost-test-$QUERY_STRING.sha\"\n";
    let dir = script_dir(&[("first.sh", script)]);
    let mut c = config();
    c.cgi_dir = dir.path().to_path_buf();
    let srv = TestServer::start(c).await;
    let body = random_bytes(3 << 20, 6);
    let (front, back) = body.split_at(100_000);
    let mut conn = Conn::open(srv.addr).await;
    let head = format!(
        "POST /cgi-bin/first.sh?{tok} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.send(head.as_bytes()).await;
    conn.send(front).await;
    let resp = conn.read_response(false).await.expect("the answer");
    assert_eq!(resp.text(), "ok\n");
    conn.send(back).await;
    let path = format!("/tmp/cgihost-test-{tok}.sha");
    assert!(
        eventually(Duration::from_secs(10), || std::path::Path::new(&path)
            .exists())
        .await,
        "the program never finished its body"
    );
    let sha = std::fs::read_to_string(&path).expect("sha file");
    let _ = std::fs::remove_file(&path);
    assert_eq!(sha.trim(), sha256_hex(&body));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_for_no_program_gets_its_404_and_the_connection_stays_in_step() {
    let srv = TestServer::start(config()).await;
    let body = random_bytes(300_000, 8);
    let mut raw = format!(
        "POST /cgi-bin/no-such-program HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    raw.extend_from_slice(b"GET /cgi-bin/hello.sh?next HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut conn = Conn::open(srv.addr).await;
    conn.send(&raw).await;
    let missing = conn.read_response(false).await.expect("the 404");
    assert_eq!(missing.status, 404);
    // The body was read and dropped: the next head is where it should be.
    let next = conn.read_response(false).await.expect("the next answer");
    assert_eq!(next.text(), "hello next\n");
    // More than the server drains: the answer says it closes, and it does.
    let raw = post("/cgi-bin/no-such-program", &random_bytes(2 << 20, 12));
    let mut conn = Conn::open(srv.addr).await;
    conn.send(&raw).await;
    assert_404_then_close(&mut conn).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_data_in_a_body_neither_stalls_nor_spins() {
    // splice(2) stops at TCP urgent data (and poll still says readable):
    // the body must still arrive, without its out-of-band byte.
    let srv = TestServer::start(config()).await;
    let (a, b) = (random_bytes(200_000, 9), random_bytes(300_000, 10));
    let addr = srv.addr;
    let (a2, b2) = (a.clone(), b.clone());
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        use std::os::fd::AsRawFd;
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let head = format!(
            "POST /cgi-bin/body_sha.py HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            a2.len() + b2.len()
        );
        s.write_all(head.as_bytes()).expect("head");
        s.write_all(&a2).expect("first part");
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: a valid socket fd and a one-byte buffer that outlives the call.
        let sent = unsafe { libc::send(s.as_raw_fd(), b"!".as_ptr().cast(), 1, libc::MSG_OOB) };
        assert_eq!(sent, 1);
        s.write_all(&b2).expect("second part");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    });
    let text = answer.await.expect("client");
    let mut body = a;
    body.extend_from_slice(&b);
    assert!(
        text.contains(&sha_answer(body.len(), &sha256_hex(&body))),
        "got: {text}"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_after_its_body_ends_the_program() {
    let tok = token("gone-after-body");
    let script = "#!/bin/sh\n\
        cat > /dev/null\n\
        sleep 300 &\n\
        echo \"$$ $!\" > \"/tmp/cgihost-test-$QUERY_STRING.pids.tmp\"\n\
        mv \"/tmp/cgihost-test-$QUERY_STRING.pids.tmp\" \"/tmp/cgihost-test-$QUERY_STRING.pids\"\n\
        wait\n";
    let dir = script_dir(&[("slow_after.sh", script)]);
    let mut c = config();
    c.cgi_dir = dir.path().to_path_buf();
    let srv = TestServer::start(c).await;
    let raw = post(
        &format!("/cgi-bin/slow_after.sh?{tok}"),
        &random_bytes(1 << 20, 11),
    );
    let mut conn = Conn::open(srv.addr).await;
    conn.send(&raw).await;
    // The program has read all of it, and waits.
    let pids = read_pids(&tok, Duration::from_secs(5)).await;
    assert!(pids.iter().all(|&p| alive(p)));
    drop(conn);
    for pid in pids {
        assert!(
            eventually(Duration::from_secs(5), || !alive(pid)).await,
            "pid {pid} outlived its client"
        );
    }
    srv.stop().await;
}
