//! Sites and rules (SPEC.md "Sites and rules") through the real server,
//! from a real config file: each key with a table of cases, hostile ones
//! included, and every answer checked three ways — the cleartext sendfile
//! path (origin-form GET), hyper over HTTP/1.1 (absolute-form target) and
//! HTTP/2 (prior knowledge) — which must agree.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cgihost::cli::Cli;
use cgihost::config::Config;
use common::*;

/// The test site: files, scripts, an alias dir, a second site, htpasswd.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn new() -> Site {
        let site = Site {
            dir: tempfile::tempdir().unwrap(),
        };
        let env_php = std::fs::read_to_string(fixtures().join("php/env.php")).unwrap();
        site.write("root/index.html", "home\n");
        site.write("root/hello.txt", "hello\n");
        site.write("root/404.html", "custom not found\n");
        site.write("root/new/a", "new a\n");
        site.write("root/env.php", &env_php);
        site.write("root/index.php", &env_php);
        site.write("root/vendor/lib.txt", "vendor file\n");
        site.write("root/vendor.txt", "beside vendor\n");
        site.write("root/private/p.txt", "private file\n");
        site.write("root/lan/l.txt", "lan file\n");
        site.write("root/uploads/evil.php", "<?php echo 'RAN';\n");
        site.write("root/uploads/pic.txt", "picture\n");
        site.write("root/secret/s.txt", "secret file\n");
        site.write("root/has-index/index.html", "static index\n");
        site.write("root/both/index.html", "html index\n");
        site.write("root/both/index.php", &env_php);
        site.write("alias/a.txt", "alias file\n");
        site.write("alias/app.php", &env_php);
        site.write("wiki/hello.txt", "wiki hello\n");
        site.write("wiki/both/index.html", "wiki html index\n");
        site.write("wiki/both/index.php", &env_php);
        site.write("outside/o.txt", "outside\n");
        site.write(
            "root/dl.php",
            "<?php header('Content-Disposition: attachment; filename=\"r.txt\"');\n\
             header(($_GET['h'] ?? 'X-Sendfile') . ': ' . $_GET['f']);\necho 'script body';\n",
        );
        let report: String = (0..20_000).map(|i| format!("{i:05}")).collect();
        site.write("private-files/report.txt", &report);
        site.write("private-files/.hidden", "dot file\n");
        site.write(
            "cgi/env.sh",
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nenv\n",
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            site.path("cgi/env.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink(site.path("outside"), site.path("root/out")).unwrap();
        std::os::unix::fs::symlink(site.path("outside"), site.path("wiki/out")).unwrap();
        site
    }

    /// The config file (`extra` appended at top level, before the sites)
    /// loaded the way the binary loads it.
    fn config(&self, php_sock: &Path, extra: &str) -> Config {
        let d = self.dir.path().display();
        let toml = format!(
            r#"
root = "{d}/root"
cgi_dir = "{d}/cgi"
{extra}

[cgi]
env = {{ TZ = "UTC", APP_MODE = "production" }}

[[fastcgi]]
match = "*.php"
addr = "unix:{sock}"
fallback = "/index.php"
params = {{ APP_ENV = "production" }}
x_sendfile = ["{d}/private-files"]

[[alias]]
prefix = "/docs"
dir = "{d}/alias"

[[redirect]]
match = "~^/old/(.*)$"
to = "/new/$1"
status = 301

[[redirect]]
match = "/moved/"
to = "https://elsewhere.example/"
status = 308

[[rewrite]]
match = "~^/wiki/(.*)$"
to = "/env.php?title=$1"

[[rewrite]]
match = "~^/loop/(.*)$"
to = "/loop/x$1"

[[rewrite]]
match = "~^/files/(.*)$"
to = "/$1"

[[rewrite]]
match = "~^/to-uploads/(.*)$"
to = "/uploads/$1"

[[access]]
match = "/vendor/"
deny = true

[[access]]
match = "/private/"
allow = ["127.0.0.1/32"]

[[access]]
match = "/lan/"
allow = ["10.0.0.0/8", "::2"]

[[access]]
match = "/uploads/"
scripts = false

[[auth]]
match = "/secret/"
realm = "Secret place"
htpasswd = "{d}/htpasswd"

[[auth]]
match = '~^/cgi-bin/env\.sh$|who=me'
realm = "cgi"
htpasswd = "{d}/htpasswd"
methods = ["GET"]

[errors]
404 = "/404.html"

[[site]]
hosts = ["wiki.test", "*.wiki.test"]
root = "{d}/wiki"
index = ["index.php", "index.html"]
follow_symlinks = true
encoded_slashes = "keep"

[[site.access]]
match = "/admin/"
deny = true
"#,
            sock = php_sock.display()
        );
        let file = self.path("cgihost.toml");
        std::fs::write(&file, toml).unwrap();
        let mut config = Cli {
            config: Some(file),
            ..Cli::default()
        }
        .load_config()
        .expect("config loads");
        config.access_log = false;
        config
    }

    /// htpasswd with one user per hash kind, made by the real tools.
    fn htpasswd(&self) {
        let mut lines = String::new();
        for (user, flag) in [
            ("alice", "-B"),
            ("bob", "-m"),
            ("carol", "-s"),
            ("dave", "-5"),
        ] {
            let out = Command::new("htpasswd")
                .args(["-nb", flag, user, "pw-of-the-user"])
                .output()
                .expect("htpasswd (apache2-utils) runs");
            assert!(out.status.success(), "htpasswd {flag}");
            lines.push_str(String::from_utf8(out.stdout).unwrap().trim());
            lines.push('\n');
        }
        let out = Command::new("openssl")
            .args(["passwd", "-6", "pw-of-the-user"])
            .output()
            .expect("openssl runs");
        lines.push_str(&format!("erin:{}", String::from_utf8(out.stdout).unwrap()));
        std::fs::write(self.path("htpasswd"), lines).unwrap();
    }
}

/// A request made three ways; the answers must agree on status, the
/// listed headers and the body. Returns the sendfile-path answer.
async fn three_ways(
    addr: std::net::SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    compare: &[&str],
) -> Resp {
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let origin = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n");
    let a = Conn::open(addr).await.request(origin.as_bytes()).await;
    let absolute = format!(
        "GET http://{host}{path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
    );
    let b = Conn::open(addr).await.request(absolute.as_bytes()).await;
    let c = h2_get(addr, host, path, headers).await;
    for (name, other) in [("hyper HTTP/1.1", &b), ("HTTP/2", &c)] {
        assert_eq!(
            a.status,
            other.status,
            "{path} via {name}: {}",
            other.text()
        );
        for h in compare {
            assert_eq!(a.header(h), other.header(h), "{path} {h} via {name}");
        }
        // Env dumps differ in their protocol lines; files and pages not.
        if !a.text().contains("GATEWAY_INTERFACE") {
            assert_eq!(a.text(), other.text(), "{path} body via {name}");
        }
    }
    a
}

async fn h2_get(
    addr: std::net::SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Resp {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let driver = tokio::spawn(connection);
    let mut req = http::Request::get(format!("http://{host}{path}"));
    for (k, v) in headers {
        req = req.header(k.to_ascii_lowercase(), *v);
    }
    let (resp, _) = client.send_request(req.body(()).unwrap(), true).unwrap();
    let resp = resp.await.expect("h2 response");
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let mut body = resp.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("h2 data");
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    drop(client);
    driver.abort();
    Resp {
        status,
        reason: String::new(),
        headers,
        body: bytes,
    }
}

fn basic(user: &str, password: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("base64")
        .args(["-w0"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    write!(child.stdin.take().unwrap(), "{user}:{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    format!("Basic {}", String::from_utf8(out.stdout).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_rewrites_and_their_hostile_cases() {
    let site = Site::new();
    site.htpasswd();
    let fpm = PhpFpm::start(2);
    let srv = TestServer::start(site.config(&fpm.sock, "")).await;
    let h = "test.local";

    let r = three_ways(srv.addr, h, "/old/a%20b?q=1", &[], &["location"]).await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/new/a%20b?q=1"));
    let r = three_ways(srv.addr, h, "/moved/x", &[], &["location"]).await;
    assert_eq!(
        (r.status, r.header("location")),
        (308, Some("https://elsewhere.example/"))
    );

    // A rewrite: the script runs for the new path; REQUEST_URI is what the
    // client sent, the capture is encoded into one query value.
    let r = three_ways(srv.addr, h, "/wiki/Main%20Page%26x=1?action=view", &[], &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let env = r.env();
    assert_eq!(env["SCRIPT_NAME"], "/env.php");
    assert_eq!(env["QUERY_STRING"], "title=Main%20Page%26x%3D1&action=view");
    assert_eq!(env["REQUEST_URI"], "/wiki/Main%20Page%26x=1?action=view");
    assert_eq!(env["APP_ENV"], "production", "route params");

    // A loop ends after the hop limit with a 500.
    let r = three_ways(srv.addr, h, "/loop/a", &[], &[]).await;
    assert_eq!(r.status, 500);
    // `..` cannot come back through a capture: the decoded `%2e%2e` is a
    // literal name again after the rewrite, and `..` itself is refused.
    // (No such file: the front controller answers.)
    let r = three_ways(srv.addr, h, "/files/%252e%252e/outside/o.txt", &[], &[]).await;
    assert_eq!(r.env()["SCRIPT_NAME"], "/index.php", "{}", r.text());
    assert!(!r.text().contains("outside\n"));
    let r = three_ways(srv.addr, h, "/files/..%2f..%2foutside/o.txt", &[], &[]).await;
    assert_eq!(r.status, 403);
    // A rewrite into a scripts = false prefix does not run the script.
    let r = three_ways(srv.addr, h, "/to-uploads/evil.php", &[], &[]).await;
    assert_eq!(r.status, 403);
    assert!(!r.text().contains("RAN") && !r.text().contains("<?php"));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_rules_by_network_and_scripts_off() {
    let site = Site::new();
    site.htpasswd();
    let fpm = PhpFpm::start(2);
    let srv = TestServer::start(site.config(&fpm.sock, "")).await;
    let h = "test.local";
    let cases: &[(&str, u16, Option<&str>)] = &[
        ("/vendor/lib.txt", 403, None),
        ("/vendor", 403, None),
        ("/vendor.txt", 200, Some("beside vendor\n")),
        ("/private/p.txt", 200, Some("private file\n")),
        ("/lan/l.txt", 403, None),
        ("/uploads/pic.txt", 200, Some("picture\n")),
        ("/uploads/evil.php", 403, None),
        ("/uploads/evil.php/x", 403, None),
    ];
    for (path, status, body) in cases {
        let r = three_ways(srv.addr, h, path, &[], &[]).await;
        assert_eq!(r.status, *status, "{path}: {}", r.text());
        if let Some(b) = body {
            assert_eq!(r.text(), *b, "{path}");
        }
        assert!(
            !r.text().contains("<?php") && !r.text().contains("RAN"),
            "{path}"
        );
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_for_each_hash_kind_and_remote_user() {
    let site = Site::new();
    site.htpasswd();
    let fpm = PhpFpm::start(2);
    let srv = TestServer::start(site.config(&fpm.sock, "")).await;
    let h = "test.local";
    for user in ["alice", "bob", "carol", "dave", "erin"] {
        let good = basic(user, "pw-of-the-user");
        let r = three_ways(
            srv.addr,
            h,
            "/secret/s.txt",
            &[("Authorization", &good)],
            &[],
        )
        .await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "secret file\n"),
            "{user}"
        );
        let bad = basic(user, "pw-of-the-user!");
        let r = three_ways(
            srv.addr,
            h,
            "/secret/s.txt",
            &[("Authorization", &bad)],
            &["www-authenticate"],
        )
        .await;
        assert_eq!(r.status, 401, "{user} wrong password");
    }
    let refused = [
        None,
        Some(basic("mallory", "pw-of-the-user")),
        Some("Basic not-base64!".to_string()),
        Some("Basic YWxpY2U=".to_string()), // "alice", no colon
        Some("Bearer abc".to_string()),
    ];
    for auth in refused {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let r = three_ways(
            srv.addr,
            h,
            "/secret/s.txt",
            &headers,
            &["www-authenticate"],
        )
        .await;
        assert_eq!(r.status, 401, "{auth:?}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Basic realm=\"Secret place\", charset=\"UTF-8\"")
        );
        assert!(!r.text().contains("secret file"));
    }
    // The CGI sees AUTH_TYPE and REMOTE_USER only after the check; a
    // client header of the same name is only ever HTTP_REMOTE_USER.
    let good = basic("alice", "pw-of-the-user");
    let r = request(
        srv.addr,
        "GET",
        "/cgi-bin/env.sh",
        &format!("Authorization: {good}\r\nRemote-User: mallory\r\n"),
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let env = r.env();
    assert_eq!(env.get("REMOTE_USER").map(String::as_str), Some("alice"));
    assert_eq!(env.get("AUTH_TYPE").map(String::as_str), Some("Basic"));
    assert_eq!(
        env.get("HTTP_REMOTE_USER").map(String::as_str),
        Some("mallory")
    );
    assert_eq!(env.get("TZ").map(String::as_str), Some("UTC"), "[cgi] env");
    // `methods`: a POST needs no user here; nothing is authenticated then.
    let r = request(
        srv.addr,
        "POST",
        "/cgi-bin/env.sh",
        "Remote-User: mallory\r\n",
        b"x",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(!r.env().contains_key("REMOTE_USER"));
    assert!(!r.env().contains_key("AUTH_TYPE"));
    // The query takes part in auth matching.
    let r = request(srv.addr, "GET", "/env.php?who=me", "", b"").await;
    assert_eq!(r.status, 401);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_alias_index_errors_and_sites() {
    let site = Site::new();
    site.htpasswd();
    let fpm = PhpFpm::start(2);
    let srv = TestServer::start(site.config(&fpm.sock, "")).await;
    let h = "test.local";
    // Front controller: no file, no index → /index.php with the client's URI.
    let r = three_ways(srv.addr, h, "/hello-world/?p=1", &[], &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let env = r.env();
    assert_eq!(env["SCRIPT_NAME"], "/index.php");
    assert_eq!(env["REQUEST_URI"], "/hello-world/?p=1");
    assert_eq!(env["QUERY_STRING"], "p=1");
    assert_eq!(env.get("PATH_INFO").map(String::as_str).unwrap_or(""), "");
    let r = request(srv.addr, "POST", "/wp-json/wp/v2/posts", "", b"x=1").await;
    assert_eq!(
        (r.status, r.env()["SCRIPT_NAME"].as_str()),
        (200, "/index.php")
    );
    // A missing script stays a 404 (with the custom page); files win.
    let r = three_ways(srv.addr, h, "/missing.php", &[], &[]).await;
    assert_eq!((r.status, r.text().as_str()), (404, "custom not found\n"));
    let r = three_ways(srv.addr, h, "/hello.txt", &[], &[]).await;
    assert_eq!(r.text(), "hello\n");
    // Index names in order: index.html before index.php here…
    let r = three_ways(srv.addr, h, "/both/", &[], &[]).await;
    assert_eq!(r.text(), "html index\n");
    // …and index.php first on the wiki site.
    let r = three_ways(srv.addr, "WIKI.test:8080", "/both/", &[], &[]).await;
    assert_eq!(r.env()["SCRIPT_NAME"], "/both/index.php");
    // Sites by host: exact (any case, with a port), wildcard, unknown.
    for (host, body) in [
        ("wiki.test", "wiki hello\n"),
        ("a.b.wiki.test", "wiki hello\n"),
        ("xwiki.test", "hello\n"),
        ("unknown.example", "hello\n"),
    ] {
        let r = three_ways(srv.addr, host, "/hello.txt", &[], &[]).await;
        assert_eq!(r.text(), body, "{host}");
    }
    // follow_symlinks: off by default, on for the wiki site.
    // (a symlink out of the root is no file: the front controller answers)
    let r = three_ways(srv.addr, h, "/out/o.txt", &[], &[]).await;
    assert_eq!(r.env()["SCRIPT_NAME"], "/index.php");
    assert!(!r.text().contains("outside"));
    let r = three_ways(srv.addr, "wiki.test", "/out/o.txt", &[], &[]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "outside\n"));
    // Alias: files and scripts from another dir at a prefix.
    let r = three_ways(srv.addr, h, "/docs/a.txt", &[], &[]).await;
    assert_eq!(r.text(), "alias file\n");
    let r = three_ways(srv.addr, h, "/docs/app.php/x", &[], &[]).await;
    let env = r.env();
    let alias = std::fs::canonicalize(site.path("alias")).unwrap();
    assert_eq!(env["SCRIPT_NAME"], "/docs/app.php");
    assert_eq!(env["PATH_INFO"], "/x");
    assert_eq!(
        env["SCRIPT_FILENAME"],
        alias.join("app.php").to_str().unwrap()
    );
    // Encoded slashes: refused by default, kept on the wiki site.
    let r = three_ways(srv.addr, h, "/env.php/a%2Fb", &[], &[]).await;
    assert_eq!(r.status, 403);
    let r = three_ways(
        srv.addr,
        "wiki.test",
        "/both/index.php/v1/page/A%2FB",
        &[],
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.env()["PATH_INFO"], "/v1/page/A%2FB");
    assert_eq!(r.env()["REQUEST_URI"], "/both/index.php/v1/page/A%2FB");
    srv.stop().await;
}

#[test]
fn check_config_names_file_line_and_key() {
    let site = Site::new();
    site.htpasswd();
    let cases = [
        (
            "[[rewrite]]\nmatch = \"~^/(unclosed\"\nto = \"/x\"\n",
            "rewrite[0].match: bad regex",
            3,
        ),
        (
            "[[access]]\nmatch = \"/a/\"\nallow = [\"10.0.0.0/33\"]\n",
            "access[0].allow",
            3,
        ),
        (
            "[[auth]]\nmatch = \"/a/\"\nrealm = \"r\"\nhtpasswd = \"/nonexistent/htpasswd\"\n",
            "auth[0]",
            3,
        ),
        (
            "[[redirect]]\nmatch = \"/a/\"\nto = \"/b\"\nstatus = 200\n",
            "redirect[0].status",
            3,
        ),
        (
            "[[rewrite]]\nmatch = \"/a/\"\nto = \"/b\"\nbogus = 1\n",
            "unknown field `bogus`",
            6,
        ),
    ];
    for (toml, want, line) in cases {
        let file = site.path("bad.toml");
        std::fs::write(
            &file,
            format!("root = \"{}\"\n\n{toml}", site.path("root").display()),
        )
        .unwrap();
        let out = Command::new(bin_path())
            .args(["--check-config", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{toml}: {err}");
        assert!(err.contains(want), "{toml}: {err}");
        assert!(
            err.contains(&format!("{}:{line}", file.display())),
            "line of {toml}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_sendfile_serves_files_the_script_names_and_nothing_else() {
    let site = Site::new();
    site.htpasswd();
    let fpm = PhpFpm::start(2);
    let srv = TestServer::start(site.config(&fpm.sock, "")).await;
    let dir = std::fs::canonicalize(site.path("private-files")).unwrap();
    let report = std::fs::read(dir.join("report.txt")).unwrap();
    let file = dir.join("report.txt");
    let file = file.to_str().unwrap();
    for header in ["X-Sendfile", "X-Accel-Redirect"] {
        let r = request(
            srv.addr,
            "GET",
            &format!("/dl.php?h={header}&f={file}"),
            "",
            b"",
        )
        .await;
        assert_eq!(r.status, 200, "{header}: {}", r.text());
        assert_eq!(r.body, report, "{header}: the file, not the script's body");
        assert_eq!(
            r.header("content-disposition"),
            Some("attachment; filename=\"r.txt\"")
        );
        assert!(r.header("etag").is_some() && r.header("last-modified").is_some());
        assert_eq!(r.header("x-sendfile"), None);
        assert_eq!(r.header("x-accel-redirect"), None);
    }
    let r = request(
        srv.addr,
        "GET",
        &format!("/dl.php?f={file}"),
        "Range: bytes=10-19\r\n",
        b"",
    )
    .await;
    assert_eq!((r.status, &r.body[..]), (206, &report[10..20]));
    let outside = [
        "/etc/passwd".to_string(),
        format!("{}/../root/hello.txt", dir.display()),
        format!("{}/.hidden", dir.display()),
        "relative/report.txt".to_string(),
        dir.display().to_string(),
    ];
    for target in outside {
        let r = request(srv.addr, "GET", &format!("/dl.php?f={target}"), "", b"").await;
        assert_eq!(r.status, 502, "{target}");
        assert!(
            !r.text().contains("root:") && !r.text().contains("dot file"),
            "{target}"
        );
    }
    srv.stop().await;
}

/// A SIGHUP with a broken htpasswd file (or regex) is refused with a log
/// line; the old rules keep serving. A good file then takes effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_a_broken_rule_keeps_the_old_rules() {
    let site = Site::new();
    site.htpasswd();
    let conf = site.path("reload.toml");
    let rules = |extra: &str| {
        format!(
            "[[auth]]\nmatch = \"/secret/\"\nrealm = \"r\"\nhtpasswd = \"{}\"\n{extra}",
            site.path("htpasswd").display()
        )
    };
    std::fs::write(&conf, rules("")).unwrap();
    let srv = BinServer::start_in(&site.path("root"), &["--config", conf.to_str().unwrap()]);
    let alice = basic("alice", "pw-of-the-user");
    let with_alice = format!("Authorization: {alice}\r\n");
    let secret = |headers: String| async move {
        request(srv.addr, "GET", "/secret/s.txt", &headers, b"")
            .await
            .status
    };
    assert_eq!(secret(with_alice.clone()).await, 200);
    assert_eq!(secret(String::new()).await, 401);

    let reloads = |n: usize| {
        let srv = &srv;
        async move {
            eventually(Duration::from_secs(10), || {
                srv.stderr_text().matches("reload failed").count() >= n
            })
            .await
        }
    };
    // A malformed htpasswd file: refused, the old one (and rules) stay.
    std::fs::write(site.path("htpasswd"), "alice:plaintext-password\n").unwrap();
    srv.signal(libc::SIGHUP);
    assert!(reloads(1).await, "{}", srv.stderr_text());
    assert_eq!(secret(with_alice.clone()).await, 200);
    // A bad regex, named by line.
    site.htpasswd();
    std::fs::write(&conf, rules("[[rewrite]]\nmatch = \"~(\"\nto = \"/x\"\n")).unwrap();
    srv.signal(libc::SIGHUP);
    assert!(reloads(2).await, "{}", srv.stderr_text());
    let log = srv.stderr_text();
    let line = log.lines().rfind(|l| l.contains("reload failed")).unwrap();
    assert!(
        line.contains(":5") && line.contains("rewrite[0].match"),
        "{line}"
    );
    assert_eq!(secret(with_alice.clone()).await, 200);
    // A good file: the auth rule is gone.
    std::fs::write(&conf, "access_log = false\n").unwrap();
    srv.signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(10), || srv
            .stderr_text()
            .contains("configuration reloaded"))
        .await
    );
    assert_eq!(secret(String::new()).await, 200);
}

/// Rules cannot be dodged by spelling: a kept encoded slash is a slash to
/// the rules, and a method in another letter case or HEAD for GET still
/// needs the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_hold_against_other_spellings_of_a_request() {
    let site = Site::new();
    site.htpasswd();
    let fpm = PhpFpm::start(2);
    let srv = TestServer::start(site.config(&fpm.sock, "")).await;
    let r = three_ways(srv.addr, "wiki.test", "/admin%2Fusers", &[], &[]).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = three_ways(srv.addr, "wiki.test", "/admin/users", &[], &[]).await;
    assert_eq!(r.status, 403);
    for method in ["HEAD", "get", "Get"] {
        let r = request(srv.addr, method, "/cgi-bin/env.sh", "", b"").await;
        assert_eq!(r.status, 401, "{method} needs the user as GET does");
    }
    // Under `scripts = false` a missing path still goes to the front
    // controller (which lies outside the prefix), as with nginx.
    let r = three_ways(srv.addr, "test.local", "/uploads/nope", &[], &[]).await;
    assert_eq!(r.env()["SCRIPT_NAME"], "/index.php");
    srv.stop().await;
}
