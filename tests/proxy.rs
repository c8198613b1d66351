//! Behind a load balancer: `X-Forwarded-For`/`-Proto` count from trusted
//! proxies only (CGI, php-fpm, `[[access]]`, the status page and the
//! access log see the client they name; anyone else's are ignored),
//! PROXY protocol v1/v2 listeners (cleartext and TLS; a connection without
//! a valid header is closed), the health endpoint through a drain, and
//! the access log file with its reopen on SIGUSR1.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use cgihost::app::{App, Live};
use cgihost::config::{parse_network, Config, StatusConfig};
use cgihost::server::Listener;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An in-process server on one loopback listener, taking the PROXY
/// protocol or not; TLS when the config names a certificate.
struct Front {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Front {
    async fn start(config: Config, proxy_protocol: bool) -> Front {
        let tls = config
            .tls
            .as_ref()
            .map(|files| cgihost::tls::acceptor(files).expect("certificate"));
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("addr");
        let listeners = vec![Listener {
            tcp,
            tls: tls.is_some(),
            proxy_protocol,
        }];
        let live = Live::new(App::new(config).expect("app"), tls);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let stop = async {
                let _ = rx.await;
            };
            cgihost::server::serve(listeners, live, stop)
                .await
                .expect("serve");
        });
        Front {
            addr,
            stop: Some(tx),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// The fixture site, trusting `nets` as proxies.
fn trusting(nets: &[&str]) -> Config {
    let mut c = fixture_config();
    c.balancer.trusted_proxies = nets.iter().map(|n| parse_network(n).unwrap()).collect();
    c
}

/// The fixture site with the keys of `toml` (sites and rules included).
fn config_with(toml: &str) -> Config {
    let file = ConfFile::new(toml);
    let mut c = Config::from_file(Some(std::path::Path::new(file.arg()))).expect("config");
    c.root = fixtures().join("static");
    c.cgi_dir = fixtures().join("cgi-bin");
    c.shutdown_grace = Duration::from_secs(5);
    c
}

/// GET `path` with extra header lines (each ending in CRLF), after the
/// `preface` bytes (a PROXY header), on a fresh connection; the response
/// and the client's own address.
async fn get_via(
    addr: SocketAddr,
    preface: &[u8],
    path: &str,
    headers: &str,
) -> (Resp, SocketAddr) {
    let mut conn = Conn::open(addr).await;
    let local = conn.stream.get_ref().local_addr().unwrap();
    let mut raw = preface.to_vec();
    raw.extend_from_slice(
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{headers}\r\n").as_bytes(),
    );
    (conn.request(&raw).await, local)
}

fn var<'a>(env: &'a std::collections::BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    env.get(name).map(String::as_str)
}

const XFF: &str =
    "X-Forwarded-For: 198.51.100.9, 203.0.113.7, 10.1.2.3\r\nX-Forwarded-Proto: https\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_names_the_client_and_scheme_to_cgi() {
    let srv = Front::start(trusting(&["127.0.0.1/32", "10.0.0.0/8"]), false).await;
    // The right-most hop that is not a trusted proxy; no port is known.
    let (resp, _) = get_via(srv.addr, b"", "/cgi-bin/env.pl", XFF).await;
    let env = resp.env();
    assert_eq!(var(&env, "REMOTE_ADDR"), Some("203.0.113.7"), "{env:?}");
    assert_eq!(var(&env, "REMOTE_PORT"), None);
    assert_eq!(var(&env, "HTTPS"), Some("on"));
    assert_eq!(var(&env, "REQUEST_SCHEME"), Some("https"));
    // The headers still reach the script as they came.
    assert_eq!(
        var(&env, "HTTP_X_FORWARDED_FOR"),
        Some("198.51.100.9, 203.0.113.7, 10.1.2.3")
    );
    // A hop with a port gives REMOTE_PORT too.
    let (resp, _) = get_via(
        srv.addr,
        b"",
        "/cgi-bin/env.pl",
        "X-Forwarded-For: [2001:db8::7]:4711\r\n",
    )
    .await;
    let env = resp.env();
    assert_eq!(var(&env, "REMOTE_ADDR"), Some("2001:db8::7"));
    assert_eq!(var(&env, "REMOTE_PORT"), Some("4711"));
    assert_eq!(var(&env, "HTTPS"), None);
    // Without the headers: the peer, with its port.
    let (resp, local) = get_via(srv.addr, b"", "/cgi-bin/env.pl", "").await;
    let env = resp.env();
    assert_eq!(var(&env, "REMOTE_ADDR"), Some("127.0.0.1"));
    assert_eq!(var(&env, "REMOTE_PORT"), Some(&*local.port().to_string()));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_from_an_untrusted_peer_change_nothing() {
    // 127.0.0.1 is not among the trusted proxies: the headers are the
    // client's own words.
    let srv = Front::start(trusting(&["10.0.0.0/8"]), false).await;
    let (resp, local) = get_via(srv.addr, b"", "/cgi-bin/env.pl", XFF).await;
    let env = resp.env();
    assert_eq!(var(&env, "REMOTE_ADDR"), Some("127.0.0.1"), "{env:?}");
    assert_eq!(var(&env, "REMOTE_PORT"), Some(&*local.port().to_string()));
    assert_eq!(var(&env, "HTTPS"), None);
    assert_eq!(var(&env, "REQUEST_SCHEME"), Some("http"));
    srv.stop().await;
}

/// `[[access]]` rules and the loopback-only status page judge the client a
/// trusted proxy names, and only that: a forged header from anyone else
/// opens nothing, and a remote client behind a local proxy is not local.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_rules_and_the_status_page_see_the_forwarded_client() {
    let rules = "[[access]]\nmatch = \"/hello.txt\"\ndeny = true\nallow = [\"203.0.113.0/24\"]\n";
    let mut trusted = config_with(&format!("trusted_proxies = [\"127.0.0.1\"]\n{rules}"));
    let status = StatusConfig {
        path: "/status".into(),
        local_only: true,
    };
    trusted.status = Some(status.clone());
    let mut untrusted = config_with(&format!("trusted_proxies = [\"10.0.0.0/8\"]\n{rules}"));
    untrusted.status = Some(status);
    let (a, b) = (
        Front::start(trusted, false).await,
        Front::start(untrusted, false).await,
    );
    let xff = "X-Forwarded-For: 203.0.113.7\r\n";
    // The static file path (sendfile) and hyper's (a request with
    // `Expect` is hyper's) alike.
    assert_eq!(get_via(a.addr, b"", "/hello.txt", xff).await.0.status, 200);
    assert_eq!(get_via(a.addr, b"", "/hello.txt", "").await.0.status, 403);
    assert_eq!(get_via(b.addr, b"", "/hello.txt", xff).await.0.status, 403);
    let via_hyper = format!("{xff}Expect: 100-continue\r\n");
    assert_eq!(
        get_via(a.addr, b"", "/hello.txt", &via_hyper)
            .await
            .0
            .status,
        200
    );
    assert_eq!(
        get_via(b.addr, b"", "/hello.txt", &via_hyper)
            .await
            .0
            .status,
        403
    );
    // The status page: local only.
    assert_eq!(
        get_via(a.addr, b"", "/status?json", xff).await.0.status,
        404
    );
    assert_eq!(get_via(a.addr, b"", "/status?json", "").await.0.status, 200);
    assert_eq!(
        get_via(b.addr, b"", "/status?json", xff).await.0.status,
        200
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_fpm_gets_the_forwarded_client_from_trusted_proxies_only() {
    let fpm = PhpFpm::start(2);
    let mut trusted = php_config(&fpm.sock);
    trusted.balancer.trusted_proxies = ["127.0.0.0/8", "10.0.0.0/8"]
        .iter()
        .map(|n| parse_network(n).unwrap())
        .collect();
    let mut untrusted = php_config(&fpm.sock);
    untrusted.balancer.trusted_proxies = vec![parse_network("::1").unwrap()];
    let (a, b) = (
        Front::start(trusted, false).await,
        Front::start(untrusted, false).await,
    );
    let (resp, _) = get_via(a.addr, b"", "/env.php", XFF).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let env = resp.env();
    assert_eq!(var(&env, "REMOTE_ADDR"), Some("203.0.113.7"), "{env:?}");
    assert_eq!(var(&env, "REMOTE_PORT"), None);
    assert_eq!(var(&env, "HTTPS"), Some("on"));
    assert_eq!(var(&env, "REQUEST_SCHEME"), Some("https"));
    let (resp, local) = get_via(b.addr, b"", "/env.php", XFF).await;
    let env = resp.env();
    assert_eq!(var(&env, "REMOTE_ADDR"), Some("127.0.0.1"), "{env:?}");
    assert_eq!(var(&env, "REMOTE_PORT"), Some(&*local.port().to_string()));
    assert_eq!(var(&env, "HTTPS"), None);
    a.stop().await;
    b.stop().await;
}

/// The access log line names the forwarded client, on the sendfile path
/// and the hyper path, from a trusted proxy only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_names_the_forwarded_client() {
    let trusted = ConfFile::new("trusted_proxies = [\"127.0.0.1/32\"]\n");
    let untrusted = ConfFile::new("trusted_proxies = [\"10.0.0.0/8\"]\n");
    let start = |conf: &ConfFile| {
        let cmd = BinServer::command_in(&fixtures().join("static"), &["--config", conf.arg()]);
        BinServer::start_cmd(cmd)
    };
    let (a, b) = (start(&trusted), start(&untrusted));
    let xff = "X-Forwarded-For: 203.0.113.7\r\n";
    for srv in [&a, &b] {
        assert_eq!(
            get_via(srv.addr, b"", "/hello.txt?static", xff)
                .await
                .0
                .status,
            200
        );
        assert_eq!(
            get_via(srv.addr, b"", "/cgi-bin/hello.sh?cgi", xff)
                .await
                .0
                .status,
            200
        );
    }
    for needle in ["/hello.txt?static", "/cgi-bin/hello.sh?cgi"] {
        let line = a.access_line(needle).await;
        assert!(line.starts_with("203.0.113.7 - "), "{line}");
        let line = b.access_line(needle).await;
        assert!(line.starts_with("127.0.0.1 - "), "{line}");
    }
}

/// PROXY protocol v2: `command` 0x21 PROXY or 0x20 LOCAL, an IPv4 or IPv6
/// source (destination: 10.0.0.1:443 / ::1:443), and TLVs.
fn v2_header(command: u8, source: SocketAddr, tlvs: &[(u8, &[u8])]) -> Vec<u8> {
    let (family, mut block) = match source {
        SocketAddr::V4(s) => (0x11, [s.ip().octets().to_vec(), vec![10, 0, 0, 1]].concat()),
        SocketAddr::V6(s) => (
            0x21,
            [
                s.ip().octets().to_vec(),
                std::net::Ipv6Addr::LOCALHOST.octets().to_vec(),
            ]
            .concat(),
        ),
    };
    block.extend_from_slice(&source.port().to_be_bytes());
    block.extend_from_slice(&443u16.to_be_bytes());
    for (kind, value) in tlvs {
        block.push(*kind);
        block.extend_from_slice(&(value.len() as u16).to_be_bytes());
        block.extend_from_slice(value);
    }
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[command, family]);
    h.extend_from_slice(&(block.len() as u16).to_be_bytes());
    h.extend_from_slice(&block);
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_v1_and_v2_name_the_client() {
    // The test client stands in for the balancer: its own address must be
    // trusted to send PROXY headers once trusted_proxies is set.
    let srv = Front::start(trusting(&["10.0.0.0/8", "127.0.0.1/32"]), true).await;
    let addr = srv.addr;
    let env_via = |preface: Vec<u8>, headers: &'static str| async move {
        let (resp, local) = get_via(addr, &preface, "/cgi-bin/env.pl", headers).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        (resp.env(), local)
    };
    let (env, _) = env_via(b"PROXY TCP4 203.0.113.7 10.0.0.1 4711 80\r\n".to_vec(), "").await;
    assert_eq!(var(&env, "REMOTE_ADDR"), Some("203.0.113.7"), "{env:?}");
    assert_eq!(var(&env, "REMOTE_PORT"), Some("4711"));
    assert_eq!(
        var(&env, "SERVER_PORT"),
        Some(&*srv.addr.port().to_string())
    );
    assert_eq!(var(&env, "HTTPS"), None);
    let v6 = "PROXY TCP6 2001:db8::7 2001:db8::1 4712 443\r\n";
    let (env, _) = env_via(v6.as_bytes().to_vec(), "").await;
    assert_eq!(var(&env, "REMOTE_ADDR"), Some("2001:db8::7"));
    assert_eq!(var(&env, "REMOTE_PORT"), Some("4712"));
    let (env, _) = env_via(
        v2_header(0x21, "203.0.113.8:4713".parse().unwrap(), &[]),
        "",
    )
    .await;
    assert_eq!(var(&env, "REMOTE_ADDR"), Some("203.0.113.8"));
    assert_eq!(var(&env, "REMOTE_PORT"), Some("4713"));
    let source = "[2001:db8::8]:4714".parse().unwrap();
    let (env, _) = env_via(v2_header(0x21, source, &[(0x04, b"")]), "").await;
    assert_eq!(var(&env, "REMOTE_ADDR"), Some("2001:db8::8"));
    // v2 LOCAL (the proxy's own check) and v1 UNKNOWN: the real peer.
    let local_cmd = v2_header(0x20, "203.0.113.9:1".parse().unwrap(), &[]);
    let (env, local) = env_via(local_cmd, "").await;
    assert_eq!(var(&env, "REMOTE_ADDR"), Some("127.0.0.1"));
    assert_eq!(var(&env, "REMOTE_PORT"), Some(&*local.port().to_string()));
    let (env, _) = env_via(b"PROXY UNKNOWN\r\n".to_vec(), "").await;
    assert_eq!(var(&env, "REMOTE_ADDR"), Some("127.0.0.1"));
    // The SSL TLV: the client spoke TLS to the proxy.
    let ssl = v2_header(
        0x21,
        "203.0.113.7:1".parse().unwrap(),
        &[(0x20, &[1, 0, 0, 0, 0])],
    );
    let (env, _) = env_via(ssl, "").await;
    assert_eq!(var(&env, "HTTPS"), Some("on"));
    assert_eq!(var(&env, "REQUEST_SCHEME"), Some("https"));
    // The PROXY source is the one `trusted_proxies` judges.
    let from_trusted = b"PROXY TCP4 10.9.8.7 10.0.0.1 1 80\r\n".to_vec();
    let (env, _) = env_via(from_trusted, "X-Forwarded-For: 203.0.113.50\r\n").await;
    assert_eq!(var(&env, "REMOTE_ADDR"), Some("203.0.113.50"));
    let from_client = b"PROXY TCP4 198.51.100.1 10.0.0.1 1 80\r\n".to_vec();
    let (env, _) = env_via(from_client, "X-Forwarded-For: 203.0.113.50\r\n").await;
    assert_eq!(var(&env, "REMOTE_ADDR"), Some("198.51.100.1"));
    srv.stop().await;
}

/// The header in pieces, and a keep-alive connection that starts on the
/// sendfile path and moves to hyper: the client stays the header's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxied_connection_keeps_its_client_across_requests() {
    let srv = Front::start(fixture_config(), true).await;
    let mut conn = Conn::open(srv.addr).await;
    let header = v2_header(0x21, "203.0.113.7:4711".parse().unwrap(), &[]);
    for piece in [&header[..5], &header[5..14], &header[14..]] {
        conn.send(piece).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resp = conn
        .request(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    assert_eq!(resp.status, 200);
    let resp = conn
        .request(b"GET /cgi-bin/env.pl HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await;
    let env = resp.env();
    assert_eq!(var(&env, "REMOTE_ADDR"), Some("203.0.113.7"), "{env:?}");
    assert_eq!(var(&env, "REMOTE_PORT"), Some("4711"));
    srv.stop().await;
}

/// What a connection that sends `bytes` gets back before it is closed
/// (within 5 s), and how long that took.
async fn answer_to(addr: SocketAddr, bytes: &[u8]) -> (Vec<u8>, Duration) {
    let started = std::time::Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the connection stayed open");
    (got, started.elapsed())
}

/// The built binary serving the static fixtures on one PROXY protocol
/// listener, with `settings` (top-level keys) in its config file.
fn proxy_listener(settings: &str) -> (BinServer, ConfFile) {
    let conf = ConfFile::new(&format!(
        "{settings}[[listen]]\naddr = \"127.0.0.1:0\"\nproxy_protocol = true\n"
    ));
    // --bind/--port replace the address; the listener keeps its PROXY
    // protocol.
    let cmd = BinServer::command_in(&fixtures().join("static"), &["--config", conf.arg()]);
    (BinServer::start_cmd(cmd), conf)
}

/// On a PROXY protocol listener a connection without a valid header is
/// closed unanswered, and the log says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_malformed_proxy_header_closes_the_connection() {
    let (srv, _conf) = proxy_listener("header_read_timeout = 1\n");
    let plain = b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut oversized = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff".to_vec();
    oversized.extend_from_slice(&[0; 64]);
    let cases: &[(&[u8], &str)] = &[
        (plain, "no PROXY protocol header"),
        (
            b"PROXY TCP4 bogus 10.0.0.1 1 2\r\nGET / HTTP/1.1\r\n\r\n",
            "malformed v1 header",
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\nGET / HTTP/1.1\r\n\r\n",
            "bare LF",
        ),
        (&oversized, "at most 4096"),
    ];
    for (bytes, why) in cases {
        let (got, took) = answer_to(srv.addr, bytes).await;
        assert!(
            got.is_empty(),
            "{why}: answered {:?}",
            String::from_utf8_lossy(&got)
        );
        assert!(took < Duration::from_millis(900), "{why}: took {took:?}");
        let said = eventually(Duration::from_secs(3), || srv.stderr_text().contains(why)).await;
        assert!(said, "no log line with {why:?}:\n{}", srv.stderr_text());
    }
    // Silence, or half a header: closed at the header timeout.
    for bytes in [&b""[..], b"PROXY TCP4 1.2.3.4 "] {
        let (got, took) = answer_to(srv.addr, bytes).await;
        assert!(got.is_empty());
        assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    }
    assert!(srv
        .stderr_text()
        .contains("no whole PROXY protocol header in time"));
    // A valid header on the same listener is served.
    let (resp, _) = get_via(
        srv.addr,
        b"PROXY TCP4 203.0.113.7 10.0.0.1 1 80\r\n",
        "/hello.txt",
        "",
    )
    .await;
    assert_eq!(resp.status, 200);
    let line = srv.access_line("GET /hello.txt").await;
    assert!(line.starts_with("203.0.113.7 - "), "{line}");
}

/// With `trusted_proxies` set, a PROXY header from any other peer is
/// refused: whoever reaches the port could otherwise name any client (a
/// trusted network, 127.0.0.1 for the status page).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_header_from_an_untrusted_peer_is_refused() {
    let (srv, _conf) = proxy_listener("trusted_proxies = [\"10.0.0.0/8\"]\n");
    let spoof = b"PROXY TCP4 10.1.2.3 10.0.0.1 1 80\r\nGET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n";
    let (got, _) = answer_to(srv.addr, spoof).await;
    assert!(
        got.is_empty(),
        "answered {:?}",
        String::from_utf8_lossy(&got)
    );
    let why = "peer not in trusted_proxies";
    let said = eventually(Duration::from_secs(3), || srv.stderr_text().contains(why)).await;
    assert!(said, "no log line with {why:?}:\n{}", srv.stderr_text());
}

/// A TCP relay standing in for HAProxy in TCP mode (`send-proxy-v2`):
/// each client connection goes to `to`, behind a PROXY v2 header naming
/// `client` instead of the relay.
async fn relay(to: SocketAddr, client: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut outbound = TcpStream::connect(to).await.unwrap();
                outbound
                    .write_all(&v2_header(0x21, client, &[]))
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    addr
}

/// The header comes before the TLS ClientHello; HTTP/2 and HTTP/1.1 alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_works_in_front_of_tls() {
    let (_dir, cert, key) = self_signed_cert();
    let mut config = fixture_config();
    config.tls = Some(cgihost::config::TlsFiles { cert, key });
    let srv = Front::start(config, true).await;
    let front = relay(srv.addr, "203.0.113.7:4711".parse().unwrap()).await;
    for version in ["--http2", "--http1.1"] {
        let url = format!("https://127.0.0.1:{}/cgi-bin/env.pl", front.port());
        let out = curl(&["-k", version, &url]).await;
        assert!(out.ok, "{}", out.stderr);
        let env: std::collections::BTreeMap<String, String> = String::from_utf8_lossy(&out.body)
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.into(), v.into())))
            .collect();
        assert_eq!(
            var(&env, "REMOTE_ADDR"),
            Some("203.0.113.7"),
            "{version}: {env:?}"
        );
        assert_eq!(var(&env, "REMOTE_PORT"), Some("4711"));
        assert_eq!(var(&env, "HTTPS"), Some("on"));
    }
    // curl's own PROXY v1 header (the real addresses) before TLS.
    let url = format!("https://127.0.0.1:{}/hello.txt", srv.addr.port());
    let out = curl(&["-k", "--haproxy-protocol", &url]).await;
    assert!(
        out.ok && out.info.ends_with("200"),
        "{} {}",
        out.info,
        out.stderr
    );
    // Without the header the TLS handshake never starts.
    let out = curl(&["-k", "--max-time", "5", &url]).await;
    assert!(!out.ok, "served without a PROXY header");
    srv.stop().await;
}

/// `health_path` answers 200 while serving, before any rule; from SIGTERM
/// it answers 503 while everything else is still served for
/// `shutdown_delay`; then the listener closes and the request in flight
/// finishes the drain. Health checks write no access log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_from_sigterm_through_the_drain() {
    let conf = ConfFile::new(
        "health_path = \"/healthz\"\nshutdown_delay = 3\nshutdown_grace = 20\n\
         [[access]]\nmatch = \"/healthz\"\ndeny = true\n",
    );
    let cmd = BinServer::command_in(&fixtures().join("static"), &["--config", conf.arg()]);
    let mut srv = BinServer::start_cmd(cmd);
    let addr = srv.addr;
    let (ok, _) = get_via(addr, b"", "/healthz", "").await;
    assert_eq!((ok.status, ok.text().as_str()), (200, "ok\n"));
    let head = Conn::open(addr)
        .await
        .request(b"HEAD /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(head.status, 200);
    let options = request(addr, "OPTIONS", "/healthz", "", b"").await;
    assert_eq!(options.status, 200);
    // A request in flight keeps the drain open past the delay.
    let slow = tokio::spawn(get(addr, "/cgi-bin/slow.sh?6"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    srv.signal(libc::SIGTERM);
    let delaying = eventually(Duration::from_secs(2), || {
        srv.stderr_text().contains("shutdown_delay")
    })
    .await;
    assert!(delaying, "{}", srv.stderr_text());
    let (draining, _) = get_via(addr, b"", "/healthz", "").await;
    assert_eq!(
        (draining.status, draining.text().as_str()),
        (503, "draining\n")
    );
    // Everything else is still served until the delay is over.
    assert_eq!(
        get_via(addr, b"", "/hello.txt?during", "").await.0.status,
        200
    );
    let closed = eventually(Duration::from_secs(6), || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err()
    })
    .await;
    assert!(closed, "the listener stayed open");
    assert!(
        !slow.is_finished(),
        "the slow request ended before the listener closed"
    );
    let done = slow.await.unwrap();
    assert_eq!((done.status, done.text().as_str()), (200, "slept 6\n"));
    assert_eq!(srv.wait_exit(Duration::from_secs(20)), Some(0));
    let log = srv.stdout_text();
    assert!(log.contains("/hello.txt?during"), "{log}");
    assert!(!log.contains("/healthz"), "{log}");
}

/// `access_log = PATH`: lines go to the file, not stdout; logrotate's
/// rename then SIGUSR1 sends the next lines to a new file while the
/// renamed one keeps the older; a reload with another path switches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_file_is_reopened_on_sigusr1() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let conf = ConfFile::new(&format!("access_log = \"{}\"\n", log.display()));
    let cmd = BinServer::command_in(&fixtures().join("static"), &["--config", conf.arg()]);
    let srv = BinServer::start_cmd(cmd);
    let has = |path: &std::path::Path, needle: &str| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .contains(needle)
    };
    let addr = srv.addr;
    let hit = |q: &'static str| async move {
        assert_eq!(get(addr, format!("/hello.txt?{q}")).await.status, 200);
    };
    hit("one").await;
    assert!(eventually(Duration::from_secs(5), || has(&log, "?one")).await);
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & !0o640, 0, "mode {mode:o}");
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    // Before the signal the renamed file still takes the lines.
    hit("two").await;
    assert!(eventually(Duration::from_secs(5), || has(&rotated, "?two")).await);
    srv.signal(libc::SIGUSR1);
    let reopened = eventually(Duration::from_secs(5), || {
        srv.stderr_text().contains("reopened the access log")
    })
    .await;
    assert!(reopened, "{}", srv.stderr_text());
    hit("three").await;
    assert!(eventually(Duration::from_secs(5), || has(&log, "?three")).await);
    let old = std::fs::read_to_string(&rotated).unwrap();
    let new = std::fs::read_to_string(&log).unwrap();
    assert_eq!(old.lines().count(), 2, "{old}");
    assert!(
        old.contains("?one") && old.contains("?two") && !old.contains("?three"),
        "{old}"
    );
    assert_eq!(new.lines().count(), 1, "{new}");
    // A reload that names another file switches to it.
    let other = dir.path().join("other.log");
    conf.rewrite(&format!("access_log = \"{}\"\n", other.display()));
    srv.signal(libc::SIGHUP);
    let switched = eventually(Duration::from_secs(5), || {
        srv.stderr_text().contains("the access log goes to")
    })
    .await;
    assert!(switched, "{}", srv.stderr_text());
    hit("four").await;
    assert!(eventually(Duration::from_secs(5), || has(&other, "?four")).await);
    assert!(!has(&log, "?four"));
    // stdout had none of it.
    assert!(
        !srv.stdout_text().contains("hello.txt"),
        "{}",
        srv.stdout_text()
    );
}

/// A log file that cannot be written is said once, and serving goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_file_write_errors_are_logged_once() {
    let conf = ConfFile::new("access_log = \"/dev/full\"\n");
    let cmd = BinServer::command_in(&fixtures().join("static"), &["--config", conf.arg()]);
    let srv = BinServer::start_cmd(cmd);
    for _ in 0..5 {
        assert_eq!(get(srv.addr, "/hello.txt").await.status, 200);
    }
    let error = "access log: writing to /dev/full failed";
    let said = eventually(Duration::from_secs(10), || {
        srv.stderr_text().contains(error)
    })
    .await;
    assert!(said, "{}", srv.stderr_text());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(srv.addr, "/hello.txt").await.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        srv.stderr_text().matches(error).count(),
        1,
        "{}",
        srv.stderr_text()
    );
}

#[test]
fn bad_load_balancer_keys_are_named() {
    let cases = [
        ("trusted_proxies = [\"nonsense\"]\n", "trusted_proxies"),
        ("trusted_proxies = \"10.0.0.0/8\"\n", "trusted_proxies"),
        ("health_path = \"healthz\"\n", "health_path"),
        ("health_path = \"/\"\n", "health_path"),
        (
            "status_path = \"/st\"\nhealth_path = \"/st/metrics\"\n",
            "health_path",
        ),
        ("shutdown_delay = -1\n", "shutdown_delay"),
        ("access_log = \"\"\n", "access_log"),
        ("access_log = 3\n", "access_log"),
        ("access_log = \"/tmp\"\n", "access_log"),
        (
            "[[listen]]\naddr = \"127.0.0.1:1\"\nproxy_protocol = \"yes\"\n",
            "proxy_protocol",
        ),
    ];
    for (toml, key) in cases {
        let conf = ConfFile::new(toml);
        let out = std::process::Command::new(bin_path())
            .args(["--check-config", "--root"])
            .arg(fixtures().join("static"))
            .args(["--config", conf.arg()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{toml}: {err}");
        assert!(err.contains(key), "{toml}: {err}");
    }
    let good = ConfFile::new(
        "trusted_proxies = [\"10.0.0.0/8\", \"::1\", \"127.0.0.1/32\"]\nhealth_path = \"/healthz\"\n\
         shutdown_delay = 0\naccess_log = \"/tmp/cgihost-check.log\"\n\
         [[listen]]\naddr = \"127.0.0.1:1\"\nproxy_protocol = true\n",
    );
    let out = std::process::Command::new(bin_path())
        .args(["--check-config", "--root"])
        .arg(fixtures().join("static"))
        .args(["--config", good.arg()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
