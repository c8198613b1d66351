//! The connection timer (`serve`'s idle, keep-alive, send and shutdown
//! decisions) in paused time: hyper serves a real application over an
//! in-memory pipe, the clock only moves when every task waits, and each
//! test checks *when* the connection ends, to the millisecond, without
//! sleeping for real.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::*;
use crate::app::App;
use crate::config::Config;

const HEADER_READ: Duration = Duration::from_secs(10);
const KEEPALIVE: Duration = Duration::from_secs(5);
const SEND: Duration = Duration::from_secs(7);
/// The file a slow reader asks for (larger than the pipe; one chunk of
/// `static_files::file_body`).
const BIG: usize = 256 * 1024;
/// A file of several chunks: its body is still being read while the
/// first ones wait to be sent.
const HUGE: usize = 1024 * 1024;

/// One connection being served.
struct Rig {
    client: DuplexStream,
    served: JoinHandle<()>,
    stop: watch::Sender<bool>,
    /// When the connection was accepted.
    start: Instant,
    _dir: tempfile::TempDir,
}

/// Serve one connection whose pipe holds `pipe` bytes each way.
async fn rig(pipe: usize) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(dir.path().join("cgi-bin")).unwrap();
    std::fs::write(root.join("a.txt"), "hello\n").unwrap();
    std::fs::write(root.join("big.bin"), vec![b'x'; BIG]).unwrap();
    std::fs::write(root.join("huge.bin"), vec![b'x'; HUGE]).unwrap();
    let config = Config {
        root,
        cgi_dir: dir.path().join("cgi-bin"),
        header_read_timeout: HEADER_READ,
        keepalive_timeout: KEEPALIVE,
        send_timeout: SEND,
        access_log: false,
        ..Config::default()
    };
    let app = App::new(config).unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let front = Arc::new(FrontEnd::new(&app, stop_rx));
    let live = Live::new(app, None);
    let (client, server) = tokio::io::duplex(pipe);
    let start = Instant::now();
    let activity = Arc::new(Activity::new(start));
    let io = Tracked::new(server, BytesMut::new(), &activity);
    let addr: SocketAddr = "127.0.0.1:8992".parse().unwrap();
    let conn = ConnInfo::direct("127.0.0.1:40000".parse().unwrap(), addr, false);
    let served = tokio::spawn(async move {
        serve(TokioIo::new(io), conn, live, &front, activity).await;
    });
    Rig {
        client,
        served,
        stop,
        start,
        _dir: dir,
    }
}

impl Rig {
    /// Send a request and read its whole response (a `Content-Length`
    /// one); returns the body length.
    async fn get(&mut self, path: &str) -> usize {
        let req = format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
        self.client.write_all(req.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8];
            assert_eq!(
                self.client.read(&mut byte).await.unwrap(),
                1,
                "closed in the head"
            );
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .expect("a length")
            .parse()
            .unwrap();
        let mut body = vec![0u8; length];
        self.client.read_exact(&mut body).await.unwrap();
        length
    }

    /// Wait until the server lets go of the connection; when, after the
    /// accept.
    async fn closed(mut self) -> Duration {
        (&mut self.served).await.unwrap();
        let at = self.start.elapsed();
        // The client sees the end (anything still buffered, then EOF).
        let mut rest = Vec::new();
        self.client.read_to_end(&mut rest).await.unwrap();
        at
    }
}

fn near(got: Duration, want: Duration) -> bool {
    // Milliseconds are what the timer keeps.
    got.abs_diff(want) <= Duration::from_millis(2)
}

#[tokio::test(start_paused = true)]
async fn a_silent_connection_closes_at_the_header_timeout() {
    let rig = rig(4096).await;
    let at = rig.closed().await;
    assert!(near(at, HEADER_READ), "{at:?}");
}

/// Bytes are not activity: a head trickling in a byte a second is cut off
/// at the header timeout plus the close grace.
#[tokio::test(start_paused = true)]
async fn a_trickled_head_does_not_keep_the_connection() {
    let mut rig = rig(4096).await;
    // The client moves to the trickling task (a closed pipe stays).
    let mut client = std::mem::replace(&mut rig.client, tokio::io::duplex(1).0);
    let trickle = tokio::spawn(async move {
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if client.write_all(b"X").await.is_err() {
                return;
            }
        }
    });
    let at = rig.closed().await;
    trickle.abort();
    assert!(near(at, HEADER_READ + IDLE_CLOSE_GRACE), "{at:?}");
}

/// Keep-alive counts from the end of the last response, each response
/// starting it again.
#[tokio::test(start_paused = true)]
async fn keep_alive_runs_from_the_end_of_the_last_response() {
    let mut rig = rig(64 * 1024).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rig.get("/a.txt").await, 6);
    tokio::time::sleep(KEEPALIVE - Duration::from_millis(100)).await;
    assert_eq!(rig.get("/a.txt").await, 6);
    let last = rig.start.elapsed();
    let at = rig.closed().await;
    assert!(
        near(at, last + KEEPALIVE),
        "{at:?}, last response at {last:?}"
    );
}

/// A client that stops reading is dropped once it has taken nothing for
/// the send timeout (noticed at the next check, a few seconds at most),
/// though its response is still in flight.
#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_dropped_after_the_send_timeout() {
    for file in ["/huge.bin", "/big.bin"] {
        let mut rig = rig(8 * 1024).await;
        let req = format!("GET {file} HTTP/1.1\r\nHost: a\r\n\r\n");
        rig.client.write_all(req.as_bytes()).await.unwrap();
        let at = rig.closed().await;
        let check_every = KEEPALIVE.min(HEADER_READ);
        assert!(at >= SEND && at <= SEND + check_every, "{file}: {at:?}");
    }
}

/// A slow reader that keeps taking bytes is never cut off, however long
/// the response takes (here far past every timeout).
///
/// The reads are 1 ms off the timer's whole seconds: a read at the very
/// instant of a check makes the write that blocks next "blocked for 0 s",
/// which the closing check takes for "not blocked" (see the report).
/// Keep-alive counts from when hyper took the body's last chunk, not from
/// when the client had it, so after a long last chunk the connection may
/// close as soon as the response is out.
#[tokio::test(start_paused = true)]
async fn a_slow_reader_that_keeps_reading_is_served_to_the_end() {
    let mut rig = rig(8 * 1024).await;
    let req = b"GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n";
    rig.client.write_all(req).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 4096];
    loop {
        tokio::time::sleep(Duration::from_millis(2001)).await;
        let n = rig.client.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "closed after {} bytes at {:?}",
            got.len(),
            rig.start.elapsed()
        );
        got.extend_from_slice(&chunk[..n]);
        let head_end = got.windows(4).position(|w| w == b"\r\n\r\n");
        if head_end.is_some_and(|e| got.len() - (e + 4) == BIG) {
            break;
        }
    }
    let done = rig.start.elapsed();
    assert!(done > SEND * 4, "the response took {done:?}");
    let at = rig.closed().await;
    assert!(
        at >= done && at <= done + KEEPALIVE,
        "{at:?}, response done at {done:?}"
    );
}

/// At shutdown an idle keep-alive connection closes at once.
#[tokio::test(start_paused = true)]
async fn shutdown_closes_an_idle_connection_at_once() {
    let mut rig = rig(64 * 1024).await;
    assert_eq!(rig.get("/a.txt").await, 6);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let asked = rig.start.elapsed();
    rig.stop.send(true).unwrap();
    let at = rig.closed().await;
    assert!(near(at, asked), "{at:?}, shutdown at {asked:?}");
}
