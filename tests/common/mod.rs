//! Test harness: the real server (in-process through `server::run`, or the
//! built binary), a small raw HTTP/1.1 client that shows exactly what went
//! over the wire, and /proc helpers for process checks.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cgihost::app::App;
use cgihost::config::Config;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as TokioBufReader};
use tokio::net::TcpStream;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A config pointing at the fixture site and programs.
pub fn fixture_config() -> Config {
    let mut c = Config {
        root: fixtures().join("static"),
        cgi_dir: fixtures().join("cgi-bin"),
        shutdown_grace: Duration::from_secs(5),
        ..Config::default()
    };
    c.cgi.timeout = Duration::from_secs(20);
    c
}

/// The server running inside the test process.
pub struct TestServer {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = App::new(config).expect("app");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let run_app = app.clone();
        let task = tokio::spawn(async move {
            cgihost::server::run(listener, run_app, async {
                let _ = rx.await;
            })
            .await
            .expect("server::run");
        });
        TestServer {
            addr,
            app,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

/// The built `cgihost` binary, listening on an ephemeral loopback port.
pub struct BinServer {
    pub child: Child,
    pub addr: SocketAddr,
    pub stderr: Arc<Mutex<Vec<String>>>,
    pub stdout: Arc<Mutex<Vec<String>>>,
}

pub fn bin_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cgihost"))
}

fn collect_lines(
    r: impl std::io::Read + Send + 'static,
    sink: Arc<Mutex<Vec<String>>>,
    ready: Option<std::sync::mpsc::Sender<String>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if let Some(tx) = &ready {
                let rest = line
                    .split("listening on http://")
                    .nth(1)
                    .or_else(|| line.split("listening on https://").nth(1));
                if let Some(rest) = rest {
                    let _ = tx.send(rest.trim().to_string());
                }
            }
            sink.lock().unwrap().push(line);
        }
    });
}

impl BinServer {
    /// Start the binary with the fixture site plus `args`.
    pub fn start(args: &[&str]) -> BinServer {
        Self::start_in(&fixtures().join("static"), args)
    }

    /// Start the binary with `root` as document root plus `args`.
    pub fn start_in(root: &Path, args: &[&str]) -> BinServer {
        Self::start_cmd(Self::command_in(root, args))
    }

    /// The command `start_in` runs: loopback, ephemeral port, `root`, the
    /// fixture CGI programs, then `args`.
    pub fn command_in(root: &Path, args: &[&str]) -> Command {
        Self::command_with(root, &fixtures().join("cgi-bin"), args)
    }

    /// Loopback, ephemeral port, `root`, the CGI programs in `cgi_dir`,
    /// then `args`.
    pub fn command_with(root: &Path, cgi_dir: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin_path());
        cmd.arg("--bind").arg("127.0.0.1").arg("--port").arg("0");
        cmd.arg("--root").arg(root).arg("--cgi-dir").arg(cgi_dir);
        cmd.args(args);
        cmd
    }

    /// The access log line (stdout) that contains `needle`, once written:
    /// lines are written when the response body is done.
    pub async fn access_line(&self, needle: &str) -> String {
        let found = eventually(Duration::from_secs(5), || {
            self.stdout_text().lines().any(|l| l.contains(needle))
        })
        .await;
        assert!(
            found,
            "no access log line with {needle:?}:\n{}",
            self.stdout_text()
        );
        let text = self.stdout_text();
        let line = text.lines().find(|l| l.contains(needle)).unwrap_or("");
        line.to_string()
    }

    pub fn start_cmd(cmd: Command) -> BinServer {
        Self::start_cmd_stdout(cmd, Stdio::piped())
    }

    /// As `start_cmd`, with the access log (stdout) going to `stdout`.
    pub fn start_cmd_stdout(mut cmd: Command, stdout: Stdio) -> BinServer {
        cmd.stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn cgihost");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        collect_lines(child.stderr.take().unwrap(), stderr.clone(), Some(tx));
        if let Some(out) = child.stdout.take() {
            collect_lines(out, stdout.clone(), None);
        }
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a.parse().expect("listen address"),
            Err(_) => {
                let _ = child.kill();
                panic!("cgihost did not start: {:?}", stderr.lock().unwrap());
            }
        };
        BinServer {
            child,
            addr,
            stderr,
            stdout,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Wait for exit (bounded); returns the exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    pub fn stdout_text(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    /// A `VmHWM` / `VmRSS` style field of the server's /proc status, in KiB.
    pub fn status_kib(&self, field: &str) -> u64 {
        proc_status_kib(self.pid(), field).expect("proc status")
    }
}

impl Drop for BinServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(&format!("{field}:")))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            state != Some("Z") && state != Some("X")
        }
        Err(_) => false,
    }
}

/// Poll until `cond` holds or `limit` passes.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Direct children of `pid`, with their state letter.
pub fn children_of(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rsplit(')').next() else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            out.push((child, f[0].to_string()));
        }
    }
    out
}

/// A unique token for pid files written by fixture scripts.
pub fn token(name: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{name}-{}-{n}", std::process::id())
}

/// A temporary CGI directory holding `scripts` (name, text), executable.
pub fn script_dir(scripts: &[(&str, &str)]) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in scripts {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod script");
    }
    dir
}

/// Wait for `/tmp/cgihost-test-TOKEN.pids` and return its pids.
pub async fn read_pids(token: &str, limit: Duration) -> Vec<u32> {
    let path = format!("/tmp/cgihost-test-{token}.pids");
    let start = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(&path) {
            let pids: Vec<u32> = s
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
            if !pids.is_empty() {
                let _ = std::fs::remove_file(&path);
                return pids;
            }
        }
        assert!(start.elapsed() < limit, "script never wrote {path}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `NAME=value` lines of an env dump as a map.
    pub fn env(&self) -> std::collections::BTreeMap<String, String> {
        self.text()
            .lines()
            .filter_map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect()
    }
}

/// One HTTP/1.1 connection.
pub struct Conn {
    pub stream: TokioBufReader<TcpStream>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).await.expect("connect");
        Conn {
            stream: TokioBufReader::new(s),
        }
    }

    pub async fn send(&mut self, raw: &[u8]) {
        self.stream
            .get_mut()
            .write_all(raw)
            .await
            .expect("write request");
    }

    /// Read one response. `head_only`: the request was HEAD.
    pub async fn read_response(&mut self, head_only: bool) -> Option<Resp> {
        let mut line = String::new();
        if self.stream.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let mut parts = line.trim_end().splitn(3, ' ');
        let _proto = parts.next()?;
        let status: u16 = parts.next()?.parse().ok()?;
        let reason = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            self.stream.read_line(&mut h).await.ok()?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (n, v) = h.split_once(':')?;
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
        let mut resp = Resp {
            status,
            reason,
            headers,
            body: Vec::new(),
        };
        if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
            return Some(resp);
        }
        if resp
            .header("transfer-encoding")
            .is_some_and(|v| v.contains("chunked"))
        {
            loop {
                let mut size = String::new();
                self.stream.read_line(&mut size).await.ok()?;
                let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
                if n == 0 {
                    let mut end = String::new();
                    self.stream.read_line(&mut end).await.ok()?;
                    break;
                }
                let start = resp.body.len();
                resp.body.resize(start + n, 0);
                self.stream.read_exact(&mut resp.body[start..]).await.ok()?;
                let mut crlf = [0u8; 2];
                self.stream.read_exact(&mut crlf).await.ok()?;
            }
        } else if let Some(len) = resp
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            resp.body.resize(len, 0);
            self.stream.read_exact(&mut resp.body).await.ok()?;
        } else {
            self.stream.read_to_end(&mut resp.body).await.ok()?;
        }
        Some(resp)
    }

    /// GET each of `paths` pipelined in one write; every response, in
    /// order, each within 5 s.
    pub async fn pipelined_gets(&mut self, paths: &[&str]) -> Vec<Resp> {
        let burst: String = paths
            .iter()
            .map(|p| format!("GET {p} HTTP/1.1\r\nHost: t\r\n\r\n"))
            .collect();
        self.send(burst.as_bytes()).await;
        let mut got = Vec::new();
        for p in paths {
            let resp = tokio::time::timeout(Duration::from_secs(5), self.read_response(false))
                .await
                .expect("a response in time");
            got.push(resp.unwrap_or_else(|| panic!("no response for {p}")));
        }
        got
    }

    pub async fn request(&mut self, raw: &[u8]) -> Resp {
        self.send(raw).await;
        let head = raw.starts_with(b"HEAD ");
        self.read_response(head).await.expect("a response")
    }
}

/// GET `path` on a fresh connection.
pub fn get(
    addr: SocketAddr,
    path: impl Into<String>,
) -> impl std::future::Future<Output = Resp> + Send + 'static {
    let path = path.into();
    async move {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n");
        Conn::open(addr).await.request(raw.as_bytes()).await
    }
}

/// A request with extra header lines (each ending in \r\n) and a body.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> Resp {
    let mut raw =
        format!("{method} {path} HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n{headers}")
            .into_bytes();
    if !body.is_empty() {
        raw.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    raw.extend_from_slice(body);
    Conn::open(addr).await.request(&raw).await
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(data))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A real php-fpm master with its own pool config, in a temp dir.
/// How php-fpm manages its children.
enum Pm {
    /// `pm = static`, this many.
    Static(u32),
    /// `pm = ondemand`: at most this many, reaped after this many idle seconds.
    OnDemand(u32, u32),
}

pub struct PhpFpm {
    child: Child,
    pub sock: PathBuf,
    pub dir: tempfile::TempDir,
}

fn php_fpm_binary() -> PathBuf {
    for name in ["php-fpm8.2", "php-fpm8.3", "php-fpm8.1", "php-fpm"] {
        for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin"] {
            let p = Path::new(dir).join(name);
            if p.exists() {
                return p;
            }
        }
    }
    panic!("php-fpm is not installed (scripts/test.sh installs it)");
}

impl PhpFpm {
    /// Start a pool of `children` (static) listening on a unix socket.
    /// PHP runs bare (`-n`: no php.ini, so no shared extensions).
    pub fn start(children: u32) -> PhpFpm {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("php.sock");
        Self::start_at(dir, sock, Pm::Static(children), false)
    }

    /// A pool with `pm = ondemand`: children start with requests and are
    /// reaped after `idle` seconds without one (what a shared host runs).
    pub fn start_ondemand(max_children: u32, idle: u32) -> PhpFpm {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("php.sock");
        Self::start_at(dir, sock, Pm::OnDemand(max_children, idle), false)
    }

    /// The pool's children now (the master's child processes).
    pub fn children(&self) -> usize {
        children_of(self.child.id()).len()
    }

    /// Like `start`, but PHP loads the system's php.ini and its conf.d
    /// scan dir, as a packaged deployment runs it: the extensions Debian's
    /// php-* packages enable (php-mysql's mysqli, php-gd, ...) are there.
    pub fn start_with_system_ini(children: u32) -> PhpFpm {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("php.sock");
        Self::start_at(dir, sock, Pm::Static(children), true)
    }

    fn start_at(dir: tempfile::TempDir, sock: PathBuf, pm: Pm, system_ini: bool) -> PhpFpm {
        let conf = dir.path().join("fpm.conf");
        let d = dir.path().display();
        let pm = match pm {
            Pm::Static(children) => format!("pm = static\npm.max_children = {children}\n"),
            Pm::OnDemand(max, idle) => format!(
                "pm = ondemand\npm.max_children = {max}\npm.process_idle_timeout = {idle}s\n"
            ),
        };
        std::fs::write(
            &conf,
            format!(
                "[global]\nerror_log = {d}/fpm.log\ndaemonize = no\n\
                 [test]\nuser = root\ngroup = root\nlisten = {}\nlisten.mode = 0600\n\
                 {pm}catch_workers_output = yes\n\
                 decorate_workers_output = no\nclear_env = yes\n\
                 php_admin_value[post_max_size] = 1G\nphp_admin_value[upload_max_filesize] = 100M\n\
                 php_admin_value[upload_tmp_dir] = {d}\nphp_admin_value[output_buffering] = 0\n\
                 php_admin_flag[display_errors] = off\nphp_admin_flag[log_errors] = on\n",
                sock.display()
            ),
        )
        .expect("write fpm.conf");
        let child = Command::new(php_fpm_binary())
            .args(["-F", "-R"])
            .args(if system_ini { None } else { Some("-n") })
            .arg("-y")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start php-fpm");
        let fpm = PhpFpm { child, sock, dir };
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&fpm.sock).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "php-fpm did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        fpm
    }

    /// Stop php-fpm (and wait for it), keeping the socket path and dir.
    pub fn stop(mut self) -> (tempfile::TempDir, PathBuf) {
        self.kill();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        (dir, self.sock.clone())
    }

    /// Start again on the same socket path.
    pub fn restart(dir: tempfile::TempDir, sock: PathBuf, children: u32) -> PhpFpm {
        let _ = std::fs::remove_file(&sock);
        Self::start_at(dir, sock, Pm::Static(children), false)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("fpm.log")).unwrap_or_default()
    }

    fn kill(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PhpFpm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Perl FastCGI application (tests/fixtures/fcgi/app.pl) on a unix socket.
pub struct PerlFcgi {
    child: Child,
    pub sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl PerlFcgi {
    pub fn start() -> PerlFcgi {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("app.sock");
        let child = Command::new("perl")
            .arg(fixtures().join("fcgi/app.pl"))
            .arg(&sock)
            .stdin(Stdio::null())
            .spawn()
            .expect("start app.pl");
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "app.pl did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        PerlFcgi {
            child,
            sock,
            _dir: dir,
        }
    }
}

impl Drop for PerlFcgi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Config for PHP tests: the php fixture dir as root, `*.php` to `sock`.
pub fn php_config(sock: &Path) -> Config {
    let mut c = fixture_config();
    c.root = fixtures().join("php");
    c.fastcgi = vec![cgihost::config::parse_fastcgi(
        "--fastcgi",
        &format!("*.php=unix:{}", sock.display()),
    )
    .unwrap()];
    c
}

/// A POST request head: with Content-Length, or chunked when `len` is None.
pub fn post_head(path: &str, len: Option<u64>) -> String {
    match len {
        Some(n) => format!("POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"),
        None => format!("POST {path} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"),
    }
}

/// Sends `head`, then streams `total` bytes of a deterministic pattern as
/// the body (chunk-encoded if `chunked`); returns the client-side sha256.
pub async fn stream_upload(conn: &mut Conn, head: &str, total: u64, chunked: bool) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    conn.send(head.as_bytes()).await;
    let mut block = random_bytes(1 << 20, 99);
    let mut sent = 0u64;
    let mut i = 0u64;
    while sent < total {
        block[..8].copy_from_slice(&i.to_le_bytes());
        let n = (total - sent).min(block.len() as u64) as usize;
        hasher.update(&block[..n]);
        let s = conn.stream.get_mut();
        if chunked {
            s.write_all(format!("{n:x}\r\n").as_bytes())
                .await
                .expect("write");
            s.write_all(&block[..n]).await.expect("write");
            s.write_all(b"\r\n").await.expect("write");
        } else {
            s.write_all(&block[..n]).await.expect("write");
        }
        sent += n as u64;
        i += 1;
    }
    if chunked {
        conn.stream
            .get_mut()
            .write_all(b"0\r\n\r\n")
            .await
            .expect("write");
    }
    hex(&hasher.finalize())
}

/// The config file at `file`, loaded the way the binary loads it.
pub fn load_config_file(file: PathBuf) -> Config {
    cgihost::cli::Cli {
        config: Some(file),
        ..Default::default()
    }
    .load_config()
    .expect("config loads")
}

/// Wait for the binary to say it reloaded its configuration as
/// `generation`.
pub async fn await_reload(srv: &BinServer, generation: u32) {
    let said = format!("configuration reloaded (generation {generation})");
    assert!(
        eventually(Duration::from_secs(10), || srv
            .stderr_text()
            .contains(&said))
        .await,
        "{}",
        srv.stderr_text()
    );
}

/// A config file in a fresh directory (kept while the test runs).
pub struct ConfFile {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl ConfFile {
    pub fn new(body: &str) -> ConfFile {
        let dir = tempfile::tempdir().expect("config file");
        let path = dir.path().join("cgihost.toml");
        std::fs::write(&path, body).expect("config file");
        ConfFile { dir, path }
    }

    pub fn rewrite(&self, body: &str) {
        // Replace atomically, as an editor or a deploy tool would.
        let tmp = self.dir.path().join("next.toml");
        std::fs::write(&tmp, body).expect("config file");
        std::fs::rename(&tmp, &self.path).expect("config file");
    }

    pub fn arg(&self) -> &str {
        self.path.to_str().expect("config file")
    }
}

/// The binary with its runtime dir (`XDG_RUNTIME_DIR`, where spawned
/// pools put their sockets) inside a temp dir of the test's: a cgihost
/// killed by `BinServer`'s Drop cannot remove its sockets, the temp dir
/// does (fields drop in order: server first).
pub struct PoolServer {
    srv: BinServer,
    _run: tempfile::TempDir,
}

impl std::ops::Deref for PoolServer {
    type Target = BinServer;
    fn deref(&self) -> &BinServer {
        &self.srv
    }
}

impl std::ops::DerefMut for PoolServer {
    fn deref_mut(&mut self) -> &mut BinServer {
        &mut self.srv
    }
}

impl PoolServer {
    /// The fixture site plus `args` (what `BinServer::start` does).
    pub fn start(args: &[&str]) -> PoolServer {
        Self::start_cmd(BinServer::command_in(&fixtures().join("static"), args))
    }

    pub fn start_cmd(mut cmd: Command) -> PoolServer {
        let run = tempfile::tempdir().expect("tempdir");
        cmd.env("XDG_RUNTIME_DIR", run.path());
        PoolServer {
            srv: BinServer::start_cmd(cmd),
            _run: run,
        }
    }
}

/// A self-signed certificate for 127.0.0.1 and localhost, made with the
/// openssl command line: (dir holding them, cert.pem, key.pem).
pub fn self_signed_cert() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl")
        .success();
    assert!(ok, "openssl could not make a certificate");
    (dir, cert, key)
}

/// Output of a curl run: body on stdout, `-w` text after a marker.
pub struct CurlOut {
    pub ok: bool,
    pub body: Vec<u8>,
    /// What `-w` printed (after the body).
    pub info: String,
    pub stderr: String,
}

/// Run curl (silent, with `-w '\n@@%{http_version} %{http_code}'`).
pub async fn curl(args: &[&str]) -> CurlOut {
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "120",
            "-w",
            "\n@@%{http_version} %{http_code}",
        ])
        .args(args)
        .output()
        .await
        .expect("run curl");
    let marker = b"\n@@";
    let split = out
        .stdout
        .windows(marker.len())
        .rposition(|w| w == marker)
        .unwrap_or(out.stdout.len());
    let info = String::from_utf8_lossy(out.stdout.get(split + marker.len()..).unwrap_or(&[]))
        .trim()
        .to_string();
    CurlOut {
        ok: out.status.success(),
        body: out.stdout[..split].to_vec(),
        info,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
