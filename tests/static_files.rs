//! Static files through the real server and real files in a temporary
//! document root: types, validators and conditional requests, ranges,
//! compression, streaming in bounded memory (the binary), and a table of
//! hostile paths that must never reach anything outside the root.

mod common;

use std::io::Read;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use common::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Bytes that exist only outside the root: seeing them in any response is
/// a leak.
const SECRET: &[u8] = b"TOP-SECRET-5f1c9e outside the document root";

/// A document root in a temp dir, with a secret file beside it.
struct Site {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
}

impl Site {
    fn new() -> Site {
        let tmp = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        let root = base.join("root");
        for d in ["dir", "empty", "cgi-bin", ".git"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::create_dir_all(base.join("outside")).unwrap();
        std::fs::write(base.join("secret.txt"), SECRET).unwrap();
        std::fs::write(base.join("outside/secret.txt"), SECRET).unwrap();
        std::fs::write(root.join(".git/config"), SECRET).unwrap();
        std::fs::write(root.join(".hidden"), SECRET).unwrap();
        std::fs::write(root.join("cgi-bin/tool.sh"), SECRET).unwrap();
        std::fs::write(root.join("hello.txt"), "hello, world\n").unwrap();
        std::fs::write(root.join("dir/index.html"), "<p>dir index</p>\n").unwrap();
        std::fs::write(root.join("data.bin"), random_bytes(200_000, 3)).unwrap();
        std::fs::write(root.join("big.txt"), text(300_000)).unwrap();
        std::fs::write(root.join("page.html"), text(5_000)).unwrap();
        symlink("hello.txt", root.join("inner-link.txt")).unwrap();
        symlink("/etc", root.join("etc")).unwrap();
        symlink(base.join("outside"), root.join("out")).unwrap();
        symlink("../secret.txt", root.join("secret-link.txt")).unwrap();
        symlink("cgi-bin", root.join("cgi-link")).unwrap();
        symlink(".git", root.join("git-link")).unwrap();
        Site {
            _tmp: tmp,
            base,
            root,
        }
    }

    fn config(&self) -> cgihost::config::Config {
        let mut c = fixture_config();
        c.root = self.root.clone();
        c.cgi_dir = self.root.join("cgi-bin");
        c
    }

    fn bytes(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.root.join(rel)).unwrap()
    }

    fn set_mtime(&self, rel: &str, secs: u64) {
        let f = std::fs::File::options()
            .write(true)
            .open(self.root.join(rel))
            .unwrap();
        f.set_modified(UNIX_EPOCH + Duration::from_secs(secs))
            .unwrap();
    }
}

/// The binary serving `root` (and no CGI directory) plus `args`.
fn bin_server(root: &std::path::Path, args: &[&str]) -> BinServer {
    let mut cmd = std::process::Command::new(bin_path());
    cmd.args(["--bind", "127.0.0.1", "--port", "0", "--root"])
        .arg(root)
        .arg("--cgi-dir")
        .arg(root.join("cgi-bin"))
        .args(args);
    BinServer::start_cmd(cmd)
}

/// Compressible text: numbered lines.
fn text(len: usize) -> Vec<u8> {
    let mut t: Vec<u8> = (0..)
        .flat_map(|i| format!("line {i} of some text\n").into_bytes())
        .take(len)
        .collect();
    t.truncate(len);
    t
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

async fn send(addr: std::net::SocketAddr, method: &str, path: &str, headers: &str) -> Resp {
    request(addr, method, path, headers, b"").await
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_head_serve_files_dirs_and_refuse_other_methods() {
    let site = Site::new();
    let srv = TestServer::start(site.config()).await;
    let r = get(srv.addr, "/hello.txt").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("content-length"), Some("13"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(
        r.header("cache-control"),
        None,
        "no Cache-Control by default"
    );
    assert_eq!(r.body, b"hello, world\n");

    let h = send(srv.addr, "HEAD", "/hello.txt", "").await;
    assert_eq!(h.status, 200);
    assert!(h.body.is_empty());
    for name in [
        "content-type",
        "content-length",
        "etag",
        "last-modified",
        "accept-ranges",
    ] {
        assert_eq!(h.header(name), r.header(name), "{name}");
    }

    let bin = get(srv.addr, "/data.bin").await;
    assert_eq!(bin.status, 200);
    assert_eq!(bin.header("content-type"), Some("application/octet-stream"));
    assert_eq!(
        bin.body,
        site.bytes("data.bin"),
        "streamed file, exact bytes"
    );

    let d = get(srv.addr, "/dir/").await;
    assert_eq!(
        (d.status, d.body.as_slice()),
        (200, site.bytes("dir/index.html").as_slice())
    );
    assert_eq!(d.header("content-type"), Some("text/html; charset=utf-8"));
    let redirect = get(srv.addr, "/dir?x=1").await;
    assert_eq!(redirect.status, 301);
    assert_eq!(redirect.header("location"), Some("/dir/?x=1"));
    assert_eq!(get(srv.addr, "/empty/").await.status, 403, "no listings");
    assert_eq!(get(srv.addr, "/hello.txt/").await.status, 404);
    assert_eq!(get(srv.addr, "/nope.txt").await.status, 404);
    let link = get(srv.addr, "/inner-link.txt").await;
    assert_eq!(
        (link.status, link.body.as_slice()),
        (200, &b"hello, world\n"[..])
    );

    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let r = send(srv.addr, method, "/hello.txt", "").await;
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"), "{method}");
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_and_conditional_requests() {
    let site = Site::new();
    site.set_mtime("hello.txt", 1_700_000_000);
    let srv = TestServer::start(site.config()).await;
    let r = get(srv.addr, "/hello.txt").await;
    let etag = r.header("etag").expect("etag").to_string();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong: {etag}"
    );
    let lm = "Tue, 14 Nov 2023 22:13:20 GMT";
    assert_eq!(r.header("last-modified"), Some(lm));

    let cases: Vec<(String, u16)> = vec![
        (format!("If-None-Match: {etag}\r\n"), 304),
        (format!("If-None-Match: W/{etag}\r\n"), 304),
        (format!("If-None-Match: \"x\", {etag}\r\n"), 304),
        ("If-None-Match: *\r\n".into(), 304),
        ("If-None-Match: \"x\"\r\n".into(), 200),
        (format!("If-Modified-Since: {lm}\r\n"), 304),
        (
            "If-Modified-Since: Tue, 14 Nov 2023 22:13:19 GMT\r\n".into(),
            200,
        ),
        ("If-Modified-Since: yesterday\r\n".into(), 200),
        // If-None-Match wins over If-Modified-Since.
        (
            format!("If-None-Match: \"x\"\r\nIf-Modified-Since: {lm}\r\n"),
            200,
        ),
        (format!("If-Match: {etag}\r\n"), 200),
        ("If-Match: \"x\"\r\n".into(), 412),
        (
            "If-Unmodified-Since: Tue, 14 Nov 2023 22:13:19 GMT\r\n".into(),
            412,
        ),
    ];
    for (headers, want) in &cases {
        let r = send(srv.addr, "GET", "/hello.txt", headers).await;
        assert_eq!(r.status, *want, "{headers}");
        match want {
            304 => {
                assert!(r.body.is_empty());
                assert_eq!(r.header("etag"), Some(etag.as_str()), "{headers}");
                assert_eq!(r.header("last-modified"), Some(lm));
            }
            200 => assert_eq!(r.body, b"hello, world\n"),
            _ => assert!(!contains(&r.body, b"hello, world")),
        }
    }
    let head = send(
        srv.addr,
        "HEAD",
        "/hello.txt",
        &format!("If-None-Match: {etag}\r\n"),
    )
    .await;
    assert_eq!(head.status, 304);

    // A changed file gets a new ETag, and the old one no longer matches.
    site.set_mtime("hello.txt", 1_700_000_100);
    let r = send(
        srv.addr,
        "GET",
        "/hello.txt",
        &format!("If-None-Match: {etag}\r\n"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_ne!(r.header("etag"), Some(etag.as_str()));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_ranges() {
    let site = Site::new();
    let srv = TestServer::start(site.config()).await;
    let data = site.bytes("data.bin");
    let size = data.len();
    let etag = get(srv.addr, "/data.bin")
        .await
        .header("etag")
        .unwrap()
        .to_string();
    let lm = get(srv.addr, "/data.bin")
        .await
        .header("last-modified")
        .unwrap()
        .to_string();
    let cases: Vec<(String, usize, usize)> = vec![
        ("bytes=0-99".into(), 0, 100),
        ("bytes=100000-".into(), 100_000, size),
        ("bytes=-1000".into(), size - 1000, size),
        ("bytes=5-5".into(), 5, 6),
        ("bytes=190000-999999999".into(), 190_000, size),
        ("bytes=1-150000".into(), 1, 150_001),
        ("bytes=500-,-0".into(), 500, size),
    ];
    for (range, start, end) in &cases {
        let r = send(srv.addr, "GET", "/data.bin", &format!("Range: {range}\r\n")).await;
        assert_eq!(r.status, 206, "{range}");
        let want_cr = format!("bytes {start}-{}/{size}", end - 1);
        assert_eq!(r.header("content-range"), Some(want_cr.as_str()), "{range}");
        assert_eq!(
            r.header("content-length"),
            Some((end - start).to_string().as_str())
        );
        assert_eq!(r.body, &data[*start..*end], "{range}");
    }
    // A range of a small (in-memory) file.
    let r = send(srv.addr, "GET", "/hello.txt", "Range: bytes=7-11\r\n").await;
    assert_eq!((r.status, r.body.as_slice()), (206, &b"world"[..]));

    for unsat in ["bytes=200000-", "bytes=999999-1000000", "bytes=-0"] {
        let r = send(srv.addr, "GET", "/data.bin", &format!("Range: {unsat}\r\n")).await;
        assert_eq!(r.status, 416, "{unsat}");
        let want = format!("bytes */{size}");
        assert_eq!(r.header("content-range"), Some(want.as_str()), "{unsat}");
        assert!(!contains(&r.body, &data[..64]));
    }
    // Ignored: malformed, other units, several ranges, HEAD, failed If-Range.
    let whole: Vec<String> = vec![
        "Range: bytes=5-1\r\n".into(),
        "Range: bytes=abc\r\n".into(),
        "Range: lines=1-2\r\n".into(),
        "Range: bytes=0-1,10-20\r\n".into(),
        "Range: bytes=0-9\r\nIf-Range: \"stale\"\r\n".into(),
        format!("Range: bytes=0-9\r\nIf-Range: W/{etag}\r\n"),
        "Range: bytes=0-9\r\nIf-Range: Mon, 01 Jan 2001 00:00:00 GMT\r\n".into(),
    ];
    for headers in &whole {
        let r = send(srv.addr, "GET", "/data.bin", headers).await;
        assert_eq!(r.status, 200, "{headers}");
        assert_eq!(r.header("content-range"), None);
        assert_eq!(r.body, data, "{headers}");
    }
    let head = send(srv.addr, "HEAD", "/data.bin", "Range: bytes=0-9\r\n").await;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(size.to_string().as_str())
    );
    // If-Range that matches: the range is honoured.
    for validator in [&etag, &lm] {
        let h = format!("Range: bytes=0-9\r\nIf-Range: {validator}\r\n");
        let r = send(srv.addr, "GET", "/data.bin", &h).await;
        assert_eq!(
            (r.status, r.body.as_slice()),
            (206, &data[..10]),
            "{validator}"
        );
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_on_the_fly_for_text() {
    let site = Site::new();
    let srv = TestServer::start(site.config()).await;
    for file in ["big.txt", "page.html"] {
        let path = format!("/{file}");
        let plain = get(srv.addr, path.as_str()).await;
        assert_eq!(plain.header("content-encoding"), None);
        assert_eq!(plain.header("vary"), Some("accept-encoding"));
        let r = send(srv.addr, "GET", &path, "Accept-Encoding: gzip, deflate\r\n").await;
        assert_eq!(r.status, 200, "{file}");
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert_eq!(r.header("vary"), Some("accept-encoding"));
        assert_eq!(r.header("content-length"), None, "streamed: no length");
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        assert_eq!(r.header("content-type"), plain.header("content-type"));
        let etag = r.header("etag").unwrap();
        assert!(etag.ends_with("-gz\""), "{etag}");
        assert_ne!(Some(etag), plain.header("etag"));
        assert!(
            r.body.len() < site.bytes(file).len() / 2,
            "{file} compressed"
        );
        assert_eq!(gunzip(&r.body), site.bytes(file), "{file}");
        // Its own ETag revalidates it.
        let again = send(
            srv.addr,
            "GET",
            &path,
            &format!("Accept-Encoding: gzip\r\nIf-None-Match: {etag}\r\n"),
        )
        .await;
        assert_eq!(again.status, 304);
        assert_eq!(again.header("vary"), Some("accept-encoding"));
    }
    // Not compressed: refused coding, tiny file, binary type, a range.
    let identity: &[(&str, &str)] = &[
        ("/big.txt", "Accept-Encoding: gzip;q=0, deflate\r\n"),
        ("/big.txt", "Accept-Encoding: *;q=0\r\n"),
        ("/hello.txt", "Accept-Encoding: gzip\r\n"),
        ("/data.bin", "Accept-Encoding: gzip\r\n"),
    ];
    for (path, headers) in identity {
        let r = send(srv.addr, "GET", path, headers).await;
        assert_eq!(r.status, 200, "{path} {headers}");
        assert_eq!(r.header("content-encoding"), None, "{path} {headers}");
        assert_eq!(r.body, site.bytes(&path[1..]), "{path} {headers}");
    }
    let r = send(
        srv.addr,
        "GET",
        "/big.txt",
        "Accept-Encoding: gzip\r\nRange: bytes=10-19\r\n",
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.body, &site.bytes("big.txt")[10..20]);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precompressed_siblings_are_preferred() {
    let site = Site::new();
    let css = text(4000);
    std::fs::write(site.root.join("app.css"), &css).unwrap();
    std::fs::write(site.root.join("app.css.gz"), gzip(&css)).unwrap();
    // Any bytes will do for br: the server sends the sibling as it is.
    std::fs::write(site.root.join("app.css.br"), b"pretend-brotli").unwrap();
    // A sibling older than its file is stale and ignored.
    std::fs::write(site.root.join("old.txt"), text(3000)).unwrap();
    std::fs::write(site.root.join("old.txt.gz"), b"stale").unwrap();
    site.set_mtime("old.txt.gz", 1_600_000_000);
    // A sibling that is a symlink out of the root is never used.
    std::fs::write(site.root.join("leak.txt"), text(3000)).unwrap();
    symlink(site.base.join("secret.txt"), site.root.join("leak.txt.gz")).unwrap();
    let srv = TestServer::start(site.config()).await;

    let br = send(
        srv.addr,
        "GET",
        "/app.css",
        "Accept-Encoding: gzip, deflate, br\r\n",
    )
    .await;
    assert_eq!(br.status, 200);
    assert_eq!(br.header("content-encoding"), Some("br"));
    assert_eq!(br.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(br.header("vary"), Some("accept-encoding"));
    assert_eq!(br.header("content-length"), Some("14"));
    assert_eq!(br.body, b"pretend-brotli");

    for ae in ["gzip", "br;q=0.5, gzip", "gzip, br;q=0"] {
        let gz = send(
            srv.addr,
            "GET",
            "/app.css",
            &format!("Accept-Encoding: {ae}\r\n"),
        )
        .await;
        assert_eq!(gz.header("content-encoding"), Some("gzip"), "{ae}");
        assert_eq!(
            gz.body,
            site.bytes("app.css.gz"),
            "the sibling's exact bytes"
        );
        assert_eq!(gunzip(&gz.body), css);
        let len = site.bytes("app.css.gz").len().to_string();
        assert_eq!(gz.header("content-length"), Some(len.as_str()));
    }
    let plain = get(srv.addr, "/app.css").await;
    assert_eq!(plain.body, css);
    let tags: Vec<String> = [("br", &br), ("", &plain)]
        .iter()
        .map(|(_, r)| r.header("etag").unwrap().to_string())
        .collect();
    assert!(tags[0].ends_with("-br\"") && tags[0] != tags[1], "{tags:?}");

    let old = send(srv.addr, "GET", "/old.txt", "Accept-Encoding: gzip\r\n").await;
    assert_eq!(
        gunzip(&old.body),
        site.bytes("old.txt"),
        "stale sibling ignored"
    );
    let leak = send(srv.addr, "GET", "/leak.txt", "Accept-Encoding: gzip\r\n").await;
    assert!(!contains(&leak.body, SECRET));
    assert_eq!(gunzip(&leak.body), site.bytes("leak.txt"));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_control_is_configurable() {
    let site = Site::new();
    let mut config = site.config();
    config.cache_control = Some("public, max-age=3600".into());
    let srv = TestServer::start(config).await;
    let r = get(srv.addr, "/hello.txt").await;
    assert_eq!(r.header("cache-control"), Some("public, max-age=3600"));
    let etag = r.header("etag").unwrap();
    let nm = send(
        srv.addr,
        "GET",
        "/hello.txt",
        &format!("If-None-Match: {etag}\r\n"),
    )
    .await;
    assert_eq!(nm.status, 304);
    assert_eq!(nm.header("cache-control"), Some("public, max-age=3600"));
    let part = send(srv.addr, "GET", "/hello.txt", "Range: bytes=0-0\r\n").await;
    assert_eq!(part.header("cache-control"), Some("public, max-age=3600"));
    // Error pages keep their own policy.
    let missing = get(srv.addr, "/nope").await;
    assert_eq!(missing.header("cache-control"), Some("no-store"));
    srv.stop().await;
}

#[test]
fn cache_control_from_the_config_file() {
    let site = Site::new();
    let good = site.base.join("good.toml");
    std::fs::write(&good, "cache_control = \"public, max-age=60\"\n").unwrap();
    let mut srv = bin_server(&site.root, &["--config", good.to_str().unwrap()]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = rt.block_on(get(srv.addr, "/hello.txt"));
    assert_eq!(r.header("cache-control"), Some("public, max-age=60"));
    srv.signal(libc::SIGTERM);
    assert_eq!(srv.wait_exit(Duration::from_secs(10)), Some(0));

    let bad = site.base.join("bad.toml");
    std::fs::write(&bad, "cache_control = \"a\\nb\"\n").unwrap();
    let out = std::process::Command::new(bin_path())
        .args(["--check-config", "--config", bad.to_str().unwrap()])
        .args(["--root", site.root.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("cache_control"), "{err}");
}

/// Hostile request targets: none may return a byte from outside the root
/// (or from a dot-file or the CGI directory inside it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_table_never_leaks() {
    let site = Site::new();
    let srv = TestServer::start(site.config()).await;
    let passwd = std::fs::read("/etc/passwd").unwrap_or_default();
    let hostile = [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/.%2e/secret.txt",
        "/%2e./secret.txt",
        "/%252e%252e/secret.txt",
        "/%c0%ae%c0%ae/secret.txt",
        "/%c0%af..%c0%afsecret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/..%5csecret.txt",
        "/%5c..%5csecret.txt",
        "/dir/..%2f..%2fsecret.txt",
        "/dir/../../secret.txt",
        "/./../secret.txt",
        "/dir/./../../outside/secret.txt",
        "/hello.txt%00.html",
        "/secret.txt%00",
        "/etc/passwd",
        "/etc/hostname",
        "/out/secret.txt",
        "/secret-link.txt",
        "/cgi-link/tool.sh",
        "/git-link/config",
        "/.git/config",
        "/.hidden",
        "/%2ehidden",
        "//secret.txt",
        "http://test.local/../secret.txt",
        "http://test.local/%2e%2e/secret.txt",
        "http://test.local/out/secret.txt",
    ];
    for target in hostile {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n");
        let r = Conn::open(srv.addr).await.request(raw.as_bytes()).await;
        assert!(
            [400, 403, 404].contains(&r.status),
            "{target}: status {}",
            r.status
        );
        assert!(!contains(&r.body, SECRET), "{target} leaked the secret");
        assert!(
            passwd.len() < 16 || !contains(&r.body, &passwd[..16]),
            "{target} leaked /etc/passwd"
        );
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_files_are_not_served() {
    let site = Site::new();
    let fifo = site.root.join("pipe.txt");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let srv = TestServer::start(site.config()).await;
    // A FIFO would block a plain open(2) forever; it must be a quick 404.
    let r = tokio::time::timeout(Duration::from_secs(5), get(srv.addr, "/pipe.txt"))
        .await
        .expect("a FIFO must not hang the server");
    assert_eq!(r.status, 404);
    srv.stop().await;
}

/// Read one response head from a raw connection, then count (and check)
/// the body bytes without keeping them.
async fn download_zeros(addr: std::net::SocketAddr, path: &str) -> (u16, u64) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut s = BufReader::new(stream);
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    s.get_mut().write_all(req.as_bytes()).await.unwrap();
    let mut line = String::new();
    s.read_line(&mut line).await.unwrap();
    let status: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
    loop {
        line.clear();
        s.read_line(&mut line).await.unwrap();
        if line.trim().is_empty() {
            break;
        }
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        assert!(
            buf[..n].iter().all(|&b| b == 0),
            "sparse file reads as zeros"
        );
        total += n as u64;
    }
    (status, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gib_download_streams_in_bounded_memory() {
    let root = tempfile::tempdir().unwrap();
    let size: u64 = 2 << 30;
    std::fs::File::create(root.path().join("huge.bin"))
        .unwrap()
        .set_len(size)
        .unwrap();
    let srv = bin_server(root.path(), &[]);
    let (status, got) = download_zeros(srv.addr, "/huge.bin").await;
    assert_eq!((status, got), (200, size));
    let hwm = srv.status_kib("VmHWM");
    eprintln!("2 GiB download: cgihost VmHWM {hwm} KiB");
    assert!(hwm < 64 * 1024, "VmHWM {hwm} KiB");
}

// The sendfile path (`server/static_h1.rs`): cleartext HTTP/1 static
// requests are served without hyper until the first other request, which
// hands the connection to hyper.

/// Bytes and requests the static route has counted (the access log's and
/// the status page's figures).
fn static_counted(srv: &TestServer) -> (u64, u64) {
    let routes = srv.app.stats.routes();
    let r = routes.iter().find(|r| &*r.route == "static").unwrap();
    (r.requests, r.bytes_out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_goes_from_the_sendfile_path_to_hyper() {
    let site = Site::new();
    let srv = TestServer::start(site.config()).await;
    let mut c = Conn::open(srv.addr).await;
    // Small file (read behind the head), large file (sendfile), HEAD.
    let r = c
        .request(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    assert_eq!((r.status, &r.body[..]), (200, &b"hello, world\n"[..]));
    assert!(r.header("date").is_some() && r.header("etag").is_some());
    let r = c
        .request(b"GET /data.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("200000"));
    assert_eq!(sha256_hex(&r.body), sha256_hex(&site.bytes("data.bin")));
    let r = c
        .request(b"HEAD /data.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    assert_eq!(
        (r.status, r.header("content-length")),
        (200, Some("200000"))
    );
    let r = c
        .request(b"GET /nope.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    assert_eq!(r.status, 404);
    assert!(String::from_utf8_lossy(&r.body).contains("404 Not Found"));
    // HEAD of the error page: its length, as hyper gives it, and no body.
    let page_len = r.body.len().to_string();
    let r = c
        .request(b"HEAD /nope.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    assert_eq!(
        (r.status, r.header("content-length"), r.body.len()),
        (404, Some(&page_len[..]), 0)
    );
    // Counted once each response is written: the client may be first.
    let want = (5, 13 + 200_000 + page_len.parse::<u64>().unwrap());
    let counted = eventually(Duration::from_secs(5), || static_counted(&srv) == want).await;
    assert!(counted, "{:?} != {want:?}", static_counted(&srv));
    // A POST is hyper's: 405 with Allow, on the same connection...
    let r = c
        .request(b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
        .await;
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    // ...which hyper goes on serving, pipelined requests included.
    c.send(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\nGET /page.html HTTP/1.1\r\nHost: t\r\nAccept-Encoding: identity\r\n\r\n")
        .await;
    let a = c.read_response(false).await.unwrap();
    let b = c.read_response(false).await.unwrap();
    assert_eq!((a.status, &a.body[..]), (200, &b"hello, world\n"[..]));
    assert_eq!((b.status, b.body), (200, site.bytes("page.html")));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_preface_after_http1_requests_is_not_a_protocol_switch() {
    let site = Site::new();
    let srv = TestServer::start(site.config()).await;
    // At the start of a connection the preface is HTTP/2 (prior knowledge)...
    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut first))
        .await
        .expect("a frame")
        .unwrap();
    assert_eq!(first[3], 0x4, "a SETTINGS frame: {first:?}");
    drop(s);
    // ...after an HTTP/1.1 request on it, it is a bad HTTP/1 request.
    let mut c = Conn::open(srv.addr).await;
    let r = c
        .request(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    assert_eq!(r.status, 200);
    c.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), c.stream.read_to_end(&mut rest));
    read.await.expect("the connection ends").unwrap();
    assert!(
        rest.is_empty() || rest.starts_with(b"HTTP/1.1 4") || rest.starts_with(b"HTTP/1.1 5"),
        "{rest:?}"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_static_requests_are_answered_in_order() {
    let site = Site::new();
    let srv = TestServer::start(site.config()).await;
    let mut c = Conn::open(srv.addr).await;
    let mut burst = Vec::new();
    for path in ["/hello.txt", "/data.bin", "/dir/", "/dir", "/hello.txt"] {
        burst.extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    }
    burst.extend_from_slice(b"HEAD /big.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n");
    burst.extend_from_slice(b"GET /big.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n");
    burst.extend_from_slice(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=7-11\r\n\r\n");
    c.send(&burst).await;
    let mut got = Vec::new();
    for head in [false, false, false, false, false, true, false, false] {
        got.push(c.read_response(head).await.expect("a response"));
    }
    assert_eq!(&got[0].body[..], b"hello, world\n");
    assert_eq!(got[1].body, site.bytes("data.bin"));
    assert_eq!(&got[2].body[..], b"<p>dir index</p>\n");
    assert_eq!(
        (got[3].status, got[3].header("location")),
        (301, Some("/dir/"))
    );
    assert_eq!(&got[4].body[..], b"hello, world\n");
    // On-the-fly gzip has no length: chunked, and HEAD says so without a body.
    assert_eq!(got[5].header("content-encoding"), Some("gzip"));
    assert_eq!(got[6].header("transfer-encoding"), Some("chunked"));
    assert_eq!(gunzip(&got[6].body), site.bytes("big.txt"));
    assert_eq!(got[7].status, 206);
    assert_eq!(got[7].header("content-range"), Some("bytes 7-11/13"));
    assert_eq!(&got[7].body[..], b"world");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_and_close_follow_the_request() {
    let site = Site::new();
    let srv = TestServer::start(site.config()).await;
    // HTTP/1.0 asking for keep-alive gets it, and a second request.
    let mut c = Conn::open(srv.addr).await;
    for _ in 0..2 {
        let r = c
            .request(b"GET /hello.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .await;
        assert_eq!(
            (r.status, r.header("connection")),
            (200, Some("keep-alive"))
        );
        assert_eq!(&r.body[..], b"hello, world\n");
    }
    // Plain HTTP/1.0 and HTTP/1.1 with `Connection: close` end with the
    // response (the 1.0 one answered as 1.0, gzip body close-delimited).
    let cases: [&[u8]; 3] = [
        b"GET /hello.txt HTTP/1.0\r\n\r\n",
        b"GET /data.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"GET /big.txt HTTP/1.0\r\nAccept-Encoding: gzip\r\n\r\n",
    ];
    for raw in cases {
        let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut all = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all))
            .await
            .expect("the server closes the connection")
            .unwrap();
        let text = String::from_utf8_lossy(&all);
        let http10 = contains(raw, b"HTTP/1.0");
        let status = if http10 {
            "HTTP/1.0 200 OK\r\n"
        } else {
            "HTTP/1.1 200 OK\r\n"
        };
        assert!(text.starts_with(status), "{text:.200}");
        assert!(text.contains("\r\nconnection: close\r\n"), "{text:.300}");
        let body = &all[text.find("\r\n\r\n").unwrap() + 4..];
        let want = if contains(raw, b"big.txt") {
            gunzip(body)
        } else {
            body.to_vec()
        };
        let file = if contains(raw, b"big.txt") {
            "big.txt"
        } else if contains(raw, b"data.bin") {
            "data.bin"
        } else {
            "hello.txt"
        };
        assert_eq!(want, site.bytes(file), "{file}");
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_keep_alive_gzip_on_the_hyper_path_gets_connection_close() {
    let site = Site::new();
    let srv = TestServer::start(site.config()).await;
    let mut c = Conn::open(srv.addr).await;
    // A POST hands the connection to hyper (its 405 has a length: kept).
    let r = c
        .request(
            b"POST /hello.txt HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabc",
        )
        .await;
    assert_eq!(
        (r.status, r.header("connection")),
        (405, Some("keep-alive"))
    );
    // On-the-fly gzip has no length: over HTTP/1.0 it ends with the close.
    c.send(b"GET /big.txt HTTP/1.0\r\nConnection: keep-alive\r\nAccept-Encoding: gzip\r\n\r\n")
        .await;
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.stream.read_to_end(&mut all))
        .await
        .expect("the server closes the connection after the body")
        .unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&all[..split]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.0 200 ok\r\n"), "{head}");
    assert!(head.contains("\r\ncontent-encoding: gzip\r\n"), "{head}");
    assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
    assert!(!head.contains("keep-alive"), "{head}");
    assert_eq!(gunzip(&all[split..]), site.bytes("big.txt"));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_redirect_location_is_the_normalised_path() {
    // `Location: //dir/` would send a browser to the host `dir`.
    let site = Site::new();
    std::fs::create_dir(site.root.join("sp ace")).unwrap();
    let srv = TestServer::start(site.config()).await;
    let cases = [
        ("//dir", "/dir/"),
        ("//dir?x=1", "/dir/?x=1"),
        ("///dir", "/dir/"),
        ("/.//dir", "/dir/"),
        ("//sp%20ace", "/sp%20ace/"),
    ];
    // The sendfile path (a fresh connection), then hyper (after a POST).
    for hyper in [false, true] {
        let mut c = Conn::open(srv.addr).await;
        if hyper {
            let r = c
                .request(b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
                .await;
            assert_eq!(r.status, 405);
        }
        for (target, want) in cases {
            let r = c
                .request(format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
                .await;
            assert_eq!(
                (r.status, r.header("location")),
                (301, Some(want)),
                "{target} (hyper: {hyper})"
            );
        }
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_a_file_is_dropped() {
    let site = Site::new();
    let size: u64 = 512 << 20;
    std::fs::File::create(site.root.join("huge.bin"))
        .unwrap()
        .set_len(size)
        .unwrap();
    let mut cfg = site.config();
    cfg.send_timeout = Duration::from_secs(1);
    let srv = TestServer::start(cfg).await;
    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"GET /huge.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    // Take nothing for three send timeouts, then everything there is.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n as u64,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read_all)
        .await
        .expect("the connection ends");
    assert!(
        total > 0 && total < size / 2,
        "read {total} of {size} bytes"
    );
    // Counted as one static request that did not finish.
    let (requests, bytes) = static_counted(&srv);
    assert_eq!(requests, 1);
    assert!(bytes < size, "{bytes}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_not_in_the_page_cache_is_sent_exactly() {
    let site = Site::new();
    let data = random_bytes(3 << 20, 11);
    let path = site.root.join("cold.bin");
    std::fs::write(&path, &data).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    file.sync_all().unwrap();
    let last = data.len() as u64 - 1;
    // The kernel may keep just-written pages a moment longer (per-CPU LRU
    // batches): advise again until they are gone.
    let mut evicted = false;
    for _ in 0..100 {
        // SAFETY: a plain advice call on an open fd.
        let rc = unsafe {
            use std::os::fd::AsRawFd;
            libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED)
        };
        assert_eq!(rc, 0);
        if cgihost::static_files::in_page_cache(&file, last).unwrap() == Some(false) {
            evicted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(evicted, "the file should have left the page cache");
    let srv = TestServer::start(site.config()).await;
    let r = get(srv.addr, "/cold.bin").await;
    assert_eq!(r.status, 200);
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    assert_eq!(
        cgihost::static_files::in_page_cache(&file, last).unwrap(),
        Some(true)
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closing_response_is_not_cut_by_a_reset() {
    // A `Connection: close` response with a request pipelined behind it:
    // closing the socket with that request unread would send a reset, and
    // the client would lose the part of the response it had not read yet.
    let site = Site::new();
    let data = random_bytes(64 << 20, 5);
    std::fs::write(site.root.join("large.bin"), &data).unwrap();
    let srv = TestServer::start(site.config()).await;
    for version in ["HTTP/1.1", "HTTP/1.0"] {
        let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
        let close = if version == "HTTP/1.1" {
            "Connection: close\r\n"
        } else {
            ""
        };
        let raw = format!("GET /large.bin {version}\r\nHost: t\r\n{close}\r\n");
        s.write_all(raw.as_bytes()).await.unwrap();
        // The next request comes after the server has read the first, so
        // it waits in the kernel, unread.
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut got)).await;
        read.expect("the response ends")
            .unwrap_or_else(|e| panic!("{version}: {e} after {} bytes", got.len()));
        let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(got.len() - head_end, data.len(), "{version}");
        assert_eq!(sha256_hex(&got[head_end..]), sha256_hex(&data), "{version}");
    }
    srv.stop().await;
}

/// A request hyper serves (405), after which a connection stays on hyper.
const TO_HYPER: &[u8] = b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n";

/// The statuses of the responses to `raw`: sent on a fresh connection
/// (where the sendfile path reads it first), and on one forced onto hyper
/// by a first request that is not static. Responses are read until the
/// connection closes (or goes quiet for 3 s), so `raw` should end with a
/// request that closes it, or be one that gets an error; all HEAD if it
/// starts with one.
async fn statuses_on_both_paths(addr: std::net::SocketAddr, raw: &[u8]) -> [Vec<u16>; 2] {
    let mut out = [Vec::new(), Vec::new()];
    for (i, statuses) in out.iter_mut().enumerate() {
        let mut c = Conn::open(addr).await;
        if i == 1 {
            assert_eq!(c.request(TO_HYPER).await.status, 405);
        }
        c.send(raw).await;
        let head = raw.starts_with(b"HEAD ");
        while let Ok(Some(r)) =
            tokio::time::timeout(Duration::from_secs(3), c.read_response(head)).await
        {
            statuses.push(r.status);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_missing_repeated_or_invalid_is_400_on_both_paths() {
    let site = Site::new();
    let srv = TestServer::start(site.config()).await;
    let close = "Connection: close\r\n";
    let table = [
        (format!("GET /hello.txt HTTP/1.1\r\n{close}\r\n"), 400),
        (
            format!("GET /hello.txt HTTP/1.1\r\nHost: t\r\nHost: t\r\n{close}\r\n"),
            400,
        ),
        (
            format!("GET /hello.txt HTTP/1.1\r\nHost: a\r\nhost: b\r\n{close}\r\n"),
            400,
        ),
        (
            "GET /hello.txt HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n".to_string(),
            400,
        ),
        (format!("HEAD /hello.txt HTTP/1.1\r\n{close}\r\n"), 400),
        (
            format!("GET /hello.txt HTTP/1.1\r\nHost: a b\r\n{close}\r\n"),
            400,
        ),
        (
            format!("GET /hello.txt HTTP/1.1\r\nHost: u@t\r\n{close}\r\n"),
            400,
        ),
        // One Host (empty is allowed), or HTTP/1.0 without one: served.
        (
            format!("GET /hello.txt HTTP/1.1\r\nHost: t\r\n{close}\r\n"),
            200,
        ),
        (
            format!("GET /hello.txt HTTP/1.1\r\nHost:\r\n{close}\r\n"),
            200,
        ),
        (
            format!("GET /hello.txt HTTP/1.1\r\nHost: [::1]:80\r\n{close}\r\n"),
            200,
        ),
        ("GET /hello.txt HTTP/1.0\r\n\r\n".to_string(), 200),
    ];
    for (raw, want) in table {
        let [fresh, hyper] = statuses_on_both_paths(srv.addr, raw.as_bytes()).await;
        assert_eq!(fresh, [want], "sendfile path: {raw:?}");
        assert_eq!(hyper, [want], "hyper path: {raw:?}");
    }
    // A bad Host ends the connection: nothing pipelined behind it is served.
    let raw = "GET /hello.txt HTTP/1.1\r\n\r\nGET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n";
    let [fresh, hyper] = statuses_on_both_paths(srv.addr, raw.as_bytes()).await;
    assert_eq!((fresh, hyper), (vec![400], vec![400]));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_between_pipelined_requests_are_judged_alike_on_both_paths() {
    let site = Site::new();
    let srv = TestServer::start(site.config()).await;
    let first = "GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n";
    let last = "GET /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    // Only CRLF and LF make empty lines (RFC 9112 §2.2); anything else
    // where a request line should start is a bad request.
    let table: &[(&str, bool)] = &[
        ("", true),
        ("\r\n", true),
        ("\n", true),
        ("\r\n\r\n\n\n\r\n", true),
        ("\r", false),
        ("\r\r\n", false),
        ("\n\r", false),
        ("\r\n\r", false),
        ("\r \n", false),
        (" ", false),
        ("\t", false),
        ("\r\n ", false),
        ("\0", false),
        ("\x0b", false),
    ];
    for &(between, ok) in table {
        for (raw, want) in [
            (
                format!("{first}{between}{last}"),
                if ok { vec![200, 200] } else { vec![200, 400] },
            ),
            (
                format!("{between}{last}"),
                if ok { vec![200] } else { vec![400] },
            ),
        ] {
            let [fresh, hyper] = statuses_on_both_paths(srv.addr, raw.as_bytes()).await;
            assert_eq!(fresh, hyper, "the two paths differ on {raw:?}");
            assert_eq!(fresh, want, "{raw:?}");
        }
    }
    srv.stop().await;
}
