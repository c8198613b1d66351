//! Writing one response on the sendfile path, framed as hyper frames
//! it: the head (status line, headers, `Date`, `Content-Length` or chunked
//! or close-delimited), a small file read behind the head into the same
//! write, a larger one with sendfile, other bodies gathered into writes.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use http::{header, Response, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::net::TcpStream;

use super::super::send_file::{send_file, write_all};
use super::{GATHER, INLINE_FILE};
use crate::body::Body;
use crate::error::Error;
use crate::static_files::{read_append, FileRange};

/// What the request asked of its response.
pub(super) struct Terms {
    pub(super) version: Version,
    pub(super) head_only: bool,
    pub(super) keep_alive: bool,
}

/// How the response's body is framed on the wire.
struct Framing {
    bodiless: bool,
    /// `Content-Length`, when known.
    length: Option<u64>,
    chunked: bool,
    keep_alive: bool,
}

/// Write `resp` (its status goes to `status`, its body byte count to
/// `sent`); Ok(keep the connection open?). An error means the response
/// was cut short and the connection must go.
pub(super) async fn respond(
    stream: &TcpStream,
    out: &mut BytesMut,
    (mut resp, mut file): (Response<Body>, Option<FileRange>),
    ex: &Terms,
    send_timeout: Duration,
    status: &mut u16,
    sent: &mut u64,
) -> io::Result<bool> {
    let framing = loop {
        let framing = write_head(out, &resp, ex, file.as_ref());
        *status = resp.status().as_u16();
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
    while let Some(frame) = next_frame(body, stream, out, send_timeout).await? {
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

/// The body's next frame. When it is not ready, what is gathered in `out`
/// (the head, whole chunks) is written first, as hyper does: a program
/// that streams (server-sent events, a progress page) is seen as it
/// writes, not when 16 KiB have gathered or it ends.
async fn next_frame(
    body: &mut Body,
    stream: &TcpStream,
    out: &mut BytesMut,
    send_timeout: Duration,
) -> io::Result<Option<Result<http_body::Frame<bytes::Bytes>, io::Error>>> {
    let polled = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await;
    if let Poll::Ready(frame) = polled {
        return Ok(frame);
    }
    if !out.is_empty() {
        write_all(stream, out, false, send_timeout).await?;
        out.clear();
    }
    Ok(body.frame().await)
}

/// Put the status line and headers of `resp` in `out` (cleared first),
/// framing added as hyper would.
fn write_head(
    out: &mut BytesMut,
    resp: &Response<Body>,
    ex: &Terms,
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
    // The response's own `Connection` (ours only: handlers' hop-by-hop
    // headers are dropped) may say close; it is then said once.
    let own = resp.headers().get(header::CONNECTION);
    let says_close = own.is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    // Without a length or chunking, the end of the body is the close.
    let keep_alive =
        ex.keep_alive && !says_close && (bodiless || declared || length.is_some() || chunked);

    out.clear();
    // A handler's own reason phrase (a CGI `Status: 403 Go Away`), as
    // hyper writes it.
    match resp.extensions().get::<hyper::ext::ReasonPhrase>() {
        Some(reason) => push_status_line_with(out, ex.version, status, reason.as_bytes()),
        None => push_status_line(out, ex.version, status),
    }
    push_headers(out, resp.headers());
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
    if own.is_none() {
        push_connection(out, keep_alive, ex.version);
    }
    // A date the handler gave stands, as with hyper.
    if !resp.headers().contains_key(header::DATE) {
        push_date(out);
    }
    out.extend_from_slice(b"\r\n");
    Framing {
        bodiless,
        length,
        chunked,
        keep_alive,
    }
}

pub(super) fn push_status_line(out: &mut BytesMut, version: Version, status: http::StatusCode) {
    let reason = status.canonical_reason().unwrap_or("");
    push_status_line_with(out, version, status, reason.as_bytes());
}

fn push_status_line_with(
    out: &mut BytesMut,
    version: Version,
    status: http::StatusCode,
    reason: &[u8],
) {
    out.extend_from_slice(match version {
        Version::HTTP_10 => b"HTTP/1.0 ",
        _ => b"HTTP/1.1 ",
    });
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
}

pub(super) fn push_headers(out: &mut BytesMut, headers: &http::HeaderMap) {
    for (name, value) in headers {
        push_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
}

/// `Connection` as the version needs it, `Date`, and the blank line.
pub(super) fn push_end(out: &mut BytesMut, keep_alive: bool, version: Version) {
    push_connection(out, keep_alive, version);
    push_date(out);
    out.extend_from_slice(b"\r\n");
}

fn push_connection(out: &mut BytesMut, keep_alive: bool, version: Version) {
    if !keep_alive {
        push_header(out, b"connection", b"close");
    } else if version == Version::HTTP_10 {
        push_header(out, b"connection", b"keep-alive");
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
    let second = coarse_unix_seconds();
    DATE.with_borrow_mut(|(at, line)| {
        if *at != second {
            *at = second;
            let now = UNIX_EPOCH + Duration::from_secs(second);
            *line = format!("date: {}\r\n", httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(line.as_bytes());
    });
}

/// The wall clock's second from `CLOCK_REALTIME_COARSE`: the time of the
/// last timer tick, read without the TSC (a few nanoseconds, against tens
/// for the precise clock); a `Date` header is to the second, and a tick
/// late at most (nginx too reads the clock once per event loop turn).
fn coarse_unix_seconds() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } == 0;
    match ok {
        true => u64::try_from(ts.tv_sec).unwrap_or(0),
        false => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs(),
    }
}
