//! WordPress deploys on cgihost, end to end, with the real software from
//! Debian's packages and nothing mocked: Debian's `wordpress` tree (copied
//! into a temp dir as the document root, with its Twenty Twenty-Three
//! theme), a real php-fpm with the system's extensions (`php-mysql`), and
//! a MariaDB server of the test's own on a unix socket in a temp dir.
//! cgihost runs in-process from a real config file: `*.php` to php-fpm,
//! `/index.php` as the front controller, scripts off under uploads.
//!
//! Everything WordPress is asked goes over HTTP: the installer, a login,
//! the permalink settings form (with its nonce), then pretty permalinks,
//! the REST API both ways, canonical redirects, 404s, and the uploads
//! hardening. WordPress is told to make no outgoing HTTP request
//! (`WP_HTTP_BLOCK_EXTERNAL`) and to run no cron, and the site's address
//! is the loopback one it is reached at.
//!
//! Needs the packages scripts/test.sh installs: wordpress,
//! wordpress-theme-twentytwentythree, php-mysql, mariadb-server (plus
//! php-fpm, as the other PHP tests).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cgihost::cli::Cli;
use common::*;

/// Where Debian's `wordpress` package puts the code.
const WORDPRESS: &str = "/usr/share/wordpress";
/// Bound on any one HTTP exchange, SQL statement or helper command.
const LIMIT: Duration = Duration::from_secs(60);

const DB_NAME: &str = "wordpress";
const DB_USER: &str = "wp_user";
const DB_PASSWORD: &str = "db-pass-Zq81";
const ADMIN: &str = "admin";
const ADMIN_PASSWORD: &str = "admin-pass-Vb27xK";

/// A MariaDB server of the test's own: a fresh datadir, a unix socket,
/// no TCP. Stopped (and waited for) when dropped, panics included.
struct MariaDb {
    child: Child,
    sock: PathBuf,
    dir: PathBuf,
}

impl MariaDb {
    fn start(dir: &Path) -> MariaDb {
        std::fs::create_dir_all(dir).expect("database dir");
        let data = dir.join("data");
        let sock = dir.join("mysqld.sock");
        let mut install = Command::new("mariadb-install-db");
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args([
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ]);
        run_bounded(install, &dir.join("install-db.log"));
        let log = std::fs::File::create(dir.join("mariadbd.out")).expect("log file");
        let mut cmd = Command::new("mariadbd");
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", sock.display()))
            .arg(format!("--pid-file={}", dir.join("mariadbd.pid").display()))
            .arg(format!(
                "--log-error={}",
                dir.join("mariadbd.err").display()
            ))
            .arg(format!("--tmpdir={}", dir.display()))
            .args([
                "--skip-networking",
                "--user=root",
                "--innodb-buffer-pool-size=32M",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        // Should the test process be killed outright, the server goes too.
        // SAFETY: prctl is async-signal-safe; nothing else runs here.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .expect("start mariadbd (scripts/test.sh installs mariadb-server)");
        let mut db = MariaDb {
            child,
            sock,
            dir: dir.to_path_buf(),
        };
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&db.sock).is_err() {
            if let Ok(Some(status)) = db.child.try_wait() {
                panic!(
                    "mariadbd exited ({status}) before it listened:\n{}",
                    db.log()
                );
            }
            assert!(
                start.elapsed() < LIMIT,
                "mariadbd did not listen on {} within {LIMIT:?}:\n{}",
                db.sock.display(),
                db.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        db
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mariadbd.err")).unwrap_or_default()
    }

    /// Run SQL as root over the socket with the `mariadb` client; its
    /// output (tab-separated, no column names).
    async fn sql(&self, statements: &str) -> String {
        let run = tokio::process::Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.sock.display()))
            .args(["--user=root", "--batch", "--skip-column-names", "-e"])
            .arg(statements)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(LIMIT, run)
            .await
            .unwrap_or_else(|_| panic!("SQL took over {LIMIT:?}: {statements}"))
            .expect("run the mariadb client");
        assert!(
            out.status.success(),
            "SQL failed: {statements}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("SQL output is UTF-8")
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `cmd` to completion within [`LIMIT`], its output to `log`; panics
/// with the log if it fails.
fn run_bounded(mut cmd: Command, log: &Path) {
    let file = std::fs::File::create(log).expect("log file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e} (scripts/test.sh installs it)"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} took over {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "{cmd:?} failed ({status}):\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Debian's WordPress copied (symlinks followed, so none are left) into
/// `dir`, with a wp-config.php for the test's database.
fn wordpress_root(dir: &Path, db: &MariaDb) -> PathBuf {
    assert!(
        Path::new(WORDPRESS).join("wp-settings.php").is_file(),
        "{WORDPRESS} is missing: scripts/test.sh installs the wordpress package"
    );
    assert!(
        Path::new(WORDPRESS)
            .join("wp-content/themes/twentytwentythree/theme.json")
            .is_file(),
        "WordPress's default theme is missing: scripts/test.sh installs \
         wordpress-theme-twentytwentythree"
    );
    let root = dir.join("wordpress");
    let mut cp = Command::new("cp");
    cp.arg("-rL").arg(WORDPRESS).arg(&root);
    run_bounded(cp, &dir.join("cp.log"));
    // Debian's own wp-config.php reads /etc/wordpress/config-HOST.php;
    // this one is the plain upstream kind, for this database.
    let salts: String = [
        "AUTH_KEY",
        "SECURE_AUTH_KEY",
        "LOGGED_IN_KEY",
        "NONCE_KEY",
        "AUTH_SALT",
        "SECURE_AUTH_SALT",
        "LOGGED_IN_SALT",
        "NONCE_SALT",
    ]
    .iter()
    .enumerate()
    .map(|(i, k)| format!("define('{k}', 'cgihost-test-{k}-{i}-x7Qp2Lm9Rt4Wz8Yv');\n"))
    .collect();
    let config = format!(
        "<?php\n\
         define('DB_NAME', '{DB_NAME}');\n\
         define('DB_USER', '{DB_USER}');\n\
         define('DB_PASSWORD', '{DB_PASSWORD}');\n\
         define('DB_HOST', 'localhost:{sock}');\n\
         define('DB_CHARSET', 'utf8mb4');\n\
         define('DB_COLLATE', '');\n\
         {salts}\
         $table_prefix = 'wp_';\n\
         define('WP_DEBUG', false);\n\
         // No outgoing HTTP (update checks, translations, feeds) and no cron.\n\
         define('WP_HTTP_BLOCK_EXTERNAL', true);\n\
         define('DISABLE_WP_CRON', true);\n\
         define('AUTOMATIC_UPDATER_DISABLED', true);\n\
         define('WP_AUTO_UPDATE_CORE', false);\n\
         if (!defined('ABSPATH')) {{ define('ABSPATH', __DIR__ . '/'); }}\n\
         require_once ABSPATH . 'wp-settings.php';\n",
        sock = db.sock.display()
    );
    std::fs::write(root.join("wp-config.php"), config).expect("write wp-config.php");
    // What an attacker might get into uploads, and an ordinary upload.
    let uploads = root.join("wp-content/uploads");
    std::fs::create_dir_all(&uploads).expect("uploads dir");
    std::fs::write(
        uploads.join("shell.php"),
        "<?php echo 'UPLOADED-' . 'PHP-RAN'; // SOURCE-OF-SHELL\n",
    )
    .expect("write shell.php");
    std::fs::write(uploads.join("note.txt"), "an uploaded note\n").expect("write note.txt");
    root
}

/// The config file a deployment would write, loaded as the binary loads it.
fn cgihost_config(dir: &Path, root: &Path, fpm_sock: &Path) -> cgihost::config::Config {
    let cgi_dir = dir.join("cgi-bin");
    std::fs::create_dir_all(&cgi_dir).expect("cgi dir");
    let toml = format!(
        r#"
root = "{root}"
cgi_dir = "{cgi}"
cgi_timeout = 60

[[fastcgi]]
match = "*.php"
addr = "unix:{sock}"
fallback = "/index.php"

[[access]]
match = "/wp-content/uploads/"
scripts = false
"#,
        root = root.display(),
        cgi = cgi_dir.display(),
        sock = fpm_sock.display(),
    );
    let file = dir.join("cgihost.toml");
    std::fs::write(&file, toml).expect("write cgihost.toml");
    let mut config = Cli {
        config: Some(file),
        ..Cli::default()
    }
    .load_config()
    .expect("config loads");
    config.access_log = false;
    config
}

/// A browser's cookies, enough for WordPress: name → value, any path.
#[derive(Default)]
struct Jar(BTreeMap<String, String>);

impl Jar {
    fn take(&mut self, resp: &Resp) {
        for c in resp.header_all("set-cookie") {
            let pair = c.split(';').next().unwrap_or("");
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            let expired = c.to_ascii_lowercase().contains("max-age=0")
                || c.contains("expires=Thu, 01-Jan-1970")
                || value.is_empty()
                || value == "deleted"
                || value == "+";
            if expired {
                self.0.remove(name.trim());
            } else {
                self.0.insert(name.trim().to_string(), value.to_string());
            }
        }
    }

    fn header(&self) -> String {
        if self.0.is_empty() {
            return String::new();
        }
        let pairs: Vec<String> = self.0.iter().map(|(n, v)| format!("{n}={v}")).collect();
        format!("Cookie: {}\r\n", pairs.join("; "))
    }
}

/// The client: requests to the server as a browser at `http://ADDR/` makes
/// them (`Host: ADDR`, which becomes WordPress's site address), each on
/// its own connection and bounded by [`LIMIT`].
struct Browser {
    addr: SocketAddr,
    jar: Jar,
}

impl Browser {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// One request: `headers` are extra header lines (each ending in
    /// \r\n), `body` its Content-Type and text; `cookies`: send the jar's
    /// and keep what the answer sets.
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &str,
        body: Option<(&str, &str)>,
        cookies: bool,
    ) -> Resp {
        let mut raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: cgihost-test\r\n\
             Accept: */*\r\nConnection: close\r\n{headers}",
            self.addr
        );
        if cookies {
            raw.push_str(&self.jar.header());
        }
        match body {
            Some((ctype, body)) => raw.push_str(&format!(
                "Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )),
            None => raw.push_str("\r\n"),
        }
        let exchange = async {
            let mut conn = Conn::open(self.addr).await;
            conn.request(raw.as_bytes()).await
        };
        let resp = tokio::time::timeout(LIMIT, exchange)
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no response within {LIMIT:?}"));
        if cookies {
            self.jar.take(&resp);
        }
        resp
    }

    /// A GET without cookies: what any visitor sees.
    async fn visit(&mut self, path: &str) -> Resp {
        self.send("GET", path, "", None, false).await
    }

    /// A GET with the jar's cookies.
    async fn get(&mut self, path: &str) -> Resp {
        self.send("GET", path, "", None, true).await
    }

    /// A form POST with the jar's cookies (`cookies` false: as a visitor).
    async fn post_form(&mut self, path: &str, form: &[(&str, &str)], cookies: bool) -> Resp {
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let ctype = "application/x-www-form-urlencoded";
        self.send("POST", path, "", Some((ctype, &body)), cookies)
            .await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Resp {
        self.post_form(path, form, true).await
    }
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                (b as char).to_string()
            }
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `value` of the input named `name` in an HTML page.
fn input_value(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\""))?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = at + html[at..].find('>')?;
    let tag = &html[tag_start..tag_end];
    let v = tag.split("value=\"").nth(1)?;
    Some(v[..v.find('"')?].to_string())
}

/// A REST API answer: 200, JSON, an array of posts; their slugs.
fn post_slugs(what: &str, r: &Resp) -> Vec<String> {
    assert_eq!(r.status, 200, "{what}: {}", r.text());
    let ctype = r.header("content-type").unwrap_or("");
    assert!(
        ctype.starts_with("application/json"),
        "{what}: Content-Type {ctype:?}"
    );
    let json: serde_json::Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", r.text()));
    let posts = json
        .as_array()
        .unwrap_or_else(|| panic!("{what}: not an array: {json}"));
    for p in posts {
        if p["slug"] == "hello-world" {
            assert_eq!(p["title"]["rendered"], "Hello world!", "{what}");
            let content = p["content"]["rendered"].as_str().unwrap_or("");
            assert!(
                content.contains("Welcome to WordPress"),
                "{what}: {content}"
            );
        }
    }
    posts
        .iter()
        .map(|p| p["slug"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wordpress_installs_and_serves_pretty_permalinks() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = MariaDb::start(&tmp.path().join("db"));
    db.sql(&format!(
        "CREATE DATABASE {DB_NAME} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;\n\
         CREATE USER '{DB_USER}'@'localhost' IDENTIFIED BY '{DB_PASSWORD}';\n\
         GRANT ALL PRIVILEGES ON {DB_NAME}.* TO '{DB_USER}'@'localhost';"
    ))
    .await;
    let root = wordpress_root(tmp.path(), &db);
    let fpm = PhpFpm::start_with_system_ini(4);
    let srv = TestServer::start(cgihost_config(tmp.path(), &root, &fpm.sock)).await;
    let mut b = Browser {
        addr: srv.addr,
        jar: Jar::default(),
    };

    // Not installed yet: the front page and any pretty URL (the front
    // controller) send the visitor to the installer.
    let install_url = b.url("/wp-admin/install.php");
    for path in ["/", "/hello-world/"] {
        let r = b.visit(path).await;
        assert_eq!(r.status, 302, "{path} before install: {}", r.text());
        assert_eq!(r.header("location"), Some(install_url.as_str()), "{path}");
    }
    let r = b.visit("/wp-admin/install.php").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let page = r.text();
    assert!(
        page.contains("name=\"weblog_title\"") && page.contains("name=\"admin_password\""),
        "the installer's form (php-mysql loaded? {}):\n{page}",
        fpm.log()
    );

    // The installer, as its form posts it.
    let r = b
        .post(
            "/wp-admin/install.php?step=2",
            &[
                ("weblog_title", "cgihost blog"),
                ("user_name", ADMIN),
                ("admin_password", ADMIN_PASSWORD),
                ("admin_password2", ADMIN_PASSWORD),
                ("pw_weak", "1"),
                ("admin_email", "admin@example.com"),
                ("blog_public", "0"),
                ("Submit", "Install WordPress"),
                ("language", ""),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let page = r.text();
    assert!(
        page.contains("<h1>Success!</h1>") && page.contains("WordPress has been installed."),
        "install step 2:\n{page}"
    );
    let siteurl = db
        .sql(&format!(
            "SELECT option_value FROM {DB_NAME}.wp_options WHERE option_name = 'siteurl'"
        ))
        .await;
    assert_eq!(siteurl.trim(), b.url(""), "the site's address");
    let r = b.visit("/wp-admin/install.php").await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("Already Installed"), "{}", r.text());

    // Log in as a browser does: the test cookie first, then the form.
    let r = b.get("/wp-login.php").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("name=\"log\""), "{}", r.text());
    assert!(
        b.jar.0.contains_key("wordpress_test_cookie"),
        "{:?}",
        r.headers
    );
    let admin_url = b.url("/wp-admin/");
    let r = b
        .post(
            "/wp-login.php",
            &[
                ("log", ADMIN),
                ("pwd", ADMIN_PASSWORD),
                ("wp-submit", "Log In"),
                ("redirect_to", &admin_url),
                ("testcookie", "1"),
            ],
        )
        .await;
    assert_eq!(r.status, 302, "login: {}", r.text());
    assert_eq!(r.header("location"), Some(admin_url.as_str()));
    assert!(
        b.jar
            .0
            .keys()
            .any(|k| k.starts_with("wordpress_logged_in_")),
        "login cookies: {:?}",
        r.headers
    );

    // Settings → Permalinks: the form with its nonce, then "Post name" as
    // a custom structure. (WordPress does not know cgihost does front
    // controllers, so its own "Post name" choice would be
    // /index.php/%postname%/; see got_url_rewrite().)
    let r = b.get("/wp-admin/options-permalink.php").await;
    assert_eq!(r.status, 200, "permalink settings: {}", r.text());
    let page = r.text();
    let nonce = input_value(&page, "_wpnonce").expect("the form's nonce");
    let referer = input_value(&page, "_wp_http_referer").expect("the form's referer");
    assert_eq!(referer, "/wp-admin/options-permalink.php");
    let r = b
        .post(
            "/wp-admin/options-permalink.php",
            &[
                ("_wpnonce", &nonce),
                ("_wp_http_referer", &referer),
                ("selection", "custom"),
                ("permalink_structure", "/%postname%/"),
                ("category_base", ""),
                ("tag_base", ""),
                ("submit", "Save Changes"),
            ],
        )
        .await;
    assert_eq!(r.status, 302, "saving permalinks: {}", r.text());
    let saved = b.url("/wp-admin/options-permalink.php?settings-updated=true");
    assert_eq!(r.header("location"), Some(saved.as_str()));
    let structure = db
        .sql(&format!(
            "SELECT option_value FROM {DB_NAME}.wp_options \
             WHERE option_name = 'permalink_structure'"
        ))
        .await;
    assert_eq!(structure.trim(), "/%postname%/");
    let r = b
        .get("/wp-admin/options-permalink.php?settings-updated=true")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        input_value(&r.text(), "permalink_structure").as_deref(),
        Some("/%postname%/")
    );
    // The admin's own pages resolve through the index: /wp-admin/ is
    // wp-admin/index.php, the dashboard.
    let r = b.get("/wp-admin/").await;
    assert_eq!(r.status, 200, "dashboard: {}", r.text());
    assert!(r.text().contains("<title>Dashboard"), "{}", r.text());

    // The REST API as the block editor uses it: the logged-in cookie plus
    // the REST nonce, a JSON body through the front controller.
    let r = b.get("/wp-admin/admin-ajax.php?action=rest-nonce").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rest_nonce = r.text().trim().to_string();
    assert!(
        rest_nonce.len() == 10 && rest_nonce.bytes().all(|c| c.is_ascii_hexdigit()),
        "REST nonce {rest_nonce:?}"
    );
    let new_post = serde_json::json!({
        "title": "Served by cgihost",
        "content": "<!-- wp:paragraph --><p>Posted through the REST API, over cgihost.</p><!-- /wp:paragraph -->",
        "status": "publish",
        "slug": "served-by-cgihost",
    })
    .to_string();
    let r = b
        .send(
            "POST",
            "/wp-json/wp/v2/posts",
            &format!("X-WP-Nonce: {rest_nonce}\r\n"),
            Some(("application/json", &new_post)),
            true,
        )
        .await;
    assert_eq!(r.status, 201, "REST create: {}", r.text());
    let created: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
    let new_url = b.url("/served-by-cgihost/");
    assert_eq!(created["link"], new_url.as_str(), "{created}");
    let location = b.url(&format!("/wp-json/wp/v2/posts/{}", created["id"]));
    assert_eq!(r.header("location"), Some(location.as_str()));
    // A media upload the same way: WordPress files it under uploads, and
    // cgihost serves it from there as a static file.
    let upload = "uploaded through the media endpoint\n";
    let r = b
        .send(
            "POST",
            "/wp-json/wp/v2/media",
            &format!(
                "X-WP-Nonce: {rest_nonce}\r\n\
                 Content-Disposition: attachment; filename=\"media-note.txt\"\r\n"
            ),
            Some(("text/plain", upload)),
            true,
        )
        .await;
    assert_eq!(r.status, 201, "REST media upload: {}", r.text());
    let media: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
    let source = media["source_url"]
        .as_str()
        .expect("source_url")
        .to_string();
    let media_path = source
        .strip_prefix(&b.url("/wp-content/uploads/"))
        .unwrap_or_else(|| panic!("uploaded to {source}"))
        .to_string();
    assert!(media_path.ends_with("/media-note.txt"), "{source}");
    let r = b.visit(&format!("/wp-content/uploads/{media_path}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), upload);
    // Without the cookie (and so without a user), the same POST is refused
    // by WordPress, not by the server.
    let r = b
        .send(
            "POST",
            "/wp-json/wp/v2/posts",
            "",
            Some(("application/json", &new_post)),
            false,
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    let refused: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
    assert_eq!(refused["code"], "rest_cannot_create", "{refused}");

    // A visitor: the front page links the post by its pretty permalink,
    // which the front controller serves.
    let post_url = b.url("/hello-world/");
    let r = b.visit("/").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().contains(&format!("href=\"{post_url}\"")),
        "the front page links {post_url}:\n{}",
        r.text()
    );
    let r = b.visit("/hello-world/").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/html")));
    let page = r.text();
    assert!(page.contains("Welcome to WordPress"), "{page}");
    assert!(page.contains("Hello world!"), "{page}");
    assert!(!page.contains("<?php"));

    let r = b.send("HEAD", "/hello-world/", "", None, false).await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    let r = b.visit("/served-by-cgihost/").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text()
            .contains("Posted through the REST API, over cgihost."),
        "{}",
        r.text()
    );

    // A visitor's comment: a form POST to wp-comments-post.php, held for
    // moderation, and back to the post.
    let r = b
        .post_form(
            "/wp-comments-post.php",
            &[
                ("comment", "Nice server & all that: 100% {fine}."),
                ("author", "A Visitor"),
                ("email", "visitor@example.com"),
                ("url", ""),
                ("submit", "Post Comment"),
                ("comment_post_ID", "1"),
                ("comment_parent", "0"),
            ],
            false,
        )
        .await;
    assert_eq!(r.status, 302, "comment: {}", r.text());
    let back = r.header("location").unwrap_or("");
    assert!(
        back.starts_with(&format!("{post_url}?unapproved=")) && back.contains("#comment-"),
        "{back}"
    );
    let stored = db
        .sql(&format!(
            "SELECT comment_approved, comment_content FROM {DB_NAME}.wp_comments \
             WHERE comment_author = 'A Visitor'"
        ))
        .await;
    // (kses, WordPress's filter for a visitor's HTML, writes & as &amp;.)
    assert_eq!(stored, "0\tNice server &amp; all that: 100% {fine}.\n");

    // WordPress's canonical redirects: they need the REQUEST_URI the
    // client sent.
    let r = b.visit("/hello-world").await;
    assert_eq!(r.status, 301, "{}", r.text());
    assert_eq!(r.header("location"), Some(post_url.as_str()));
    let r = b.visit("/?p=1").await;
    assert_eq!(r.status, 301, "{}", r.text());
    assert_eq!(r.header("location"), Some(post_url.as_str()));
    // PATH_INFO permalinks reach WordPress too, which sends them on to the
    // pretty one.
    let r = b.visit("/index.php/hello-world/").await;
    assert_eq!(r.status, 301, "{}", r.text());
    assert_eq!(r.header("location"), Some(post_url.as_str()));
    // A pretty URL that names nothing: WordPress's own 404 page.
    let r = b.visit("/no-such-post/").await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("cgihost blog"), "{}", r.text());

    // The REST API, pretty and plain.
    let pretty = post_slugs(
        "/wp-json/wp/v2/posts",
        &b.visit("/wp-json/wp/v2/posts").await,
    );
    let mut sorted = pretty.clone();
    sorted.sort();
    assert_eq!(sorted, ["hello-world", "served-by-cgihost"]);
    let plain = post_slugs(
        "/?rest_route=/wp/v2/posts",
        &b.visit("/?rest_route=/wp/v2/posts").await,
    );
    assert_eq!(plain, pretty);
    let r = b.visit("/wp-json/").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let index: serde_json::Value = serde_json::from_slice(&r.body).expect("API index JSON");
    assert_eq!(index["name"], "cgihost blog");
    assert_eq!(index["url"], b.url(""));

    // The login page, for a visitor.
    let r = b.visit("/wp-login.php").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("name=\"pwd\""), "{}", r.text());
    // The admin without a login: to the login page.
    let r = b.visit("/wp-admin/").await;
    assert_eq!(r.status, 302, "{}", r.text());
    assert!(
        r.header("location")
            .is_some_and(|l| l.starts_with(&b.url("/wp-login.php?redirect_to="))),
        "{:?}",
        r.header("location")
    );
    // /wp-admin is a directory: cgihost's redirect to the slash.
    let r = b.visit("/wp-admin").await;
    assert_eq!(r.status, 301, "{}", r.text());
    assert_eq!(r.header("location"), Some("/wp-admin/"));

    // Static files straight from the tree.
    let r = b.visit("/wp-includes/css/dashicons.min.css").await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/css")));
    let on_disk = std::fs::read(root.join("wp-includes/css/dashicons.min.css")).unwrap();
    assert_eq!(r.body, on_disk);
    let r = b
        .visit("/wp-content/themes/twentytwentythree/style.css")
        .await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("Theme Name: Twenty Twenty-Three"));

    // A missing script is a 404, never the front controller.
    let r = b.visit("/nope.php").await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(!r.text().contains("cgihost blog"), "{}", r.text());
    let r = b.visit("/wp-admin/nope.php").await;
    assert_eq!(r.status, 404, "{}", r.text());

    // Uploads: files are served, PHP there neither runs nor shows.
    let r = b.visit("/wp-content/uploads/note.txt").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "an uploaded note\n");
    // A directory without an index is no listing: the front controller
    // answers, with WordPress's 404.
    let r = b.visit("/wp-content/uploads/").await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(!r.text().contains("note.txt"), "{}", r.text());
    assert!(r.text().contains("cgihost blog"), "{}", r.text());
    for path in [
        "/wp-content/uploads/shell.php",
        "/wp-content/uploads/shell.php/x",
        "/wp-content/uploads/shell.php?x=1",
    ] {
        let r = b.visit(path).await;
        assert_eq!(r.status, 403, "{path}: {}", r.text());
        let body = r.text();
        assert!(
            !body.contains("PHP-RAN") && !body.contains("SOURCE-OF-SHELL"),
            "{path}: {body}"
        );
    }
    // Dot-files (Debian's .htaccess) are not served.
    let r = b.visit("/.htaccess").await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(!r.text().contains("RewriteEngine"), "{}", r.text());
    // The config with the database password is PHP: it runs, shows nothing.
    let r = b.visit("/wp-config.php").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains(DB_PASSWORD));

    srv.stop().await;
    drop(fpm);
    drop(db);
    eprintln!("WordPress deploy test took {:?}", started.elapsed());
}
