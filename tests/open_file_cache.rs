//! The open-file cache (`src/static_files/cache.rs`) through the real
//! server: every way a deploy or an edit changes a file is seen by the next
//! request, with inotify watching (`watched`) and with a `statx` per hit
//! (`checked`, `open_file_cache_watch = false`); the cache stays within
//! its descriptor and byte limits over thousands of files; the hostile
//! paths stay refused when answers come from the cache.
//!
//! Each case first shows the file is held open by the cache (so the
//! request after the change would be a hit), then changes it.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use cgihost::config::{Config, FollowSymlinks};
use cgihost::static_files::CacheStats;
use common::*;

/// Bytes that exist only outside the root.
const SECRET: &[u8] = b"TOP-SECRET-0fc outside the document root";

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
        std::fs::create_dir_all(root.join("cgi-bin")).unwrap();
        Site {
            _tmp: tmp,
            base,
            root,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn write(&self, rel: &str, data: impl AsRef<[u8]>) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    fn config(&self, watch: bool) -> Config {
        let mut c = fixture_config();
        c.root = self.root.clone();
        c.cgi_dir = self.root.join("cgi-bin");
        c.access_log = false;
        c.open_file_cache_watch = watch;
        c
    }

    async fn start(&self, watch: bool) -> TestServer {
        TestServer::start(self.config(watch)).await
    }
}

fn stats(srv: &TestServer) -> CacheStats {
    let site = srv.app.sites.default_site();
    site.root.statics.cache_stats().expect("the cache is on")
}

/// Whether this process (the in-process server) holds `path` open.
fn holds_open(path: &Path) -> bool {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| {
            target == path || target.to_string_lossy() == format!("{} (deleted)", path.display())
        })
    })
}

/// GET `path` twice; the file behind it is then held by the cache (and
/// the watch mode is what the test asked for).
async fn warm(srv: &TestServer, path: &str, file: &Path, watch: bool) -> Resp {
    let first = get(srv.addr, path).await;
    let second = get(srv.addr, path).await;
    assert_eq!(first.status, 200, "{path}");
    assert_eq!(first.body, second.body, "{path}");
    assert_eq!(first.header("etag"), second.header("etag"), "{path}");
    assert!(holds_open(file), "{} is not cached", file.display());
    assert_eq!(stats(srv).watching, watch, "{:?}", stats(srv));
    second
}

async fn get_with(addr: std::net::SocketAddr, path: &str, headers: &str) -> Resp {
    request(addr, "GET", path, headers, b"").await
}

/// Both ways of noticing changes for each case: `case::watched` and
/// `case::checked`, each also on one thread (`memo_*`).
macro_rules! both_ways {
    ($($case:ident),+ $(,)?) => {
        $(
            mod $case {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn watched() {
                    super::$case(true).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn checked() {
                    super::$case(false).await
                }
                /// Server and client on one thread: each repeated request
                /// is answered from the static path's memo of the last
                /// (`server/static_h1/hot.rs`), which must see the change
                /// as the cache does.
                #[tokio::test(flavor = "current_thread")]
                async fn memo_watched() {
                    super::$case(true).await
                }
                #[tokio::test(flavor = "current_thread")]
                async fn memo_checked() {
                    super::$case(false).await
                }
            }
        )+
    };
}

both_ways!(
    rename_replace_deploy,
    copy_over_in_place,
    touch_changes_the_validators,
    file_replaced_by_a_directory_or_a_fifo,
    symlink_swapped_to_another_target,
    directory_renamed,
    file_deleted,
    new_index_file,
    precompressed_sibling_appears_and_goes,
    hostile_paths_stay_refused_from_the_cache,
    hard_linked_file_written_under_its_other_name,
);

/// Write a new file beside, rename it over the old one (a new inode).
async fn rename_replace_deploy(watch: bool) {
    let site = Site::new();
    site.write("page.txt", "version one\n");
    let big_v1 = random_bytes(300_000, 1);
    let big_v2 = random_bytes(300_000, 2);
    site.write("big.bin", &big_v1);
    let srv = site.start(watch).await;
    let old = warm(&srv, "/page.txt", &site.path("page.txt"), watch).await;
    warm(&srv, "/big.bin", &site.path("big.bin"), watch).await;

    site.write("page.txt.new", "version two, longer\n");
    std::fs::rename(site.path("page.txt.new"), site.path("page.txt")).unwrap();
    site.write("big.bin.new", &big_v2);
    std::fs::rename(site.path("big.bin.new"), site.path("big.bin")).unwrap();

    let new = get(srv.addr, "/page.txt").await;
    assert_eq!(new.text(), "version two, longer\n");
    assert_ne!(new.header("etag"), old.header("etag"));
    let part = get_with(srv.addr, "/page.txt", "Range: bytes=0-6\r\n").await;
    assert_eq!((part.status, part.text().as_str()), (206, "version"));
    let big = get(srv.addr, "/big.bin").await;
    assert_eq!(sha256_hex(&big.body), sha256_hex(&big_v2));
    srv.stop().await;
}

/// `cp` over the file: the same inode, new bytes; the modification time
/// is even put back, so only the change time (and inotify) tell.
async fn copy_over_in_place(watch: bool) {
    let site = Site::new();
    site.write("page.txt", "AAAAAAAAAAAAAAAA\n");
    let file = site.path("page.txt");
    let srv = site.start(watch).await;
    let old = warm(&srv, "/page.txt", &file, watch).await;
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&file).unwrap());

    let new_bytes = site.base.join("new.txt");
    std::fs::write(&new_bytes, "BBBBBBBBBBBBBBBB\n").unwrap();
    let cp = std::process::Command::new("cp")
        .arg(&new_bytes)
        .arg(&file)
        .status()
        .unwrap();
    assert!(cp.success());
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::ino(&meta), ino);
    assert_eq!(meta.modified().unwrap(), mtime);

    let new = get(srv.addr, "/page.txt").await;
    assert_eq!(new.text(), "BBBBBBBBBBBBBBBB\n");
    // Same size and time: the same validators (their documented blind
    // spot), but never the old bytes.
    assert_eq!(new.header("etag"), old.header("etag"));
    srv.stop().await;
}

/// `touch`: a new modification time is a new ETag and Last-Modified, and
/// the old ETag no longer gets a 304.
async fn touch_changes_the_validators(watch: bool) {
    let site = Site::new();
    site.write("page.txt", "same bytes\n");
    let file = site.path("page.txt");
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(UNIX_EPOCH + Duration::from_secs(1_600_000_000))
        .unwrap();
    let srv = site.start(watch).await;
    let old = warm(&srv, "/page.txt", &file, watch).await;
    let old_tag = old.header("etag").unwrap().to_string();
    let hit = get_with(
        srv.addr,
        "/page.txt",
        &format!("If-None-Match: {old_tag}\r\n"),
    )
    .await;
    assert_eq!(hit.status, 304);

    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .unwrap();

    let new = get(srv.addr, "/page.txt").await;
    assert_ne!(new.header("etag").unwrap(), old_tag);
    assert_eq!(
        new.header("last-modified"),
        Some("Tue, 14 Nov 2023 22:13:20 GMT")
    );
    let revalidated = get_with(
        srv.addr,
        "/page.txt",
        &format!("If-None-Match: {old_tag}\r\n"),
    )
    .await;
    assert_eq!(revalidated.status, 200);
    assert_eq!(revalidated.text(), "same bytes\n");
    srv.stop().await;
}

/// What `chmod 000` is meant to show, as root (who reads a mode-000 file
/// anyway): the path stops naming a readable regular file. A directory
/// in its place asks for the slash (301); a FIFO is refused (404). And
/// `chmod 000` itself gets what a server without the cache answers.
async fn file_replaced_by_a_directory_or_a_fifo(watch: bool) {
    use std::os::unix::fs::PermissionsExt;
    let site = Site::new();
    site.write("thing", "a file\n");
    site.write("pipe", "a file\n");
    site.write("locked.txt", "a file\n");
    let srv = site.start(watch).await;
    warm(&srv, "/thing", &site.path("thing"), watch).await;
    warm(&srv, "/pipe", &site.path("pipe"), watch).await;
    warm(&srv, "/locked.txt", &site.path("locked.txt"), watch).await;

    std::fs::remove_file(site.path("thing")).unwrap();
    std::fs::create_dir(site.path("thing")).unwrap();
    std::fs::remove_file(site.path("pipe")).unwrap();
    let fifo = std::ffi::CString::new(site.path("pipe").into_os_string().into_encoded_bytes());
    // SAFETY: a NUL-terminated path that lives across the call.
    assert_eq!(unsafe { libc::mkfifo(fifo.unwrap().as_ptr(), 0o644) }, 0);
    std::fs::set_permissions(site.path("locked.txt"), PermissionsExt::from_mode(0o000)).unwrap();

    assert_eq!(get(srv.addr, "/thing").await.status, 301);
    assert_eq!(get(srv.addr, "/pipe").await.status, 404);
    let mut uncached = site.config(watch);
    uncached.open_file_cache = false;
    let plain = TestServer::start(uncached).await;
    let want = get(plain.addr, "/locked.txt").await.status;
    assert_eq!(get(srv.addr, "/locked.txt").await.status, want);
    plain.stop().await;
    srv.stop().await;
}

/// A path through a symlink is never cached: the link swapped to another
/// target (file or directory), or its target rewritten, is seen at once.
async fn symlink_swapped_to_another_target(watch: bool) {
    let site = Site::new();
    site.write("v1/x.txt", "release one\n");
    site.write("v2/x.txt", "release two\n");
    site.write("plain.txt", "plain\n");
    symlink("v1/x.txt", site.path("link.txt")).unwrap();
    symlink("v1", site.path("current")).unwrap();
    let srv = site.start(watch).await;
    // Something is cached (and watched) meanwhile.
    warm(&srv, "/plain.txt", &site.path("plain.txt"), watch).await;
    for path in ["/link.txt", "/current/x.txt"] {
        assert_eq!(get(srv.addr, path).await.text(), "release one\n");
        assert_eq!(get(srv.addr, path).await.text(), "release one\n");
    }

    // The target rewritten under the link (a new inode).
    site.write("v1/x.txt.new", "release one, patched\n");
    std::fs::rename(site.path("v1/x.txt.new"), site.path("v1/x.txt")).unwrap();
    assert_eq!(
        get(srv.addr, "/link.txt").await.text(),
        "release one, patched\n"
    );
    assert_eq!(
        get(srv.addr, "/current/x.txt").await.text(),
        "release one, patched\n"
    );

    // The links swapped atomically to the other release.
    symlink("v2/x.txt", site.path("link.new")).unwrap();
    std::fs::rename(site.path("link.new"), site.path("link.txt")).unwrap();
    symlink("v2", site.path("current.new")).unwrap();
    std::fs::rename(site.path("current.new"), site.path("current")).unwrap();
    assert_eq!(get(srv.addr, "/link.txt").await.text(), "release two\n");
    assert_eq!(
        get(srv.addr, "/current/x.txt").await.text(),
        "release two\n"
    );
    // Never held open: resolved afresh each time (a request's own
    // descriptor goes when its task is done with it).
    let released = || !holds_open(&site.path("v1/x.txt")) && !holds_open(&site.path("v2/x.txt"));
    assert!(eventually(Duration::from_secs(3), released).await);
    srv.stop().await;
}

/// `mv a b`: /a/x is gone, /b/x is there; the same two levels up.
async fn directory_renamed(watch: bool) {
    let site = Site::new();
    site.write("a/x.txt", "in a\n");
    site.write("p/q/deep.txt", "deep\n");
    let srv = site.start(watch).await;
    warm(&srv, "/a/x.txt", &site.path("a/x.txt"), watch).await;
    warm(&srv, "/p/q/deep.txt", &site.path("p/q/deep.txt"), watch).await;

    std::fs::rename(site.path("a"), site.path("b")).unwrap();
    std::fs::rename(site.path("p"), site.path("p2")).unwrap();

    assert_eq!(get(srv.addr, "/a/x.txt").await.status, 404);
    let moved = get(srv.addr, "/b/x.txt").await;
    assert_eq!((moved.status, moved.text().as_str()), (200, "in a\n"));
    assert_eq!(get(srv.addr, "/p/q/deep.txt").await.status, 404);
    assert_eq!(get(srv.addr, "/p2/q/deep.txt").await.text(), "deep\n");

    // A new directory where the old one was: its own files.
    site.write("a/x.txt", "a new a\n");
    assert_eq!(get(srv.addr, "/a/x.txt").await.text(), "a new a\n");
    srv.stop().await;
}

/// `rm`: 404 at once; with inotify, the descriptor is closed even with no
/// request for it. Created again: the new file.
async fn file_deleted(watch: bool) {
    let site = Site::new();
    site.write("gone.txt", "here\n");
    let file = site.path("gone.txt");
    let srv = site.start(watch).await;
    warm(&srv, "/gone.txt", &file, watch).await;

    std::fs::remove_file(&file).unwrap();
    if watch {
        let closed = eventually(Duration::from_secs(5), || !holds_open(&file)).await;
        assert!(closed, "the deleted file is still held open");
    }
    assert_eq!(get(srv.addr, "/gone.txt").await.status, 404);
    site.write("gone.txt", "back\n");
    assert_eq!(get(srv.addr, "/gone.txt").await.text(), "back\n");
    srv.stop().await;
}

/// `/d/` serves the first index name there is: one created ahead of the
/// cached one takes over, and goes again.
async fn new_index_file(watch: bool) {
    let site = Site::new();
    site.write("d/index.htm", "htm\n");
    site.write("d/other.txt", "other\n");
    let mut config = site.config(watch);
    config.rules.index = vec!["index.html".into(), "index.htm".into()];
    let srv = TestServer::start(config).await;
    assert_eq!(get(srv.addr, "/d/").await.text(), "htm\n");
    // (An index is cached only while watched: with statx it is looked up.)
    warm(&srv, "/d/other.txt", &site.path("d/other.txt"), watch).await;
    if watch {
        assert!(holds_open(&site.path("d/index.htm")));
    }

    site.write("d/index.html", "html\n");
    assert_eq!(get(srv.addr, "/d/").await.text(), "html\n");
    std::fs::remove_file(site.path("d/index.html")).unwrap();
    assert_eq!(get(srv.addr, "/d/").await.text(), "htm\n");
    std::fs::remove_file(site.path("d/index.htm")).unwrap();
    assert_eq!(get(srv.addr, "/d/").await.status, 403);
    srv.stop().await;
}

/// `FILE.gz` made after FILE was cached is served to gzip clients; removed,
/// FILE is gzipped on the fly again.
async fn precompressed_sibling_appears_and_goes(watch: bool) {
    let site = Site::new();
    let css: Vec<u8> = (0..400)
        .flat_map(|i| format!(".c{i} {{}}\n").into_bytes())
        .collect();
    site.write("style.css", &css);
    let srv = site.start(watch).await;
    warm(&srv, "/style.css", &site.path("style.css"), watch).await;
    let gz = "Accept-Encoding: gzip\r\n";
    let fly = get_with(srv.addr, "/style.css", gz).await;
    assert_eq!(fly.header("content-encoding"), Some("gzip"));
    assert_eq!(fly.header("content-length"), None, "gzipped on the fly");

    let pre = b"not really gzip, but the sibling's bytes";
    site.write("style.css.gz", pre);
    let sibling = get_with(srv.addr, "/style.css", gz).await;
    assert_eq!(sibling.header("content-encoding"), Some("gzip"));
    assert_eq!(sibling.body, pre);
    assert!(sibling.header("etag").unwrap().ends_with("-gz\""));
    // Cached with the file now (while watched): still served, then gone.
    assert_eq!(get_with(srv.addr, "/style.css", gz).await.body, pre);
    std::fs::remove_file(site.path("style.css.gz")).unwrap();
    let again = get_with(srv.addr, "/style.css", gz).await;
    assert_eq!(again.header("content-length"), None, "gzipped on the fly");
    assert_eq!(get(srv.addr, "/style.css").await.body, css);
    srv.stop().await;
}

/// A file with another hard link outside the root, written through that
/// name: no watched directory sees it, so such a file is checked with
/// `statx` at each hit even while others are watched.
async fn hard_linked_file_written_under_its_other_name(watch: bool) {
    let site = Site::new();
    site.write("page.txt", "first\n");
    let other = site.base.join("elsewhere.txt");
    std::fs::hard_link(site.path("page.txt"), &other).unwrap();
    let srv = site.start(watch).await;
    warm(&srv, "/page.txt", &site.path("page.txt"), watch).await;

    std::fs::write(&other, "second, through the other name\n").unwrap();
    let new = get(srv.addr, "/page.txt").await;
    assert_eq!(new.text(), "second, through the other name\n");
    srv.stop().await;
}

/// The traversal table, each path asked twice (the second could be a
/// hit), with symlinks refused and followed: nothing outside the root, in
/// the CGI directory or a dot-file is ever served, and every answer is the
/// uncached one.
async fn hostile_paths_stay_refused_from_the_cache(watch: bool) {
    let site = Site::new();
    site.write("hello.txt", "hello\n");
    site.write("cgi-bin/tool.sh", SECRET);
    site.write(".git/config", SECRET);
    site.write(".hidden", SECRET);
    std::fs::write(site.base.join("secret.txt"), SECRET).unwrap();
    symlink("../secret.txt", site.path("secret-link.txt")).unwrap();
    symlink("cgi-bin", site.path("cgi-link")).unwrap();
    symlink(".git", site.path("git-link")).unwrap();
    symlink(site.base.clone(), site.path("out")).unwrap();
    let paths = [
        "/hello.txt",
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/secret-link.txt",
        "/out/secret.txt",
        "/cgi-bin/tool.sh",
        "/cgi-link/tool.sh",
        "/git-link/config",
        "/.git/config",
        "/.hidden",
        "/%2ehidden",
        "/hello.txt/",
        "/hello.txt%00",
    ];
    for follow in [FollowSymlinks::No, FollowSymlinks::Yes] {
        let mut config = site.config(watch);
        config.rules.follow_symlinks = follow;
        let srv = TestServer::start(config.clone()).await;
        config.open_file_cache = false;
        let plain = TestServer::start(config).await;
        for path in paths {
            let want = get(plain.addr, path).await;
            for _ in 0..3 {
                let got = get(srv.addr, path).await;
                assert_eq!((got.status, &got.body), (want.status, &want.body), "{path}");
                if follow == FollowSymlinks::No || path == "/cgi-bin/tool.sh" {
                    assert!(
                        !got.body.windows(SECRET.len()).any(|w| w == SECRET),
                        "{path} leaked"
                    );
                }
            }
        }
        assert!(holds_open(&site.path("hello.txt")));
        let tool = site.path("cgi-bin/tool.sh");
        assert!(eventually(Duration::from_secs(3), || !holds_open(&tool)).await);
        srv.stop().await;
        plain.stop().await;
    }
}

/// 12,000 distinct small files (2 KiB, kept with their bytes) and 2,000
/// larger ones (20 KiB, kept as descriptors) in 24 directories, walked
/// with a cache of 200 descriptors and 256 KiB: the binary's open
/// descriptors, inotify watches and resident memory stay within what those
/// limits allow (a cache that kept them all would hold 14,000 descriptors
/// and 24 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walk_over_many_files_stays_within_the_limits() {
    const DIRS: usize = 24;
    const FILES: usize = 12_000;
    const LARGE: usize = 2_000;
    const ENTRIES: usize = 200;
    let site = Site::new();
    for d in 0..DIRS {
        std::fs::create_dir_all(site.path(&format!("d{d}"))).unwrap();
    }
    for i in 0..FILES {
        let body = format!("{i:08}\n").repeat(2048 / 9);
        std::fs::write(site.path(&format!("d{}/f{i}.txt", i % DIRS)), body).unwrap();
    }
    for i in 0..LARGE {
        let body = format!("{i:08}\n").repeat(20 * 1024 / 9);
        std::fs::write(site.path(&format!("d{}/g{i}.txt", i % DIRS)), body).unwrap();
    }
    let conf = site.base.join("cgihost.toml");
    std::fs::write(
        &conf,
        format!(
            "access_log = false\nopen_file_cache_entries = {ENTRIES}\nopen_file_cache_bytes = \"256K\"\n"
        ),
    )
    .unwrap();
    let mut cmd = BinServer::command_in(&site.root, &["--config"]);
    cmd.arg(&conf);
    let srv = BinServer::start_cmd(cmd);
    let pid = srv.pid();
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    // Fetch a few files first: what the server holds with a warm runtime.
    let mut conns: Vec<Conn> = Vec::new();
    for _ in 0..4 {
        conns.push(Conn::open(srv.addr).await);
    }
    for (i, conn) in conns.iter_mut().enumerate() {
        let raw = format!("GET /d0/f{}.txt HTTP/1.1\r\nHost: t\r\n\r\n", i * DIRS);
        assert_eq!(conn.request(raw.as_bytes()).await.status, 200);
    }
    let (fds_before, rss_before) = (fds(), srv.status_kib("VmRSS"));

    let mut peak_fds = 0;
    let walk = (0..FILES)
        .map(|i| ('f', i))
        .chain((0..LARGE).map(|i| ('g', i)));
    for (n, (kind, i)) in walk.enumerate() {
        let raw = format!(
            "GET /d{}/{kind}{i}.txt HTTP/1.1\r\nHost: t\r\n\r\n",
            i % DIRS
        );
        let count = conns.len();
        let resp = conns[n % count].request(raw.as_bytes()).await;
        assert_eq!(resp.status, 200, "{raw}");
        assert_eq!(&resp.body[..9], format!("{i:08}\n").as_bytes());
        if n % 500 == 499 {
            peak_fds = peak_fds.max(fds());
        }
    }
    let (fds_after, rss_after) = (fds(), srv.status_kib("VmRSS"));
    let watches = inotify_watches(pid);
    eprintln!(
        "fds {fds_before} -> {fds_after} (peak {peak_fds}), RSS {rss_before} -> {rss_after} KiB, {watches} watches"
    );
    let fd_bound = fds_before + ENTRIES + 8;
    assert!(peak_fds <= fd_bound, "{peak_fds} descriptors open");
    assert!(
        peak_fds >= fds_before + ENTRIES / 2,
        "{peak_fds} descriptors open: the large files were not cached"
    );
    assert!(fds_after <= fd_bound, "{fds_after} descriptors open");
    assert!(watches <= DIRS + 1, "{watches} inotify watches");
    assert!(watches >= 1, "nothing watched: the cache did not watch");
    // 256 KiB of bytes and 200 entries' bookkeeping, and the allocator's
    // slack: far below the 24 MiB the walk read.
    assert!(
        rss_after <= rss_before + 8 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
}

/// Watches of the binary's inotify instances, from `/proc/PID/fdinfo`.
fn inotify_watches(pid: u32) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    fds.flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy().contains("inotify"))
        })
        .map(|fd| {
            let info = format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy());
            std::fs::read_to_string(info)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_can_be_turned_off() {
    let site = Site::new();
    site.write("page.txt", "one\n");
    let mut config = site.config(true);
    config.open_file_cache = false;
    let srv = TestServer::start(config).await;
    assert!(srv
        .app
        .sites
        .default_site()
        .root
        .statics
        .cache_stats()
        .is_none());
    assert_eq!(get(srv.addr, "/page.txt").await.text(), "one\n");
    site.write("page.txt", "two\n");
    assert_eq!(get(srv.addr, "/page.txt").await.text(), "two\n");
    srv.stop().await;
}

/// Out of inotify watches (`ENOSPC`) or instances (`EMFILE`): the binary
/// says so once and checks each hit with `statx` from then on, and changes
/// are still seen. The limits are lowered in a user namespace of the
/// server's own (`unshare -Ur`), not for the machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_inotify_watches_or_instances_falls_back_to_statx() {
    let userns = std::process::Command::new("unshare")
        .args(["-Ur", "true"])
        .status();
    if !userns.is_ok_and(|s| s.success()) {
        eprintln!("skipped: no user namespaces here (unshare -Ur)");
        return;
    }
    // 3 watches: the root and two directories, then ENOSPC; 0 instances:
    // EMFILE at the first miss.
    for (limit, value) in [("max_inotify_watches", 3), ("max_inotify_instances", 0)] {
        let site = Site::new();
        site.write("top.txt", "top v1\n");
        for d in 1..=4 {
            site.write(&format!("d{d}/x.txt"), format!("d{d} v1\n"));
        }
        let mut cmd = std::process::Command::new("unshare");
        cmd.args(["-Ur", "sh", "-c"])
            .arg(format!(
                "echo {value} > /proc/sys/user/{limit} && exec \"$0\" \"$@\""
            ))
            .arg(bin_path())
            .args(["--bind", "127.0.0.1", "--port", "0", "--root"])
            .arg(&site.root)
            .arg("--cgi-dir")
            .arg(site.path("cgi-bin"));
        let srv = BinServer::start_cmd(cmd);
        let paths = [
            "/top.txt",
            "/d1/x.txt",
            "/d2/x.txt",
            "/d3/x.txt",
            "/d4/x.txt",
        ];
        for path in paths {
            for _ in 0..2 {
                assert_eq!(get(srv.addr, path).await.status, 200, "{limit}: {path}");
            }
        }
        let warned = |srv: &BinServer| {
            srv.stderr_text()
                .matches("each hit is now checked with statx")
                .count()
        };
        // (Read from the server's stderr by another thread: give it time.)
        let said = eventually(Duration::from_secs(5), || warned(&srv) >= 1).await;
        assert!(said, "{limit}: {}", srv.stderr_text());
        // What was cached while watched went at the switch; cached again,
        // and checked.
        for path in paths {
            assert_eq!(get(srv.addr, path).await.status, 200, "{limit}: {path}");
        }
        let held = std::fs::read_dir(format!("/proc/{}/fd", srv.pid()))
            .unwrap()
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter(|t| t.starts_with(&site.root))
            .count();
        assert!(held >= paths.len(), "{limit}: {held} files held open");

        site.write("d1/x.txt.new", "d1 v2\n");
        std::fs::rename(site.path("d1/x.txt.new"), site.path("d1/x.txt")).unwrap();
        site.write("d4/x.txt", "d4 v2, in place\n");
        std::fs::remove_file(site.path("top.txt")).unwrap();
        std::fs::rename(site.path("d3"), site.path("d3-old")).unwrap();
        assert_eq!(
            get(srv.addr, "/d1/x.txt").await.text(),
            "d1 v2\n",
            "{limit}"
        );
        assert_eq!(get(srv.addr, "/d4/x.txt").await.text(), "d4 v2, in place\n");
        assert_eq!(get(srv.addr, "/top.txt").await.status, 404, "{limit}");
        assert_eq!(get(srv.addr, "/d3/x.txt").await.status, 404, "{limit}");
        assert_eq!(get(srv.addr, "/d2/x.txt").await.text(), "d2 v1\n");
        assert_eq!(warned(&srv), 1, "said once: {}", srv.stderr_text());
    }
}

#[test]
fn config_keys_and_defaults() {
    let defaults = Config::default();
    assert!(defaults.open_file_cache && defaults.open_file_cache_watch);
    assert_eq!(defaults.open_file_cache_entries, 10_000);
    assert_eq!(defaults.open_file_cache_bytes, 64 << 20);
    let site = Site::new();
    let file = site.base.join("c.toml");
    let load = |text: &str| {
        std::fs::write(&file, format!("root = {:?}\n{text}", site.root)).unwrap();
        Config::from_file(Some(&file)).and_then(Config::finish)
    };
    let c = load(
        "open_file_cache = false\nopen_file_cache_entries = 5\nopen_file_cache_bytes = \"1M\"\nopen_file_cache_watch = false\n",
    )
    .unwrap();
    assert!(!c.open_file_cache && !c.open_file_cache_watch);
    assert_eq!(
        (c.open_file_cache_entries, c.open_file_cache_bytes),
        (5, 1 << 20)
    );
    let zero = load("open_file_cache_entries = 0\n")
        .unwrap_err()
        .to_string();
    assert!(zero.contains("open_file_cache_entries"), "{zero}");
    let bad = load("open_file_cache_bytes = \"lots\"\n")
        .unwrap_err()
        .to_string();
    assert!(bad.contains("open_file_cache_bytes"), "{bad}");
}
