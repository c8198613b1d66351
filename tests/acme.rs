//! Automatic HTTPS (issue 19) against a real ACME CA: pebble on loopback,
//! validating HTTP-01 and TLS-ALPN-01 against the cgihost binary's own
//! listeners (names resolved to 127.0.0.1 by a DNS stub in the test).
//! Certificates are checked as served, with curl and a rustls client
//! trusting pebble's issuing root.

mod common;
#[path = "common/pebble.rs"]
mod pebble;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use pebble::{free_port, served_serial, Pebble};

const NAME: &str = "site.test";

/// cgihost's ports, its document root and its ACME dir.
struct Site {
    http: u16,
    https: u16,
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("www")).unwrap();
        std::fs::write(dir.path().join("www/index.html"), "hello over acme\n").unwrap();
        Site {
            http: free_port(),
            https: free_port(),
            dir,
        }
    }

    fn acme_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("state/acme")
    }

    /// The config: both listeners (or TLS only), pebble as the CA.
    fn config(&self, directory: &str, ca_root: &Path, challenge: &str) -> ConfFile {
        let plain = if challenge == "http-01" {
            format!(
                "[[listen]]\naddr = \"127.0.0.1:{}\"\ntls = false\n",
                self.http
            )
        } else {
            String::new()
        };
        ConfFile::new(&format!(
            "root = \"{root}\"\nstatus_path = \"/status\"\n\
             acme_domains = [\"{NAME}\"]\nacme_email = \"ops@site.test\"\n\
             acme_directory = \"{directory}\"\nacme_ca_root = \"{ca}\"\n\
             acme_dir = \"{acme}\"\nacme_challenge = \"{challenge}\"\n\
             {plain}[[listen]]\naddr = \"127.0.0.1:{https}\"\ntls = true\n",
            root = self.dir.path().join("www").display(),
            ca = ca_root.display(),
            acme = self.acme_dir().display(),
            https = self.https,
        ))
    }

    fn start(&self, conf: &ConfFile) -> BinServer {
        self.start_with(conf, &[])
    }

    fn start_with(&self, conf: &ConfFile, args: &[&str]) -> BinServer {
        let mut cmd = Command::new(bin_path());
        cmd.arg("--config").arg(conf.arg()).args(args);
        BinServer::start_cmd(cmd)
    }

    /// `curl --cacert ROOT --resolve` over HTTPS: (exit ok, body).
    fn curl_https(&self, root: &Path, path: &str) -> (bool, String) {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5", "--cacert"])
            .arg(root)
            .arg("--resolve")
            .arg(format!("{NAME}:{}:127.0.0.1", self.https))
            .arg(format!("https://{NAME}:{}{path}", self.https))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }
}

/// A GET over plain HTTP with this Host.
async fn get_host(addr: std::net::SocketAddr, path: &str, host: &str) -> Resp {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    Conn::open(addr).await.request(raw.as_bytes()).await
}

/// Wait (bounded) until the server's log has `needle`.
async fn log_says(srv: &BinServer, needle: &str, limit: Duration) {
    let said = eventually(limit, || srv.stderr_text().contains(needle)).await;
    assert!(said, "no log line with {needle:?}:\n{}", srv.stderr_text());
}

#[tokio::test]
async fn http01_certificate_is_issued_served_and_reused_after_restart() {
    let site = Site::new();
    let ca = Pebble::start(site.http, site.https, None);
    let conf = site.config(&ca.directory(), &ca.ca_root, "http-01");
    let srv = site.start(&conf);
    log_says(&srv, "now serving it", Duration::from_secs(30)).await;
    // Kept beside the site: it must outlive pebble for the restart.
    let root = site.dir.path().join("issuing-root.pem");
    std::fs::copy(ca.issuing_root(), &root).unwrap();
    let (ok, body) = site.curl_https(&root, "/index.html");
    assert!(ok && body == "hello over acme\n", "{body}");
    let first = served_serial(site.https, NAME, &root).await.unwrap();

    // A reload (SIGHUP) keeps the certificate.
    srv.signal(libc::SIGHUP);
    log_says(&srv, "configuration reloaded", Duration::from_secs(10)).await;
    assert_eq!(served_serial(site.https, NAME, &root).await.unwrap(), first);

    // Stored atomically and privately.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&site.acme_dir()), 0o700);
    let stored = site
        .acme_dir()
        .join(format!("127.0.0.1-{}-dir/{NAME}", ca.acme_port));
    assert_eq!(mode(&stored.join("key.pem")), 0o600);
    assert!(std::fs::read_to_string(stored.join("cert.pem"))
        .unwrap()
        .contains("BEGIN CERTIFICATE"));

    // Plain HTTP: 308 to HTTPS with path and query, but the challenge
    // path stays on HTTP (an unknown token: 404, not a redirect).
    let plain: std::net::SocketAddr = format!("127.0.0.1:{}", site.http).parse().unwrap();
    let resp = get_host(plain, "/a/b?x=1", &format!("{NAME}:{}", site.http)).await;
    assert_eq!(resp.status, 308);
    let want = format!("https://{NAME}:{}/a/b?x=1", site.https);
    assert_eq!(resp.header("location"), Some(want.as_str()));
    let token = get_host(plain, "/.well-known/acme-challenge/nope", NAME).await;
    assert_eq!(token.status, 404);
    // A host without a certificate is served over HTTP as before.
    let other = get_host(plain, "/index.html", "other.test").await;
    assert_eq!(other.status, 200);

    // Restart with the CA gone: the stored certificate serves, no order.
    drop(srv);
    drop(ca);
    let srv = site.start(&conf);
    log_says(
        &srv,
        "using the stored certificate",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(served_serial(site.https, NAME, &root).await.unwrap(), first);
    let (ok, body) = site.curl_https(&root, "/index.html");
    assert!(ok, "{body}");
    assert!(
        !srv.stderr_text().contains("ordering a certificate"),
        "{}",
        srv.stderr_text()
    );
}

#[tokio::test]
async fn tls_alpn01_certificate_is_issued_and_served() {
    let site = Site::new();
    let ca = Pebble::start(site.http, site.https, None);
    // TLS only: the CA checks the name on the TLS listener (acme-tls/1).
    let conf = site.config(&ca.directory(), &ca.ca_root, "tls-alpn-01");
    let srv = site.start(&conf);
    log_says(&srv, "now serving it", Duration::from_secs(30)).await;
    let (ok, body) = site.curl_https(&ca.issuing_root(), "/index.html");
    assert!(ok && body == "hello over acme\n", "{body}");
}

#[tokio::test]
async fn renewal_swaps_in_a_new_certificate_without_a_failed_request() {
    let site = Site::new();
    // 9-second certificates: renewal falls due about 6 seconds in.
    let ca = Pebble::start(site.http, site.https, Some(9));
    let conf = site.config(&ca.directory(), &ca.ca_root, "http-01");
    let srv = site.start(&conf);
    log_says(&srv, "now serving it", Duration::from_secs(30)).await;
    let root = ca.issuing_root();
    // A connection opened before the swap, used all along (so it stays
    // open): the swap must not end it.
    let mut before = pebble::tls_connect(site.https, NAME, &root).await.unwrap();
    let first = pebble::serial_of(&before).unwrap();
    // A new connection and a request on it all along, until one sees the
    // new serial: none may fail.
    let start = std::time::Instant::now();
    let mut requests = 0;
    let renewed = loop {
        let fresh = pebble::tls_connect(site.https, NAME, &root).await;
        let mut fresh = fresh.unwrap_or_else(|e| panic!("handshake {requests} failed: {e}"));
        let code = pebble::get_over(&mut fresh, NAME, "/index.html").await;
        assert_eq!(code, Ok(200), "request {requests}");
        let on_old = pebble::get_over(&mut before, NAME, "/index.html").await;
        assert_eq!(
            on_old,
            Ok(200),
            "request {requests} on the first connection"
        );
        requests += 1;
        let serial = pebble::serial_of(&fresh).unwrap();
        if serial != first {
            break serial;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never renewed:\n{}",
            srv.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(requests > 10, "renewed too soon ({requests} requests)");
    let after = pebble::get_over(&mut before, NAME, "/index.html").await;
    assert_eq!(after, Ok(200), "the first connection after the swap");
    assert_eq!(pebble::serial_of(&before).unwrap(), first);
    let (ok, body) = site.curl_https(&root, "/index.html");
    assert!(ok, "{body}");
    // The status page names the certificate now served.
    let status = get_host(
        format!("127.0.0.1:{}", site.http).parse().unwrap(),
        "/status?json",
        "localhost",
    )
    .await;
    let json: serde_json::Value = serde_json::from_slice(&status.body).unwrap();
    let cert = &json["acme"][0];
    assert_eq!(cert["serial"].as_str(), Some(renewed.as_str()), "{json}");
    assert_eq!(cert["names"][0], NAME);
    assert_eq!(cert["last_renewal"]["ok"], true);
    assert!(
        cert["issuer"].as_str().unwrap_or("").contains("Pebble"),
        "{json}"
    );
    let left = cert["expires_in_secs"].as_i64().unwrap_or(-1);
    assert!((0..=9).contains(&left), "{json}");
    let plain = format!("127.0.0.1:{}", site.http).parse().unwrap();
    let metrics = get_host(plain, "/status/metrics", "localhost").await.text();
    let line = format!("cgihost_acme_certificate_expiry_seconds{{names=\"{NAME}\"}} ");
    assert!(metrics.contains(&line), "{metrics}");
    let page = get_host(plain, "/status", "localhost").await.text();
    assert!(
        page.contains("Certificates (ACME)") && page.contains(NAME),
        "{page}"
    );
}

#[tokio::test]
async fn ca_down_at_start_http_serves_and_the_order_is_retried() {
    let site = Site::new();
    let acme_port = free_port();
    let directory = format!("https://127.0.0.1:{acme_port}/dir");
    // The CA's endpoint certificate exists before the CA runs.
    let endpoint = tempfile::tempdir().unwrap();
    pebble::write_endpoint_files(endpoint.path());
    let ca_root = endpoint.path().join("ca.pem");
    let conf = site.config(&directory, &ca_root, "http-01");
    let srv = site.start(&conf);
    log_says(&srv, "retrying in", Duration::from_secs(10)).await;
    let plain: std::net::SocketAddr = format!("127.0.0.1:{}", site.http).parse().unwrap();
    assert_eq!(
        get_host(plain, "/index.html", "other.test").await.status,
        200
    );
    // No certificate yet: the handshake is refused, with a reason.
    assert!(served_serial(site.https, NAME, &ca_root).await.is_err());
    log_says(
        &srv,
        "TLS handshake refused: no ACME certificate yet",
        Duration::from_secs(5),
    )
    .await;
    let ca = Pebble::start_in(endpoint, acme_port, site.http, site.https, None);
    log_says(&srv, "now serving it", Duration::from_secs(40)).await;
    let (ok, body) = site.curl_https(&ca.issuing_root(), "/index.html");
    assert!(ok, "{body}");
}

#[tokio::test]
async fn run_as_a_user_the_certificate_is_stored_in_a_dir_it_owns() {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: plain syscall.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root, as CI runs it"
    );
    let site = Site::new();
    // `nobody` must reach the document root and the ACME dir's parents.
    std::fs::set_permissions(site.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ca = Pebble::start(site.http, site.https, None);
    let conf = site.config(&ca.directory(), &ca.ca_root, "http-01");
    let srv = site.start_with(&conf, &["--user", "nobody"]);
    log_says(&srv, "now serving it", Duration::from_secs(30)).await;
    assert!(srv.stderr_text().contains("running as user nobody"));
    let meta = std::fs::metadata(site.acme_dir()).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (65534, 0o700));
    let key = site
        .acme_dir()
        .join(format!("127.0.0.1-{}-dir/{NAME}/key.pem", ca.acme_port));
    let meta = std::fs::metadata(key).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (65534, 0o600));
    let (ok, body) = site.curl_https(&ca.issuing_root(), "/index.html");
    assert!(ok && body == "hello over acme\n", "{body}");
}
