//! Memo hits: a GET or HEAD the static path answered before from the
//! open-file cache's memory is answered again without building a request,
//! routing it or running the file pipeline: one hash look-up, one check
//! that the cache still holds the very same file, one write.
//!
//! A memo is keyed by everything of the request that routing and the file
//! pipeline read: method, version, target, `Host` and `Accept-Encoding`. A
//! request with any other header they read (conditionals, `Range`, a body,
//! `Expect`, `Upgrade`, `X-Forwarded-*` and `Forwarded` for trusted
//! proxies) has no key and takes the full path. So does a request under
//! another configuration (memos belong to one application generation), a
//! file the cache has dropped or replaced since (`static_files::memo`:
//! the cache is never stale, so neither is a memo), and anything the
//! router did not call pure (rules, which may look at the client's
//! address; ACME, whose HTTPS redirect starts with a certificate).
//!
//! Memos are per thread (no lock, no shared cache line) and bounded: at
//! most 2,048 per thread, of keys up to 1 KiB.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use http::{HeaderMap, Method, StatusCode, Version};
use rustix::net::SendFlags;
use tokio::net::TcpStream;

use super::super::buffers::{self, Kind};
use super::super::send_file::try_send;
use super::head::{connection_tokens, keeps_alive, request_line};
use super::respond::{push_end, push_headers, push_status_line};
use crate::app::App;
use crate::log::AccessRecord;
use crate::router::{replay_static, StaticMemo};
use crate::stats::RouteCounters;

/// Memos one thread keeps; when full, it starts again.
const CAPACITY: usize = 2048;

/// The longest key kept: with a memo's header lines (a few hundred bytes)
/// this bounds a thread's memos to about 3 MiB, whatever targets clients
/// send (a cache-busting query string makes a memo per value).
const MAX_KEY: usize = 1024;

/// The parts of a request head a memo hit needs. Only made for a request
/// whose answer its key decides (see the module doc).
pub(super) struct RawHead<'a> {
    pub(super) method: Method,
    pub(super) version: Version,
    pub(super) target: &'a str,
    pub(super) host: &'a [u8],
    pub(super) accept_encoding: &'a [u8],
    pub(super) user_agent: Option<&'a [u8]>,
    pub(super) referer: Option<&'a [u8]>,
    /// As `head::wants_keep_alive` decides.
    pub(super) keep_alive: bool,
}

/// What a memo look-up found.
pub(super) enum Probe {
    Hit(Answer),
    /// No memo: the key, to remember the answer under if it makes one.
    Miss(Box<[u8]>),
}

/// A memo's answer.
pub(super) enum Answer {
    /// All written at once, logged and counted; keep the connection?
    Sent(bool),
    /// The socket took only part of it: the rest to send. Boxed (it is
    /// rare): the connection's future holds an `Answer` across waits, and
    /// a waiting connection should carry no record.
    Partly(Box<Hit>),
}

/// A memo's answer: what is left to send of it, in a pool buffer, and its
/// record.
pub(super) struct Hit {
    pub(super) out: BytesMut,
    /// Body bytes in `out` (the access log's count).
    pub(super) sent: u64,
    pub(super) keep_alive: bool,
    pub(super) record: AccessRecord,
}

impl<'a> RawHead<'a> {
    /// The head's parts, or None when it has a header the key does not
    /// cover, or is not a GET or HEAD with exactly one `Host`.
    pub(super) fn of(parsed: &httparse::Request<'_, 'a>) -> Option<RawHead<'a>> {
        let (method, version, target) = request_line(parsed)?;
        let mut raw = RawHead {
            method,
            version,
            target,
            host: b"",
            accept_encoding: b"",
            user_agent: None,
            referer: None,
            keep_alive: false,
        };
        let (mut hosts, mut codings, mut close, mut keep) = (0, 0, false, false);
        for h in parsed.headers.iter() {
            let name = h.name;
            if name.eq_ignore_ascii_case("host") {
                hosts += 1;
                raw.host = h.value;
            } else if name.eq_ignore_ascii_case("accept-encoding") {
                codings += 1;
                raw.accept_encoding = h.value;
            } else if name.eq_ignore_ascii_case("user-agent") {
                raw.user_agent.get_or_insert(h.value);
            } else if name.eq_ignore_ascii_case("referer") {
                raw.referer.get_or_insert(h.value);
            } else if name.eq_ignore_ascii_case("connection") {
                let (c, k) = connection_tokens([h.value]);
                (close, keep) = (close || c, keep || k);
            } else if read_by_the_full_path(name) {
                return None;
            }
        }
        let key_len = 2 + raw.host.len() + 1 + raw.accept_encoding.len() + 1 + target.len();
        if hosts != 1 || codings > 1 || key_len > MAX_KEY {
            return None;
        }
        raw.keep_alive = keeps_alive(version, (close, keep));
        Some(raw)
    }

    fn key(&self, key: &mut Vec<u8>) {
        key.clear();
        key.push(u8::from(self.method == Method::HEAD));
        key.push(u8::from(self.version == Version::HTTP_11));
        // No NUL in a header value or target (httparse refuses them).
        key.extend_from_slice(self.host);
        key.push(0);
        key.extend_from_slice(self.accept_encoding);
        key.push(0);
        key.extend_from_slice(self.target.as_bytes());
    }
}

/// Headers routing or the file pipeline read beyond the key's.
fn read_by_the_full_path(name: &str) -> bool {
    let starts = |prefix: &str| {
        name.get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
    };
    starts("if-")
        || starts("x-forwarded-")
        || [
            "range",
            "content-length",
            "transfer-encoding",
            "expect",
            "upgrade",
            "forwarded",
        ]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

struct Memo {
    answer: StaticMemo,
    /// The response's header lines (all but `Connection` and `Date`).
    lines: Box<[u8]>,
    route: Option<Arc<RouteCounters>>,
    site: Option<Arc<str>>,
}

#[derive(Default)]
struct Memos {
    generation: u64,
    map: HashMap<Box<[u8]>, Memo>,
    /// The key being looked up (no allocation for a hit).
    key: Vec<u8>,
}

thread_local! {
    static MEMOS: RefCell<Memos> = RefCell::new(Memos::default());
}

/// Answer `raw` (from `client`, on `stream`) from this thread's memo, if
/// it has one and its file is still the one cached. The answer is written
/// at once: a small response to a client that keeps up fits in the socket
/// buffer, and a request served within one poll moves nothing around.
pub(super) fn probe(
    raw: &RawHead,
    app: &App,
    (client, stream): (IpAddr, &TcpStream),
    stopping: bool,
) -> Probe {
    MEMOS.with_borrow_mut(|memos| {
        if memos.generation != app.generation {
            memos.map.clear();
            memos.generation = app.generation;
        }
        let Memos { map, key, .. } = memos;
        raw.key(key);
        let Some(memo) = map.get(key.as_slice()) else {
            return Probe::Miss(key[..].into());
        };
        let Some(body) = replay_static(app, &memo.answer) else {
            map.remove(key.as_slice());
            return Probe::Miss(key[..].into());
        };
        let keep_alive = raw.keep_alive && !stopping;
        let mut out = buffers::take(Kind::Output);
        out.clear();
        push_status_line(&mut out, raw.version, StatusCode::OK);
        out.extend_from_slice(&memo.lines);
        push_end(&mut out, keep_alive, raw.version);
        let mut sent = 0;
        if raw.method == Method::GET {
            out.extend_from_slice(&body);
            sent = body.len() as u64;
        }
        let format = app.config.access_log.then_some(app.config.log_format);
        let mut record = AccessRecord::from_head(
            format,
            client,
            raw.method.clone(),
            (raw.target, raw.version),
            raw.referer,
            raw.user_agent,
        );
        record.status = StatusCode::OK.as_u16();
        record.route = memo.route.clone();
        record.site = memo.site.clone();
        match try_send(stream, &out, SendFlags::empty()) {
            Ok(n) if n == out.len() => {
                buffers::give(Kind::Output, out);
                record.finish(sent, true);
                Probe::Hit(Answer::Sent(keep_alive))
            }
            // The rest (or the error, again) for the waiting path.
            written => {
                out.advance(*written.as_ref().unwrap_or(&0));
                Probe::Hit(Answer::Partly(Box::new(Hit {
                    out,
                    sent,
                    keep_alive,
                    record,
                })))
            }
        }
    })
}

/// Keep `answer`, the memo of the 200 with `headers` that the full path
/// gave the request with `key` (under `app`; `record` says where it was
/// counted).
pub(super) fn remember(
    app: &App,
    key: Box<[u8]>,
    answer: StaticMemo,
    headers: &HeaderMap,
    record: &AccessRecord,
) {
    let mut lines = BytesMut::new();
    push_headers(&mut lines, headers);
    MEMOS.with_borrow_mut(|memos| {
        if memos.generation != app.generation {
            return;
        }
        if memos.map.len() >= CAPACITY {
            memos.map.clear();
        }
        let memo = Memo {
            answer,
            lines: lines[..].into(),
            route: record.route.clone(),
            site: record.site.clone(),
        };
        memos.map.insert(key, memo);
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::head::{parse_head, parse_head_probing, wants_keep_alive, Head};
    use super::*;

    /// The head with nothing but the key's parts.
    fn key_only(raw: &RawHead) -> Vec<u8> {
        let minor = u8::from(raw.version == Version::HTTP_11);
        let mut head =
            format!("{} {} HTTP/1.{minor}\r\nHost: ", raw.method, raw.target).into_bytes();
        head.extend_from_slice(raw.host);
        head.extend_from_slice(b"\r\nAccept-Encoding: ");
        head.extend_from_slice(raw.accept_encoding);
        head.extend_from_slice(b"\r\n\r\n");
        head
    }

    fn raw_head_of(head: &str) -> bool {
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut parsed = httparse::Request::new(&mut headers);
        assert!(parsed.parse(head.as_bytes()).unwrap().is_complete());
        RawHead::of(&parsed).is_some()
    }

    #[test]
    fn a_long_target_or_host_has_no_key() {
        let head =
            |target: &str, host: &str| format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        assert!(raw_head_of(&head("/a.txt", "a")));
        let long = format!("/a.txt?v={}", "9".repeat(MAX_KEY));
        assert!(!raw_head_of(&head(&long, "a")));
        assert!(!raw_head_of(&head("/a.txt", &"h".repeat(MAX_KEY))));
        let fits = format!("/{}", "x".repeat(MAX_KEY - 10));
        assert!(raw_head_of(&head(&fits, "a")));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// A memo made for one head is used for every head with the same
        /// key: so whether the static path takes a head, and as what
        /// request, must follow from the key's parts alone; and the
        /// keep-alive choice must be the full path's.
        #[test]
        fn the_key_decides_what_the_full_path_decides(
            input in super::super::proptests::input()
        ) {
            let mut seen = None;
            let full = parse_head_probing(&input, usize::MAX, |raw| {
                seen = Some((key_only(raw), raw.keep_alive));
                Probe::Miss(Box::default())
            });
            let Some((minimal, keep_alive)) = seen else {
                return Ok(());
            };
            let show = String::from_utf8_lossy(&input).into_owned();
            match (full, parse_head(&minimal)) {
                (Head::Complete(req, ..), Head::Complete(alone, ..)) => {
                    prop_assert_eq!(req.method(), alone.method(), "{}", show);
                    prop_assert_eq!(req.uri(), alone.uri(), "{}", show);
                    prop_assert_eq!(req.version(), alone.version(), "{}", show);
                    prop_assert_eq!(req.headers().get("host"), alone.headers().get("host"));
                    prop_assert_eq!(keep_alive, wants_keep_alive(&req), "{}", show);
                }
                (Head::NotOurs, Head::NotOurs) => {}
                (Head::Complete(..), _) => prop_assert!(false, "key alone refused: {}", show),
                _ => prop_assert!(false, "taken by its key alone, not whole: {}", show),
            }
        }
    }
}
