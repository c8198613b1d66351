//! Logging: diagnostics through tracing on stderr, and the access log on
//! stdout or in the `access_log` file — one line per request, written when its response body is done
//! (so the byte count and duration are real), in combined log format or JSON.
//! Lines are handed to one writer thread, which batches them under load;
//! diagnostics likewise go to their own writer thread ([`diagnostics`]).

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Uri, Version};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::body::Body;
use crate::config::LogFormat;
use crate::conn::ConsumerWatch;
use crate::stats::RouteCounters;

mod access_writer;
pub mod diagnostics;
use access_writer::access_line;
pub use access_writer::{
    access_log_bytes_lost, access_log_file, flush_access_log, reopen_access_log,
    set_access_log_file,
};
pub use diagnostics::{init, FlushOnExit};

/// What routing learned about a request, for the log line and the counters.
#[derive(Debug, Default)]
pub struct RequestNote {
    pub route: Option<Arc<RouteCounters>>,
    pub upstream: Option<Duration>,
    /// The `[[site]]` that answered (None: the default site).
    pub site: Option<Arc<str>>,
    /// The rule that decided (`file:line (key)`), if one did.
    pub rule: Option<String>,
    /// The user an `[[auth]]` rule authenticated.
    pub user: Option<String>,
    /// No access log line (a load balancer's health check).
    pub unlogged: bool,
}

/// The facts of one request the access log line needs.
pub struct AccessRecord {
    /// `None`: the access log is off (the counters still run).
    pub format: Option<LogFormat>,
    pub remote: IpAddr,
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub referer: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
    pub started: Instant,
    pub time: SystemTime,
    pub status: u16,
    /// Which route answered (and its status page counters), once known.
    pub route: Option<Arc<RouteCounters>>,
    /// Time until the CGI program or FastCGI backend sent its header block.
    pub upstream: Option<Duration>,
    /// Which site and rule answered, and who was authenticated.
    pub site: Option<Arc<str>>,
    pub rule: Option<String>,
    pub user: Option<String>,
    /// Set by `watch_consumer`: the body reports its hand-overs here.
    consumer: Option<Arc<ConsumerWatch>>,
    /// What must live until the body is done: the connection's busy mark,
    /// and the application the request started with (and its pools),
    /// across a reload.
    _held: Option<Box<dyn Send + Sync>>,
}

impl AccessRecord {
    pub fn new(
        format: Option<LogFormat>,
        remote: IpAddr,
        method: &Method,
        uri: &Uri,
        version: Version,
        headers: &HeaderMap,
    ) -> AccessRecord {
        // With the log off only the counters' fields are needed: skip the
        // copies (each a reference count, or an allocation) and the clock.
        let logged = format.is_some();
        let h = |name: header::HeaderName| headers.get(name).filter(|_| logged).cloned();
        let uri = if logged { uri.clone() } else { Uri::default() };
        let said = (h(header::REFERER), h(header::USER_AGENT));
        AccessRecord::with(format, remote, method.clone(), uri, version, said)
    }

    /// [`new`](Self::new) from a request head's raw parts (the static
    /// path's memo hits, which build no `Request`): the target as sent,
    /// the `Referer` and `User-Agent` values.
    pub fn from_head(
        format: Option<LogFormat>,
        remote: IpAddr,
        method: Method,
        (target, version): (&str, Version),
        referer: Option<&[u8]>,
        user_agent: Option<&[u8]>,
    ) -> AccessRecord {
        let logged = format.is_some();
        let h = |v: Option<&[u8]>| {
            v.filter(|_| logged)
                .and_then(|v| HeaderValue::from_bytes(v).ok())
        };
        let uri = match logged {
            true => Uri::try_from(target).unwrap_or_default(),
            false => Uri::default(),
        };
        let said = (h(referer), h(user_agent));
        AccessRecord::with(format, remote, method, uri, version, said)
    }

    fn with(
        format: Option<LogFormat>,
        remote: IpAddr,
        method: Method,
        uri: Uri,
        version: Version,
        (referer, user_agent): (Option<HeaderValue>, Option<HeaderValue>),
    ) -> AccessRecord {
        AccessRecord {
            format,
            remote: remote.to_canonical(),
            method,
            uri,
            version,
            referer,
            user_agent,
            started: Instant::now(),
            time: if format.is_some() {
                SystemTime::now()
            } else {
                UNIX_EPOCH
            },
            status: 0,
            route: None,
            upstream: None,
            site: None,
            rule: None,
            user: None,
            consumer: None,
            _held: None,
        }
    }

    /// What routing learned (where to count the request when it ends),
    /// and what to hold until then.
    pub fn attach(&mut self, note: RequestNote, held: Box<dyn Send + Sync>) {
        self.route = note.route;
        self.upstream = note.upstream;
        self.site = note.site;
        self.rule = note.rule;
        self.user = note.user;
        if note.unlogged {
            self.format = None;
        }
        self._held = Some(held);
    }

    /// Report the body's hand-overs to `watch`, which the front end reads
    /// to find a client that stops taking the response.
    pub fn watch_consumer(&mut self, watch: Arc<ConsumerWatch>) {
        self.consumer = Some(watch);
    }

    /// The response is over (`complete`: all of it was sent): write the
    /// log line and count the request on its route.
    pub fn finish(self, bytes: u64, complete: bool) {
        if self.format.is_some() {
            LINE.with_borrow_mut(|line| {
                line.clear();
                self.write_line(line, bytes, complete);
                access_line(line);
            });
        }
        if let Some(route) = &self.route {
            route.record(self.status, bytes, self.started.elapsed(), self.upstream);
        }
    }

    /// Append the log line to `out` (no allocation once `out` has grown).
    fn write_line(&self, out: &mut String, bytes: u64, complete: bool) {
        use std::fmt::Write as _;
        let secs = self.started.elapsed().as_secs_f64();
        let target = self.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let referer = self.referer.as_ref().map(header_text);
        let user_agent = self.user_agent.as_ref().map(header_text);
        match self.format.unwrap_or(LogFormat::Combined) {
            LogFormat::Combined => {
                let _ = write!(out, "{} - ", self.remote);
                push_clf(out, self.user.as_deref().unwrap_or("-"));
                out.push_str(" [");
                push_clf_time(out, self.time);
                let _ = write!(out, "] \"{} ", self.method);
                push_clf(out, target);
                let _ = write!(out, " {:?}\" {} {} \"", self.version, self.status, bytes);
                push_clf(out, referer.as_deref().unwrap_or("-"));
                out.push_str("\" \"");
                push_clf(out, user_agent.as_deref().unwrap_or("-"));
                let _ = write!(out, "\" {secs:.3} ");
                match self.upstream {
                    Some(u) => {
                        let _ = write!(out, "{:.3}", u.as_secs_f64());
                    }
                    None => out.push('-'),
                }
                if let Some(site) = &self.site {
                    out.push_str(" site=\"");
                    push_clf(out, site);
                    out.push('"');
                }
                if let Some(rule) = &self.rule {
                    out.push_str(" rule=\"");
                    push_clf(out, rule);
                    out.push('"');
                }
                if !complete {
                    out.push_str(" aborted");
                }
                out.push('\n');
            }
            LogFormat::Json => {
                let time = self.time.duration_since(UNIX_EPOCH).unwrap_or_default();
                let _ = write!(
                    out,
                    "{{\"time\":{},\"remote\":\"{}\",\"method\":",
                    time.as_secs_f64(),
                    self.remote
                );
                push_json(out, Some(self.method.as_str()));
                out.push_str(",\"uri\":");
                push_json(out, Some(target));
                let _ = write!(
                    out,
                    ",\"proto\":\"{:?}\",\"status\":{},\"bytes\":{},\"referer\":",
                    self.version, self.status, bytes
                );
                push_json(out, referer.as_deref());
                out.push_str(",\"user_agent\":");
                push_json(out, user_agent.as_deref());
                let _ = write!(out, ",\"duration\":{secs:.6},\"upstream_time\":");
                match self.upstream {
                    Some(u) => {
                        let _ = write!(out, "{:.6}", u.as_secs_f64());
                    }
                    None => out.push_str("null"),
                }
                out.push_str(",\"route\":");
                push_json(out, self.route.as_ref().map(|r| &*r.route));
                out.push_str(",\"site\":");
                push_json(out, self.site.as_deref());
                out.push_str(",\"rule\":");
                push_json(out, self.rule.as_deref());
                out.push_str(",\"user\":");
                push_json(out, self.user.as_deref());
                let _ = writeln!(out, ",\"complete\":{complete}}}");
            }
        }
    }
}

/// Wraps a response body, counts its bytes and writes the access log line
/// when it ends or is dropped.
pub struct LoggedBody {
    inner: Body,
    consumer: Option<Arc<ConsumerWatch>>,
    bytes: u64,
    done: bool,
    record: Option<AccessRecord>,
}

impl LoggedBody {
    pub fn wrap(inner: Body, mut record: AccessRecord) -> Body {
        LoggedBody {
            inner,
            consumer: record.consumer.take(),
            bytes: 0,
            done: false,
            record: Some(record),
        }
        .boxed()
    }
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(c) = &self.consumer {
            c.asked();
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    self.bytes += d.len() as u64;
                    if let Some(c) = &self.consumer {
                        c.handed();
                    }
                }
            }
            Poll::Ready(None) => self.done = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if let Some(rec) = self.record.take() {
            rec.finish(self.bytes, self.done || self.inner.is_end_stream());
        }
    }
}

thread_local! {
    /// Each thread's line buffer, reused for every request it logs.
    static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    /// The last formatted second, so most lines skip the date arithmetic.
    static CLF_SECOND: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
}

/// Append `clf_time(t)`, formatting each second once per thread.
fn push_clf_time(out: &mut String, t: SystemTime) {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    CLF_SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != secs {
            *cached = secs;
            *text = clf_time(t);
        }
        out.push_str(text);
    });
}

/// `22/Nov/2026:00:32:05 +0000`
fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{:02}/{}/{}:{:02}:{:02}:{:02} +0000",
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn header_text(v: &HeaderValue) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(v.as_bytes())
}

/// Append quote-safe text for a combined log field.
fn push_clf(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// Append a JSON string (or `null`).
fn push_json(out: &mut String, s: Option<&str>) {
    use std::fmt::Write as _;
    let Some(s) = s else {
        out.push_str("null");
        return;
    };
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lines_carry_request_and_upstream_time() {
        let uri: Uri = "/a?b=c".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::USER_AGENT, HeaderValue::from_static("curl \"8\""));
        let mut rec = AccessRecord::new(
            Some(LogFormat::Combined),
            "::ffff:127.0.0.1".parse().unwrap(),
            &Method::GET,
            &uri,
            Version::HTTP_2,
            &headers,
        );
        rec.status = 200;
        rec.upstream = Some(Duration::from_millis(250));
        let mut line = String::new();
        rec.write_line(&mut line, 42, true);
        assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
        assert!(
            line.contains(r#"] "GET /a?b=c HTTP/2.0" 200 42 "-" "curl \"8\"" 0.0"#),
            "{line}"
        );
        assert!(line.ends_with(" 0.250\n"), "{line}");
        rec.format = Some(LogFormat::Json);
        rec.upstream = None;
        line.clear();
        rec.write_line(&mut line, 42, false);
        assert!(line.contains(r#""user_agent":"curl \"8\"""#), "{line}");
        assert!(
            line.contains("\"upstream_time\":null,\"route\":null,\"site\":null,\"rule\":null,\"user\":null,\"complete\":false}\n"),
            "{line}"
        );
    }

    #[test]
    fn clf_time_is_right() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_307_525); // 2026-11-22 00:32:05
        assert_eq!(clf_time(t), "22/Nov/2026:00:32:05 +0000");
        assert_eq!(
            clf_time(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "29/Feb/2000:00:00:00 +0000"
        );
    }

    #[test]
    fn fields_are_escaped() {
        let mut out = String::new();
        push_clf(&mut out, "a\"b\n");
        assert_eq!(out, "a\\\"b\\x0a");
        out.clear();
        push_json(&mut out, Some("a\"\u{1}"));
        assert_eq!(out, "\"a\\\"\\u0001\"");
    }
}
