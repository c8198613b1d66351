//! Pebble, the ACME test CA (Debian package `pebble`), on loopback for
//! tests/acme.rs: its own TLS certificate made here (rcgen), names
//! resolved to 127.0.0.1 by a tiny DNS server in the test, real
//! validation of HTTP-01 and TLS-ALPN-01 against cgihost's ports.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A free loopback TCP port (bound, then released for the caller).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A DNS server on loopback UDP that answers every A question with
/// 127.0.0.1 and every other question with no records. Runs for the
/// rest of the test process.
pub fn dns_stub() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("dns stub");
    let port = socket.local_addr().expect("dns stub").port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((len, from)) = socket.recv_from(&mut buf) {
            if let Some(answer) = dns_answer(&buf[..len]) {
                let _ = socket.send_to(&answer, from);
            }
        }
    });
    port
}

/// The response to one query (RFC 1035 §4.1): its header and question,
/// plus an A record for 127.0.0.1 when it asked for A.
fn dns_answer(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    let mut end = 12;
    while *query.get(end)? != 0 {
        end += 1 + *query.get(end)? as usize;
    }
    let qtype = u16::from_be_bytes([*query.get(end + 1)?, *query.get(end + 2)?]);
    let question = query.get(12..end + 5)?;
    let is_a = qtype == 1;
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&query[..2]);
    out.extend_from_slice(&[0x81, 0x80, 0, 1, 0, is_a as u8, 0, 0, 0, 0]);
    out.extend_from_slice(question);
    if is_a {
        // The name by pointer to the question, A, IN, TTL 60, 4 bytes.
        out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
    }
    Some(out)
}

/// A running pebble; killed on drop.
pub struct Pebble {
    child: Child,
    pub dir: tempfile::TempDir,
    pub acme_port: u16,
    pub mgmt_port: u16,
    /// Trusts pebble's own HTTPS endpoints (`acme_ca_root`).
    pub ca_root: PathBuf,
}

/// Pebble's endpoint files in `dir`: `ca.pem` (for `acme_ca_root`), and
/// `cert.pem` and `key.pem` for localhost, signed by it.
pub fn write_endpoint_files(dir: &Path) {
    let (ca, cert, key) = endpoint_files();
    std::fs::write(dir.join("ca.pem"), ca).unwrap();
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
}

/// The CA certificate (PEM) and a localhost certificate and key it signed.
fn endpoint_files() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "pebble test endpoint CA");
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("leaf");
    params.is_ca = rcgen::IsCa::NoCa;
    let leaf = params.signed_by(&key, &issuer).expect("leaf");
    (ca_cert.pem(), leaf.pem(), key.serialize_pem())
}

impl Pebble {
    /// Pebble validating on `http_port` and `tls_port` (cgihost's),
    /// issuing certificates valid `validity` seconds (None: its default).
    pub fn start(http_port: u16, tls_port: u16, validity: Option<u64>) -> Pebble {
        let dir = tempfile::tempdir().expect("pebble dir");
        write_endpoint_files(dir.path());
        Self::start_in(dir, free_port(), http_port, tls_port, validity)
    }

    /// As `start`, on `acme_port`, with the endpoint files `dir` holds.
    pub fn start_in(
        dir: tempfile::TempDir,
        acme_port: u16,
        http_port: u16,
        tls_port: u16,
        validity: Option<u64>,
    ) -> Pebble {
        let ca_root = dir.path().join("ca.pem");
        let mgmt_port = free_port();
        let mut settings = serde_json::json!({
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
            "certificate": dir.path().join("cert.pem"),
            "privateKey": dir.path().join("key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        });
        if let Some(secs) = validity {
            settings["certificateValidityPeriod"] = secs.into();
        }
        let config = dir.path().join("pebble.json");
        std::fs::write(
            &config,
            serde_json::json!({ "pebble": settings }).to_string(),
        )
        .unwrap();
        let child = Command::new("pebble")
            .arg("-config")
            .arg(&config)
            .arg("-dnsserver")
            .arg(format!("127.0.0.1:{}", dns_stub()))
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble (apt-get install pebble)");
        let pebble = Pebble {
            child,
            dir,
            acme_port,
            mgmt_port,
            ca_root,
        };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", mgmt_port)).is_err()
            || TcpStream::connect(("127.0.0.1", acme_port)).is_err()
        {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "pebble did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        pebble
    }

    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.acme_port)
    }

    /// The root pebble issues under (new at every start), as a PEM file.
    pub fn issuing_root(&self) -> PathBuf {
        let path = self.dir.path().join("issuing-root.pem");
        let out = Command::new("curl")
            .args(["-sSf", "--cacert"])
            .arg(&self.ca_root)
            .arg(format!("https://127.0.0.1:{}/roots/0", self.mgmt_port))
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&path, &out.stdout).unwrap();
        path
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TLS connection to `port` (SNI `name`), verified against `root`.
pub type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

pub async fn tls_connect(port: u16, name: &str, root: &Path) -> Result<Tls, String> {
    use rustls_pki_types::pem::PemObject;
    let text = |e: &dyn std::fmt::Display| e.to_string();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(root).map_err(|e| text(&e))? {
        roots
            .add(cert.map_err(|e| text(&e))?)
            .map_err(|e| text(&e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| text(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| text(&e))?;
    let server_name =
        rustls_pki_types::ServerName::try_from(name.to_string()).map_err(|e| text(&e))?;
    connector
        .connect(server_name, tcp)
        .await
        .map_err(|e| text(&e))
}

/// The serial number (hex, colon-separated) of the certificate `tls` got.
pub fn serial_of(tls: &Tls) -> Result<String, String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, session) = tls.get_ref();
    let leaf = session
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no certificate")?;
    let (_, cert) = X509Certificate::from_der(leaf).map_err(|e| e.to_string())?;
    Ok(cert.raw_serial_as_string())
}

/// The serial of the certificate served for `name` on `port`; Err: the
/// handshake failed.
pub async fn served_serial(port: u16, name: &str, root: &Path) -> Result<String, String> {
    serial_of(&tls_connect(port, name, root).await?)
}

/// One keep-alive `GET path` on `tls`: the status code.
pub async fn get_over(tls: &mut Tls, name: &str, path: &str) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let head = format!("GET {path} HTTP/1.1\r\nHost: {name}\r\n\r\n");
    tls.write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Small bodies with Content-Length: read until the head and body are in.
    loop {
        let n = tls.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>())
                })
                .and_then(Result::ok)
                .unwrap_or(0);
            if body.len() >= length {
                let code = head.get(9..12).and_then(|c| c.parse().ok());
                return code.ok_or_else(|| format!("bad response: {head}"));
            }
        }
    }
}
