//! The static path's memos (`src/server/static_h1/hot.rs`): a repeated
//! GET or HEAD of a small cached file is answered from a memo of the last
//! answer. These tests show a memo never answers a request that would get
//! another answer: another host, alias, coding, method, version,
//! conditional or range; another configuration after a reload; and that
//! memo hits are logged and counted like any request. (That memos see
//! every change to the files is in `open_file_cache.rs`, whose cases also
//! run on one thread, where each repeat is a memo hit.)

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use cgihost::config::Config;
use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        let files = Files {
            dir: tempfile::tempdir().unwrap(),
        };
        files.write("root/a.bin", &random_bytes(1024, 1));
        files.write("two/a.bin", &random_bytes(1024, 2));
        files.write("alias/a.bin", &random_bytes(1024, 3));
        files.write("root/style.css", &css());
        files.write("root/style.css.gz", b"the precompressed sibling");
        std::fs::create_dir_all(files.path("cgi")).unwrap();
        files
    }

    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, data: &[u8]) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.path(rel)).unwrap()
    }

    /// A root, a second site and an alias, loaded as the binary loads them.
    fn config(&self) -> Config {
        let d = self.dir.path().display();
        let toml = format!(
            r#"
root = "{d}/root"
cgi_dir = "{d}/cgi"
access_log = false

[[alias]]
prefix = "/docs"
dir = "{d}/alias"

[[site]]
hosts = ["two.test"]
root = "{d}/two"
"#
        );
        let file = self.path("cgihost.toml");
        std::fs::write(&file, toml).unwrap();
        load_config_file(file)
    }
}

fn css() -> Vec<u8> {
    (0..400)
        .flat_map(|i| format!(".c{i} {{}}\n").into_bytes())
        .collect()
}

/// Send `raw` on a new connection and read until the server closes it:
/// the response head and every byte after it (a HEAD's must be none).
async fn exchange(addr: SocketAddr, raw: &str) -> (String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all))
        .await
        .expect("the server closes the connection")
        .unwrap();
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let rest = all.split_off(end);
    (String::from_utf8(all).unwrap().to_ascii_lowercase(), rest)
}

fn get_raw(path: &str, host: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}\r\n")
}

fn etag_of(head: &str) -> String {
    head.lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .expect("an ETag")
        .to_string()
}

/// On one thread every repeat is a memo hit; each request of the round
/// differs from another in one part of the key, and each gets its own
/// answer, round after round.
#[tokio::test(flavor = "current_thread")]
async fn memos_are_keyed_by_everything_the_answer_depends_on() {
    let files = Files::new();
    let srv = TestServer::start(files.config()).await;
    let addr = srv.addr;
    let (a, two, alias, sibling) = (
        files.read("root/a.bin"),
        files.read("two/a.bin"),
        files.read("alias/a.bin"),
        files.read("root/style.css.gz"),
    );
    let (head, _) = exchange(addr, &get_raw("/a.bin", "test.local", "")).await;
    let etag = etag_of(&head);
    for round in 0..3 {
        let case = |what: &str| format!("round {round}: {what}");
        let (head, body) = exchange(addr, &get_raw("/a.bin", "test.local", "")).await;
        assert!(head.starts_with("http/1.1 200"), "{}", case(&head));
        assert!(body == a, "{}", case("the root's file"));
        let (_, body) = exchange(addr, &get_raw("/a.bin", "two.test", "")).await;
        assert!(body == two, "{}", case("the second site's file"));
        let (_, body) = exchange(addr, &get_raw("/docs/a.bin", "test.local", "")).await;
        assert!(body == alias, "{}", case("the alias's file"));
        let (_, body) = exchange(addr, &get_raw("/a.bin?v=2", "test.local", "")).await;
        assert!(body == a, "{}", case("a query"));

        let (head, body) = exchange(addr, &get_raw("/style.css", "test.local", "")).await;
        assert!(body == css(), "{}", case("identity"));
        assert!(head.contains("vary: accept-encoding"), "{}", case(&head));
        let gzip = "Accept-Encoding: gzip\r\n";
        let (head, body) = exchange(addr, &get_raw("/style.css", "test.local", gzip)).await;
        assert!(body == sibling, "{}", case("the .gz sibling"));
        assert!(head.contains("content-encoding: gzip"), "{}", case(&head));
        let br = "Accept-Encoding: br\r\n";
        let (head, body) = exchange(addr, &get_raw("/style.css", "test.local", br)).await;
        assert!(body == css(), "{}", case("no br sibling"));
        assert!(!head.contains("content-encoding"), "{}", case(&head));

        let raw = "HEAD /a.bin HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n";
        let (head, body) = exchange(addr, raw).await;
        assert!(head.contains("content-length: 1024"), "{}", case(&head));
        assert!(body.is_empty(), "{}", case("a HEAD has no body"));
        let raw = "GET /a.bin HTTP/1.0\r\nHost: test.local\r\n\r\n";
        let (head, body) = exchange(addr, raw).await;
        assert!(head.starts_with("http/1.0 200"), "{}", case(&head));
        assert!(head.contains("connection: close"), "{}", case(&head));
        assert!(body == a, "{}", case("HTTP/1.0"));

        let inm = format!("If-None-Match: {etag}\r\n");
        let (head, body) = exchange(addr, &get_raw("/a.bin", "test.local", &inm)).await;
        assert!(head.starts_with("http/1.1 304"), "{}", case(&head));
        assert!(body.is_empty());
        // The same key in a head over `max_header_size`: hyper's 431.
        let pad = format!("X-Pad: {}\r\n", "p".repeat(70 * 1024));
        let (head, _) = exchange(addr, &get_raw("/a.bin", "test.local", &pad)).await;
        assert!(head.starts_with("http/1.1 431"), "{}", case(&head));
        let range = "Range: bytes=0-9\r\n";
        let (head, body) = exchange(addr, &get_raw("/a.bin", "test.local", range)).await;
        assert!(head.starts_with("http/1.1 206"), "{}", case(&head));
        assert!(body == a[..10], "{}", case("a range"));
    }
    // The cache still holds each file once: memos hold no entry of their own.
    let stats = srv.app.sites.default_site().root.statics.cache_stats();
    assert!(stats.is_some_and(|s| s.entries <= 3), "{stats:?}");
    srv.stop().await;
}

/// Keep-alive on one connection: memo answers follow each other with the
/// connection kept, `Connection: close` closes after its answer.
#[tokio::test(flavor = "current_thread")]
async fn memo_answers_keep_the_connection_as_asked() {
    let files = Files::new();
    let srv = TestServer::start(files.config()).await;
    let a = files.read("root/a.bin");
    let mut conn = Conn::open(srv.addr).await;
    for _ in 0..5 {
        let resp = conn
            .request(b"GET /a.bin HTTP/1.1\r\nHost: test.local\r\n\r\n")
            .await;
        assert_eq!(resp.status, 200);
        assert!(resp.body == a);
        assert_eq!(resp.header("connection"), None);
    }
    let raw = b"GET /a.bin HTTP/1.0\r\nHost: test.local\r\nConnection: keep-alive\r\n\r\n";
    for _ in 0..3 {
        let resp = conn.request(raw).await;
        assert!(resp.body == a);
        assert_eq!(resp.header("connection"), Some("keep-alive"));
    }
    let resp = conn
        .request(b"GET /a.bin HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(
        conn.read_response(false).await.is_none(),
        "the server closes after Connection: close"
    );
    srv.stop().await;
}

fn static_route(s: &Value) -> &Value {
    s["routes"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["route"] == "static"))
        .unwrap_or(&Value::Null)
}

/// Memo hits are in the access log, with the client's own fields, and in
/// the status page's counters; a reload's new headers are served at once
/// (memos belong to one configuration).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memo_hits_are_logged_counted_and_end_with_a_reload() {
    let files = Files::new();
    let root = files.path("root");
    let conf = ConfFile::new("status_path = \"/status\"\ncache_control = \"max-age=60\"\n");
    let srv = BinServer::start_in(Path::new(&root), &["--config", conf.arg()]);
    let agent = "User-Agent: memo-agent/1\r\nReferer: http://ref.test/page\r\n";
    const N: usize = 8;
    for _ in 0..N {
        let (head, body) = exchange(srv.addr, &get_raw("/a.bin", "test.local", agent)).await;
        assert!(head.contains("cache-control: max-age=60"), "{head}");
        assert_eq!(body.len(), 1024);
    }
    let logged = |srv: &BinServer| {
        srv.stdout_text()
            .lines()
            .filter(|l| {
                l.contains(
                    "\"GET /a.bin HTTP/1.1\" 200 1024 \"http://ref.test/page\" \"memo-agent/1\"",
                )
            })
            .count()
    };
    assert!(
        eventually(Duration::from_secs(5), || logged(&srv) == N).await,
        "{N} access log lines wanted:\n{}",
        srv.stdout_text()
    );
    let resp = get(srv.addr, "/status?json").await;
    let s: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(static_route(&s)["requests"], N, "{s:#}");
    assert_eq!(static_route(&s)["bytes_out"], N * 1024, "{s:#}");

    conf.rewrite("status_path = \"/status\"\ncache_control = \"max-age=5\"\n");
    srv.signal(libc::SIGHUP);
    await_reload(&srv, 2).await;
    for _ in 0..N {
        let (head, _) = exchange(srv.addr, &get_raw("/a.bin", "test.local", "")).await;
        assert!(head.contains("cache-control: max-age=5\r\n"), "{head}");
    }
}
