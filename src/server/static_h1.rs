//! HTTP/1.x on cleartext connections without hyper, for as long as the
//! client asks only for static files: so that files go out with sendfile(2)
//! (hyper's body model takes every byte through user space, twice) and a
//! small file costs a parse, a lookup and one write.
//!
//! A request is served here when it is a GET or HEAD, HTTP/1.0 or 1.1,
//! with an origin-form target, no body (no `Transfer-Encoding`, no
//! `Content-Length` but 0), no `Expect` or `Upgrade`, and a path the router
//! gives to the static files. Anything else (a CGI or FastCGI request, a
//! POST, an HTTP/2 preface, a head that does not parse or is too large)
//! hands the connection, with every byte read so far, to hyper, which
//! serves it from then on; so malformed requests get hyper's 400 or 431.
//!
//! The limits are those of the hyper side: the first head must arrive
//! within `header_read_timeout` of accept, later ones within
//! `keepalive_timeout` of the previous response (and then within
//! `header_read_timeout` of their first byte); a client that takes no bytes
//! for `send_timeout` is dropped; at shutdown an idle connection closes at
//! once and a busy one after its response.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::connection::{stopped, Activity, InFlight};
use super::send_file::{send_file, write_all};
use super::{answer_static, host_problem, FrontEnd};
use crate::app::Live;
use crate::body::Body;
use crate::conn::ConnInfo;
use crate::error::Error;
use crate::log::AccessRecord;
use crate::router;
use crate::static_files::{read_append, FileRange};

/// Header lines one request may have here; more go to hyper (which takes
/// up to 100).
const MAX_HEADERS: usize = 64;

/// Response bytes gathered before a write; a larger body chunk is written
/// on its own. A connection keeps buffers of at most twice this between
/// requests.
const GATHER: usize = 16 * 1024;

/// A file range up to this size is read behind the response head and sent
/// in the same write; larger ones go with sendfile.
const INLINE_FILE: u64 = GATHER as u64 - 1024;

/// Serve static requests on `stream` until the connection ends (None) or
/// a request for hyper arrives: then the stream and the bytes already read
/// from it are returned, for hyper to serve (those bytes first).
pub(super) async fn serve(
    stream: TcpStream,
    conn: &ConnInfo,
    live: &Live,
    front: &FrontEnd,
    activity: &Arc<Activity>,
    accepted: Instant,
) -> Option<(TcpStream, BytesMut)> {
    let mut input = BytesMut::with_capacity(4096);
    let mut out = BytesMut::with_capacity(4096);
    let mut stop = front.stop.clone();
    let peer = conn.peer;
    // When the head being read must be complete. The timer is armed for
    // this or an earlier time and re-armed when it fires early, so a
    // deadline that moves later (each keep-alive request) does not touch
    // the timer wheel; one that moves earlier re-arms it.
    let mut deadline = accepted + front.header_read_timeout;
    let timer = tokio::time::sleep_until(deadline);
    tokio::pin!(timer);
    let mut first = true;
    loop {
        let (req, head_len) = loop {
            if !input.is_empty() {
                match parse_head(&input) {
                    Head::Complete(_, len) if len > front.max_header_size => {
                        return Some((stream, input)); // hyper's 431
                    }
                    Head::Complete(req, len) => break (req, len),
                    Head::Partial if input.len() < front.max_header_size => {}
                    Head::Partial | Head::NotOurs => return Some((stream, input)),
                }
            }
            let was_empty = input.is_empty();
            if input.capacity() - input.len() < 1024 {
                input.reserve(4096);
            }
            match stream.try_read_buf(&mut input) {
                Ok(0) => return None,
                Ok(_) if was_empty && !first => {
                    // Keep-alive waits for the first byte; the rest of the
                    // head gets the header timeout.
                    deadline = Instant::now() + front.header_read_timeout;
                    if deadline < timer.deadline() {
                        timer.as_mut().reset(deadline);
                    }
                    continue;
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!(%peer, "read failed: {e}");
                    return None;
                }
            }
            tokio::select! {
                ready = stream.readable() => if ready.is_err() { return None },
                _ = &mut timer => {
                    if Instant::now() < deadline {
                        timer.as_mut().reset(deadline);
                        continue;
                    }
                    tracing::debug!(%peer, "closing idle connection");
                    return None;
                }
                _ = stopped(&mut stop) => return None,
            }
        };
        // Reads and writes here bypass tokio's cooperative budget (they
        // are `try_` calls): yield now and then, or a client whose next
        // request is always ready would starve the worker's other tasks.
        tokio::task::consume_budget().await;
        let app = live.current();
        let Some(answer) = router::static_path(&app, &req, peer.ip()) else {
            return Some((stream, input));
        };
        let busy = || InFlight::start(activity);
        let Some((resp, file, mut record)) = answer_static(app, &req, answer, conn, busy) else {
            return Some((stream, input));
        };
        input.advance(head_len);
        first = false;
        let ex = Exchange {
            version: req.version(),
            head_only: req.method() == Method::HEAD,
            keep_alive: wants_keep_alive(&req) && !*stop.borrow(),
        };
        // Body bytes the client was sent (the access log's count).
        let mut sent = 0;
        let result = respond(
            &stream,
            &mut out,
            (resp, file),
            &ex,
            front.send_timeout,
            &mut record,
            &mut sent,
        )
        .await;
        record.finish(sent, result.is_ok());
        match result {
            Ok(true) => {}
            Ok(false) => {
                let mut stream = stream;
                let _ = stream.shutdown().await;
                linger(&stream, &mut stop).await;
                return None;
            }
            Err(e) => {
                match e.kind() {
                    io::ErrorKind::TimedOut => tracing::info!(%peer, "{e}; closing"),
                    io::ErrorKind::UnexpectedEof => {
                        tracing::warn!(%peer, "response cut short: {e}")
                    }
                    _ => tracing::debug!(%peer, "response not sent: {e}"),
                }
                return None;
            }
        }
        // Blank lines between requests are allowed (RFC 9112 §2.2) and
        // are not the start of a head.
        input.advance(blank_lines(&input));
        // An idle connection keeps small buffers, whatever it needed before.
        if input.is_empty() && input.capacity() > 2 * GATHER {
            input = BytesMut::with_capacity(4096);
        }
        if out.capacity() > 2 * GATHER {
            out = BytesMut::with_capacity(4096);
        }
        // A pipelined head has begun already: it gets the header timeout.
        deadline = Instant::now()
            + if input.is_empty() {
                front.keepalive_timeout
            } else {
                front.header_read_timeout
            };
        if deadline < timer.deadline() {
            timer.as_mut().reset(deadline);
        }
    }
}

/// The length of the empty lines (CRLF or LF) `input` starts with. A CR
/// not followed by LF is not one: it stays, and makes the next head the
/// 400 it is on the hyper path (httparse skips the same empty lines).
/// A CR at the very end may be the start of a CRLF: it stays too.
fn blank_lines(input: &[u8]) -> usize {
    let mut n = 0;
    loop {
        match input.get(n..) {
            Some([b'\r', b'\n', ..]) => n += 2,
            Some([b'\n', ..]) => n += 1,
            _ => return n,
        }
    }
}

/// A lingering close, as nginx's: after our FIN, read and drop what the
/// client still sends until it closes too, pauses for `LINGER_PAUSE`, or
/// `LINGER_MAX` has passed. Closing a socket with unread bytes in it sends
/// a reset, and a reset makes the client's kernel discard the end of the
/// response it has not read yet (a pipelined request behind a
/// `Connection: close` one is enough).
async fn linger(stream: &TcpStream, stop: &mut tokio::sync::watch::Receiver<bool>) {
    const LINGER_PAUSE: Duration = Duration::from_secs(5);
    const LINGER_MAX: Duration = Duration::from_secs(30);
    let give_up = Instant::now() + LINGER_MAX;
    let mut scratch = [0u8; 4096];
    loop {
        match stream.try_read(&mut scratch) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
        let pause_over = (Instant::now() + LINGER_PAUSE).min(give_up);
        tokio::select! {
            ready = stream.readable() => if ready.is_err() { return },
            _ = tokio::time::sleep_until(pause_over) => return,
            _ = stopped(stop) => return,
        }
    }
}

// Returned once per request and never stored: boxing the request would
// only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Head {
    Complete(Request<()>, usize),
    Partial,
    /// Not a request this path takes: hyper will answer it.
    NotOurs,
}

fn parse_head(input: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(input) {
        Ok(httparse::Status::Complete(len)) => {
            to_request(&parsed).map_or(Head::NotOurs, |req| Head::Complete(req, len))
        }
        Ok(httparse::Status::Partial) => Head::Partial,
        Err(_) => Head::NotOurs,
    }
}

/// The request, if it is a bodiless GET or HEAD this path may answer.
fn to_request(parsed: &httparse::Request) -> Option<Request<()>> {
    let method = match parsed.method? {
        "GET" => Method::GET,
        "HEAD" => Method::HEAD,
        _ => return None,
    };
    let version = match parsed.version? {
        1 => Version::HTTP_11,
        0 => Version::HTTP_10,
        _ => return None,
    };
    let target = parsed.path?;
    if !target.starts_with('/') {
        return None;
    }
    let uri = Uri::try_from(target).ok()?;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        headers.append(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .any(|v| v != "0");
    if has_body || headers.contains_key(header::EXPECT) || headers.contains_key(header::UPGRADE) {
        return None;
    }
    // No Host, two, or a bad one: hyper's side answers 400.
    if host_problem(version, &headers).is_some() {
        return None;
    }
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    Some(req)
}

/// HTTP/1.1 keeps the connection unless told `close`; HTTP/1.0 only when
/// asked for `keep-alive` and not told `close` (as hyper decides).
fn wants_keep_alive(req: &Request<()>) -> bool {
    let has = |token: &str| {
        req.headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    match req.version() {
        Version::HTTP_11 => !has("close"),
        _ => has("keep-alive") && !has("close"),
    }
}

/// What the request asked of its response.
struct Exchange {
    version: Version,
    head_only: bool,
    keep_alive: bool,
}

/// How the response's body is framed on the wire.
struct Framing {
    bodiless: bool,
    /// `Content-Length`, when known.
    length: Option<u64>,
    chunked: bool,
    keep_alive: bool,
}

/// Write `resp` (its status and byte count go to `record`); Ok(keep the
/// connection open?). An error means the response was cut short and the
/// connection must go.
async fn respond(
    stream: &TcpStream,
    out: &mut BytesMut,
    (mut resp, mut file): (Response<Body>, Option<FileRange>),
    ex: &Exchange,
    send_timeout: Duration,
    record: &mut AccessRecord,
    sent: &mut u64,
) -> io::Result<bool> {
    let framing = loop {
        let framing = write_head(out, &resp, ex, file.as_ref());
        record.status = resp.status().as_u16();
        let Some(small) = file
            .as_ref()
            .filter(|f| !framing.bodiless && f.len <= INLINE_FILE)
        else {
            break framing;
        };
        // Read behind the head, for one write. Nothing is sent yet, so a
        // failed read can still become an error page.
        match read_append(&small.file, small.offset, small.len as usize, out) {
            Ok(()) => break framing,
            Err(e) => {
                resp = Error::Internal(format!("reading a static file: {e}")).into_response();
                file = None;
            }
        }
    };
    if framing.bodiless {
        write_all(stream, out, false, send_timeout).await?;
        return Ok(framing.keep_alive);
    }
    if let Some(file) = file {
        if file.len <= INLINE_FILE {
            write_all(stream, out, false, send_timeout).await?;
            *sent = file.len;
        } else {
            write_all(stream, out, true, send_timeout).await?;
            send_file(stream, &file, send_timeout, sent).await?;
        }
        return Ok(framing.keep_alive);
    }
    let chunked = framing.chunked;
    let body = resp.body_mut();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // trailers: none of our handlers send them here
        };
        if data.is_empty() {
            continue;
        }
        *sent += data.len() as u64;
        if chunked {
            let _ = write!(out, "{:x}\r\n", data.len());
        }
        if out.len() + data.len() <= GATHER {
            out.extend_from_slice(&data);
        } else {
            write_all(stream, out, true, send_timeout).await?;
            out.clear();
            write_all(stream, &data, chunked, send_timeout).await?;
        }
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    write_all(stream, out, false, send_timeout).await?;
    if framing.length.is_some_and(|n| n != *sent) {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "body length differs from Content-Length",
        ));
    }
    Ok(framing.keep_alive)
}

/// Put the status line and headers of `resp` in `out` (cleared first),
/// framing added as hyper would.
fn write_head(
    out: &mut BytesMut,
    resp: &Response<Body>,
    ex: &Exchange,
    file: Option<&FileRange>,
) -> Framing {
    let status = resp.status();
    let never_a_body = status.is_informational()
        || status == http::StatusCode::NO_CONTENT
        || status == http::StatusCode::NOT_MODIFIED;
    let bodiless = ex.head_only || never_a_body;
    let declared = resp.headers().contains_key(header::CONTENT_LENGTH);
    let length = match file {
        Some(f) => Some(f.len),
        None => resp.body().size_hint().exact(),
    };
    let chunked = !bodiless && !declared && length.is_none() && ex.version == Version::HTTP_11;
    // Without a length or chunking, the end of the body is the close.
    let keep_alive = ex.keep_alive && (bodiless || declared || length.is_some() || chunked);

    out.clear();
    out.extend_from_slice(match ex.version {
        Version::HTTP_10 => b"HTTP/1.0 ",
        _ => b"HTTP/1.1 ",
    });
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in resp.headers() {
        push_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    // A HEAD response says how long the GET body would be, as hyper's
    // does (but not a length of 0, which could be a body not made).
    if !declared && !never_a_body {
        match length {
            Some(n) if !ex.head_only || n > 0 => {
                let _ = write!(out, "content-length: {n}\r\n");
            }
            None if chunked => push_header(out, b"transfer-encoding", b"chunked"),
            _ => {}
        }
    }
    if !keep_alive {
        push_header(out, b"connection", b"close");
    } else if ex.version == Version::HTTP_10 {
        push_header(out, b"connection", b"keep-alive");
    }
    push_date(out);
    out.extend_from_slice(b"\r\n");
    Framing {
        bodiless,
        length,
        chunked,
        keep_alive,
    }
}

fn push_header(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

thread_local! {
    /// This second's `Date` header line, remade when the second changes.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

fn push_date(out: &mut BytesMut) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    DATE.with_borrow_mut(|(at, line)| {
        if *at != second {
            *at = second;
            *line = format!("date: {}\r\n", httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(line.as_bytes());
    });
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(raw: &str) -> Option<Request<()>> {
        match parse_head(raw.as_bytes()) {
            Head::Complete(req, len) => {
                assert_eq!(len, raw.find("\r\n\r\n").unwrap() + 4);
                Some(req)
            }
            _ => None,
        }
    }

    #[test]
    fn takes_only_bodiless_get_and_head() {
        let ours = [
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            "HEAD /a.txt HTTP/1.0\r\n\r\n",
            "GET /a?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        ];
        for raw in ours {
            assert!(parsed(raw).is_some(), "{raw:?}");
        }
        let theirs = [
            "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n",
        ];
        for raw in theirs {
            assert!(parsed(raw).is_none(), "{raw:?}");
        }
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\nHost"),
            Head::Partial
        ));
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        assert!(parsed(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")).is_none());
    }

    #[test]
    fn only_crlf_and_lf_are_empty_lines() {
        for (input, n) in [
            (&b"\r\n\nGET"[..], 3),
            (b"\n\r\n\r\n", 5),
            (b"\rGET", 0),
            (b"\r\n\rGET", 2),
            (b"\r\r\n", 0),
            (b"\r\n\r", 2),
            (b" \r\n", 0),
            (b"", 0),
        ] {
            assert_eq!(blank_lines(input), n, "{input:?}");
        }
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        let table = [
            ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                false,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: TE, Close\r\n\r\n",
                false,
            ),
            ("GET / HTTP/1.0\r\n\r\n", false),
            ("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
        ];
        for (raw, want) in table {
            assert_eq!(wants_keep_alive(&parsed(raw).unwrap()), want, "{raw:?}");
        }
    }
}
